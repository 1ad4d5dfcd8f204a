/*
 * OpenCL's part of the plan (plan.c calls cl_plan once per call): the kernel and its tiles (an
 * override, a tuned entry, the GPU kernel on GPUs, or the defaults by local-memory size), the
 * work-group layout of the fused kernel, and the device's allocation and indexing limits.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cl_internal.h"

/* The elements the kernels index from a binding's start: 2^32 - 1 (32-bit indices), or fewer for
 * tests (ssmax_cl_index_limit_set), so small buffers reach the sub-buffer binding. */
static _Atomic uint64_t test_index_limit;

void ssmax_cl_index_limit_set(uint64_t elements)
{
    atomic_store(&test_index_limit, elements);
}

uint64_t cl_index_limit(void)
{
    const uint64_t n = atomic_load(&test_index_limit);
    return n > 0 && n < UINT32_MAX ? n : UINT32_MAX;
}

/* Whether to plan as a GPU: the device's type (any but a CPU), or SSMAX_CL_PLAN_AS=gpu, which
 * plans a CPU device (PoCL) as a GPU with 64 KiB of local memory would be planned, so the GPU
 * kernels run, and are tested, there; the device's real limits still apply. *as names the source
 * for the reasons. */
static int plan_as_gpu(const struct cl_dev *d, int *gpu, const char **as)
{
    const char *e = getenv("SSMAX_CL_PLAN_AS");
    *gpu = d->base.info.type != SSMAX_DEVICE_CPU;
    *as = "the device";
    if (!e || !*e)
        return SSMAX_OK;
    if (strcmp(e, "gpu"))
        return ssmax_set_error(d->base.ctx, SSMAX_ERR_INVALID_ARG,
                               "SSMAX_CL_PLAN_AS: '%s' is not gpu", e);
    *gpu = 1;
    *as = "SSMAX_CL_PLAN_AS=gpu";
    return SSMAX_OK;
}

/* Register blocks of the fused kernel as contiguous runs (CPU devices: vector loads and FMAs;
 * PoCL, B1 H8 D64: L1024 66.6 -> 58.5 ms, decode kv 16384 23.8 -> 11.5 ms) or interleaved over
 * the work-items (GPUs: neighbouring work-items read neighbouring local-memory words).
 * SSMAX_CL_LAYOUT=chunked|interleaved overrides. */
