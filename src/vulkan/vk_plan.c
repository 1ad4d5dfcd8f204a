/*
 * Vulkan's part of the plan (plan.c calls vk_plan once per call): the kernel and its tiles (an
 * override, a tuned entry, or the table by device class and vendor), what llvmpipe's loop limit
 * asks of the key splits, and the device's binding and dispatch limits.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vk_internal.h"

#define CDIV(a, b) (((a) + (b)-1) / (b))

/* Shared memory the plan's fused or P V kernel needs (the rows kernel: none; the lanes kernel:
 * the key groups' merge). */
static uint64_t shared_bytes(const struct attn_plan *pl)
{
    return ssmax_role_shared_bytes(pl, ROLE_FUSED);
}

/* The vendor and class a plan is made for: the device's, or SSMAX_VK_PLAN_AS=VENDOR (amd,
 * nvidia, intel, arm, qualcomm, imagination, apple: that vendor's discrete or integrated GPU), so
 * the kernels and tiles a GPU would get run, and are tested, on any device that can run them. */
struct plan_as {
    uint32_t vendor;
    int cpu;
    const char *what; // for the reasons: "the device" or "SSMAX_VK_PLAN_AS=amd"
};

static int plan_as(const struct vk_dev *d, struct plan_as *as)
{
    static const struct {
        const char *name;
        uint32_t vendor;
    } vendors[] = { { "amd", 0x1002 }, { "nvidia", 0x10de }, { "intel", 0x8086 },
                    { "arm", 0x13b5 }, { "qualcomm", 0x5143 }, { "imagination", 0x1010 },
                    { "apple", 0x106b } };
    const char *e = getenv("SSMAX_VK_PLAN_AS");
    *as = (struct plan_as){ d->ph->props.vendorID,
                            d->ph->props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU, "the device" };
    if (!e || !*e)
        return SSMAX_OK;
    for (size_t i = 0; i < SSMAX_ARRAY_LEN(vendors); i++)
        if (!strcmp(e, vendors[i].name)) {
            *as = (struct plan_as){ vendors[i].vendor, 0, "SSMAX_VK_PLAN_AS" };
            return SSMAX_OK;
        }
    return ssmax_set_error(d->base.ctx, SSMAX_ERR_INVALID_ARG,
                           "SSMAX_VK_PLAN_AS: '%s' is not amd, nvidia, intel, arm, qualcomm, "
                           "imagination or apple", e);
}

/* SSMAX_VK_SUBGROUPS=0: no kernel that uses subgroup operations. */
static int no_subgroups(void)
{
    const char *e = getenv("SSMAX_VK_SUBGROUPS");
    return e && !strcmp(e, "0");
}

/* Why the rows kernel (flash_rows.comp) cannot run at head dim D (into why), or 0 when it can: it
 * needs a subgroup shuffle in compute shaders, and the head dim must split evenly over the
 * subgroup's lanes. */
static int rows_refused(const struct vk_dev *d, uint32_t D, char *why, size_t n)
{
    uint32_t sg = d->ph->subgroup_size;
    if (d->ph->shuffle && sg >= 4 && sg <= 64 && D % sg == 0 && !no_subgroups())
        return 0;
    snprintf(why, n, "the rows kernel needs subgroup shuffles in compute shaders and head_dim %u a "
             "multiple of the subgroup size %u", D, sg);
    return 1;
}

