/* API contract without a GPU: defaults, argument validation (each bad field named in the message,
 * outputs untouched), device selection strings, buffers, strerror, NULL-safe destroy. */
#include <float.h>
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

static ssmax_context *cpu_ctx(void)
{
    struct ssmax_context_params cp;
    ssmax_context_params_default(&cp);
    cp.backends = SSMAX_BACKEND_CPU_BIT;
    ssmax_context *ctx = NULL;
    assert_int_equal(ssmax_context_create(&cp, &ctx), SSMAX_OK);
    assert_int_equal(ssmax_device_open(ctx, ssmax_device_find(ctx, "cpu")), SSMAX_OK);
    return ctx;
}

static float s_bad[4] = { 0.1f, NAN, 0.2f, 0.3f };
static float b_bad[4] = { 0.1f, 0.2f, INFINITY, 0.3f };

struct bad_case {
    const char *field; // must appear in the message
    void (*mutate)(struct ssmax_attn_params *p);
};

#define BAD(name, field, body)                                                                     \
    static void name(struct ssmax_attn_params *p) { body; }
BAD(m_dtype, "dtype", p->dtype = (enum ssmax_dtype)7)
BAD(m_batch, "batch", p->batch = 0)
BAD(m_qheads0, "q_heads", p->q_heads = 0)
BAD(m_kvheads0, "kv_heads", p->kv_heads = 0)
BAD(m_qlen, "q_len", p->q_len = 0)
BAD(m_kvlen, "kv_len", p->kv_len = 0)
BAD(m_group, "q_heads", (p->q_heads = 6, p->kv_heads = 4))
BAD(m_dim0, "head_dim", p->head_dim = 0)
BAD(m_dimbig, "head_dim", p->head_dim = 4096)
BAD(m_scale_nan, "scale", p->scale = NAN)
BAD(m_scale_inf, "scale", p->scale = INFINITY)
BAD(m_scale_neg, "scale", p->scale = -1)
BAD(m_mode, "mode", p->mode = (enum ssmax_mode)9)
BAD(m_s_nan, "s_all", p->s_all = NAN)
BAD(m_s_neg, "s_all", p->s_all = -0.5f)
BAD(m_s_arr, "s[1]", p->s = s_bad)
BAD(m_b_arr, "b[2]", (p->mode = SSMAX_MODE_SSMAX_BIAS, p->b = b_bad))
BAD(m_b_all, "b_all", (p->mode = SSMAX_MODE_SSMAX_BIAS, p->b_all = NAN))
BAD(m_train, "train_len", (p->mode = SSMAX_MODE_LOGN, p->train_len = 1))
BAD(m_floor, "floor_scale", (p->mode = SSMAX_MODE_FLOOR_LOG, p->floor_scale = 0))
BAD(m_beta, "floor_beta", (p->mode = SSMAX_MODE_FLOOR_LOG, p->floor_beta = NAN))
BAD(m_causal, "causal", p->causal = 2)
BAD(m_qpos, "q_pos", (p->causal = 1, p->q_pos = 12))
BAD(m_qlen_kv, "q_len", (p->causal = 1, p->q_len = 20))
BAD(m_path, "path", p->path = (enum ssmax_path)8)
BAD(m_splits, "kv_splits", p->kv_splits = 1000)
BAD(m_splits_len, "kv_splits", p->kv_splits = 17)
BAD(m_splits_path, "kv_splits", (p->kv_splits = 2, p->path = SSMAX_PATH_FUSED))
BAD(m_reserved, "reserved", p->reserved[3] = 1)
BAD(m_overflow, "batch*q_heads", (p->batch = 0xffffffffu, p->q_heads = 0xffffffffu,
                                  p->kv_heads = 0xffffffffu, p->q_len = 0xffffffffu))

