/*
 * OpenCL's part of the plan (plan.c calls cl_plan once per call): the tiles (an override, a tuned
 * entry, or the defaults by local-memory size), the work-group layout of the fused kernel, and the
 * device's allocation and indexing limits.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cl_internal.h"

/* Register blocks of the fused kernel as contiguous runs (CPU devices: vector loads and FMAs;
 * PoCL, B1 H8 D64: L1024 66.6 -> 58.5 ms, decode kv 16384 23.8 -> 11.5 ms) or interleaved over
 * the work-items (GPUs: neighbouring work-items read neighbouring local-memory words).
 * SSMAX_CL_LAYOUT=chunked|interleaved overrides. */
static int chunked(const struct cl_dev *d)
{
    const char *e = getenv("SSMAX_CL_LAYOUT");
    if (e && !strcmp(e, "chunked"))
        return 1;
    if (e && !strcmp(e, "interleaved"))
        return 0;
    return d->base.info.type == SSMAX_DEVICE_CPU;
}

/* Why the device cannot run the plan's tiles (into why), or 0 when it can. */
static int tiles_refused(const struct cl_dev *d, const struct attn_plan *pl, char *why, size_t n)
{
    const uint64_t lm = d->base.info.shared_memory, wgmax = d->base.info.max_workgroup_size;
    const uint64_t need = ssmax_tiles_shared_bytes(pl->p.head_dim, pl->br, pl->bc);
    if (need <= lm && pl->br * pl->tpr <= wgmax && wgmax >= 256)
        return 0;
    snprintf(why, n, "tiles %u,%u,%u need %llu bytes of local memory and %u work-items (256 for "
             "qk); the device has %llu and %llu", pl->br, pl->bc, pl->tpr,
             (unsigned long long)need, pl->br * pl->tpr, (unsigned long long)lm,
             (unsigned long long)wgmax);
    return 1;
}

/* The defaults. Fused: BR rows x BC keys over 16 work-items in register blocks (cl/attn.cl); the
 * unfused P V kernel uses BR rows x TPR work-items. CPU runtimes (PoCL: 1 MiB of local memory)
 * take large blocks: B1 H8 L1024 D64 on PoCL, 32,48: 125 ms; 64,64: 68 ms; D128 16,32: 247 ms,
 * 64,64: 116 ms. Devices with GPU-sized local memory keep small blocks. */
static void default_tiles(const struct cl_dev *d, struct attn_plan *pl)
{
    const uint32_t D = pl->p.head_dim;
    const int big = d->base.info.shared_memory >= (256u << 10);
    pl->tpr = 4;
    if (D <= 64)
        pl->br = big ? 64 : 16, pl->bc = big ? 64 : 32;
    else if (D <= 128)
        pl->br = big ? 64 : 8, pl->bc = big ? 64 : 32;
    else
        pl->br = big ? 32 : 4, pl->bc = big ? 64 : 16;
    ssmax_plan_why(pl, "tiles %u,%u,%u: the defaults for %s local memory at head_dim %u", pl->br,
                   pl->bc, pl->tpr, big ? "CPU-sized" : "GPU-sized", D);
    ssmax_tiles_for_decode(pl);
    const uint64_t lm = d->base.info.shared_memory;
    while (ssmax_tiles_shared_bytes(D, pl->br, pl->bc) > lm && pl->bc >= 16)
        pl->bc = pl->bc / 2 / 8 * 8;
}

/* SSMAX_CL_TILES, else a tuned entry (ssmax bench --tune), else the defaults. An override the
 * device cannot run is an error; a tuned entry it refuses is dropped. Tuned tiles run as stored:
 * their BC is not shrunk to fit. */
static int choose_tiles(struct cl_dev *d, struct attn_plan *pl)
{
    const uint32_t D = pl->p.head_dim;
    struct ssmax_tiles t;
    char why[320];
    int src = ssmax_tiles_asked(&d->base, "SSMAX_CL_TILES", D, 1, &t);
    if (src < 0)
        return src;
    if (src != TILES_DEFAULT && t.kernel == SSMAX_KERNEL_ROWS) {
        snprintf(why, sizeof(why), "tiles rows,%u,%u name Vulkan's rows kernel", t.keys, t.rows);
        if (src == TILES_OVERRIDE)
            return ssmax_set_error(d->base.ctx, SSMAX_ERR_INVALID_ARG, "SSMAX_CL_TILES: %s", why);
        if ((src = ssmax_tune_refused(&d->base, D, why)) < 0)
            return src;
    } else if (src != TILES_DEFAULT) {
        pl->br = t.rows, pl->bc = t.keys, pl->tpr = t.lanes;
        if (src == TILES_TUNED && tiles_refused(d, pl, why, sizeof(why)) &&
            (src = ssmax_tune_refused(&d->base, D, why)) < 0)
            return src;
        if (src != TILES_DEFAULT)
            ssmax_plan_why(pl, "tiles %u,%u,%u: %s", pl->br, pl->bc, pl->tpr,
                           src == TILES_OVERRIDE ? "SSMAX_CL_TILES" : "tuned");
    }
    if (src == TILES_DEFAULT)
        default_tiles(d, pl);
    pl->kernel = KERNEL_TILES;
    if (tiles_refused(d, pl, why, sizeof(why)))
        return ssmax_set_error(d->base.ctx, SSMAX_ERR_LIMIT_EXCEEDED, "head_dim: %s", why);
    return SSMAX_OK;
}

int cl_plan(struct ssmax_dev *base, struct attn_plan *pl)
{
    struct cl_dev *d = (struct cl_dev *)base;
    int r = choose_tiles(d, pl);
    if (r < 0)
        return r;
    const uint64_t lim = base->info.max_alloc_size;
    // Each tensor is one cl_mem, so it must fit the device's largest allocation; the kernels index
    // elements from the start of their buffer in 32 bits (probs is only copied, by byte offsets).
    const struct plan_fit fit = { lim, "largest allocation (CL_DEVICE_MAX_MEM_ALLOC_SIZE)", 0, NULL,
                                  1 };
    if ((r = ssmax_plan_fit(base->ctx, pl, &fit)) < 0)
        return r;
    pl->bk_flags = (uint32_t)chunked(d);
    pl->kernel_name = pl->path == SSMAX_PATH_UNFUSED ? "qk+softmax_rows+pv"
                      : pl->bk_flags                 ? "flash_attn (chunked)"
                                                     : "flash_attn";
    // Scratch: one allocation, indexed in 32 bits.
    pl->scratch_max = lim < 4ull * UINT32_MAX ? lim : 4ull * UINT32_MAX;
    pl->max_groups_x = UINT32_MAX / 16; // work-items along x: 16 a row block
    return SSMAX_OK;
}