/* Why the device cannot run the plan's tiles (into why), or 0 when it can. */
static int tiles_refused(const struct vk_dev *d, const struct attn_plan *pl, char *why, size_t n)
{
    const VkPhysicalDeviceLimits *lim = &d->ph->props.limits;
    const uint32_t inv = pl->kernel == KERNEL_ROWS    ? d->ph->subgroup_size
                         : pl->kernel == KERNEL_LANES ? pl->wg
                                                      : pl->br * pl->tpr;
    if (pl->kernel == KERNEL_ROWS && (pl->bc == 0 || MASK_CHUNK % pl->bc)) {
        snprintf(why, n, "the rows kernel takes %u keys a step; it needs a divisor of %u", pl->bc,
                 MASK_CHUNK);
        return 1;
    }
    if (shared_bytes(pl) <= lim->maxComputeSharedMemorySize &&
        inv <= lim->maxComputeWorkGroupInvocations && inv <= lim->maxComputeWorkGroupSize[0])
        return 0;
    snprintf(why, n, "tiles %u,%u,%u need %llu bytes of shared memory and %u invocations; the "
             "device has %u and %u", pl->br, pl->bc, pl->tpr, (unsigned long long)shared_bytes(pl),
             inv, lim->maxComputeSharedMemorySize, lim->maxComputeWorkGroupInvocations);
    return 1;
}

/* Asked-for tiles (ssmax_tiles_asked) into the plan. */
static void set_tiles(const struct vk_dev *d, const struct ssmax_tiles *t, struct attn_plan *pl)
{
    if (t->kernel == SSMAX_KERNEL_ROWS) {
        pl->kernel = KERNEL_ROWS;
        pl->br = d->ph->subgroup_size * t->rows, pl->bc = t->keys, pl->tpr = 4;
    } else {
        pl->kernel = KERNEL_TILES;
        pl->br = t->rows, pl->bc = t->keys, pl->tpr = t->lanes;
    }
}

/* The lanes kernel (flash_lanes.comp), the fused kernel for GPUs; 0 when the device cannot run
 * it (no subgroup shuffles, or subgroups narrower than a row's lanes: ARM Bifrost's 4 and 8, which
 * then take the shared-memory tiles from the table below).
 *
 * One shape serves every GPU vendor; the numbers are what AMD's compiler reports for it (RADV
 * null hardware, Mesa 22.3, `ssmax pipelines`; bench/results/), and they sit inside every other
 * vendor's published budget (NVIDIA: 64 registers a thread for full occupancy at 128-thread
 * blocks; Intel Xe: 128 registers a SIMD16 thread; Apple: 32-wide SIMD groups, 64 registers;
 * ARM Valhall and Qualcomm Adreno: 64 registers before occupancy halves):
 *   - lpr = 8 lanes a row (4 when D / 8 would be odd): D / 8 dimensions of the scaled query and
 *     of the output a lane (8 registers each at D 64, 16 at D 128) and 3 xor-shuffle stages a
 *     score (DPP moves on AMD);
 *   - prefill: 16 rows a workgroup (8 at D 256): 128 invocations, whole subgroups of 32 and 64,
 *     every lane on a row. BC = 4 keys a step at D <= 64, 2 at D <= 128, 1 above: the step's K
 *     and V registers (BC x D / 8) stay at 16 to 32. RDNA2 f16: 64 VGPRs at D 64 (16 waves a
 *     SIMD), 80 at D 128 (12); GCN5: 64 and 84 (4 and 3);
 *   - decode (fewer packed rows per KV head than that): exactly the rows there are, no padding,
 *     the keys split over key groups until the workgroup is a whole number of 64-lane subgroups
 *     (32 when the merge would not fit 16 KiB), merged once through shared memory; one key a step
 *     above D 64, so registers stay at 64: RDNA2 f16 D 128 with 4 query heads a KV head, 64
 *     VGPRs, 2.5 KiB shared, 16 waves a SIMD; GCN5 4 (ggml-vulkan's scalar kernel: 16 and 4). */