static int chunked(int gpu)
{
    const char *e = getenv("SSMAX_CL_LAYOUT");
    if (e && !strcmp(e, "chunked"))
        return 1;
    if (e && !strcmp(e, "interleaved"))
        return 0;
    return !gpu;
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
static void default_tiles(const struct cl_dev *d, int gpu, struct attn_plan *pl)
{
    const uint32_t D = pl->p.head_dim;
    const int big = d->base.info.shared_memory >= (256u << 10) &&
                    (d->base.info.type != SSMAX_DEVICE_CPU || !gpu); // planned as a 64 KiB GPU
    pl->tpr = 4;
    if (D <= 64)
        pl->br = big ? 64 : 16, pl->bc = big ? 64 : 32;
    else if (D <= 128)
        pl->br = big ? 64 : 8, pl->bc = big ? 64 : 32;
    else
        pl->br = big ? 32 : 4, pl->bc = big ? 64 : 16;
    ssmax_plan_why(pl, "tiles %u,%u,%u: the defaults for %s local memory at head_dim %u%s",
                   pl->br, pl->bc, pl->tpr, big ? "CPU-sized" : "GPU-sized", D,
                   gpu && d->base.info.type == SSMAX_DEVICE_CPU ? " (SSMAX_CL_PLAN_AS=gpu)" : "");
    ssmax_tiles_for_decode(pl);
    const uint64_t lm = d->base.info.shared_memory;
    while (ssmax_tiles_shared_bytes(D, pl->br, pl->bc) > lm && pl->bc >= 16)
        pl->bc = pl->bc / 2 / 8 * 8;
}

/* The GPU kernel's key-group merge rows at a time (cl/attn.cl, MR): as many as the score
 * exchange's local memory holds, which it reuses. */
static uint32_t rowg_merge_rows(const struct attn_plan *pl)
{
    const uint32_t xwords = 2 * (pl->wg / pl->lpr) * (pl->bc * pl->lpr + 4);
    const uint32_t mr = xwords / (pl->p.head_dim + 4);
    return mr < 1 ? 1 : mr > pl->br ? pl->br : mr;
}

/* Local memory of the GPU kernel, in bytes: the score exchange, or the merge if larger. */
static uint64_t rowg_local_bytes(const struct attn_plan *pl)
{
    const uint64_t xwords = 2ull * (pl->wg / pl->lpr) * (pl->bc * pl->lpr + 4);
    const uint64_t mwords = (uint64_t)rowg_merge_rows(pl) * (pl->p.head_dim + 4);
    return 4 * (xwords > mwords ? xwords : mwords);
}

void cl_plan_opts(const struct attn_plan *pl, char *out, size_t n)
{
    const struct ssmax_attn_params *p = &pl->p;
    const char *f16 = p->dtype == SSMAX_F16 ? " -DIO_F16=1" : "";
    if (pl->kernel == KERNEL_LANES)
        snprintf(out, n, "-cl-std=CL1.2 -DD=%uu -DLANES=1 -DBR=%uu -DBC=%uu -DLPR=%uu -DWG=%uu "
                 "-DMR=%uu%s", p->head_dim, pl->br, pl->bc, pl->lpr, pl->wg, rowg_merge_rows(pl),
                 f16);
    else
        snprintf(out, n, "-cl-std=CL1.2 -DD=%uu -DBR=%uu -DBC=%uu -DTPR=%uu -DWG=%uu%s%s",
                 p->head_dim, pl->br, pl->bc, pl->tpr, pl->br * pl->tpr, f16,
                 pl->bk_flags ? " -DCHUNKED=1" : "");
}

/* The GPU kernel's rows, work-items and keys a step for wg work-items (decode: key groups) and
 * the rows given. Keys a step: 1024 / wg (4 to 16), so a step's score exchange is about 8 KiB
 * of local memory at every size (2 x wg x BC words) and one barrier a step covers 1024 of the
 * work-group's multiply-adds per dimension of a lane. */
static void rowg_shape(struct attn_plan *pl, uint32_t br, uint32_t wg)
{
    uint32_t bc = 16;
    while (bc > 4 && bc * wg > 1024)
        bc /= 2;
    pl->br = br, pl->bc = bc, pl->tpr = 4;
    pl->wg = wg, pl->kgroups = wg / pl->lpr / br;
    pl->lanes_shared = rowg_local_bytes(pl);
}

static uint32_t gcd32(uint32_t a, uint32_t b)
{
    while (b) {
        uint32_t t = a % b;
        a = b, b = t;
    }
    return a;
}

/* The GPU kernel (flash_rowgroups in cl/attn.cl) for the fused and split-KV paths: 1 when
 * planned, 0 when the device cannot run it (the reason added, the tiles kernel planned instead),
 * or an error. The program is built here: the work-group size must be a multiple of the kernel's
 * CL_KERNEL_PREFERRED_WORK_GROUP_SIZE_MULTIPLE (the device's SIMD width) and within its
 * CL_KERNEL_WORK_GROUP_SIZE (registers), which only the built kernel tells. */
static int rowg_plan(struct cl_dev *d, const char *as, struct attn_plan *pl)
{
    const uint32_t D = pl->p.head_dim;
    const uint64_t rows = (uint64_t)pl->group * pl->p.q_len;
    const uint64_t wgmax = d->base.info.max_workgroup_size, lm = d->base.info.shared_memory;
    // Lanes a row: a lane holds D / lpr dimensions of the query, the output and the step's output
    // terms in registers (3 x D / lpr words), about 16 each: 4 lanes up to D 64, 8 at D 128, 16
    // at D 256. Fewer lanes a row, fewer exchanged partial scores per multiply-add (each lane
    // reads the row's lpr partials of a key for its 2 x D / lpr flops); D / lpr stays even (the
    // output is written in pairs), and a multiple of 4 where it can (K and V read 4 at a time).
    uint32_t lpr = 4;
    while (lpr < 16 && D / lpr > 16 && D % (4 * lpr) == 0)
        lpr *= 2;
    pl->lpr = lpr;
    pl->kernel = KERNEL_LANES;
    // Prefill: 16 rows a work-group (64, 128 or 256 work-items), sharing every K and V read (the
    // G heads of a KV head and neighbouring positions). Decode (fewer packed rows a KV head):
    // exactly the rows there are, their slots repeated as key groups up to a multiple of 64 work-
    // items (a whole wavefront on AMD, two warps on NVIDIA), merged once at the end.
    const int decode = rows < 16;
    uint32_t br = decode ? (uint32_t)rows : 16, wg = br * lpr;
    if (decode)
        wg = (wg + 63) / 64 * 64;
    rowg_shape(pl, br, wg);
    const int kid = pl->path == SSMAX_PATH_SPLIT_KV ? K_ROWG_SPLIT : K_ROWG;
    const char *fix = "";
    char why[200] = "";
    size_t pm = 1, kwg = 0;
    for (int tries = 0; tries < 2; tries++) {
        if (pl->wg > wgmax || rowg_local_bytes(pl) > lm) {
            snprintf(why, sizeof(why), "%u work-items and %llu bytes of local memory exceed the "
                     "device's %llu and %llu", pl->wg, (unsigned long long)rowg_local_bytes(pl),
                     (unsigned long long)wgmax, (unsigned long long)lm);
            break;
        }
        char opts[160];
        struct cl_prog *pg;
        cl_plan_opts(pl, opts, sizeof(opts));
        int r = cl_program_get(d, opts, &pg);
        if (r < 0)
            return r;
        struct cl_fns *f = &d->ci->f;
        cl_int e = f->clGetKernelWorkGroupInfo(pg->k[kid], d->rec->dev,
                                               CL_KERNEL_PREFERRED_WORK_GROUP_SIZE_MULTIPLE,
                                               sizeof(pm), &pm, NULL);
        if (e == CL_SUCCESS)
            e = f->clGetKernelWorkGroupInfo(pg->k[kid], d->rec->dev, CL_KERNEL_WORK_GROUP_SIZE,
                                            sizeof(kwg), &kwg, NULL);
        if (e != CL_SUCCESS)
            return cl_err(d->base.ctx, e, "clGetKernelWorkGroupInfo");
        if (!pm)
            pm = 1;
        if (pl->wg % pm == 0) {
            if (pl->wg <= kwg)
                break;
            snprintf(why, sizeof(why), "%u work-items exceed the kernel's %zu "
                     "(CL_KERNEL_WORK_GROUP_SIZE)", pl->wg, kwg);
            break;
        }
        if (tries) {
            snprintf(why, sizeof(why), "no work-group size found that is a multiple of the "
                     "kernel's preferred %zu", pm);
            break;
        }
        // The SIMD width does not divide the work-group: round it up to a multiple of both it
        // and the row's lanes (prefill: more rows; decode: more key groups), and build again.
        const uint64_t unit = (uint64_t)pm / gcd32((uint32_t)pm, lpr) * lpr;
        if (unit > wgmax) {
            snprintf(why, sizeof(why), "the kernel's preferred work-group multiple %zu exceeds "
                     "the device's %llu work-items", pm, (unsigned long long)wgmax);
            break;
        }
        const uint32_t nwg = (uint32_t)((pl->wg + unit - 1) / unit * unit);
        rowg_shape(pl, decode ? br : nwg / lpr, nwg);
        fix = ", rounded up to a multiple of the kernel's preferred work-group size multiple";
    }
    if (why[0]) {
        ssmax_plan_why(pl, "not flash_rowgroups: %s", why);
        pl->kernel = KERNEL_TILES;
        pl->lpr = pl->kgroups = pl->wg = 0;
        return 0;
    }
    ssmax_plan_why(pl, "flash_rowgroups (%s), %u rows x %u work-items x %u key group%s = %u "
                   "work-items (a multiple of the kernel's preferred %zu%s), %u keys a step, %llu "
                   "bytes of local memory: a GPU (%s)", decode ? "decode" : "prefill", pl->br,
                   lpr, pl->kgroups, pl->kgroups == 1 ? "" : "s", pl->wg, pm, fix, pl->bc,
                   (unsigned long long)rowg_local_bytes(pl), as);
    return 1;
}

/* SSMAX_CL_TILES, else a tuned entry (ssmax bench --tune), else the GPU kernel on GPUs (fused and
 * split-KV paths), else the defaults. An override the device cannot run is an error; a tuned
 * entry it refuses is dropped. Tuned tiles run as stored: their BC is not shrunk to fit. */
static int choose_tiles(struct cl_dev *d, int gpu, const char *as, struct attn_plan *pl)
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
    if (src == TILES_DEFAULT && gpu && pl->path != SSMAX_PATH_UNFUSED) {
        int r = rowg_plan(d, as, pl);
        if (r != 0)
            return r < 0 ? r : SSMAX_OK;
    }
    if (src == TILES_DEFAULT)
        default_tiles(d, gpu, pl);
    pl->kernel = KERNEL_TILES;
    if (tiles_refused(d, pl, why, sizeof(why)))
        return ssmax_set_error(d->base.ctx, SSMAX_ERR_LIMIT_EXCEEDED, "head_dim: %s", why);
    return SSMAX_OK;
}

