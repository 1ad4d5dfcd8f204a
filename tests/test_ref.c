/* The float64 reference against SPEC.md's test vectors (sections 4 and 5), plus GQA, causal/q_pos
 * and fully-specified small problems checked by hand-written formulas. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "harness.h"
#include "ssmax/ssmax.h"
#include "spec_cases.h"

#define TOL 1e-6

/* Probability of key 0 when key 0's scaled logit is m and n-1 keys have logit 0. */
static double weight_top(enum ssmax_mode mode, float s, uint32_t n, double m)
{
    const uint32_t D = 8;
    struct ssmax_attn_params p;
    ssmax_attn_params_default(&p);
    p.head_dim = D;
    p.kv_len = n;
    p.scale = 1.0f;
    p.mode = mode;
    p.s_all = s;
    float q[8] = { 1, 0, 0, 0, 0, 0, 0, 0 };
    float *k = calloc((size_t)n * D, sizeof(float)), *v = calloc((size_t)n * D, sizeof(float));
    float *probs = calloc(n, sizeof(float));
    double o[8];
    assert_non_null(k);
    assert_non_null(v);
    assert_non_null(probs);
    k[0] = (float)m;
    v[0] = 1; // O[0] = P[0] exactly (in double)
    struct ssmax_attn_host io = { q, k, v, NULL, NULL, probs, o, NULL };
    assert_int_equal(ssmax_attn_ref(&p, &io), SSMAX_OK);
    free(k), free(v), free(probs);
    return o[0];
}

static void test_fading_table(void **state)
{
    (void)state;
    // SPEC.md section 4: softmax (m=5) and SSMax (m=5, s=0.43).
    static const struct {
        uint32_t n;
        double soft, ss;
    } t[] = { { 2, 0.993307, 0.816118 },     { 10, 0.942826, 0.940101 },
              { 100, 0.599860, 0.995063 },   { 1000, 0.129346, 0.999646 },
              { 10000, 0.0146257, 0.999975 }, { 1000000, 1.48391e-4, 0.99999987 } };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        double ws = weight_top(SSMAX_MODE_SOFTMAX, 0, t[i].n, 5.0);
        double wx = weight_top(SSMAX_MODE_SSMAX, 0.43f, t[i].n, 5.0);
        // relative for the small softmax values, absolute otherwise
        assert_true(fabs(ws - t[i].soft) <= TOL * (t[i].soft < 1e-2 ? t[i].soft * 10 : 1));
        assert_true(fabs(wx - t[i].ss) <= TOL);
    }
    // threshold s*m = 1: n/(2n-1)
    static const struct {
        uint32_t n;
        double w;
    } th[] = { { 2, 0.666667 }, { 10, 0.526316 }, { 100, 0.502513 }, { 1000, 0.500250 } };
    for (size_t i = 0; i < 4; i++)
        assert_true(fabs(weight_top(SSMAX_MODE_SSMAX, 0.5f, th[i].n, 2.0) - th[i].w) <= TOL);
    // uniform logits give 1/n under every mode
    for (int mode = 0; mode <= SSMAX_MODE_FLOOR_LOG; mode++)
        assert_true(fabs(weight_top((enum ssmax_mode)mode, 0.43f, 37, 0.0) - 1.0 / 37) <= 1e-12);
}

static void test_case_a(void **state)
{
    (void)state;
    // SPEC.md 5A: one row, n = 5, logits already scaled.
    const double z[5] = { 0.5, -1, 2, 0, 1.5 };
    const double ss[5] = { 0.145280, 0.051448, 0.410243, 0.102784, 0.290244 };
    const double sm[5] = { 0.110746, 0.024711, 0.496331, 0.067171, 0.301040 };
    struct ssmax_attn_params p;
    ssmax_attn_params_default(&p);
    p.head_dim = 8;
    p.kv_len = 5;
    p.scale = 1;
    p.s_all = 0.43f;
    float q[8] = { 1 }, k[40] = { 0 }, v[40] = { 0 }, probs[5];
    double o[8];
    for (int j = 0; j < 5; j++)
        k[j * 8] = (float)z[j];
    for (int mode = 0; mode < 2; mode++) {
        p.mode = mode ? SSMAX_MODE_SSMAX : SSMAX_MODE_SOFTMAX;
        struct ssmax_attn_host io = { q, k, v, NULL, NULL, probs, o, NULL };
        assert_int_equal(ssmax_attn_ref(&p, &io), SSMAX_OK);
        for (int j = 0; j < 5; j++)
            assert_true(fabs(probs[j] - (mode ? ss[j] : sm[j])) <= TOL);
    }
    assert_true(fabs(ssmax_row_factor(&p, 0, 5, 4) - 0.692058302) <= 1e-7);
}

