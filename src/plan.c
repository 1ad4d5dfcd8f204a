/*
 * The planner: one attention call's plan, made once (API -> validate -> plan -> backend -> kernel).
 *   1. validation of the parameters and buffers (validate.c, then the ranges here);
 *   2. the path and split count from the shape and the device's compute units;
 *   3. the backend's plan entry: kernel and tiles, device limits, and where a driver needs it a
 *      further split of the keys;
 *   4. scratch sizes and how the work is cut into submissions, from the tiles and the limits the
 *      backend stated: the same arithmetic for every backend.
 * Each choice leaves its reason in plan->why (ssmax_last_plan, `ssmax run -v`).
 */
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "backend.h"
#include "internal.h"
#include "names.h"

void ssmax_plan_why(struct attn_plan *pl, const char *fmt, ...)
{
    size_t n = strlen(pl->why);
    if (n + 3 >= sizeof(pl->why))
        return;
    if (n)
        n += (size_t)snprintf(pl->why + n, sizeof(pl->why) - n, "; ");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pl->why + n, sizeof(pl->why) - n, fmt, ap);
    va_end(ap);
}

void ssmax_plan_free(struct ssmax_context *ctx, struct attn_plan *pl)
{
    if (pl && pl->own) {
        ssmax_free(ctx, pl->own);
        pl->own = NULL;
        pl->coef = NULL;
    }
}

static int mul_ok(uint64_t *acc, uint64_t x)
{
    return !__builtin_mul_overflow(*acc, x, acc);
}

static int check_buf(ssmax_context *ctx, const ssmax_buffer *b, size_t off, uint64_t bytes,
                     const char *name)
{
    if (!b)
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG, "bufs->%s: must not be NULL", name);
    if (off % 4)
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG,
                               "bufs->%s_off: %zu is not a multiple of 4 bytes", name, off);
    if (off > b->size || bytes > b->size - off)
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG,
                               "bufs->%s: needs %llu bytes at offset %zu, buffer has %zu", name,
                               (unsigned long long)bytes, off, b->size);
    return SSMAX_OK;
}

/* Outputs are written while inputs are still being read (and, on the CPU device, row by row), so
 * an output that shares bytes with an input or with another output gives wrong results: rejected.
 * Inputs may share bytes with each other (K and V in one tensor, say). */
static int check_overlap(ssmax_context *ctx, const struct ssmax_attn_buffers *b,
                         const struct attn_plan *pl)
{
    const struct {
        const char *name;
        const ssmax_buffer *buf;
        uint64_t off, bytes;
        int out;
    } t[] = {
        { "o", b->o, b->o_off, pl->o_bytes, 1 },
        { "lse", b->lse, b->lse_off, pl->lse_bytes, 1 },
        { "probs", b->probs, b->probs_off, pl->probs_bytes, 1 },
        { "q", b->q, b->q_off, pl->q_bytes, 0 },
        { "k", b->k, b->k_off, pl->k_bytes, 0 },
        { "v", b->v, b->v_off, pl->v_bytes, 0 },
        { "mask", b->mask, b->mask_off, pl->mask_bytes, 0 },
        { "scratch", b->scratch, b->scratch_off, pl->app_scratch_bytes, 1 },
    };
    for (size_t i = 0; i < SSMAX_ARRAY_LEN(t); i++) {
        if (!t[i].out || !t[i].buf)
            continue;
        for (size_t j = 0; j < SSMAX_ARRAY_LEN(t); j++) {
            // The same memory: one buffer, or two imported ranges of one application buffer.
            if (j == i || (t[j].out && j < i) || !t[j].buf || t[j].buf->bk != t[i].buf->bk)
                continue;
            uint64_t a0 = t[i].buf->base + t[i].off, a1 = a0 + t[i].bytes;
            uint64_t b0 = t[j].buf->base + t[j].off, b1 = b0 + t[j].bytes;
            if (a0 < b1 && b0 < a1)
                return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG,
                                       "bufs->%s: bytes [%llu, %llu) overlap bufs->%s's [%llu, "
                                       "%llu) in the same buffer (an output may not alias an "
                                       "input or another output)",
                                       t[i].name, (unsigned long long)a0, (unsigned long long)a1,
                                       t[j].name, (unsigned long long)b0, (unsigned long long)b1);
        }
    }
    return SSMAX_OK;
}

/* The buffers of one execution against the plan's tensors: sizes at their offsets, reserved
 * bytes, overlaps; then their offsets go into the plan. */