static const struct bad_case bad_cases[] = {
    { "dtype", m_dtype },         { "batch", m_batch },         { "q_heads", m_qheads0 },
    { "kv_heads", m_kvheads0 },   { "q_len", m_qlen },          { "kv_len", m_kvlen },
    { "q_heads", m_group },       { "head_dim", m_dim0 },       { "head_dim", m_dimbig },
    { "scale", m_scale_nan },     { "scale", m_scale_inf },     { "scale", m_scale_neg },
    { "mode", m_mode },           { "s_all", m_s_nan },         { "s_all", m_s_neg },
    { "s[1]", m_s_arr },          { "b[2]", m_b_arr },          { "b_all", m_b_all },
    { "train_len", m_train },     { "floor_scale", m_floor },   { "floor_beta", m_beta },
    { "causal", m_causal },       { "q_pos", m_qpos },          { "q_len", m_qlen_kv },
    { "path", m_path },           { "kv_splits", m_splits },    { "kv_splits", m_splits_len },
    { "kv_splits", m_splits_path }, { "reserved", m_reserved }, { "batch*q_heads", m_overflow },
};

static void base_params(struct ssmax_attn_params *p)
{
    ssmax_attn_params_default(p);
    p->q_heads = 4, p->kv_heads = 2, p->q_len = 5, p->kv_len = 16, p->head_dim = 8;
}

static void test_bad_params(void **state)
{
    (void)state;
    ssmax_context *ctx = cpu_ctx();
    struct ssmax_attn_params p;
    base_params(&p);
    const size_t nq = 4 * 5 * 8, nkv = 2 * 16 * 8;
    float hq[4 * 5 * 8], hk[2 * 16 * 8], guard[4 * 5 * 8], back[4 * 5 * 8];
    uint64_t seed = 5;
    h_fill(hq, SSMAX_F32, nq, 1, &seed);
    h_fill(hk, SSMAX_F32, nkv, 1, &seed);
    for (size_t i = 0; i < nq; i++)
        guard[i] = -12345.0f;
    ssmax_buffer *q, *k, *o;
    assert_int_equal(ssmax_buffer_create(ctx, sizeof(hq), &q), 0);
    assert_int_equal(ssmax_buffer_create(ctx, sizeof(hk), &k), 0);
    assert_int_equal(ssmax_buffer_create(ctx, sizeof(hq), &o), 0);
    assert_int_equal(ssmax_buffer_write(ctx, q, 0, hq, sizeof(hq)), 0);
    assert_int_equal(ssmax_buffer_write(ctx, k, 0, hk, sizeof(hk)), 0);
    struct ssmax_attn_buffers b = { .q = q, .k = k, .v = k, .o = o };
    for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
        assert_int_equal(ssmax_buffer_write(ctx, o, 0, guard, sizeof(guard)), 0);
        base_params(&p);
        bad_cases[i].mutate(&p);
        char msg[256] = "";
        int r = ssmax_attn_validate(&p, msg, sizeof(msg));
        if (r != SSMAX_ERR_INVALID_ARG || !strstr(msg, bad_cases[i].field))
            fail_msg("case %zu (%s): got %d '%s'", i, bad_cases[i].field, r, msg);
        assert_string_equal(ssmax_last_error(NULL), msg);
        r = ssmax_attn(ctx, &p, &b);
        assert_int_equal(r, SSMAX_ERR_INVALID_ARG);
        assert_non_null(strstr(ssmax_last_error(ctx), bad_cases[i].field));
        assert_int_equal(ssmax_buffer_read(ctx, o, 0, back, sizeof(back)), 0);
        assert_memory_equal(back, guard, sizeof(guard));
        struct ssmax_attn_host io = { hq, hk, hk, back, NULL, NULL, NULL, NULL };
        assert_int_equal(ssmax_attn_ref(&p, &io), SSMAX_ERR_INVALID_ARG);
        assert_memory_equal(back, guard, sizeof(guard));
    }
    // Buffers: NULL, too small, misaligned offsets, probs with a fused path.
    base_params(&p);
    struct ssmax_attn_buffers bb = b;
    bb.v = NULL;
    assert_int_equal(ssmax_attn(ctx, &p, &bb), SSMAX_ERR_INVALID_ARG);
    assert_non_null(strstr(ssmax_last_error(ctx), "bufs->v"));
    bb = b;
    bb.o_off = 8;
    assert_int_equal(ssmax_attn(ctx, &p, &bb), SSMAX_ERR_INVALID_ARG);
    assert_non_null(strstr(ssmax_last_error(ctx), "bufs->o"));
    bb = b;
    bb.k_off = 2;
    assert_int_equal(ssmax_attn(ctx, &p, &bb), SSMAX_ERR_INVALID_ARG);
    assert_non_null(strstr(ssmax_last_error(ctx), "k_off"));
    bb = b;
    bb.probs = o;
    p.path = SSMAX_PATH_FUSED;
    assert_int_equal(ssmax_attn(ctx, &p, &bb), SSMAX_ERR_INVALID_ARG);
    assert_non_null(strstr(ssmax_last_error(ctx), "probs"));
    assert_int_equal(ssmax_attn(ctx, &p, NULL), SSMAX_ERR_INVALID_ARG);
    assert_int_equal(ssmax_attn(ctx, NULL, &b), SSMAX_ERR_INVALID_ARG);
    assert_int_equal(ssmax_attn(NULL, &p, &b), SSMAX_ERR_INVALID_ARG);
    assert_int_equal(ssmax_buffer_read(ctx, o, 0, back, sizeof(back)), 0);
    assert_memory_equal(back, guard, sizeof(guard));
    // a good call still works afterwards
    base_params(&p);
    assert_int_equal(ssmax_attn(ctx, &p, &b), SSMAX_OK);
    ssmax_buffer_destroy(ctx, &q);
    ssmax_buffer_destroy(ctx, &k);
    ssmax_buffer_destroy(ctx, &o);
    assert_null(q);
    ssmax_context_destroy(&ctx);
    assert_null(ctx);
}

