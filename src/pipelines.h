/*
 * What a device builds for an attention call, for `ssmax pipelines` (tools/pipelines.c): the plan
 * of the call, made by the planner exactly as ssmax_attn makes it, and each pipeline (Vulkan) or
 * kernel (OpenCL) that plan runs, built with the driver's statistics. Not part of the public API:
 * the tool links the static core. Self-contained (only the public header), so the tool can
 * include it without the library's internals.
 */
#ifndef SSMAX_PIPELINES_H
#define SSMAX_PIPELINES_H

#include <stddef.h>
#include <stdint.h>

#include "ssmax/ssmax.h"

enum { SSMAX_PIPE_MAX_SPEC = 16, SSMAX_PIPE_MAX_STATS = 48 };

enum ssmax_stat_format { SSMAX_STAT_BOOL, SSMAX_STAT_INT, SSMAX_STAT_UINT, SSMAX_STAT_FLOAT };

/* One statistic as the driver reports it (VK_KHR_pipeline_executable_properties). */
struct ssmax_pipe_stat {
    char name[64]; // exactly the driver's name ("VGPRs", "Spilled SGPRs", ...)
    enum ssmax_stat_format format;
    int64_t i;  // BOOL, INT
    uint64_t u; // UINT
    double f;   // FLOAT
};

struct ssmax_pipe_info {
    const char *role;         // "fused", "merge", "qk", "softmax", "pv", "mask"
    char kernel[64];          // Vulkan: the shader ("flash_attn_f16"); OpenCL: the kernel
    int nspec;                // Vulkan: specialization constants spec[0..nspec), by id; else 0
    uint32_t spec[SSMAX_PIPE_MAX_SPEC];
    char options[256];        // OpenCL: the program's build options; else ""
    uint32_t workgroup_size;  // invocations (work-items) a workgroup runs with
    uint32_t subgroup_size;   // the subgroup size it runs with; 0 where the API has none
    uint64_t shared_bytes;    // workgroup-shared (local) memory the kernel declares
    int nstats;               // statistics in stats; -1: the driver reports none
    struct ssmax_pipe_stat stats[SSMAX_PIPE_MAX_STATS];
    const void *code;         // Vulkan: the SPIR-V (code_size bytes); else NULL
    size_t code_size;
    int cl_info;              // 1: clGetKernelWorkGroupInfo's answers below
    uint64_t cl_work_group_size, cl_preferred_multiple, cl_local_mem_size, cl_private_mem_size;
};

/* Called for each pipeline in the plan's order; a negative return stops and is returned. */
typedef int (*ssmax_pipe_cb)(void *priv, const struct ssmax_pipe_info *pi);

/* Plans p on the open device as ssmax_attn would without buffers (compile_only devices too),
 * builds each pipeline of that plan (pipeline statistics captured where the driver offers them)
 * and hands it to cb. *plan (may be NULL) gets the plan. Returns SSMAX_OK, the planner's error,
 * SSMAX_ERR_KERNEL_BUILD naming the pipeline that failed, or cb's error. */
int ssmax_attn_pipelines(ssmax_context *ctx, const struct ssmax_attn_params *p,
                         struct ssmax_plan_info *plan, ssmax_pipe_cb cb, void *priv);

#endif
