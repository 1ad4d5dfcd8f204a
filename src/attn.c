/*
 * Attention parameters: defaults, validation (every field named in its error), the per-row factor of
 * SPEC.md section 3, the plan (path, split count, factor coefficients), and the ssmax_attn entry.
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "internal.h"
#include "names.h"

void ssmax_attn_params_default(struct ssmax_attn_params *p)
{
    if (!p)
        return;
    memset(p, 0, sizeof(*p));
    p->dtype = SSMAX_F32;
    p->batch = p->q_heads = p->kv_heads = p->q_len = p->kv_len = 1;
    p->head_dim = 64;
    p->mode = SSMAX_MODE_SSMAX;
    p->s_all = 0.43f;
    p->train_len = 8192;
    p->floor_beta = 0.1f;
    p->floor_scale = 8192;
    p->pos_offset = 1;
    p->q_pos = -1;
}

#define FAIL(...) (snprintf(msg, len, __VA_ARGS__), SSMAX_ERR_INVALID_ARG)

static int mul_ok(uint64_t *acc, uint64_t x)
{
    return !__builtin_mul_overflow(*acc, x, acc);
}

int ssmax_validate_params(const struct ssmax_attn_params *p, char *msg, size_t len)
{
    if (!p)
        return FAIL("params: must not be NULL");
    if (p->dtype != SSMAX_F32 && p->dtype != SSMAX_F16)
        return FAIL("dtype: %d is not SSMAX_F32 (0) or SSMAX_F16 (1)", (int)p->dtype);
    static const char *names[] = { "batch", "q_heads", "kv_heads", "q_len", "kv_len" };
    const uint32_t vals[] = { p->batch, p->q_heads, p->kv_heads, p->q_len, p->kv_len };
    for (int i = 0; i < 5; i++)
        if (vals[i] == 0)
            return FAIL("%s: must be >= 1 (got 0)", names[i]);
    if (p->q_heads % p->kv_heads)
        return FAIL("q_heads: %u is not a multiple of kv_heads %u", p->q_heads, p->kv_heads);
    if (p->head_dim < 1 || p->head_dim > SSMAX_MAX_REF_HEAD_DIM)
        return FAIL("head_dim: %u is not in [1, %d]", p->head_dim, SSMAX_MAX_REF_HEAD_DIM);
    if (!isfinite(p->scale) || p->scale < 0)
        return FAIL("scale: %g must be finite and >= 0 (0 selects 1/sqrt(head_dim))",
                    (double)p->scale);
    if ((unsigned)p->mode > SSMAX_MODE_FLOOR_LOG)
        return FAIL("mode: %d is not a valid enum ssmax_mode (0..4)", (int)p->mode);
    if (p->mode == SSMAX_MODE_SSMAX || p->mode == SSMAX_MODE_SSMAX_BIAS) {
        for (uint32_t h = 0; h < (p->s ? p->q_heads : 1); h++) {
            float s = p->s ? p->s[h] : p->s_all;
            if (!isfinite(s) || s < 0)
                return FAIL("s%s[%u]: %g must be finite and >= 0 for mode %s", p->s ? "" : "_all",
                            h, (double)s, ssmax_mode_name(p->mode));
        }
    }
    if (p->mode == SSMAX_MODE_SSMAX_BIAS) {
        for (uint32_t h = 0; h < (p->b ? p->q_heads : 1); h++) {
            float b = p->b ? p->b[h] : p->b_all;
            if (!isfinite(b))
                return FAIL("b%s[%u]: %g must be finite for mode ssmax-bias", p->b ? "" : "_all", h,
                            (double)b);
        }
    }
    if (p->mode == SSMAX_MODE_LOGN && p->train_len < 2)
        return FAIL("train_len: %u must be >= 2 for mode logn (ln(train_len) divides)",
                    p->train_len);
    if (p->mode == SSMAX_MODE_FLOOR_LOG) {
        if (p->floor_scale < 1)
            return FAIL("floor_scale: must be >= 1 for mode floor-log (got 0)");
        if (!isfinite(p->floor_beta))
            return FAIL("floor_beta: %g must be finite", (double)p->floor_beta);
    }
    if (p->causal != 0 && p->causal != 1)
        return FAIL("causal: %d must be 0 or 1", p->causal);
    // Positions. The kernels hold a row's absolute position p = q_pos + i, and for FLOOR_LOG
    // p + pos_offset + 1, in 32 bits; every sum below is formed in 64 bits from values already
    // bounded, so none can overflow (q_pos is an int64_t the caller may set to anything).
    if (p->q_pos > (int64_t)UINT32_MAX)
        return FAIL("q_pos: %lld exceeds 2^32 - 1 (positions are 32-bit)", (long long)p->q_pos);
    if (p->causal && p->q_pos < 0 && p->q_len > p->kv_len)
        return FAIL("q_len: %u exceeds kv_len %u in causal attention (set q_pos, or pass "
                    "more keys)", p->q_len, p->kv_len);
    const uint64_t qp = p->q_pos >= 0   ? (uint64_t)p->q_pos
                        : p->kv_len >= p->q_len ? (uint64_t)p->kv_len - p->q_len
                                                : 0;
    if (p->causal && qp + p->q_len > p->kv_len)
        return FAIL("q_pos: %llu + q_len %u exceeds kv_len %u (a causal query cannot sit past "
                    "the last key)", (unsigned long long)qp, p->q_len, p->kv_len);
    if (qp + p->q_len > UINT32_MAX)
        return FAIL("q_pos: %llu + q_len %u exceeds 2^32 - 1 (positions are 32-bit)",
                    (unsigned long long)qp, p->q_len);
    if (p->mode == SSMAX_MODE_FLOOR_LOG && qp + p->q_len + p->pos_offset > UINT32_MAX)
        return FAIL("pos_offset: q_pos %llu + q_len %u + pos_offset %u exceeds 2^32 - 1 (floor-log "
                    "positions p + pos_offset + 1 are 32-bit)",
                    (unsigned long long)qp, p->q_len, p->pos_offset);
    if ((unsigned)p->path > SSMAX_PATH_UNFUSED)
        return FAIL("path: %d is not a valid enum ssmax_path (0..3)", (int)p->path);
    if (p->kv_splits > 256)
        return FAIL("kv_splits: %u exceeds the limit 256", p->kv_splits);
    if (p->kv_splits > p->kv_len)
        return FAIL("kv_splits: %u exceeds kv_len %u (each split needs a key)", p->kv_splits,
                    p->kv_len);
    if (p->kv_splits > 1 && p->path != SSMAX_PATH_SPLIT_KV && p->path != SSMAX_PATH_AUTO)
        return FAIL("kv_splits: %u needs path SSMAX_PATH_SPLIT_KV or AUTO", p->kv_splits);
    for (size_t i = 0; i < sizeof(p->reserved); i++)
        if (p->reserved[i])
            return FAIL("reserved: must be zero");
    uint64_t e = p->batch, kv = p->batch;
    uint64_t esz = p->dtype == SSMAX_F16 ? 2 : 4;
    if (!mul_ok(&e, p->q_heads) || !mul_ok(&e, p->q_len) || !mul_ok(&e, p->head_dim) ||
        !mul_ok(&e, esz) || e > SIZE_MAX / 2)
        return FAIL("batch*q_heads*q_len*head_dim: %u*%u*%u*%u elements overflow the address "
                    "space", p->batch, p->q_heads, p->q_len, p->head_dim);
    if (!mul_ok(&kv, p->kv_heads) || !mul_ok(&kv, p->kv_len) || !mul_ok(&kv, p->head_dim) ||
        !mul_ok(&kv, esz) || kv > SIZE_MAX / 2)
        return FAIL("batch*kv_heads*kv_len*head_dim: %u*%u*%u*%u elements overflow the address "
                    "space", p->batch, p->kv_heads, p->kv_len, p->head_dim);
    return SSMAX_OK;
}

int ssmax_attn_validate(const struct ssmax_attn_params *p, char *errbuf, size_t errlen)
{
    ssmax_error_clear(NULL);
    char msg[512];
    int r = ssmax_validate_params(p, msg, sizeof(msg));
    if (r < 0) {
        ssmax_set_error(NULL, r, "%s", msg);
        if (errbuf && errlen)
            snprintf(errbuf, errlen, "%s", msg);
    }
    return r;
}

double ssmax_row_factor(const struct ssmax_attn_params *p, uint32_t h, uint64_t n, uint64_t pos)
{
    if (!p || ((p->s || p->b) && h >= p->q_heads))
        return NAN;
    double s = p->s ? p->s[h] : p->s_all;
    double b = p->b ? p->b[h] : p->b_all;
    switch (p->mode) {
    case SSMAX_MODE_SOFTMAX: return 1.0;
    case SSMAX_MODE_SSMAX: return s * log((double)n);
    case SSMAX_MODE_SSMAX_BIAS: return s * log((double)n) + b;
    case SSMAX_MODE_LOGN: {
        double f = log((double)n) / log((double)p->train_len);
        return f > 1.0 ? f : 1.0;
    }
    case SSMAX_MODE_FLOOR_LOG:
        return 1.0 + (double)p->floor_beta * // the sum in double: pos may be near 2^64
                         log(floor(((double)pos + p->pos_offset) / p->floor_scale) + 1.0);
    }
    return NAN;
}

void ssmax_plan_free(struct ssmax_context *ctx, struct attn_plan *pl)
{
    if (pl) {
        ssmax_free(ctx, pl->coef);
        pl->coef = NULL;
    }
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
        { "k", b->k, b->k_off, pl->kv_bytes, 0 },
        { "v", b->v, b->v_off, pl->kv_bytes, 0 },
    };
    for (size_t i = 0; i < SSMAX_ARRAY_LEN(t); i++) {
        if (!t[i].out || !t[i].buf)
            continue;
        for (size_t j = 0; j < SSMAX_ARRAY_LEN(t); j++) {
            if (j == i || (t[j].out && j < i) || t[j].buf != t[i].buf)
                continue;
            uint64_t a0 = t[i].off, a1 = a0 + t[i].bytes, b0 = t[j].off, b1 = b0 + t[j].bytes;
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

int ssmax_plan_make(ssmax_context *ctx, const struct ssmax_attn_params *p,
                    const struct ssmax_attn_buffers *b, struct attn_plan *pl)
{
    char msg[512];
    memset(pl, 0, sizeof(*pl));
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
    uint64_t c = (uint64_t)p->batch * p->q_heads * p->q_len;
    pl->q_bytes = pl->o_bytes = c * p->head_dim * pl->elem_size;
    pl->kv_bytes = (uint64_t)p->batch * p->kv_heads * p->kv_len * p->head_dim * pl->elem_size;
    pl->lse_bytes = c * 4;
    pl->want_lse = b && b->lse;
    pl->want_probs = b && b->probs;
    if (pl->want_probs) {
        uint64_t pb = c;
        if (!mul_ok(&pb, p->kv_len) || !mul_ok(&pb, 4) || pb > SIZE_MAX / 2)
            return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG,
                                   "bufs->probs: batch*q_heads*q_len*kv_len overflows");
        pl->probs_bytes = pb;
    }
    if (b) {
        if ((r = check_buf(ctx, b->q, b->q_off, pl->q_bytes, "q")) < 0 ||
            (r = check_buf(ctx, b->k, b->k_off, pl->kv_bytes, "k")) < 0 ||
            (r = check_buf(ctx, b->v, b->v_off, pl->kv_bytes, "v")) < 0 ||
            (r = check_buf(ctx, b->o, b->o_off, pl->o_bytes, "o")) < 0 ||
            (b->lse && (r = check_buf(ctx, b->lse, b->lse_off, pl->lse_bytes, "lse")) < 0) ||
            (b->probs && (r = check_buf(ctx, b->probs, b->probs_off, pl->probs_bytes, "probs")) < 0))
            return r;
        for (size_t i = 0; i < sizeof(b->reserved); i++)
            if (b->reserved[i])
                return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG, "bufs->reserved: must be zero");
        if ((r = check_overlap(ctx, b, pl)) < 0)
            return r;
        pl->q_off = b->q_off, pl->k_off = b->k_off, pl->v_off = b->v_off;
        pl->o_off = b->o_off, pl->lse_off = b->lse_off, pl->probs_off = b->probs_off;
    }

    // Path and split count.
    enum ssmax_path path = p->path;
    if (pl->want_probs && path != SSMAX_PATH_UNFUSED && path != SSMAX_PATH_AUTO)
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG,
                               "bufs->probs: attention weights need path unfused or auto");
    uint32_t splits = p->kv_splits;
    if (pl->want_probs)
        path = SSMAX_PATH_UNFUSED;
    if (path == SSMAX_PATH_AUTO) {
        path = splits > 1 ? SSMAX_PATH_SPLIT_KV : SSMAX_PATH_FUSED;
        uint32_t cu = ctx && ctx->dev && ctx->dev->info.compute_units ? ctx->dev->info.compute_units
                                                                      : 16;
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
            }
        }
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
        }
    }
    if (path == SSMAX_PATH_SPLIT_KV && !splits) {
        uint32_t cu = ctx && ctx->dev && ctx->dev->info.compute_units ? ctx->dev->info.compute_units
                                                                      : 16;
        splits = p->kv_len / 256 < 2 * cu ? p->kv_len / 256 : 2 * cu;
        if (splits > 64)
            splits = 64;
        if (splits < 2)
            splits = p->kv_len >= 2 ? 2 : 1;
    }
    pl->path = path;
    pl->splits = path == SSMAX_PATH_SPLIT_KV ? splits : 1;

    // Factor coefficients: fac = max(lo, a_h * ln(x) + b_h), already times the scale.
    pl->coef = ssmax_calloc(ctx, 2 * (size_t)p->q_heads, sizeof(float));
    if (!pl->coef)
        return ssmax_set_error(ctx, SSMAX_ERR_OUT_OF_HOST_MEMORY, "plan: out of host memory");
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
        pl->coef[2 * h] = (float)a;
        pl->coef[2 * h + 1] = (float)o;
    }
    if (p->mode == SSMAX_MODE_LOGN)
        pl->lo = (float)sc;
    pl->x_floor = p->mode == SSMAX_MODE_FLOOR_LOG;
    return SSMAX_OK;
}

void ssmax_plan_tensors(const struct attn_plan *pl, struct plan_tensor out[PLAN_TENSORS])
{
    const uint32_t esz = pl->elem_size;
    out[0] = (struct plan_tensor){ "q", pl->q_bytes, pl->q_off, esz };
    out[1] = (struct plan_tensor){ "k", pl->kv_bytes, pl->k_off, esz };
    out[2] = (struct plan_tensor){ "v", pl->kv_bytes, pl->v_off, esz };
    out[3] = (struct plan_tensor){ "o", pl->o_bytes, pl->o_off, esz };
    out[4] = (struct plan_tensor){ "lse", pl->want_lse ? pl->lse_bytes : 0, pl->lse_off, 4 };
    out[5] = (struct plan_tensor){ "probs", pl->want_probs ? pl->probs_bytes : 0, pl->probs_off, 0 };
}

int ssmax_attn_supported(ssmax_context *ctx, const struct ssmax_attn_params *p)
{
    int r = ssmax_need_device(ctx);
    if (r < 0)
        return r;
    struct attn_plan pl;
    r = ssmax_plan_make(ctx, p, NULL, &pl);
    if (r == SSMAX_OK && ctx->dev->fns->attn_supported)
        r = ctx->dev->fns->attn_supported(ctx->dev, &pl);
    ssmax_plan_free(ctx, &pl);
    return r;
}

int ssmax_attn(ssmax_context *ctx, const struct ssmax_attn_params *p,
               const struct ssmax_attn_buffers *b)
{
    int r = ssmax_need_device(ctx);
    if (r < 0)
        return r;
    if (!b)
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG, "bufs: must not be NULL");
    struct attn_plan pl;
    r = ssmax_plan_make(ctx, p, b, &pl);
    if (r == SSMAX_OK && ctx->dev->fns->attn_supported)
        r = ctx->dev->fns->attn_supported(ctx->dev, &pl);
    if (r == SSMAX_OK) {
        struct attn_bufs ab = {
            b->q->bk, b->k->bk, b->v->bk, b->o->bk, b->lse ? b->lse->bk : NULL,
            b->probs ? b->probs->bk : NULL, b->q_off, b->k_off, b->v_off, b->o_off, b->lse_off,
            b->probs_off,
        };
        uint64_t ns = 0;
        r = ctx->dev->fns->attn(ctx->dev, &pl, &ab, &ns);
        if (r == SSMAX_OK) {
            ctx->last_ns = ns;
            ctx->last_path = pl.path;
            ctx->last_splits = pl.splits;
        } else if (r == SSMAX_ERR_DEVICE_LOST) {
            ctx->failed = 1;
        }
    }
    ssmax_plan_free(ctx, &pl);
    return r;
}

int ssmax_last_device_time(ssmax_context *ctx, uint64_t *device_ns)
{
    if (ctx)
        ssmax_error_clear(ctx);
    if (!ctx || !device_ns)
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG, "%s: must not be NULL",
                               ctx ? "device_ns" : "ctx");
    *device_ns = ctx->last_ns;
    return SSMAX_OK;
}

int ssmax_last_path(ssmax_context *ctx, enum ssmax_path *path, uint32_t *kv_splits)
{
    if (ctx)
        ssmax_error_clear(ctx);
    if (!ctx)
        return ssmax_set_error(NULL, SSMAX_ERR_INVALID_ARG, "ctx: must not be NULL");
    if (path)
        *path = ctx->last_path;
    if (kv_splits)
        *kv_splits = ctx->last_splits;
    return SSMAX_OK;
}

int ssmax_attn_ref(const struct ssmax_attn_params *p, const struct ssmax_attn_host *io)
{
    ssmax_error_clear(NULL);
    char msg[512];
    int r = ssmax_validate_params(p, msg, sizeof(msg));
    if (r < 0)
        return ssmax_set_error(NULL, r, "%s", msg);
    if (!io)
        return ssmax_set_error(NULL, SSMAX_ERR_INVALID_ARG, "io: must not be NULL");
    r = ssmax_ref_compute(p, io, msg, sizeof(msg));
    if (r < 0)
        return ssmax_set_error(NULL, r, "%s", msg);
    return SSMAX_OK;
}