static void test_buffers(void **state)
{
    (void)state;
    ssmax_context *ctx = cpu_ctx();
    ssmax_buffer *b = NULL;
    char data[16] = "0123456789abcde", back[16];
    assert_int_equal(ssmax_buffer_create(ctx, 0, &b), SSMAX_ERR_INVALID_ARG);
    assert_non_null(strstr(ssmax_last_error(ctx), "size"));
    assert_int_equal(ssmax_buffer_create(ctx, 16, NULL), SSMAX_ERR_INVALID_ARG);
    assert_int_equal(ssmax_buffer_create(ctx, 16, &b), SSMAX_OK);
    assert_int_equal(ssmax_buffer_size(b), 16);
    assert_int_equal(ssmax_buffer_write(ctx, b, 8, data, 9), SSMAX_ERR_INVALID_ARG);
    assert_non_null(strstr(ssmax_last_error(ctx), "exceeds the buffer size"));
    assert_int_equal(ssmax_buffer_write(ctx, b, SIZE_MAX, data, 2), SSMAX_ERR_INVALID_ARG);
    assert_int_equal(ssmax_buffer_write(ctx, b, 0, NULL, 2), SSMAX_ERR_INVALID_ARG);
    assert_int_equal(ssmax_buffer_write(ctx, b, 0, data, 16), SSMAX_OK);
    assert_int_equal(ssmax_buffer_read(ctx, b, 4, back, 12), SSMAX_OK);
    assert_memory_equal(back, data + 4, 12);
    assert_int_equal(ssmax_buffer_read(ctx, NULL, 0, back, 1), SSMAX_ERR_INVALID_ARG);
    ssmax_buffer_destroy(ctx, &b);
    ssmax_buffer_destroy(ctx, &b); // NULL-safe
    ssmax_buffer_destroy(ctx, NULL);
    // buffers left alive are freed with the context
    assert_int_equal(ssmax_buffer_create(ctx, 64, &b), SSMAX_OK);
    ssmax_context_destroy(&ctx);
    ssmax_context_destroy(&ctx);
    ssmax_context_destroy(NULL);
}