/* SPEC.md 7.5: the six exact cases on the data of case B (SSMAX, s = 0.5, c = 1/sqrt(2)). */
static void test_case_inference(void **state)
{
    (void)state;
    const float *q = spec7_q, *k = spec7_k, *v = spec7_v, *mask = spec7_mask;
    uint16_t mask16[16];
    for (int j = 0; j < 16; j++)
        mask16[j] = ssmax_f32_to_f16(mask[j]);
    const struct spec7_case *cases = spec7_cases;
    for (size_t c = 0; c < 6; c++)
        for (int m16 = 0; m16 < 2; m16++) {
            struct ssmax_attn_params p;
            ssmax_attn_params_default(&p);
            p.head_dim = 2;
            p.q_len = p.kv_len = 4;
            p.s_all = 0.5f;
            p.causal = cases[c].causal;
            p.q_pos = 0;
            p.window = cases[c].window;
            p.softcap = cases[c].cap;
            const uint32_t kvl = cases[c].kv_len;
            if (kvl)
                p.kv_lens = &kvl;
            const float sink = cases[c].sink;
            if (cases[c].has_sink)
                p.sinks = &sink;
            if (cases[c].has_mask) {
                p.mask = SSMAX_MASK_LQ_LK;
                p.mask_dtype = m16 ? SSMAX_F16 : SSMAX_F32;
            }
            double o[8], lse[4];
            float of[8], lsef[4];
            struct ssmax_attn_host io = { q, k, v, of, lsef, NULL, o, lse, NULL };
            if (cases[c].has_mask)
                io.mask = m16 ? (const void *)mask16 : (const void *)mask;
            assert_int_equal(ssmax_attn_ref(&p, &io), SSMAX_OK);
            for (int i = 0; i < 4; i++) {
                for (int d = 0; d < 2; d++)
                    if (fabs(o[i * 2 + d] - cases[c].o[i][d]) > TOL) {
                        print_error("case %zu (mask f16 %d) row %d O[%d] = %.6f, want %.6f\n", c,
                                    m16, i, d, o[i * 2 + d], cases[c].o[i][d]);
                        fail();
                    }
                if (fabs(lse[i] - cases[c].lse[i]) > TOL) {
                    print_error("case %zu row %d LSE = %.6f, want %.6f\n", c, i, lse[i],
                                cases[c].lse[i]);
                    fail();
                }
            }
        }
}

/* Empty rows: O = 0 and LSE = -inf, or LSE = sigma with a sink; hidden keys' NaN never reaches a
 * row; a NaN mask entry on a visible key makes the row NaN; n counts visible keys only. */
static void test_inference_edges(void **state)
{
    (void)state;
    const float N = NAN, X = -INFINITY;
    // 2 rows, 3 keys, D = 2; key 2 is NaN and hidden from row 0 by the mask.
    const float q[4] = { 1, 0, 0, 1 }, k[6] = { 1, 0, 0, 1, N, N }, v[6] = { 1, 2, 3, 4, N, N };
    const float mask[6] = { 0, 0, X, X, X, X }; // row 1 sees nothing
    struct ssmax_attn_params p;
    ssmax_attn_params_default(&p);
    p.head_dim = 2;
    p.q_len = 2;
    p.kv_len = 3;
    p.mask = SSMAX_MASK_LQ_LK;
    double o[4], lse[2];
    float of[4], probs[6];
    struct ssmax_attn_host io = { q, k, v, of, NULL, probs, o, lse, mask };
    assert_int_equal(ssmax_attn_ref(&p, &io), SSMAX_OK);
    // Row 0 sees keys 0 and 1: n = 2, f = 0.43 ln 2; row 1 is empty.
    const double f = (double)0.43f * log(2.0) / sqrt(2.0), w0 = 1 / (1 + exp(-f));
    assert_true(fabs(o[0] - (w0 * 1 + (1 - w0) * 3)) <= TOL);
    assert_true(fabs(probs[0] - w0) <= 1e-6 && probs[2] == 0);
    assert_true(o[2] == 0 && o[3] == 0 && isinf(lse[1]) && lse[1] < 0);
    assert_true(probs[3] == 0 && probs[4] == 0 && probs[5] == 0);
    const float sinks[1] = { 0.25f };
    p.sinks = sinks;
    assert_int_equal(ssmax_attn_ref(&p, &io), SSMAX_OK);
    assert_true(o[2] == 0 && o[3] == 0 && fabs(lse[1] - 0.25) <= 1e-12);
    assert_true(probs[3] == 0 && probs[4] == 0 && probs[5] == 0);
    const double den = exp(f) + 1 + exp(0.25);
    assert_true(fabs(probs[0] - exp(f) / den) <= 1e-6 && fabs(lse[0] - log(den)) <= 1e-9);
    // A NaN entry on a visible key: that row NaN, the other untouched.
    float mask2[6] = { 0, N, X, 0, 0, X };
    io.mask = mask2;
    assert_int_equal(ssmax_attn_ref(&p, &io), SSMAX_OK);
    assert_true(isnan(o[0]) && isnan(lse[0]) && !isnan(o[2]) && !isnan(lse[1]));
}