static int plan_buffers(ssmax_context *ctx, const struct ssmax_attn_buffers *b,
                        struct attn_plan *pl)
{
    int r;
    if ((r = check_buf(ctx, b->q, b->q_off, pl->q_bytes, "q")) < 0 ||
        (r = check_buf(ctx, b->k, b->k_off, pl->k_bytes, "k")) < 0 ||
        (r = check_buf(ctx, b->v, b->v_off, pl->v_bytes, "v")) < 0 ||
        (r = check_buf(ctx, b->o, b->o_off, pl->o_bytes, "o")) < 0 ||
        (b->lse && (r = check_buf(ctx, b->lse, b->lse_off, pl->lse_bytes, "lse")) < 0) ||
        (b->probs && (r = check_buf(ctx, b->probs, b->probs_off, pl->probs_bytes, "probs")) < 0))
        return r;
    if (pl->p.mask && (r = check_buf(ctx, b->mask, b->mask_off, pl->mask_bytes, "mask")) < 0)
        return r;
    // GPU kernels read an f16 mask in 4-byte words: its last word must lie in the buffer. The
    // library's own buffers are whole words; an application's may end on the mask's last half.
    if (pl->p.mask && b->mask->imported && b->mask_off + ((pl->mask_bytes + 3) & ~3ull) > b->mask->size)
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG,
                               "bufs->mask: its last f16 entry ends 2 bytes before the end of the "
                               "imported buffer (%zu bytes); the kernels read the mask in 4-byte "
                               "words: import 2 bytes more", b->mask->size);
    if (!pl->p.mask && b->mask)
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG,
                               "bufs->mask: set, but params mask is SSMAX_MASK_NONE");
    for (size_t i = 0; i < sizeof(b->reserved); i++)
        if (b->reserved[i])
            return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG, "bufs->reserved: must be zero");
    if (b->scratch) { // the application's scratch for a recorded execution (ssmax.h)
        if (!pl->app_scratch_bytes)
            return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG,
                                   "bufs->scratch: the %s device takes no application scratch",
                                   ctx->dev->fns->name);
        if ((r = check_buf(ctx, b->scratch, b->scratch_off, pl->app_scratch_bytes, "scratch")) < 0)
            return r;
        if ((b->scratch->base + b->scratch_off) % pl->scratch_align)
            return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG,
                                   "bufs->scratch_off: %zu (%llu from the start of the device "
                                   "buffer) is not a multiple of %u (ssmax_plan_info.scratch_align)",
                                   b->scratch_off,
                                   (unsigned long long)(b->scratch->base + b->scratch_off),
                                   pl->scratch_align);
    }
    if ((r = check_overlap(ctx, b, pl)) < 0)
        return r;
    // Offsets in the backend objects (an imported range starts at its base).
    pl->q_off = b->q->base + b->q_off, pl->k_off = b->k->base + b->k_off;
    pl->v_off = b->v->base + b->v_off, pl->o_off = b->o->base + b->o_off;
    pl->lse_off = b->lse ? b->lse->base + b->lse_off : 0;
    pl->probs_off = b->probs ? b->probs->base + b->probs_off : 0;
    pl->mask_off = b->mask ? b->mask->base + b->mask_off : 0;
    return SSMAX_OK;
}

/* The plan's own block (pl->own): the coefficients (zeroed, room for the strides block and every
 * coefficient word), then copies of p's per-head and per-batch arrays, which pl->p points to from
 * then on: a plan object outlives the caller's arrays. With a (an execution's arguments), the
 * per-batch arrays are a's and the coefficients a copy of pl's. Fills the per-batch words from
 * q_pos as given (< 0: each item's default); with per-batch arrays, pl->p.q_positions then holds
 * every item's position. */
static int plan_arrays(ssmax_context *ctx, struct attn_plan *pl, const struct ssmax_attn_params *p,
                       const struct ssmax_exec_args *a, int64_t q_pos)
{
    const uint32_t Hq = p->q_heads, B = p->batch;
    const uint64_t coef_bytes = 4ull * (STRIDE_WORDS + 3ull * Hq + 2ull * B);
    const uint32_t *kv_lens = a ? a->kv_lens : p->kv_lens;
    const int64_t *q_positions = a ? a->q_positions : p->q_positions;
    const size_t bytes = 8ull * B + coef_bytes + 12ull * Hq + 4ull * B;
    char *own = ssmax_calloc(ctx, 1, bytes);
    if (!own)
        return ssmax_set_error(ctx, SSMAX_ERR_OUT_OF_HOST_MEMORY, "plan: out of host memory");
    int64_t *qps = (int64_t *)(void *)own;
    float *coef = (float *)(void *)(own + 8ull * B);
    float *s = coef + coef_bytes / 4, *bb = s + Hq, *sinks = bb + Hq;
    uint32_t *kvl = (uint32_t *)(void *)(sinks + Hq);
    if (a)
        memcpy(coef, pl->coef, coef_bytes); // the plan's, for the execution's own words
    if (p->s)
        memcpy(s, p->s, 4ull * Hq), pl->p.s = s;
    if (p->b)
        memcpy(bb, p->b, 4ull * Hq), pl->p.b = bb;
    if (p->sinks)
        memcpy(sinks, p->sinks, 4ull * Hq), pl->p.sinks = sinks;
    pl->p.kv_lens = kv_lens ? memcpy(kvl, kv_lens, 4ull * B) : NULL;
    pl->p.q_positions = NULL;
    if (kv_lens || q_positions) {
        struct ssmax_attn_params t = pl->p;
        t.q_pos = q_pos;
        t.q_positions = q_positions;
        for (uint32_t i = 0; i < B; i++)
            qps[i] = (int64_t)ssmax_seq_pos(&t, i);
        pl->p.q_positions = qps;
    }
    pl->own = own;
    pl->coef = coef;
    pl->coef_bytes = coef_bytes;
    // Per-batch keys and positions (FL_SEQ when any item differs from the call's values).
    uint32_t *w = (uint32_t *)(void *)(coef + STRIDE_WORDS + 3ull * Hq);
    pl->flags &= ~FL_SEQ;
    for (uint32_t i = 0; i < B; i++) {
        w[i] = pl->p.kv_lens ? pl->p.kv_lens[i] : pl->p.kv_len;
        w[B + i] = (uint32_t)ssmax_seq_pos(&pl->p, i);
        if (w[i] != pl->p.kv_len || w[B + i] != pl->q_pos)
            pl->flags |= FL_SEQ;
    }
    return SSMAX_OK;
}