static int lanes_tiles(const struct vk_dev *d, const struct plan_as *as, struct attn_plan *pl)
{
    const uint32_t D = pl->p.head_dim, sg = d->ph->subgroup_size;
    const uint32_t lpr = D % 16 == 0 && D > 32 ? 8 : 4; // D / lpr even: output pairs per lane
    if (!d->ph->shuffle || sg < lpr || no_subgroups())
        return 0;
    const uint64_t rows = (uint64_t)pl->group * pl->p.q_len;
    const uint64_t budget = d->ph->props.limits.maxComputeSharedMemorySize / 2 < 16384
                                ? d->ph->props.limits.maxComputeSharedMemorySize / 2
                                : 16384;
    uint32_t br = D <= 128 ? 16 : 8, kg = 1, bc = D <= 64 ? 4 : D <= 128 ? 2 : 1;
    const char *why = "prefill";
    if (rows < br) {
        br = (uint32_t)rows;
        bc = D <= 64 ? 4 : 1;
        const uint32_t lanes = br * lpr;
        for (uint32_t unit = 64; unit >= 32; unit /= 2) {
            uint32_t wg = lanes;
            while (wg % unit)
                wg += lanes;
            kg = wg / lanes;
            if (wg <= 1024 && 4ull * (kg - 1) * br * (D + 2) <= budget)
                break;
            kg = 1;
        }
        why = "decode";
    }
    pl->kernel = KERNEL_LANES;
    pl->br = br, pl->bc = bc, pl->tpr = 4;
    pl->lpr = lpr, pl->kgroups = kg, pl->wg = kg * br * lpr;
    pl->lanes_shared = kg > 1 ? 4ull * (kg - 1) * br * (D + 2) : 12; // the key groups' merge
    ssmax_plan_why(pl, "lanes kernel (%s), %u rows x %u lanes x %u key groups, %u keys a step: a "
                   "GPU", why, br, lpr, kg, pl->bc);
    // AMD RDNA runs waves of 32 or 64: 64 for prefill (more rows share each K/V load, fewer
    // waves to schedule), 32 for decode (more waves in flight, the work of few rows spread
    // wide). Clamped to what the device offers (lavapipe: 8), and kept whole: the workgroup must
    // fit the device's subgroups per workgroup, and a row's lanes one subgroup.
    if (d->ph->sg_control && as->vendor == 0x1002) {
        uint32_t want = kg == 1 ? 64 : 32;
        want = want < d->ph->sg_min ? d->ph->sg_min : want > d->ph->sg_max ? d->ph->sg_max : want;
        if (want >= lpr && pl->wg % want == 0 &&
            (uint64_t)pl->wg <= (uint64_t)d->ph->sg_max_subgroups * want) {
            pl->subgroup = want;
            ssmax_plan_why(pl, "subgroups of %u", want);
        }
    }
    return 1;
}