static void test_case_b(void **state)
{
    (void)state;
    // SPEC.md 5B: causal, one head, D = 2, c = 1/sqrt(2).
    const float q[8] = { 1, 0, 0, 1, 1, 1, 2, -1 }, k[8] = { 1, 0, 0, 1, 1, -1, 1, 1 },
                v[8] = { 1, 0, 0, 1, 2, 2, -1, 3 };
    const double soft[4][2] = { { 1, 0 }, { 0.330238, 0.669762 }, { 0.796664, 0.796664 },
                                { 1.253252, 1.553205 } };
    const double ss[4][2] = { { 1, 0 }, { 0.439039, 0.560961 }, { 0.879815, 0.879815 },
                              { 1.051108, 1.534581 } };
    const double logn[4][2] = { { 1, 0 }, { 0.330238, 0.669762 }, { 0.710254, 0.710254 },
                                { 1.672654, 1.670203 } };
    const double fac[4] = { 0, 0.346574, 0.549306, 0.693147 };
    struct ssmax_attn_params p;
    ssmax_attn_params_default(&p);
    p.head_dim = 2;
    p.q_len = p.kv_len = 4;
    p.causal = 1;
    p.s_all = 0.5f;
    p.train_len = 2;
    const double(*want[3])[2] = { soft, ss, logn };
    const enum ssmax_mode modes[3] = { SSMAX_MODE_SOFTMAX, SSMAX_MODE_SSMAX, SSMAX_MODE_LOGN };
    for (int m = 0; m < 3; m++) {
        p.mode = modes[m];
        double o[8];
        float of[8];
        struct ssmax_attn_host io = { q, k, v, of, NULL, NULL, o, NULL };
        assert_int_equal(ssmax_attn_ref(&p, &io), SSMAX_OK);
        for (int i = 0; i < 4; i++)
            for (int d = 0; d < 2; d++) {
                assert_true(fabs(o[i * 2 + d] - want[m][i][d]) <= TOL);
                assert_true(fabs(of[i * 2 + d] - want[m][i][d]) <= TOL);
            }
    }
    p.mode = SSMAX_MODE_SSMAX;
    for (int i = 0; i < 4; i++)
        assert_true(fabs(ssmax_row_factor(&p, 0, (uint64_t)i + 1, (uint64_t)i) - fac[i]) <= TOL);
    // A head past q_heads with per-head s has no factor; floor-log near 2^64 does not wrap.
    float s1[1] = { 0.5f };
    p.s = s1;
    assert_true(isnan(ssmax_row_factor(&p, 1, 4, 3)));
    p.s = NULL;
    p.mode = SSMAX_MODE_FLOOR_LOG;
    p.floor_beta = 0.1f, p.floor_scale = 8192, p.pos_offset = 1;
    double big = ssmax_row_factor(&p, 0, 1, UINT64_MAX);
    assert_true(fabs(big - (1.0 + (double)0.1f * log(2251799813685248.0 + 1.0))) <= 1e-12); // 2^51
}