/* The problem part of the plan: validated parameters and buffers, sizes, factor coefficients. */
static int plan_problem(ssmax_context *ctx, const struct ssmax_attn_params *p,
                        const struct ssmax_attn_buffers *b, struct attn_plan *pl)
{
    char msg[512];
    int r = ssmax_validate_params(p, msg, sizeof(msg));
    if (r < 0)
        return ssmax_set_error(ctx, r, "%s", msg);
    pl->p = *p;
    pl->group = p->q_heads / p->kv_heads;
    pl->elem_size = p->dtype == SSMAX_F16 ? 2 : 4;
    if (p->q_pos >= 0)
        pl->q_pos = (uint32_t)p->q_pos;
    else
        pl->q_pos = p->kv_len >= p->q_len ? p->kv_len - p->q_len : 0;
    pl->p.q_pos = pl->q_pos;
    if (pl->p.scale == 0)
        pl->p.scale = (float)(1.0 / sqrt((double)p->head_dim));
    pl->rows = (uint64_t)p->batch * p->q_heads * p->q_len;
    // Strided extents (dense: the tensors' sizes); O's rows never overlap (validate.c).
    uint64_t ext[4];
    ssmax_resolve_strides(p, pl->strides, ext);
    pl->q_bytes = ext[0], pl->k_bytes = ext[1], pl->v_bytes = ext[2], pl->o_bytes = ext[3];
    pl->lse_bytes = pl->rows * 4;
    if (p->mask) { // its strided extent (validate.c bounds it)
        uint64_t ms[3];
        ssmax_mask_layout(p, ms, &pl->mask_bytes);
        pl->mask_esz = p->mask_dtype == SSMAX_F16 ? 2 : 4;
    }
    if (b) {
        pl->want_lse = b->lse != NULL;
        pl->want_probs = b->probs != NULL;
    }
    if (pl->want_probs) {
        uint64_t pb = pl->rows;
        if (!mul_ok(&pb, p->kv_len) || !mul_ok(&pb, 4) || pb > SIZE_MAX / 2)
            return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG,
                                   "bufs->probs: batch*q_heads*q_len*kv_len overflows");
        pl->probs_bytes = pb;
    }
    if (b && (r = plan_buffers(ctx, b, pl)) < 0)
        return r;
    if (pl->want_probs && p->path != SSMAX_PATH_UNFUSED && p->path != SSMAX_PATH_AUTO)
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG,
                               "%s: attention weights need path unfused or auto",
                               b ? "bufs->probs" : "flags: SSMAX_PLAN_PROBS");

    if ((r = plan_arrays(ctx, pl, p, NULL, p->q_pos)) < 0)
        return r;
    float *cbuf = pl->coef;
    // Element strides; a dimension of one index has stride 0, so every stride the kernels
    // multiply by a nonzero index is within the tensor's extent, which ssmax_plan_fit bounds.
    struct attn_strides es;
    uint32_t *ew = (uint32_t *)&es;
    const uint64_t counts[4][3] = { { p->batch, p->q_heads, p->q_len },
                                    { p->batch, p->kv_heads, p->kv_len },
                                    { p->batch, p->kv_heads, p->kv_len },
                                    { p->batch, p->q_heads, p->q_len } };
    pl->kv_strides4 = 1;
    for (int t = 0; t < 4; t++)
        for (int d = 0; d < 3; d++) {
            uint64_t x = counts[t][d] > 1 ? pl->strides[t][d] / pl->elem_size : 0;
            ew[3 * t + d] = (uint32_t)x;
            if ((t == 1 || t == 2) && x % 4)
                pl->kv_strides4 = 0;
        }
    if (p->mask) {
        uint64_t ms[3], mext;
        ssmax_mask_layout(p, ms, &mext);
        es.m_sb = (uint32_t)(ms[0] / pl->mask_esz);
        es.m_sh = (uint32_t)(ms[1] / pl->mask_esz);
        es.m_sr = (uint32_t)(ms[2] / pl->mask_esz);
        const uint64_t hm = p->mask == SSMAX_MASK_BH_LQ_LK ? p->q_heads : 1;
        pl->mask_rows = (uint64_t)p->batch * hm * p->q_len;
        const int summary = ctx->dev && ctx->dev->fns->mask_summary;
        pl->nvis_bytes = 4 * pl->mask_rows * (1 + (summary ? MASK_WORDS((uint64_t)p->kv_len) : 0));
        pl->flags |= FL_MASK | (p->mask_dtype == SSMAX_F16 ? FL_MASK_F16 : 0) |
                     (p->mask == SSMAX_MASK_BH_LQ_LK ? FL_MASK_HEADS : 0);
    }
    memcpy(cbuf, &es, sizeof(es));
    // Factor coefficients: fac = max(lo, a_h * ln(x) + b_h), already times the scale.
    float *coef = cbuf + STRIDE_WORDS;
    double sc = pl->p.scale;
    pl->lo = -FLT_MAX;
    for (uint32_t h = 0; h < p->q_heads; h++) {
        double s = p->s ? p->s[h] : p->s_all, bb = p->b ? p->b[h] : p->b_all, a = 0, o = sc;
        switch (p->mode) {
        case SSMAX_MODE_SOFTMAX: break;
        case SSMAX_MODE_SSMAX: a = s * sc, o = 0; break;
        case SSMAX_MODE_SSMAX_BIAS: a = s * sc, o = bb * sc; break;
        case SSMAX_MODE_LOGN: a = sc / log((double)p->train_len), o = 0; break;
        case SSMAX_MODE_FLOOR_LOG: a = sc * p->floor_beta, o = sc; break;
        }
        coef[2 * h] = (float)a;
        coef[2 * h + 1] = (float)o;
        coef[2 * p->q_heads + h] = p->sinks ? p->sinks[h] : 0.0f;
    }
    if (p->sinks)
        pl->flags |= FL_SINKS;
    if (p->mode == SSMAX_MODE_LOGN)
        pl->lo = (float)sc;
    pl->x_floor = p->mode == SSMAX_MODE_FLOOR_LOG;
    return SSMAX_OK;
}