int cl_plan(struct ssmax_dev *base, struct attn_plan *pl)
{
    struct cl_dev *d = (struct cl_dev *)base;
    int gpu;
    const char *as;
    int r = plan_as_gpu(d, &gpu, &as);
    if (r < 0 || (r = choose_tiles(d, gpu, as, pl)) < 0)
        return r;
    const uint64_t lim = base->info.max_alloc_size;
    // Each tensor is one cl_mem, so it must fit the device's largest allocation. The kernels index
    // elements from their binding's start in 32 bits: the cl_mem's start, or for a tensor past
    // that, a sub-buffer from its offset rounded down to CL_DEVICE_MEM_BASE_ADDR_ALIGN (cl_attn.c).
    // probs is only copied, by byte offsets.
    pl->fit = (struct plan_fit){ lim, "largest allocation (CL_DEVICE_MAX_MEM_ALLOC_SIZE)", 0, NULL,
                                 cl_index_limit(), d->rec->base_align,
                                 "CL_DEVICE_MEM_BASE_ADDR_ALIGN" };
    if ((r = ssmax_plan_fit(base->ctx, pl, &pl->fit)) < 0)
        return r;
    const int lanes = pl->kernel == KERNEL_LANES;
    pl->bk_flags = lanes ? 0 : (uint32_t)chunked(gpu);
    pl->kernel_name = pl->path == SSMAX_PATH_UNFUSED ? "qk+softmax_rows+pv"
                      : lanes                        ? "flash_rowgroups"
                      : pl->bk_flags                 ? "flash_attn (chunked)"
                                                     : "flash_attn";
    // Scratch: one allocation, indexed in 32 bits.
    pl->scratch_max = lim < 4ull * UINT32_MAX ? lim : 4ull * UINT32_MAX;
    pl->max_groups_x = UINT32_MAX / (lanes ? pl->wg : 16); // work-items along x
    return SSMAX_OK;
}