/* The table by device class and vendor. */
static void default_tiles(const struct vk_dev *d, const struct plan_as *as, struct attn_plan *pl)
{
    const uint32_t D = pl->p.head_dim, sg = d->ph->subgroup_size;
    const int fused = pl->path != SSMAX_PATH_UNFUSED;
    const VkPhysicalDeviceLimits *lim = &d->ph->props.limits;
    char why[200];
    if (fused && !as->cpu && lanes_tiles(d, as, pl))
        return;
    if (fused && as->cpu && !rows_refused(d, D, why, sizeof(why))) {
        // CPU drivers: RL query rows per SIMD lane, everything in registers (flash_rows.comp).
        // On lavapipe every shared- or storage-memory read inside a loop is a per-lane loop with
        // a branch per word, which bounds the shared-memory tiles kernel. B1 H8 L1024, ms, with
        // K/V read 4 words at a time, and the first pipeline's compile time (uncached):
        //   D64:  tiles 32,48 273; rows BC,RL 4,2: 36; 2,3: 29 (1.5 s); 2,4: 30 (2.4 s)
        //   D128: tiles 16,32 683; rows 1,2: 81; 2,2: 90; 1,3: 66 (4.3 s); 1,4: 85 (8.2 s)
        //   D256: tiles 8,16 2384; rows 1,1: 259 (4.3 s); 1,2: 381 (10 s)
        pl->kernel = KERNEL_ROWS;
        pl->br = sg * (D <= 128 ? 3 : 1), pl->bc = D <= 64 ? 2 : 1, pl->tpr = 4;
        ssmax_plan_why(pl, "rows kernel, %u rows a lane, %u keys a step: a CPU driver with "
                       "subgroup shuffles", pl->br / sg, pl->bc);
        return;
    }
    // Fused: BR rows x BC keys over 16 invocations, each holding (BR/2) x (BC/8) scores and
    // (BR/2) x (D/8) outputs in registers. Sized so shared memory stays under 32 KiB.
    // (tpr is the unfused P V kernel's invocations per row.)
    // The GPU rows are starting points until measured on each vendor's hardware; `ssmax
    // bench --tune` stores a measured choice per device. CPU drivers without subgroup
    // shuffles take large register blocks (lavapipe, B1 H8 L1024 D64: 16,32 419 ms; 32,32
    // 292; 32,48 277).
    const uint32_t vendor = as->vendor;
    const int cpu = as->cpu;
    static const struct {
        uint32_t vendor; // 0: any vendor
        int cpu;         // -1: any device type
        uint32_t dmax;
        uint32_t br, bc;
        const char *what;
    } table[] = {
        { 0, 1, 64, 32, 48, "a CPU driver" }, { 0, 1, 128, 16, 32, "a CPU driver" },
        { 0, 1, 256, 8, 16, "a CPU driver" },
        // mobile GPUs (ARM Mali, Qualcomm Adreno, Imagination): few registers per invocation
        { 0x13b5, -1, 64, 8, 32, "a mobile GPU" }, { 0x13b5, -1, 256, 4, 16, "a mobile GPU" },
        { 0x5143, -1, 64, 8, 32, "a mobile GPU" }, { 0x5143, -1, 256, 4, 16, "a mobile GPU" },
        { 0x1010, -1, 64, 8, 32, "a mobile GPU" }, { 0x1010, -1, 256, 4, 16, "a mobile GPU" },
        // desktop GPUs (AMD, NVIDIA, Intel and the rest): the unfused P V kernel (16 rows x 4
        // invocations: 64, whole subgroups of 32 and 64) and the fused tiles kernel where the
        // lanes kernel cannot run; shared memory 10, 18 and 18 KiB
        { 0, 0, 64, 16, 32, "a desktop GPU" }, { 0, 0, 128, 16, 16, "a desktop GPU" },
        { 0, 0, 256, 16, 8, "a desktop GPU" },
    };
    pl->kernel = KERNEL_TILES;
    pl->br = 4, pl->bc = 16, pl->tpr = 4;
    const char *what = "any device";
    for (size_t i = 0; i < SSMAX_ARRAY_LEN(table); i++)
        if ((!table[i].vendor || table[i].vendor == vendor) &&
            (table[i].cpu < 0 || table[i].cpu == cpu) && D <= table[i].dmax) {
            pl->br = table[i].br, pl->bc = table[i].bc, what = table[i].what;
            break;
        }
    ssmax_plan_why(pl, "tiles %u,%u,%u: the table's for %s at head_dim %u (%s)", pl->br, pl->bc,
                   pl->tpr, what, D, as->what);
    if (cpu || fused) // GPUs' unfused P V kernel keeps its 64 invocations: whole subgroups
        ssmax_tiles_for_decode(pl);
    while (shared_bytes(pl) > lim->maxComputeSharedMemorySize && pl->bc > 8)
        pl->bc /= 2;
    while (shared_bytes(pl) > lim->maxComputeSharedMemorySize && pl->br > 1)
        pl->br /= 2;
}

/* The kernel and tiles: SSMAX_VK_TILES, else a tuned entry (ssmax bench --tune), else the table.
 * An override the device cannot run is an error; a tuned entry it refuses is dropped. */