/* The path and split count from the shape and the device's compute units. */
static void plan_path(const struct ssmax_dev *dev, struct attn_plan *pl)
{
    const struct ssmax_attn_params *p = &pl->p;
    const uint32_t cu = dev->info.compute_units ? dev->info.compute_units : 16;
    enum ssmax_path path = p->path;
    uint32_t splits = p->kv_splits;
    if (pl->want_probs) {
        path = SSMAX_PATH_UNFUSED;
        ssmax_plan_why(pl, "path unfused: the attention weights were asked for");
    } else if (path != SSMAX_PATH_AUTO) {
        ssmax_plan_why(pl, "path %s: asked for", ssmax_path_name(path));
    } else if (splits > 1) {
        path = SSMAX_PATH_SPLIT_KV;
        ssmax_plan_why(pl, "path split-kv: kv_splits %u asked for", splits);
    } else {
        path = SSMAX_PATH_FUSED;
        uint64_t rows = (uint64_t)pl->group * p->q_len;
        uint64_t groups = (uint64_t)p->batch * p->kv_heads * ((rows + 15) / 16);
        if (!splits && rows <= 64 && p->kv_len >= 1024 && groups < 2ull * cu) {
            uint64_t want = (2ull * cu + groups - 1) / groups;
            uint64_t maxs = p->kv_len / 256;
            if (want > maxs)
                want = maxs;
            if (want > 64)
                want = 64;
            if (want >= 2) {
                path = SSMAX_PATH_SPLIT_KV;
                splits = (uint32_t)want;
                ssmax_plan_why(pl, "path split-kv, %u splits: %llu blocks of up to 16 packed rows "
                               "would leave most of %u compute units idle", splits,
                               (unsigned long long)groups, cu);
            }
        }
        if (path == SSMAX_PATH_FUSED)
            ssmax_plan_why(pl, "path fused: %llu blocks of up to 16 packed rows for %u compute units",
                           (unsigned long long)groups, cu);
    }
    // Very long rows: split so no workgroup walks more than 64k keys (work per workgroup, and
    // the loop limit of CPU drivers), whatever the parallelism heuristics said. Accuracy does not
    // depend on it: the kernels sum each tile apart and fold it in, and forced paths run unsplit.
    if (p->path == SSMAX_PATH_AUTO && !p->kv_splits && path != SSMAX_PATH_UNFUSED &&
        p->kv_len > 65536) {
        uint32_t need = (p->kv_len + 65535) / 65536;
        if (need > 256)
            need = 256;
        if (path != SSMAX_PATH_SPLIT_KV || splits < need) {
            path = SSMAX_PATH_SPLIT_KV;
            splits = need;
            ssmax_plan_why(pl, "split-kv, %u splits: %u keys, at most 65536 a workgroup", splits,
                           p->kv_len);
        }
    }
    if (path == SSMAX_PATH_SPLIT_KV && !splits) {
        splits = p->kv_len / 256 < 2 * cu ? p->kv_len / 256 : 2 * cu;
        if (splits > 64)
            splits = 64;
        if (splits < 2)
            splits = p->kv_len >= 2 ? 2 : 1;
        ssmax_plan_why(pl, "%u splits: two per compute unit, 256 keys or more each", splits);
    }
    pl->path = path;
    pl->splits = path == SSMAX_PATH_SPLIT_KV ? splits : 1;
}

