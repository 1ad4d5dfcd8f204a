#ifndef SSMAX_VK_SHADERS_H
#define SSMAX_VK_SHADERS_H

#include <stddef.h>
#include <stdint.h>

enum vk_shader_id {
    VK_SH_FLASH_F32, VK_SH_FLASH_F16, VK_SH_MERGE_F32, VK_SH_MERGE_F16, VK_SH_QK_F32, VK_SH_QK_F16,
    VK_SH_SOFTMAX, VK_SH_PV_F32, VK_SH_PV_F16, VK_SH_FLASHR_F32, VK_SH_FLASHR_F16,
    VK_SH_FLASHS_F32, VK_SH_FLASHS_F16, VK_SH_FLASHL_F32, VK_SH_FLASHL_F16, VK_SH_MASK_COUNT, VK_SHADER_COUNT
};

struct vk_shader_code {
    const char *name;
    const uint32_t *code;
    size_t size;
};

extern const struct vk_shader_code ssmax_vk_shaders[VK_SHADER_COUNT];

#endif
