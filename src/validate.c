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