#define CDIV(a, b) (((a) + (b)-1) / (b))

/* Scratch sizes and submissions from the tiles and the device limits the backend stated. */
static int plan_work(ssmax_context *ctx, struct attn_plan *pl, int exec)
{
    const struct ssmax_attn_params *p = &pl->p;
    const uint32_t D = p->head_dim;
    const uint64_t cap = ctx->params.max_work_per_submit ? ctx->params.max_work_per_submit
                                                         : SSMAX_DEFAULT_MAX_WORK;
    pl->split_len = p->kv_len;
    pl->nsplit = 1;
    pl->submissions = 1;
    if (pl->path != SSMAX_PATH_UNFUSED) {
        if (pl->path == SSMAX_PATH_SPLIT_KV) {
            pl->split_len = CDIV(p->kv_len, pl->splits);
            pl->nsplit = CDIV(p->kv_len, pl->split_len);
            pl->scr0_bytes = (uint64_t)pl->nsplit * pl->rows * D * 4;
            pl->scr1_bytes = (uint64_t)pl->nsplit * pl->rows * 8;
            if (pl->scr0_bytes > pl->scratch_max)
                return ssmax_set_error(ctx, SSMAX_ERR_LIMIT_EXCEEDED,
                                       "kv_splits: %u splits of %llu rows x %u need %llu bytes of "
                                       "scratch, over the device's %llu for one buffer",
                                       pl->splits, (unsigned long long)pl->rows, D,
                                       (unsigned long long)pl->scr0_bytes,
                                       (unsigned long long)pl->scratch_max);
        }
        // Cut the launch so one submission carries at most max_work_per_submit multiply-adds
        // (GPU watchdogs). Results do not change.
        pl->blocks = (uint32_t)CDIV((uint64_t)pl->group * p->q_len, pl->br);
        uint64_t per_block = 2ull * pl->br * p->kv_len * D * p->kv_heads * p->batch;
        uint64_t chunk = cap / per_block ? cap / per_block : 1;
        if (chunk > pl->max_groups_x)
            chunk = pl->max_groups_x;
        pl->blocks_per_sub = (uint32_t)(chunk < pl->blocks ? chunk : pl->blocks);
        pl->submissions = CDIV(pl->blocks, pl->blocks_per_sub);
    } else {
        // The scores of a chunk of (batch, head) pairs, or of a chunk of one pair's query rows,
        // in one scratch buffer of at most 256 MiB.
        if ((uint64_t)p->kv_len * 4 * 16 > pl->scratch_max)
            return ssmax_set_error(ctx, SSMAX_ERR_LIMIT_EXCEEDED,
                                   "kv_len: %u keys are too many for the unfused path's scores on "
                                   "this device (%llu bytes for one buffer)", p->kv_len,
                                   (unsigned long long)pl->scratch_max);
        const uint64_t limit = pl->scratch_max < (256ull << 20) ? pl->scratch_max : 256ull << 20;
        const uint64_t nbh = (uint64_t)p->batch * p->q_heads;
        const uint64_t per_bh = (uint64_t)p->q_len * p->kv_len * 4;
        // An execution of a plan keeps the plan's chunks: its scores (fewer keys) then fit the
        // plan's scratch, which a chunking worked out anew for fewer keys could outgrow.
        if (exec)
            goto chunks;
        pl->bh_per = 1;
        pl->i_count = p->q_len;
        if (per_bh <= limit) {
            uint64_t n = limit / per_bh;
            if (n > nbh)
                n = nbh;
            pl->bh_per = (uint32_t)(n < 65535 ? n : 65535); // a dispatch dimension
        } else {
            uint64_t n = limit / ((uint64_t)p->kv_len * 4);
            pl->i_count = (uint32_t)(n ? n : 1);
        }
        // A chunk carries at most max_work_per_submit multiply-adds where one query row allows.
        const uint64_t per_row = 2ull * p->kv_len * D;
        if ((uint64_t)pl->bh_per * pl->i_count * per_row > cap) {
            if (pl->i_count == p->q_len && per_row * p->q_len <= cap) {
                pl->bh_per = (uint32_t)(cap / (per_row * p->q_len));
            } else {
                uint64_t n = cap / per_row;
                pl->bh_per = 1;
                pl->i_count = n < 1 ? 1 : n < pl->i_count ? (uint32_t)n : pl->i_count;
            }
        }
    chunks:
        pl->scr0_bytes = (uint64_t)pl->bh_per * pl->i_count * p->kv_len * 4;
        pl->nchunks = (uint32_t)(CDIV(nbh, pl->bh_per) * CDIV(p->q_len, pl->i_count));
        uint64_t per_chunk = 2ull * pl->bh_per * pl->i_count * p->kv_len * D;
        uint64_t k = CDIV(cap, per_chunk);
        pl->chunks_per_sub = (uint32_t)(k < pl->nchunks ? k : pl->nchunks);
        pl->submissions = CDIV(pl->nchunks, pl->chunks_per_sub);
        if (pl->nchunks > 1)
            ssmax_plan_why(pl, "scores in %u chunks of %u heads x %u rows (%llu bytes of scratch)",
                           pl->nchunks, pl->bh_per, pl->i_count,
                           (unsigned long long)pl->scr0_bytes);
    }
    if (pl->submissions > 1)
        ssmax_plan_why(pl, "%u submissions: at most %llu multiply-adds each (max_work_per_submit)",
                       pl->submissions, (unsigned long long)cap);
    return SSMAX_OK;
}

