/*
 * The float64 reference: SPEC.md computed as written, one row at a time. Short on purpose: it is the
 * judge of every other backend.
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "../internal.h"

/* Element i of the row at byte offset row of base (rows are contiguous; strides are in bytes). */
static double load(const void *base, enum ssmax_dtype t, size_t row, size_t i)
{
    const char *r = (const char *)base + row;
    return t == SSMAX_F16 ? (double)ssmax_half_to_float(((const uint16_t *)(const void *)r)[i])
                          : (double)((const float *)(const void *)r)[i];
}

static void store(void *base, enum ssmax_dtype t, size_t row, size_t i, double x)
{
    char *r = (char *)base + row;
    if (t == SSMAX_F16)
        ((uint16_t *)(void *)r)[i] = ssmax_float_to_half((float)x);
    else
        ((float *)(void *)r)[i] = (float)x;
}

int ssmax_ref_compute(const struct ssmax_attn_params *p, const struct ssmax_attn_host *io, char *msg,
                      size_t len)
{
    if (!io->q || !io->k || !io->v) {
        snprintf(msg, len, "io->%s: must not be NULL", !io->q ? "q" : !io->k ? "k" : "v");
        return SSMAX_ERR_INVALID_ARG;
    }
    if (!io->o && !io->o_f64) {
        snprintf(msg, len, "io->o: must not be NULL (unless io->o_f64 is set)");
        return SSMAX_ERR_INVALID_ARG;
    }
    if (p->mask && !io->mask) {
        snprintf(msg, len, "io->mask: must not be NULL (params mask is set)");
        return SSMAX_ERR_INVALID_ARG;
    }
    if (!p->mask && io->mask) {
        snprintf(msg, len, "io->mask: set, but params mask is SSMAX_MASK_NONE");
        return SSMAX_ERR_INVALID_ARG;
    }
    const uint32_t B = p->batch, Hq = p->q_heads, Hkv = p->kv_heads, Lq = p->q_len, Lk = p->kv_len,
                   D = p->head_dim, G = Hq / Hkv;
    const double c = p->scale > 0 ? p->scale : 1.0 / sqrt((double)D);
    uint64_t st[4][3], ext[4]; // byte strides of Q, K, V, O (SPEC.md section 7.1)
    ssmax_resolve_strides(p, st, ext);
    uint64_t ms[3] = { 0, 0, 0 }, mext;
    if (p->mask)
        ssmax_mask_layout(p, ms, &mext);
    double *s = malloc(sizeof(double) * Lk), *acc = malloc(sizeof(double) * D);
    unsigned char *vis = malloc(Lk);
    if (!s || !acc || !vis) {
        free(s);
        free(acc);
        free(vis);
        snprintf(msg, len, "reference: out of host memory (%u keys)", Lk);
        return SSMAX_ERR_OUT_OF_HOST_MEMORY;
    }
    for (uint32_t b = 0; b < B; b++)
        for (uint32_t h = 0; h < Hq; h++) {
            const uint32_t g = h / G;
            const uint64_t kvb = p->kv_lens ? p->kv_lens[b] : Lk, q_pos = ssmax_seq_pos(p, b);
            for (uint32_t i = 0; i < Lq; i++) {
                // The visible set (SPEC.md section 7.2): [lo, hi), less the mask's -inf entries.
                const uint64_t pos = q_pos + i;
                uint64_t hi = kvb, lo = 0;
                if (p->causal && pos + 1 < hi)
                    hi = pos + 1;
                if (p->window && pos + 1 > p->window)
                    lo = pos + 1 - p->window;
                if (lo > hi)
                    lo = hi;
                const char *mrow = p->mask ? (const char *)io->mask + b * ms[0] + h * ms[1] + i * ms[2]
                                           : NULL;
                uint64_t n = 0;
                for (uint64_t j = 0; j < Lk; j++) {
                    vis[j] = j >= lo && j < hi;
                    if (vis[j] && mrow && load(mrow, p->mask_dtype, 0, j) == -INFINITY)
                        vis[j] = 0;
                    n += vis[j];
                }
                const size_t row = ((size_t)b * Hq + h) * Lq + i;
                const size_t qr = b * st[0][0] + h * st[0][1] + i * st[0][2];
                const size_t orw = b * st[3][0] + h * st[3][1] + i * st[3][2];
                const size_t kb = b * st[1][0] + g * st[1][1], vb = b * st[2][0] + g * st[2][1];
                const double f = n ? ssmax_row_factor(p, h, n, pos) : 0.0;
                double m = -INFINITY, sum = 0;
                int nan_row = 0;
                for (uint64_t j = lo; j < hi; j++) {
                    if (!vis[j])
                        continue;
                    double dot = 0;
                    for (uint32_t d = 0; d < D; d++)
                        dot += load(io->q, p->dtype, qr, d) *
                               load(io->k, p->dtype, kb + j * st[1][2], d);
                    // SPEC.md section 7.3: the factor, soft-capping, then the mask.
                    double z = f * c * dot;
                    if (p->softcap > 0)
                        z = p->softcap * tanh(z / p->softcap);
                    if (mrow)
                        z += load(mrow, p->mask_dtype, 0, j);
                    // Logits are fp32 on every device (README, "Range"): above FLT_MAX the row
                    // is NaN, as the kernels' overflowed dot products make it; below -FLT_MAX/2,
                    // under the running max's floor, a key gets weight exactly 0.
                    s[j] = z;
                    if (isnan(s[j]) || s[j] > FLT_MAX)
                        nan_row = 1;
                    else if (s[j] < -FLT_MAX / 2)
                        s[j] = -INFINITY;
                    else if (s[j] > m)
                        m = s[j];
                }
                for (uint32_t d = 0; d < D; d++)
                    acc[d] = 0;
                if (!nan_row && m > -INFINITY) // else no key has weight: the row is empty
                    for (uint64_t j = lo; j < hi; j++) {
                        if (!vis[j])
                            continue;
                        double w = exp(s[j] - m);
                        sum += w;
                        s[j] = w;
                        for (uint32_t d = 0; d < D; d++)
                            acc[d] += w * load(io->v, p->dtype, vb + j * st[2][2], d);
                    }
                // A sink joins the denominator only (SPEC.md section 7.4).
                if (p->sinks && !nan_row) {
                    const double sg = p->sinks[h];
                    if (sum > 0 && m >= sg) {
                        sum += exp(sg - m);
                    } else {
                        const double a = sum > 0 ? exp(m - sg) : 0;
                        for (uint32_t d = 0; d < D; d++)
                            acc[d] *= a;
                        for (uint64_t j = lo; j < hi; j++)
                            if (vis[j])
                                s[j] = sum > 0 ? s[j] * a : 0.0; // weights; 0 where none
                        sum = sum * a + 1.0;
                        m = sg;
                    }
                }
                double lse = nan_row ? NAN : (sum > 0 ? m + log(sum) : -INFINITY);
                for (uint32_t d = 0; d < D; d++) {
                    double o = nan_row ? NAN : (sum > 0 ? acc[d] / sum : 0.0);
                    if (io->o_f64)
                        io->o_f64[row * D + d] = o;
                    if (io->o)
                        store(io->o, p->dtype, orw, d, o);
                }
                if (io->lse)
                    io->lse[row] = (float)lse;
                if (io->lse_f64)
                    io->lse_f64[row] = lse;
                if (io->probs)
                    for (uint32_t j = 0; j < Lk; j++)
                        io->probs[row * Lk + j] =
                            nan_row ? NAN : (vis[j] && sum > 0 ? (float)(s[j] / sum) : 0.0f);
            }
        }
    free(vis);
    free(s);
    free(acc);
    return SSMAX_OK;
}