static int choose_tiles(struct vk_dev *d, struct attn_plan *pl)
{
    const uint32_t D = pl->p.head_dim, sg = d->ph->subgroup_size;
    const int fused = pl->path != SSMAX_PATH_UNFUSED;
    struct ssmax_tiles t;
    char why[320];
    struct plan_as as;
    int src = plan_as(d, &as);
    if (src < 0)
        return src;
    src = ssmax_tiles_asked(&d->base, "SSMAX_VK_TILES", D, fused, &t);
    if (src < 0)
        return src;
    if (src != TILES_DEFAULT) {
        const char *name = src == TILES_OVERRIDE ? "SSMAX_VK_TILES" : "tuned";
        if (t.kernel == SSMAX_KERNEL_ROWS && rows_refused(d, D, why, sizeof(why))) {
            if (src == TILES_OVERRIDE)
                return ssmax_set_error(d->base.ctx, SSMAX_ERR_UNSUPPORTED, "SSMAX_VK_TILES: %s",
                                       why);
            if ((src = ssmax_tune_refused(&d->base, D, why)) < 0)
                return src;
        } else {
            set_tiles(d, &t, pl);
            if (src == TILES_TUNED && tiles_refused(d, pl, why, sizeof(why)) &&
                (src = ssmax_tune_refused(&d->base, D, why)) < 0)
                return src;
            if (src != TILES_DEFAULT && pl->kernel == KERNEL_ROWS)
                ssmax_plan_why(pl, "rows kernel, %u rows a lane, %u keys a step: %s", t.rows,
                               t.keys, name);
            else if (src != TILES_DEFAULT)
                ssmax_plan_why(pl, "tiles %u,%u,%u: %s", pl->br, pl->bc, pl->tpr, name);
        }
    }
    if (src == TILES_DEFAULT)
        default_tiles(d, &as, pl);
    // Decode on the rows kernel (table or tuned): no more rows per lane than there are rows.
    const uint64_t rows = (uint64_t)pl->group * pl->p.q_len;
    if (pl->kernel == KERNEL_ROWS && src != TILES_OVERRIDE && pl->br > sg && pl->br - sg >= rows) {
        while (pl->br > sg && (pl->br - sg) >= rows)
            pl->br -= sg;
        ssmax_plan_why(pl, "%llu packed rows a KV head, so %u a lane", (unsigned long long)rows,
                       pl->br / sg);
    }
    if (tiles_refused(d, pl, why, sizeof(why)))
        return ssmax_set_error(d->base.ctx, SSMAX_ERR_LIMIT_EXCEEDED, "head_dim %u: %s", D, why);
    return SSMAX_OK;
}

struct vk_bind vk_bind_of(const struct vk_dev *d, uint64_t off, uint64_t bytes, uint32_t esz)
{
    VkDeviceSize a = d->ph->props.limits.minStorageBufferOffsetAlignment;
    if (!a)
        a = 1;
    struct vk_bind b;
    b.base = off - off % a;
    b.elem_off = (uint32_t)((off - b.base) / esz);
    b.range = bytes + (off - b.base);
    return b;
}

/* Loop iterations one invocation spends per key tile (fused, pv) and once (Q staging), matching
 * the loop structure of flash_attn.comp and pv.comp. */
#define LOOP_BUDGET 60000u /* llvmpipe stops loops after 65535 iterations; keep a margin */

static uint32_t max_tiles_per_wg(const struct vk_dev *d, const struct attn_plan *pl)
{
    if (!d->ph->loop_limited)
        return UINT32_MAX;
    if (pl->kernel == KERNEL_ROWS) { // one loop iteration per step of BC keys, the rest unrolled,
        // and one more per chunk of MASK_CHUNK keys (flash_rows.comp, walk)
        const uint32_t steps = MASK_CHUNK / pl->bc;
        return (LOOP_BUDGET - 8) / (steps + 1) * steps;
    }
    if (pl->kernel == KERNEL_LANES) // the same, a key group taking every kgroups-th step
        return (LOOP_BUDGET - 8 - 2 * pl->kgroups) * pl->kgroups;
    // flash_attn.comp per tile (16 invocations): K and V staging BC*D/64 each, scores D, row max
    // BC/4 (for BR/16 rows), P V BC, plus the tile loop; Q staging and the output once.
    const uint32_t D = pl->p.head_dim, br = pl->br, bc = pl->bc;
    uint32_t per = 2 * CDIV(bc * D, 64) + D + CDIV(br, 16) * CDIV(bc, 4) + bc + 2;
    uint32_t once = CDIV(br * D, 16) + CDIV(br * D, 32) + 8;
    return (LOOP_BUDGET - once) / per;
}

