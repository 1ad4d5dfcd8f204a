/*
 * Vulkan: compute pipelines from the embedded SPIR-V (vk_shaders.c), one per shader and set of
 * specialization constants (shaders/attn_iface.h, SPEC_*), made at first use and kept with the
 * device.
 */
#include <string.h>

#include "vk_internal.h"

int vk_pipeline(struct vk_dev *d, enum vk_shader_id id, const uint32_t spec[SPEC_COUNT],
                uint32_t subgroup, VkPipeline *out)
{
    uint32_t key[2 + SPEC_COUNT] = { (uint32_t)id, subgroup };
    memcpy(key + 2, spec, SPEC_COUNT * sizeof(uint32_t));
    for (int i = 0; i < d->npipes; i++)
        if (!memcmp(d->pipes[i].key, key, sizeof(key))) {
            *out = d->pipes[i].pipe;
            return SSMAX_OK;
        }
    if (d->npipes == d->cap_pipes) {
        int cap = d->cap_pipes ? d->cap_pipes * 2 : 16;
        struct vk_pipe *np = ssmax_calloc(d->base.ctx, (size_t)cap, sizeof(*np));
        if (!np)
            return ssmax_set_error(d->base.ctx, SSMAX_ERR_OUT_OF_HOST_MEMORY,
                                   "vulkan: out of host memory");
        if (d->pipes)
            memcpy(np, d->pipes, sizeof(*np) * (size_t)d->npipes);
        ssmax_free(d->base.ctx, d->pipes);
        d->pipes = np;
        d->cap_pipes = cap;
    }
    const struct vk_shader_code *sc = &ssmax_vk_shaders[id];
    VkShaderModuleCreateInfo smci = { .sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO,
                                      .codeSize = sc->size,
                                      .pCode = sc->code };
    VkShaderModule mod;
    VkResult r = d->vkCreateShaderModule(d->dev, &smci, NULL, &mod);
    if (r != VK_SUCCESS)
        return ssmax_set_error(d->base.ctx, SSMAX_ERR_KERNEL_BUILD,
                               "vulkan: vkCreateShaderModule(%s) failed: VkResult %d", sc->name,
                               (int)r);
    VkSpecializationMapEntry ents[SPEC_COUNT];
    for (uint32_t i = 0; i < SPEC_COUNT; i++)
        ents[i] = (VkSpecializationMapEntry){ i, i * 4, 4 };
    VkSpecializationInfo si = { SPEC_COUNT, ents, SPEC_COUNT * sizeof(uint32_t), spec };
    VkPipelineShaderStageRequiredSubgroupSizeCreateInfoEXT rss = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_REQUIRED_SUBGROUP_SIZE_CREATE_INFO_EXT,
        .requiredSubgroupSize = subgroup
    };
    VkComputePipelineCreateInfo cpci = {
        .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
        .stage = { .sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
                   .pNext = subgroup ? &rss : NULL,
                   .stage = VK_SHADER_STAGE_COMPUTE_BIT,
                   .module = mod,
                   .pName = "main",
                   .pSpecializationInfo = &si },
        .layout = d->layout,
    };
    VkPipeline pipe;
    r = d->vkCreateComputePipelines(d->dev, VK_NULL_HANDLE, 1, &cpci, NULL, &pipe);
    d->vkDestroyShaderModule(d->dev, mod, NULL);
    if (r != VK_SUCCESS)
        return ssmax_set_error(d->base.ctx, SSMAX_ERR_KERNEL_BUILD,
                               "vulkan: pipeline %s (wg %u, tiles %u,%u, D %u) failed: VkResult %d",
                               sc->name, spec[SPEC_WG], spec[SPEC_BR], spec[SPEC_BC], spec[SPEC_D],
                               (int)r);
    memcpy(d->pipes[d->npipes].key, key, sizeof(key));
    d->pipes[d->npipes++].pipe = pipe;
    *out = pipe;
    return SSMAX_OK;
}
