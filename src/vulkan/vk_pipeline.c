/*
 * Vulkan: compute pipelines from the embedded SPIR-V (vk_shaders.c), one per shader and set of
 * specialization constants (shaders/attn_iface.h, SPEC_*), made at first use and kept with the
 * device. And the same pipelines built anew with the driver's statistics (`ssmax pipelines`).
 * Both are made with the device's pipeline cache (vk_pcache.c).
 */
#include <stdio.h>
#include <string.h>

#include "vk_internal.h"

/* Creates the pipeline of shader id with spec and these creation flags. */
static int make(struct vk_dev *d, enum vk_shader_id id, const uint32_t spec[SPEC_COUNT],
                uint32_t subgroup, VkPipelineCreateFlags flags, VkPipeline *out)
{
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
        .flags = flags,
        .stage = { .sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
                   .pNext = subgroup ? &rss : NULL,
                   .stage = VK_SHADER_STAGE_COMPUTE_BIT,
                   .module = mod,
                   .pName = "main",
                   .pSpecializationInfo = &si },
        .layout = d->layout,
    };
    r = d->vkCreateComputePipelines(d->dev, d->pcache, 1, &cpci, NULL, out);
    d->vkDestroyShaderModule(d->dev, mod, NULL);
    if (r == VK_SUCCESS)
        d->pcache_dirty = 1; // the cache may hold more: written back at close (vk_pcache.c)
    if (r != VK_SUCCESS)
        return ssmax_set_error(d->base.ctx, SSMAX_ERR_KERNEL_BUILD,
                               "vulkan: pipeline %s (wg %u, tiles %u,%u, D %u) failed: VkResult %d",
                               sc->name, spec[SPEC_WG], spec[SPEC_BR], spec[SPEC_BC], spec[SPEC_D],
                               (int)r);
    return SSMAX_OK;
}

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
    VkPipeline pipe;
    int r = make(d, id, spec, subgroup, 0, &pipe);
    if (r < 0)
        return r;
    memcpy(d->pipes[d->npipes].key, key, sizeof(key));
    d->pipes[d->npipes++].pipe = pipe;
    ssmax_log(d->base.ctx, SSMAX_LOG_DEBUG, "vulkan: pipeline built: %s (wg %u, tiles %u,%u, D %u)",
              ssmax_vk_shaders[id].name, spec[SPEC_WG], spec[SPEC_BR], spec[SPEC_BC], spec[SPEC_D]);
    *out = pipe;
    return SSMAX_OK;
}

/* The statistics of the pipeline's (compute: only) executable, and the subgroup size it runs
 * with, into pi. Leaves pi->nstats -1 when the driver reports none. */
static void read_stats(struct vk_dev *d, VkPipeline pipe, struct ssmax_pipe_info *pi)
{
    VkPipelineInfoKHR info = { .sType = VK_STRUCTURE_TYPE_PIPELINE_INFO_KHR, .pipeline = pipe };
    VkPipelineExecutablePropertiesKHR props[4];
    uint32_t n = 4;
    for (uint32_t i = 0; i < n; i++)
        props[i] = (VkPipelineExecutablePropertiesKHR){
            .sType = VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_PROPERTIES_KHR
        };
    VkResult r = d->get_exec_props(d->dev, &info, &n, props);
    if ((r != VK_SUCCESS && r != VK_INCOMPLETE) || !n)
        return;
    if (props[0].subgroupSize)
        pi->subgroup_size = props[0].subgroupSize;
    VkPipelineExecutableInfoKHR ei = { .sType = VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_INFO_KHR,
                                       .pipeline = pipe,
                                       .executableIndex = 0 };
    VkPipelineExecutableStatisticKHR st[SSMAX_PIPE_MAX_STATS];
    uint32_t ns = SSMAX_PIPE_MAX_STATS;
    for (uint32_t i = 0; i < ns; i++)
        st[i] = (VkPipelineExecutableStatisticKHR){
            .sType = VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_STATISTIC_KHR
        };
    r = d->get_exec_stats(d->dev, &ei, &ns, st);
    if (r != VK_SUCCESS && r != VK_INCOMPLETE)
        return;
    pi->nstats = 0;
    for (uint32_t i = 0; i < ns; i++) {
        struct ssmax_pipe_stat *o = &pi->stats[pi->nstats++];
        snprintf(o->name, sizeof(o->name), "%s", st[i].name);
        switch (st[i].format) {
        case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_BOOL32_KHR:
            o->format = SSMAX_STAT_BOOL, o->i = st[i].value.b32 != 0;
            break;
        case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_INT64_KHR:
            o->format = SSMAX_STAT_INT, o->i = st[i].value.i64;
            break;
        case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_FLOAT64_KHR:
            o->format = SSMAX_STAT_FLOAT, o->f = st[i].value.f64;
            break;
        default:
            o->format = SSMAX_STAT_UINT, o->u = st[i].value.u64;
            break;
        }
    }
}

int vk_pipelines(struct ssmax_dev *base, const struct attn_plan *pl, ssmax_pipe_cb cb, void *priv)
{
    static const char *const roles[] = { "fused", "merge", "qk", "softmax", "pv", "mask" };
    struct vk_dev *d = (struct vk_dev *)base;
    struct vk_pipe_req req[VK_PLAN_PIPES];
    const int n = vk_plan_pipes(d, pl, req);
    for (int i = 0; i < n; i++) {
        const struct vk_shader_code *sc = &ssmax_vk_shaders[req[i].id];
        struct ssmax_pipe_info pi;
        memset(&pi, 0, sizeof(pi));
        pi.role = roles[req[i].role];
        snprintf(pi.kernel, sizeof(pi.kernel), "%s", sc->name);
        pi.nspec = SPEC_COUNT;
        memcpy(pi.spec, req[i].spec, sizeof(req[i].spec));
        pi.workgroup_size = req[i].spec[SPEC_WG];
        pi.subgroup_size = req[i].subgroup ? req[i].subgroup : d->ph->subgroup_size;
        pi.shared_bytes = ssmax_role_shared_bytes(pl, req[i].role);
        pi.nstats = -1;
        pi.code = sc->code;
        pi.code_size = sc->size;
        VkPipeline pipe;
        const int stats = d->get_exec_props && d->get_exec_stats;
        int r = make(d, req[i].id, req[i].spec, req[i].subgroup,
                     stats ? VK_PIPELINE_CREATE_CAPTURE_STATISTICS_BIT_KHR : 0, &pipe);
        if (r < 0)
            return r;
        if (stats)
            read_stats(d, pipe, &pi);
        d->vkDestroyPipeline(d->dev, pipe, NULL);
        if ((r = cb(priv, &pi)) < 0)
            return r;
    }
    return SSMAX_OK;
}