/* The path and split count the device can run. On llvmpipe a workgroup may walk only so many key
 * tiles; AUTO plans split the keys further, an explicit choice that cannot run is an error that
 * says so. */
static int loop_limit(struct vk_dev *d, struct attn_plan *pl)
{
    const struct ssmax_attn_params *p = &pl->p;
    if (!d->ph->loop_limited)
        return SSMAX_OK;
    if (pl->path == SSMAX_PATH_UNFUSED) {
        uint32_t d4 = p->head_dim / 4, wg = pl->br * pl->tpr;
        uint64_t per = CDIV(pl->br * pl->bc, wg) + CDIV(pl->bc * d4, wg) + CDIV(pl->bc, 4) + 1;
        if (CDIV((uint64_t)p->kv_len, pl->bc) * per + 3 * CDIV(p->kv_len, 256) > LOOP_BUDGET)
            return ssmax_set_error(d->base.ctx, SSMAX_ERR_LIMIT_EXCEEDED,
                                   "kv_len: %u keys exceed what one llvmpipe invocation can loop "
                                   "over on the unfused path (65535 loop iterations in all); use "
                                   "the fused or split-kv path", p->kv_len);
        return SSMAX_OK;
    }
    const uint64_t cap_keys = (uint64_t)max_tiles_per_wg(d, pl) * pl->bc;
    const uint32_t need = (uint32_t)CDIV((uint64_t)p->kv_len, cap_keys);
    if (need <= pl->splits)
        return SSMAX_OK;
    if (p->path == SSMAX_PATH_AUTO && !p->kv_splits) {
        pl->path = SSMAX_PATH_SPLIT_KV;
        pl->splits = need;
        ssmax_plan_why(pl, "split-kv, %u splits: %u keys a workgroup exceed llvmpipe's loop limit "
                       "(about %llu keys)", need, p->kv_len, (unsigned long long)cap_keys);
        return SSMAX_OK;
    }
    return ssmax_set_error(d->base.ctx, SSMAX_ERR_UNSUPPORTED,
                           "path: %s over %u keys needs at least %u key splits on llvmpipe (one "
                           "invocation may loop 65535 times in all, about %llu keys here); use "
                           "path auto or split-kv with kv_splits >= %u",
                           p->path == SSMAX_PATH_FUSED ? "fused" : "split-kv", p->kv_len, need,
                           (unsigned long long)cap_keys, need);
}