static void test_factor_tables(void **state)
{
    (void)state;
    // SPEC.md 5C.
    struct ssmax_attn_params p;
    ssmax_attn_params_default(&p);
    p.mode = SSMAX_MODE_SSMAX;
    p.s_all = 0.168f;
    const struct {
        uint64_t n;
        double f;
    } ss[] = { { 2, 0.116449 }, { 1024, 1.164487 }, { 10240, 1.551322 }, { 1u << 20, 2.328975 } };
    for (int i = 0; i < 4; i++)
        assert_true(fabs(ssmax_row_factor(&p, 0, ss[i].n, 0) - ss[i].f) <= 1e-6 * 1.5);
    p.mode = SSMAX_MODE_FLOOR_LOG;
    p.floor_scale = 8192;
    p.floor_beta = 0.1f;
    p.pos_offset = 1;
    const struct {
        uint64_t pos;
        double f;
    } fl[] = { { 8190, 1 },           { 8191, 1.0693147 },  { 16383, 1.1098612 },
               { 65535, 1.2197225 },  { 131071, 1.2833213 }, { 1048575, 1.4859812 } };
    for (int i = 0; i < 6; i++)
        assert_true(fabs(ssmax_row_factor(&p, 0, 1, fl[i].pos) - fl[i].f) <= 1e-6);
    p.mode = SSMAX_MODE_LOGN;
    p.train_len = 8192;
    const struct {
        uint64_t pos;
        double f;
    } ln[] = { { 8191, 1 }, { 16383, 1.0769231 }, { 32767, 1.1538462 } };
    for (int i = 0; i < 3; i++)
        assert_true(fabs(ssmax_row_factor(&p, 0, ln[i].pos + 1, ln[i].pos) - ln[i].f) <= 1e-6);
    // SSMAX at n = 1 gives f = 0: the single visible key has weight 1
    p.mode = SSMAX_MODE_SSMAX;
    assert_true(ssmax_row_factor(&p, 0, 1, 0) == 0.0);
}

/* GQA equals MHA with K/V heads repeated; per-head s is honoured. */
static void test_gqa_equals_repeat(void **state)
{
    (void)state;
    const uint32_t B = 2, Hq = 6, Hkv = 2, Lq = 5, Lk = 9, D = 8, G = Hq / Hkv;
    float *q = malloc(sizeof(float) * B * Hq * Lq * D), *k = malloc(sizeof(float) * B * Hkv * Lk * D);
    float *v = malloc(sizeof(float) * B * Hkv * Lk * D), *k2 = malloc(sizeof(float) * B * Hq * Lk * D);
    float *v2 = malloc(sizeof(float) * B * Hq * Lk * D), s[6] = { 0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f };
    double *o1 = malloc(sizeof(double) * B * Hq * Lq * D), *o2 = malloc(sizeof(double) * B * Hq * Lq * D);
    uint64_t seed = 7;
    h_fill(q, SSMAX_F32, (size_t)B * Hq * Lq * D, 1, &seed);
    h_fill(k, SSMAX_F32, (size_t)B * Hkv * Lk * D, 1, &seed);
    h_fill(v, SSMAX_F32, (size_t)B * Hkv * Lk * D, 1, &seed);
    for (uint32_t b = 0; b < B; b++)
        for (uint32_t h = 0; h < Hq; h++)
            for (size_t x = 0; x < (size_t)Lk * D; x++) {
                k2[((size_t)b * Hq + h) * Lk * D + x] = k[((size_t)b * Hkv + h / G) * Lk * D + x];
                v2[((size_t)b * Hq + h) * Lk * D + x] = v[((size_t)b * Hkv + h / G) * Lk * D + x];
            }
    struct ssmax_attn_params p;
    ssmax_attn_params_default(&p);
    p.batch = B, p.q_heads = Hq, p.kv_heads = Hkv, p.q_len = Lq, p.kv_len = Lk, p.head_dim = D;
    p.s = s;
    p.causal = 1;
    struct ssmax_attn_host io1 = { q, k, v, NULL, NULL, NULL, o1, NULL };
    assert_int_equal(ssmax_attn_ref(&p, &io1), SSMAX_OK);
    p.kv_heads = Hq;
    struct ssmax_attn_host io2 = { q, k2, v2, NULL, NULL, NULL, o2, NULL };
    assert_int_equal(ssmax_attn_ref(&p, &io2), SSMAX_OK);
    assert_memory_equal(o1, o2, sizeof(double) * B * Hq * Lq * D);
    free(q), free(k), free(v), free(k2), free(v2), free(o1), free(o2);
}

