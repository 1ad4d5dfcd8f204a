/*
 * Attention parameters: defaults, validation (every field named in its error) and the per-row
 * factor of SPEC.md section 3. The first step of every call: API -> validate -> plan -> backend.
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

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

/* The shapes of Q, K, V, O: counts of batch, heads, rows. */
static void tensor_dims(const struct ssmax_attn_params *p, int t, uint64_t n[3])
{
    n[0] = p->batch;
    n[1] = t == 0 || t == 3 ? p->q_heads : p->kv_heads;
    n[2] = t == 0 || t == 3 ? p->q_len : p->kv_len;
}

static const char *const tensor_names[4] = { "q", "k", "v", "o" };

static const uint64_t *given_strides(const struct ssmax_attn_params *p, int t)
{
    const struct ssmax_strides *st = p->strides;
    return t == 0 ? st->q : t == 1 ? st->k : t == 2 ? st->v : st->o;
}

/* Resolves the strides of tensor t; 0 when they overflow (message in msg). */
static int resolve_one(const struct ssmax_attn_params *p, int t, uint64_t s[3], uint64_t *extent,
                       char *msg, size_t len)
{
    const uint64_t esz = p->dtype == SSMAX_F16 ? 2 : 4, row = (uint64_t)p->head_dim * esz;
    const uint64_t *g = p->strides ? given_strides(p, t) : NULL;
    uint64_t n[3];
    tensor_dims(p, t, n);
    // 0: the stride that packs the dimension over the ones inside it (dense for all 0)
    s[2] = g && g[2] ? g[2] : row;
    s[1] = g && g[1] ? g[1] : s[2];
    s[0] = g && g[0] ? g[0] : 0;
    int ok = 1;
    if (!(g && g[1]))
        ok = mul_ok(&s[1], n[2]);
    if (!(g && g[0]))
        s[0] = s[1], ok = ok && mul_ok(&s[0], n[1]);
    if (!ok) {
        snprintf(msg, len, "strides->%s: the default strides overflow 64 bits", tensor_names[t]);
        return 0;
    }
    uint64_t e = row;
    for (int d = 0; d < 3; d++) {
        uint64_t x = n[d] - 1;
        if (!mul_ok(&x, s[d]) || __builtin_add_overflow(e, x, &e)) {
            snprintf(msg, len, "strides->%s: the strided extent overflows 64 bits", tensor_names[t]);
            return 0;
        }
    }
    *extent = e;
    return 1;
}

void ssmax_resolve_strides(const struct ssmax_attn_params *p, uint64_t s[4][3], uint64_t extent[4])
{
    char msg[160];
    for (int t = 0; t < 4; t++)
        resolve_one(p, t, s[t], &extent[t], msg, sizeof(msg));
}

/* The strides (SPEC.md section 7.1; the rules are in ssmax.h, struct ssmax_strides). */
static int validate_strides(const struct ssmax_attn_params *p, char *msg, size_t len)
{
    const struct ssmax_strides *st = p->strides;
    for (size_t i = 0; i < sizeof(st->reserved); i++)
        if (st->reserved[i])
            return FAIL("strides->reserved: must be zero");
    const uint64_t esz = p->dtype == SSMAX_F16 ? 2 : 4, row = (uint64_t)p->head_dim * esz;
    static const char *const dims[3] = { "batch", "head", "row" };
    for (int t = 0; t < 4; t++) {
        const uint64_t *g = given_strides(p, t);
        for (int d = 0; d < 3; d++)
            if (g[d] % 4)
                return FAIL("strides->%s[%d]: %llu bytes (the %s stride) is not a multiple of 4 "
                            "(rows start on 4-byte words)", tensor_names[t], d,
                            (unsigned long long)g[d], dims[d]);
        if (g[2] && g[2] < row)
            return FAIL("strides->%s[2]: %llu bytes (the row stride) is less than a row, head_dim "
                        "%u x %llu bytes", tensor_names[t], (unsigned long long)g[2], p->head_dim,
                        (unsigned long long)esz);
        uint64_t s[3], e;
        if (!resolve_one(p, t, s, &e, msg, len))
            return SSMAX_ERR_INVALID_ARG;
        if (e > SIZE_MAX / 2)
            return FAIL("strides->%s: the strided extent, %llu bytes, overflows the address space",
                        tensor_names[t], (unsigned long long)e);
    }
    // O may not overlap itself: its dimensions with more than one index, by increasing stride,
    // must each step past all the smaller ones span (a row, then a row's run, ...).
    uint64_t s[3], e, n[3];
    resolve_one(p, 3, s, &e, msg, len);
    tensor_dims(p, 3, n);
    int ord[3] = { 0, 1, 2 };
    for (int i = 0; i < 3; i++)
        for (int j = i + 1; j < 3; j++)
            if (s[ord[j]] < s[ord[i]]) {
                int x = ord[i];
                ord[i] = ord[j], ord[j] = x;
            }
    uint64_t span = row;
    for (int i = 0; i < 3; i++) {
        const int d = ord[i];
        if (n[d] < 2)
            continue;
        if (s[d] < span)
            return FAIL("strides->o[%d]: %llu bytes (the %s stride) is less than the %llu bytes "
                        "the smaller strides span, so rows of o overlap one another (an output "
                        "may not alias itself)", d, (unsigned long long)s[d], dims[d],
                        (unsigned long long)span);
        span += s[d] * (n[d] - 1); // no overflow: bounded by the extent
    }
    return SSMAX_OK;
}