static void test_device_strings(void **state)
{
    (void)state;
    ssmax_context *ctx = NULL;
    assert_int_equal(ssmax_context_create(NULL, &ctx), SSMAX_OK);
    int n = ssmax_device_count(ctx);
    assert_true(n >= 1);
    struct ssmax_device_info d;
    assert_int_equal(ssmax_device_get_info(ctx, n - 1, &d), SSMAX_OK);
    assert_int_equal(d.backend, SSMAX_BACKEND_CPU); // the reference is listed last
    assert_int_equal(ssmax_device_get_info(ctx, n, &d), SSMAX_ERR_INVALID_ARG);
    assert_int_equal(ssmax_device_find(ctx, "cpu"), n - 1);
    assert_int_equal(ssmax_device_find(ctx, "cpu:0"), n - 1);
    assert_int_equal(ssmax_device_find(ctx, "cpu:1"), SSMAX_ERR_NO_DEVICE);
    assert_int_equal(ssmax_device_find(ctx, "vulkan:x"), SSMAX_ERR_INVALID_ARG);
    assert_int_equal(ssmax_device_find(ctx, "metal"), SSMAX_ERR_INVALID_ARG);
    assert_non_null(strstr(ssmax_last_error(ctx), "metal"));
    assert_int_equal(ssmax_device_find(ctx, "cpux"), SSMAX_ERR_INVALID_ARG);
    assert_true(ssmax_device_find(ctx, "auto") >= 0);
    setenv("SSMAX_DEVICE", "cpu", 1);
    assert_int_equal(ssmax_device_find(ctx, NULL), n - 1);
    unsetenv("SSMAX_DEVICE");
    assert_int_equal(ssmax_device_current(ctx, &d), SSMAX_ERR_NO_DEVICE);
    ssmax_buffer *b;
    assert_int_equal(ssmax_buffer_create(ctx, 4, &b), SSMAX_ERR_NO_DEVICE);
    ssmax_context_destroy(&ctx);

    struct ssmax_context_params cp;
    ssmax_context_params_default(&cp);
    cp.backends = 0x80;
    assert_int_equal(ssmax_context_create(&cp, &ctx), SSMAX_ERR_INVALID_ARG);
    assert_non_null(strstr(ssmax_last_error(NULL), "backends"));
    assert_null(ctx);
    ssmax_context_params_default(&cp);
    cp.reserved[0] = 1;
    assert_int_equal(ssmax_context_create(&cp, &ctx), SSMAX_ERR_INVALID_ARG);
    assert_int_equal(ssmax_context_create(NULL, NULL), SSMAX_ERR_INVALID_ARG);
}

static void test_strerror_version(void **state)
{
    (void)state;
    for (int e = 0; e >= SSMAX_ERR_CONTEXT_FAILED; e--)
        assert_string_not_equal(ssmax_strerror(e), "unknown error");
    assert_string_equal(ssmax_strerror(-1000), "unknown error");
    assert_string_equal(ssmax_version(), "0.1.0");
    assert_int_equal(ssmax_version_api(), SSMAX_VERSION_API);
}

/* The CPU device gives the reference rounded to the storage type, LSE and probs included. */
static void test_cpu_device(void **state)
{
    (void)state;
    ssmax_context *ctx = cpu_ctx();
    for (int f16 = 0; f16 < 2; f16++) {
        struct hcase c = { 0 };
        ssmax_attn_params_default(&c.p);
        c.p.q_heads = 4, c.p.kv_heads = 2, c.p.q_len = 7, c.p.kv_len = 33, c.p.head_dim = 24;
        c.p.causal = 1, c.p.dtype = f16 ? SSMAX_F16 : SSMAX_F32, c.per_head = 1;
        c.want_lse = c.want_probs = 1, c.seed = 42, c.nan_v_hidden = 1;
        struct hresult r;
        int st = h_run(ctx, &c, &r);
        if (st)
            fail_msg("%s", r.why);
        assert_true(r.o.nmse < (f16 ? 1e-6 : 1e-13));
    }
    ssmax_context_destroy(&ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_params),     cmocka_unit_test(test_buffers),
        cmocka_unit_test(test_device_strings), cmocka_unit_test(test_strerror_version),
        cmocka_unit_test(test_cpu_device),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