/* A causal block at q_pos is the tail of the full causal problem. */
static void test_causal_qpos(void **state)
{
    (void)state;
    const uint32_t Lk = 11, D = 16, Lq = 4;
    float q[11 * 16], k[11 * 16], v[11 * 16];
    double full[11 * 16], part[4 * 16], lf[11], lp[4];
    uint64_t seed = 3;
    h_fill(q, SSMAX_F32, 11 * 16, 1, &seed);
    h_fill(k, SSMAX_F32, 11 * 16, 1, &seed);
    h_fill(v, SSMAX_F32, 11 * 16, 1, &seed);
    for (int mode = 0; mode <= SSMAX_MODE_FLOOR_LOG; mode++) {
        struct ssmax_attn_params p;
        ssmax_attn_params_default(&p);
        p.head_dim = D, p.causal = 1, p.mode = (enum ssmax_mode)mode, p.train_len = 3;
        p.floor_scale = 2;
        p.q_len = p.kv_len = Lk;
        struct ssmax_attn_host io = { q, k, v, NULL, NULL, NULL, full, lf };
        assert_int_equal(ssmax_attn_ref(&p, &io), SSMAX_OK);
        p.q_len = Lq;
        p.q_pos = 5; // rows 5..8 of the full problem
        struct ssmax_attn_host io2 = { q + 5 * D, k, v, NULL, NULL, NULL, part, lp };
        assert_int_equal(ssmax_attn_ref(&p, &io2), SSMAX_OK);
        for (uint32_t x = 0; x < Lq * D; x++)
            assert_true(fabs(part[x] - full[5 * D + x]) < 1e-15);
        for (uint32_t i = 0; i < Lq; i++)
            assert_true(fabs(lp[i] - lf[5 + i]) < 1e-15);
        p.q_pos = -1; // default kv_len - q_len: the last rows
        assert_int_equal(ssmax_attn_ref(&p, &(struct ssmax_attn_host){ q + 7 * D, k, v, NULL, NULL,
                                                                       NULL, part, lp }),
                         SSMAX_OK);
        for (uint32_t x = 0; x < Lq * D; x++)
            assert_true(fabs(part[x] - full[7 * D + x]) < 1e-15);
    }
}

/* The SSMax factor at n = 1 gives exactly V[0]; NaN in keys a row cannot see does not leak; NaN in
 * a visible Q propagates to that row only; LSE of one key is its logit. */
static void test_edges(void **state)
{
    (void)state;
    const uint32_t Lk = 6, D = 8;
    float q[6 * 8], k[6 * 8], v[6 * 8], of[6 * 8], lse[6];
    double o[6 * 8];
    uint64_t seed = 11;
    h_fill(q, SSMAX_F32, 48, 3, &seed);
    h_fill(k, SSMAX_F32, 48, 3, &seed);
    h_fill(v, SSMAX_F32, 48, 1, &seed);
    for (int d = 0; d < 8; d++)
        v[5 * 8 + d] = NAN; // key 5: seen only by row 5
    struct ssmax_attn_params p;
    ssmax_attn_params_default(&p);
    p.head_dim = D, p.q_len = 5, p.kv_len = Lk, p.causal = 1, p.q_pos = 0;
    struct ssmax_attn_host io = { q, k, v, of, lse, NULL, o, NULL };
    assert_int_equal(ssmax_attn_ref(&p, &io), SSMAX_OK);
    for (int d = 0; d < 8; d++)
        assert_true(of[d] == v[d]); // row 0 sees one key: weight exactly 1
    assert_true(lse[0] == 0.0f);    // SSMax n = 1: f = 0, logit 0
    for (int x = 0; x < 40; x++)
        assert_false(isnan(o[x]));
    q[2 * 8] = NAN;
    assert_int_equal(ssmax_attn_ref(&p, &io), SSMAX_OK);
    for (int i = 0; i < 5; i++)
        for (int d = 0; d < 8; d++)
            assert_true(i == 2 ? isnan(of[i * 8 + d]) : !isnan(of[i * 8 + d]));
    assert_true(isnan(lse[2]) && !isnan(lse[1]));
}

/* float16 round trips and the IEEE special cases. */
static void test_half(void **state)
{
    (void)state;
    assert_int_equal(ssmax_f32_to_f16(1.0f), 0x3c00);
    assert_int_equal(ssmax_f32_to_f16(-2.0f), 0xc000);
    assert_int_equal(ssmax_f32_to_f16(65504.0f), 0x7bff);
    assert_int_equal(ssmax_f32_to_f16(65520.0f), 0x7c00);
    assert_int_equal(ssmax_f32_to_f16(5.9604645e-8f), 0x0001);
    assert_int_equal(ssmax_f32_to_f16(1.0f + 1.0f / 2048), 0x3c00); // tie to even
    assert_true(isnan(ssmax_f16_to_f32(ssmax_f32_to_f16(NAN))));
    for (uint32_t h = 0; h < 0x7c00; h++)
        assert_int_equal(ssmax_f32_to_f16(ssmax_f16_to_f32((uint16_t)h)), h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fading_table),  cmocka_unit_test(test_case_a),
        cmocka_unit_test(test_case_b),        cmocka_unit_test(test_factor_tables),
        cmocka_unit_test(test_case_inference), cmocka_unit_test(test_inference_edges),
        cmocka_unit_test(test_gqa_equals_repeat), cmocka_unit_test(test_causal_qpos),
        cmocka_unit_test(test_edges),         cmocka_unit_test(test_half),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