/* The fused kernel's shader and options. */
static void choose_shader(const struct vk_dev *d, struct attn_plan *pl)
{
    const int f16 = pl->p.dtype == SSMAX_F16;
    const uint32_t sg = d->ph->subgroup_size;
    if (pl->path == SSMAX_PATH_UNFUSED) {
        pl->kernel_name = "qk+softmax+pv";
        return;
    }
    if (pl->kernel == KERNEL_LANES) {
        // K and V 4 words a read (WIDE) when every such read is aligned (offsets and strides)
        const uint32_t esz = pl->elem_size;
        pl->bk_kernel = f16 ? VK_SH_FLASHL_F16 : VK_SH_FLASHL_F32;
        pl->bk_flags = (pl->p.head_dim / pl->lpr) % 4 == 0 &&
                       vk_bind_of(d, pl->k_off, pl->k_bytes, esz).elem_off % 4 == 0 &&
                       vk_bind_of(d, pl->v_off, pl->v_bytes, esz).elem_off % 4 == 0 &&
                       pl->kv_strides4;
        pl->kernel_name = "flash_lanes";
        return;
    }
    if (pl->kernel == KERNEL_ROWS) {
        // K and V 4 words a read (WIDE) when every such read is aligned (offsets and strides)
        const uint32_t esz = pl->elem_size;
        pl->bk_kernel = f16 ? VK_SH_FLASHR_F16 : VK_SH_FLASHR_F32;
        pl->bk_flags = (pl->p.head_dim / sg) % 4 == 0 &&
                       vk_bind_of(d, pl->k_off, pl->k_bytes, esz).elem_off % 4 == 0 &&
                       vk_bind_of(d, pl->v_off, pl->v_bytes, esz).elem_off % 4 == 0 &&
                       pl->kv_strides4;
        pl->kernel_name = "flash_rows";
        return;
    }
    // tiles kernel: the row max by subgroup shuffles where subgroups hold whole 8-lane clusters
    if (d->ph->shuffle && sg >= 8 && !(sg & (sg - 1)) && !no_subgroups()) {
        pl->bk_kernel = f16 ? VK_SH_FLASHS_F16 : VK_SH_FLASHS_F32;
        pl->kernel_name = "flash_attn (subgroups)";
    } else {
        pl->bk_kernel = f16 ? VK_SH_FLASH_F16 : VK_SH_FLASH_F32;
        pl->kernel_name = "flash_attn";
    }
}

int vk_plan(struct ssmax_dev *base, struct attn_plan *pl)
{
    struct vk_dev *d = (struct vk_dev *)base;
    const struct ssmax_attn_params *p = &pl->p;
    const VkPhysicalDeviceLimits *lim = &d->ph->props.limits;
    int r = choose_tiles(d, pl);
    if (r < 0)
        return r;
    // A binding starts at the offset rounded down to minStorageBufferOffsetAlignment (see
    // vk_bind_of) and must cover the tensor: at most maxStorageBufferRange bytes in all. Planned
    // without buffers, offsets are 0 and the tensor alone is compared. probs is never bound (the
    // scores scratch is copied into it).
    const uint64_t maxr = lim->maxStorageBufferRange;
    pl->fit = (struct plan_fit){ maxr, "storage buffer range (maxStorageBufferRange)",
                                 lim->minStorageBufferOffsetAlignment,
                                 "minStorageBufferOffsetAlignment", 0 };
    if ((r = ssmax_plan_fit(base->ctx, pl, &pl->fit)) < 0)
        return r;
    if ((r = loop_limit(d, pl)) < 0)
        return r;
    const uint32_t *wg = lim->maxComputeWorkGroupCount;
    if (p->kv_heads > wg[2] || (uint64_t)p->batch * pl->splits > wg[1] ||
        (pl->path == SSMAX_PATH_UNFUSED && (p->kv_len + 15) / 16 > wg[0]))
        return ssmax_set_error(base->ctx, SSMAX_ERR_LIMIT_EXCEEDED,
                               "kv_heads/batch/kv_len: %u, %u x %u splits, %u exceed the device's "
                               "dispatch limits (%u z, %u y, %u x)", p->kv_heads, p->batch,
                               pl->splits, p->kv_len, wg[2], wg[1], wg[0]);
    // mask_count: a workgroup per mask row, (row, head, batch item)
    if ((pl->flags & FL_MASK_HEADS) && p->q_heads > wg[1])
        return ssmax_set_error(base->ctx, SSMAX_ERR_LIMIT_EXCEEDED,
                               "q_heads: %u exceeds the device's dispatch limit %u (a per-head mask "
                               "counts each head's rows in one dispatch)", p->q_heads, wg[1]);
    choose_shader(d, pl);
    pl->scratch_max = maxr;
    pl->max_groups_x = wg[0];
    pl->scratch_align = (uint32_t)lim->minStorageBufferOffsetAlignment;
    return SSMAX_OK;
}