int ssmax_plan_make(ssmax_context *ctx, const struct ssmax_attn_params *p,
                    const struct ssmax_attn_buffers *b, struct attn_plan *pl)
{
    return ssmax_plan_make_for(ctx, p, b, 0, 0, pl);
}

int ssmax_plan_make_for(ssmax_context *ctx, const struct ssmax_attn_params *p,
                        const struct ssmax_attn_buffers *b, int want_lse, int want_probs,
                        struct attn_plan *pl)
{
    memset(pl, 0, sizeof(*pl));
    pl->want_lse = want_lse;
    pl->want_probs = want_probs;
    struct ssmax_dev *dev = ctx->dev;
    int r = plan_problem(ctx, p, b, pl);
    if (r < 0)
        return r;
    const struct ssmax_backend_fns *fns = dev->fns;
    if (p->head_dim % fns->head_dim_step || p->head_dim > fns->head_dim_max)
        return ssmax_set_error(ctx, SSMAX_ERR_UNSUPPORTED,
                               "head_dim: %u is not a multiple of %u in [%u, %u] (the %s kernels' "
                               "range; the cpu device takes any in [1, %d])",
                               p->head_dim, fns->head_dim_step, fns->head_dim_step,
                               fns->head_dim_max, fns->name, SSMAX_MAX_REF_HEAD_DIM);
    if (!fns->inference && (pl->flags || p->window || p->softcap > 0))
        return ssmax_set_error(ctx, SSMAX_ERR_UNSUPPORTED,
                               "%s: the %s kernels do not take masks, windows, per-batch lengths, "
                               "soft-capping or sinks yet (SPEC.md section 7); the cpu device does",
                               p->mask ? "mask" : p->window ? "window" : p->softcap > 0 ? "softcap"
                               : p->sinks ? "sinks" : "kv_lens", fns->name);
    plan_path(dev, pl);
    pl->scratch_max = UINT64_MAX;
    pl->max_groups_x = UINT32_MAX;
    if ((r = fns->plan(dev, pl)) < 0)
        return r;
    if (pl->kernel != KERNEL_REFERENCE && (r = plan_work(ctx, pl, 0)) < 0)
        return r;
    if (fns->app_scratch) {
        uint64_t off[4];
        ssmax_scratch_layout(pl, off, &pl->app_scratch_bytes);
    }
    if (pl->why[0])
        ssmax_log(ctx, SSMAX_LOG_DEBUG, "plan: %s", pl->why);
    return SSMAX_OK;
}