/* The position rules for row 0 of a batch item at qp (given: q_pos or q_positions[b] set) with
 * keys kv; name is the field ("q_pos", "q_positions[3]"). */
static int check_pos(const struct ssmax_attn_params *p, uint64_t qp, const char *name, char *msg,
                     size_t len)
{
    if (p->causal && qp + p->q_len > p->kv_len)
        return FAIL("%s: %llu + q_len %u exceeds kv_len %u (a causal query cannot sit past "
                    "the last key)", name, (unsigned long long)qp, p->q_len, p->kv_len);
    if (qp + p->q_len > UINT32_MAX)
        return FAIL("%s: %llu + q_len %u exceeds 2^32 - 1 (positions are 32-bit)", name,
                    (unsigned long long)qp, p->q_len);
    if (p->mode == SSMAX_MODE_FLOOR_LOG && qp + p->q_len + p->pos_offset > UINT32_MAX)
        return FAIL("pos_offset: %s %llu + q_len %u + pos_offset %u exceeds 2^32 - 1 (floor-log "
                    "positions p + pos_offset + 1 are 32-bit)", name,
                    (unsigned long long)qp, p->q_len, p->pos_offset);
    return SSMAX_OK;
}

uint64_t ssmax_seq_pos(const struct ssmax_attn_params *p, uint32_t b)
{
    if (p->q_positions)
        return (uint64_t)p->q_positions[b];
    if (p->q_pos >= 0)
        return (uint64_t)p->q_pos;
    const uint32_t kv = p->kv_lens ? p->kv_lens[b] : p->kv_len;
    return kv >= p->q_len ? (uint64_t)kv - p->q_len : 0;
}

/* The mask's byte strides with the dense defaults for its shape, and its extent; 0 when they
 * overflow 64 bits. */
int ssmax_mask_layout(const struct ssmax_attn_params *p, uint64_t s[3], uint64_t *extent)
{
    const uint64_t esz = p->mask_dtype == SSMAX_F16 ? 2 : 4, *g = p->mask_strides;
    const uint64_t heads = p->mask == SSMAX_MASK_BH_LQ_LK ? p->q_heads : 1;
    const uint64_t items = p->mask == SSMAX_MASK_LQ_LK ? 1 : p->batch;
    int ok = 1;
    s[2] = g[2] ? g[2] : (uint64_t)p->kv_len * esz;
    s[1] = s[0] = 0;
    if (heads > 1 || p->mask == SSMAX_MASK_BH_LQ_LK)
        s[1] = g[1] ? g[1] : s[2], ok = g[1] || mul_ok(&s[1], p->q_len);
    if (p->mask != SSMAX_MASK_LQ_LK) {
        if (g[0])
            s[0] = g[0];
        else if (p->mask == SSMAX_MASK_BH_LQ_LK)
            s[0] = s[1], ok = ok && mul_ok(&s[0], heads);
        else
            s[0] = s[2], ok = ok && mul_ok(&s[0], p->q_len);
    }
    uint64_t e = (uint64_t)p->kv_len * esz;
    const uint64_t n[3] = { items, heads, p->q_len };
    for (int d = 0; d < 3 && ok; d++) {
        uint64_t x = n[d] - 1;
        ok = mul_ok(&x, s[d]) && !__builtin_add_overflow(e, x, &e);
    }
    *extent = e;
    return ok;
}

/* SPEC.md sections 7.2 to 7.4: per-sequence lengths and positions, window, soft-cap, sinks, mask.
 * Sizes are bounded before this runs only by the shapes' own checks, so the mask's extent is
 * computed with overflow checks. */
