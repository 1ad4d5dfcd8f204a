/* The SPIR-V of every shader variant, compiled by glslc at build time (shaders/meson.build). */
#include <stddef.h>
#include <stdint.h>

#include "vk_shaders.h"

static const uint32_t flash_f32[] =
#include "flash_f32.spv.inc"
    ;
static const uint32_t flash_f16[] =
#include "flash_f16.spv.inc"
    ;
static const uint32_t merge_f32[] =
#include "merge_f32.spv.inc"
    ;
static const uint32_t merge_f16[] =
#include "merge_f16.spv.inc"
    ;
static const uint32_t qk_f32[] =
#include "qk_f32.spv.inc"
    ;
static const uint32_t qk_f16[] =
#include "qk_f16.spv.inc"
    ;
static const uint32_t softmax_f32[] =
#include "softmax_f32.spv.inc"
    ;
static const uint32_t pv_f32[] =
#include "pv_f32.spv.inc"
    ;
static const uint32_t pv_f16[] =
#include "pv_f16.spv.inc"
    ;

static const uint32_t flashr_f32[] =
#include "flashr_f32.spv.inc"
    ;
static const uint32_t flashr_f16[] =
#include "flashr_f16.spv.inc"
    ;

static const uint32_t flashs_f32[] =
#include "flashs_f32.spv.inc"
    ;
static const uint32_t flashs_f16[] =
#include "flashs_f16.spv.inc"
    ;

static const uint32_t mask_count[] =
#include "mask_count.spv.inc"
    ;

static const uint32_t flashl_f32[] =
#include "flashl_f32.spv.inc"
    ;
static const uint32_t flashl_f16[] =
#include "flashl_f16.spv.inc"
    ;

#define S(x) { #x, x, sizeof(x) }
const struct vk_shader_code ssmax_vk_shaders[VK_SHADER_COUNT] = {
    [VK_SH_FLASH_F32] = S(flash_f32), [VK_SH_FLASH_F16] = S(flash_f16),
    [VK_SH_MERGE_F32] = S(merge_f32), [VK_SH_MERGE_F16] = S(merge_f16),
    [VK_SH_QK_F32] = S(qk_f32),       [VK_SH_QK_F16] = S(qk_f16),
    [VK_SH_SOFTMAX] = S(softmax_f32), [VK_SH_PV_F32] = S(pv_f32),
    [VK_SH_PV_F16] = S(pv_f16),       [VK_SH_FLASHR_F32] = S(flashr_f32),
    [VK_SH_FLASHR_F16] = S(flashr_f16), [VK_SH_FLASHS_F32] = S(flashs_f32),
    [VK_SH_FLASHS_F16] = S(flashs_f16), [VK_SH_FLASHL_F32] = S(flashl_f32),
    [VK_SH_FLASHL_F16] = S(flashl_f16), [VK_SH_MASK_COUNT] = S(mask_count),
};