int ssmax_plan_exec(ssmax_context *ctx, const struct attn_plan *base,
                    const struct ssmax_attn_buffers *b, const struct ssmax_exec_args *a,
                    struct attn_plan *pl)
{
    const struct ssmax_attn_params *bp = &base->p;
    const uint32_t kv_len = a->kv_len;
    int64_t q_pos = a->q_pos;
    *pl = *base; // shares coef and own until the execution needs its own
    pl->own = NULL;
    if (kv_len < 1 || kv_len > bp->kv_len)
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG,
                               "args->kv_len: %u is not in [1, %u] (the plan's kv_len)", kv_len,
                               bp->kv_len);
    if (q_pos < 0 && !a->kv_lens)
        q_pos = kv_len >= bp->q_len ? kv_len - bp->q_len : 0;
    // The position rules of the parameters, against the plan's kv_len (SPEC.md section 7.2);
    // per-batch lengths against this execution's.
    struct ssmax_attn_params chk = *bp;
    chk.q_pos = q_pos;
    chk.s = chk.b = chk.sinks = NULL;
    chk.kv_lens = NULL;
    chk.q_positions = a->q_positions;
    char msg[512];
    int r = ssmax_validate_params(&chk, msg, sizeof(msg));
    if (r == SSMAX_OK && a->kv_lens) {
        chk.kv_len = kv_len; // each kv_lens[b] within the execution's kv_len
        chk.kv_lens = a->kv_lens;
        chk.causal = 0;      // positions were checked against the plan's kv_len above
        chk.window = 0;
        r = ssmax_validate_params(&chk, msg, sizeof(msg));
    }
    if (r < 0) {
        const char *m = strncmp(msg, "q_pos", 5) ? msg : msg + 5;
        return ssmax_set_error(ctx, r, "%s%s", m == msg ? "args->" : "args->q_pos", m);
    }
    pl->p.kv_len = kv_len;
    pl->q_pos = q_pos < 0 ? 0 : (uint32_t)q_pos;
    pl->p.q_pos = q_pos;
    pl->p.kv_lens = NULL;
    pl->p.q_positions = NULL;
    if ((a->kv_lens || a->q_positions) && !ctx->dev->fns->inference)
        return ssmax_set_error(ctx, SSMAX_ERR_UNSUPPORTED,
                               "args->%s: the %s kernels do not take per-batch lengths yet "
                               "(SPEC.md section 7)", a->kv_lens ? "kv_lens" : "q_positions",
                               ctx->dev->fns->name);
    if (a->kv_lens || a->q_positions) {
        // The execution's per-batch words in its own copy of the coefficients.
        if ((r = plan_arrays(ctx, pl, &pl->p, a, q_pos)) < 0)
            return r;
    } else {
        pl->flags &= ~FL_SEQ; // the plan's own arrays are not the execution's
    }
    // K and V keep the plan's layout and extent (k_bytes, v_bytes: the plan's kv_len rows a head),
    // as ssmax.h says their buffers must hold: an execution is checked and bound (recorded
    // plans bind the plan's extent once) for the same bytes whatever its kv_len; the first
    // kv_len rows of each head are read. So does the mask, with the plan's kv_len a row.
    if (pl->want_probs) {
        if (!b->probs)
            return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG,
                                   "bufs->probs: must not be NULL (the plan writes the attention "
                                   "weights: SSMAX_PLAN_PROBS)");
        pl->probs_bytes = pl->rows * kv_len * 4;
    } else if (b->probs) {
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG,
                               "bufs->probs: the plan was made without SSMAX_PLAN_PROBS");
    }
    if (b->lse && !pl->want_lse)
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG,
                               "bufs->lse: the plan was made without SSMAX_PLAN_LSE");
    pl->want_lse = b->lse != NULL;
    pl->why[0] = 0;
    if ((r = plan_buffers(ctx, b, pl)) < 0 || (r = ssmax_plan_fit(ctx, pl, &pl->fit)) < 0)
        return r;
    if (pl->kernel != KERNEL_REFERENCE && (r = plan_work(ctx, pl, 1)) < 0)
        return r;
    snprintf(pl->why, sizeof(pl->why), "%s", base->why);
    return SSMAX_OK;
}

void ssmax_scratch_layout(const struct attn_plan *pl, uint64_t off[4], uint64_t *total)
{
    const uint64_t a = pl->scratch_align > 4 ? pl->scratch_align : 4;
    const uint64_t sz[4] = { pl->coef_bytes, pl->scr0_bytes, pl->scr1_bytes, pl->nvis_bytes };
    uint64_t at = 0;
    for (int i = 0; i < 4; i++) {
        off[i] = at;
        at += (sz[i] + a - 1) / a * a;
    }
    *total = at;
}

void ssmax_plan_tensors(const struct attn_plan *pl, struct plan_tensor out[PLAN_TENSORS])
{
    const uint32_t esz = pl->elem_size;
    out[0] = (struct plan_tensor){ "q", pl->q_bytes, pl->q_off, esz };
    out[1] = (struct plan_tensor){ "k", pl->k_bytes, pl->k_off, esz };
    out[2] = (struct plan_tensor){ "v", pl->v_bytes, pl->v_off, esz };
    out[3] = (struct plan_tensor){ "o", pl->o_bytes, pl->o_off, esz };
    out[4] = (struct plan_tensor){ "lse", pl->want_lse ? pl->lse_bytes : 0, pl->lse_off, 4 };
    out[5] = (struct plan_tensor){ "probs", pl->want_probs ? pl->probs_bytes : 0, pl->probs_off, 0 };
    out[6] = (struct plan_tensor){ "mask", pl->mask_bytes, pl->mask_off, pl->mask_esz };
}