static int validate_ext(const struct ssmax_attn_params *p, char *msg, size_t len)
{
    if (p->window && !p->causal)
        return FAIL("window: %u needs causal attention (a sliding window is causal; set causal "
                    "= 1 or window = 0)", p->window);
    // A cap below FLT_MIN is a denormal, which devices may flush to 0 (then 0/0).
    if (!isfinite(p->softcap) || p->softcap < 0 || (p->softcap > 0 && p->softcap < FLT_MIN))
        return FAIL("softcap: %g must be 0 (no soft-capping) or finite and >= %g (FLT_MIN)",
                    (double)p->softcap, (double)FLT_MIN);
    // Sinks at or above the running max's floor, -FLT_MAX/2, so an empty row's LSE is its sink.
    if (p->sinks)
        for (uint32_t h = 0; h < p->q_heads; h++)
            if (!isfinite(p->sinks[h]) || p->sinks[h] < -FLT_MAX / 2)
                return FAIL("sinks[%u]: %g must be finite and >= -FLT_MAX/2", h,
                            (double)p->sinks[h]);
    if (p->kv_lens)
        for (uint32_t b = 0; b < p->batch; b++)
            if (p->kv_lens[b] < 1 || p->kv_lens[b] > p->kv_len)
                return FAIL("kv_lens[%u]: %u is not in [1, %u] (kv_len)", b, p->kv_lens[b],
                            p->kv_len);
    if (p->q_positions || p->kv_lens) {
        char name[48];
        for (uint32_t b = 0; b < p->batch; b++) {
            if (p->q_positions && p->q_positions[b] < 0)
                return FAIL("q_positions[%u]: %lld must be >= 0", b, (long long)p->q_positions[b]);
            if (p->q_positions && p->q_positions[b] > (int64_t)UINT32_MAX)
                return FAIL("q_positions[%u]: %lld exceeds 2^32 - 1 (positions are 32-bit)", b,
                            (long long)p->q_positions[b]);
            snprintf(name, sizeof(name), p->q_positions ? "q_positions[%u]" : "q_pos (of item %u)",
                     b);
            int r = check_pos(p, ssmax_seq_pos(p, b), name, msg, len);
            if (r < 0)
                return r;
        }
    }
    if ((unsigned)p->mask > SSMAX_MASK_BH_LQ_LK)
        return FAIL("mask: %d is not a valid enum ssmax_mask_shape (0..3)", (int)p->mask);
    if (p->mask == SSMAX_MASK_NONE) {
        if (p->mask_strides[0] || p->mask_strides[1] || p->mask_strides[2])
            return FAIL("mask_strides: set without a mask (mask is SSMAX_MASK_NONE)");
        return SSMAX_OK;
    }
    if (p->mask_dtype != SSMAX_F32 && p->mask_dtype != SSMAX_F16)
        return FAIL("mask_dtype: %d is not SSMAX_F32 (0) or SSMAX_F16 (1)", (int)p->mask_dtype);
    const uint64_t esz = p->mask_dtype == SSMAX_F16 ? 2 : 4;
    static const char *const dims[3] = { "batch", "head", "row" };
    for (int d = 0; d < 3; d++) {
        if (p->mask_strides[d] % esz)
            return FAIL("mask_strides[%d]: %llu bytes (the %s stride) is not a multiple of the "
                        "entry size %llu", d, (unsigned long long)p->mask_strides[d], dims[d],
                        (unsigned long long)esz);
        if (p->mask_strides[d] > UINT32_MAX)
            return FAIL("mask_strides[%d]: %llu bytes exceeds 2^32 - 1", d,
                        (unsigned long long)p->mask_strides[d]);
    }
    if (p->mask == SSMAX_MASK_LQ_LK && (p->mask_strides[0] || p->mask_strides[1]))
        return FAIL("mask_strides[%d]: must be 0 for a [q_len, kv_len] mask (shared by every "
                    "batch item and head)", p->mask_strides[0] ? 0 : 1);
    if (p->mask == SSMAX_MASK_B1_LQ_LK && p->mask_strides[1])
        return FAIL("mask_strides[1]: must be 0 for a [batch, 1, q_len, kv_len] mask (shared by "
                    "the heads)");
    uint64_t s[3], e;
    if (!ssmax_mask_layout(p, s, &e) || e > SIZE_MAX / 2)
        return FAIL("mask: its strided extent overflows the address space");
    return SSMAX_OK;
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
    int rp = check_pos(p, qp, "q_pos", msg, len);
    if (rp < 0)
        return rp;
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
    int r = validate_ext(p, msg, len);
    if (r < 0)
        return r;
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
    if (p->strides)
        return validate_strides(p, msg, len);
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