int ssmax_plan_fit(struct ssmax_context *ctx, const struct attn_plan *pl,
                   const struct plan_fit *f)
{
    if (!f->max_bytes) // the backend states no limit (the cpu device)
        return SSMAX_OK;
    struct plan_tensor ts[PLAN_TENSORS];
    ssmax_plan_tensors(pl, ts);
    const uint64_t a = f->align ? f->align : 1;
    for (size_t i = 0; i < PLAN_TENSORS; i++) {
        const struct plan_tensor *t = &ts[i];
        if (!t->bytes || (f->align && !t->esz)) // not asked for; never bound
            continue;
        if (t->bytes > f->max_bytes)
            return ssmax_set_error(ctx, SSMAX_ERR_LIMIT_EXCEEDED,
                                   "%s: %llu bytes exceed the device's %s, %llu bytes; split the "
                                   "batch or the heads", t->name, (unsigned long long)t->bytes,
                                   f->limit, (unsigned long long)f->max_bytes);
        if (f->align && t->bytes + t->off % a > f->max_bytes)
            return ssmax_set_error(ctx, SSMAX_ERR_LIMIT_EXCEEDED,
                                   "%s_off: %llu is %llu bytes past a multiple of %s %llu, so the "
                                   "binding needs %llu bytes, over the %s, %llu bytes; align the "
                                   "offset", t->name, (unsigned long long)t->off,
                                   (unsigned long long)(t->off % a), f->align_name,
                                   (unsigned long long)a,
                                   (unsigned long long)(t->bytes + t->off % a), f->limit,
                                   (unsigned long long)f->max_bytes);
        if (!f->index_max || !t->esz)
            continue;
        // From the binding's start: the buffer's, or the offset rounded down to index_align.
        const uint64_t from = f->index_align ? t->off % f->index_align : t->off;
        const uint64_t n = (from + t->bytes) / t->esz;
        if (n > f->index_max && from && f->index_align)
            return ssmax_set_error(ctx, SSMAX_ERR_LIMIT_EXCEEDED,
                                   "%s: %llu elements from its binding's start (its offset rounded "
                                   "down to a multiple of %s, %llu bytes: %llu bytes before it) "
                                   "exceed the %llu elements the kernels index; split the batch or "
                                   "the heads", t->name, (unsigned long long)n, f->index_align_name,
                                   (unsigned long long)f->index_align, (unsigned long long)from,
                                   (unsigned long long)f->index_max);
        if (n > f->index_max)
            return ssmax_set_error(ctx, SSMAX_ERR_LIMIT_EXCEEDED,
                                   "%s: %llu elements %s exceed the %llu elements the kernels "
                                   "index%s", t->name, (unsigned long long)n,
                                   f->index_align ? "from its binding's start"
                                                  : "from the start of its buffer",
                                   (unsigned long long)f->index_max,
                                   f->index_align ? "; split the batch or the heads" : "");
    }
    return SSMAX_OK;
}

void ssmax_plan_block(const struct attn_plan *pl, const uint32_t elem_off[6], struct attn_block *out)
{
    const struct ssmax_attn_params *p = &pl->p;
    *out = (struct attn_block){
        .B = p->batch, .Hq = p->q_heads, .Hkv = p->kv_heads, .Lq = p->q_len, .Lk = p->kv_len,
        .G = pl->group, .q_pos = pl->q_pos, .causal = (uint32_t)p->causal,
        .x_floor = pl->x_floor, .pos_offset = p->pos_offset,
        .floor_scale = p->floor_scale ? p->floor_scale : 1, .lo = pl->lo,
        .q_off = elem_off[0], .k_off = elem_off[1], .v_off = elem_off[2], .o_off = elem_off[3],
        .lse_off = elem_off[4], .want_lse = (uint32_t)pl->want_lse,
        .split_len = pl->split_len, .nsplit = pl->nsplit,
        .flags = pl->flags, .window = p->window, .softcap = p->softcap,
        .mask_off = elem_off[5],
    };
}

/* The shared-memory tiles kernels' rules (also the OpenCL kernels'): see internal.h. */
uint64_t ssmax_tiles_shared_bytes(uint32_t D, uint32_t br, uint32_t bc)
{
    return 4ull * (br * D + bc * D + br * bc) + 16ull * br;
}

uint64_t ssmax_role_shared_bytes(const struct attn_plan *pl, enum attn_role role)
{
    const uint32_t D = pl->p.head_dim, br = pl->br, bc = pl->bc;
    switch (role) {
    case ROLE_FUSED:
        if (pl->kernel == KERNEL_ROWS)
            return 0;
        if (pl->kernel == KERNEL_LANES) // each backend's own layout
            return pl->lanes_shared;
        return ssmax_tiles_shared_bytes(D, br, bc);
    case ROLE_MERGE: return 0;
    case ROLE_QK: return 2 * 16 * 8 * 4;       // Qt, Kt: 16 x 8 floats each
    case ROLE_SOFTMAX: return 64 * 4;          // one float per invocation of 64
    case ROLE_PV: return 4ull * br * bc + 4ull * bc * D; // P tile and V tile
    case ROLE_MASK: // mask_count: one uint per invocation of 64, and with the summary its words
        return 64 * 4 + (pl->nvis_bytes > 4 * pl->mask_rows ? 64 / MASK_CODES * 4 : 0);
    }
    return 0;
}

void ssmax_tiles_for_decode(struct attn_plan *pl)
{
    uint64_t rows = (uint64_t)pl->group * pl->p.q_len;
    if (rows >= pl->br)
        return;
    pl->br = rows < 2 ? 2 : (uint32_t)(rows + 1) / 2 * 2;
    if (pl->p.head_dim <= 64 && pl->br <= 8)
        pl->bc = 64;
    ssmax_plan_why(pl, "%llu packed rows a KV head, so BR %u", (unsigned long long)rows, pl->br);
}
