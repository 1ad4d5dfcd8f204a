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
    assert_int_equal(ssmax_buffer_size(ctx, b), 16);
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

/* Checked handles (ssmax.h, "Handles"): a buffer of another context, a destroyed one (also after
 * its slot was reused), one whose device was closed, and a pointer that is no handle at all each
 * give SSMAX_ERR_INVALID_ARG with the reason, and leave the owner's buffers and the outputs as
 * they were. */
static void test_checked_handles(void **state)
{
    (void)state;
    ssmax_context *a = cpu_ctx(), *b = cpu_ctx();
    ssmax_buffer *ba = NULL, *bb = NULL, *stale = NULL, *fresh = NULL;
    const char data[8] = "abcdefg";
    char back[8];
    assert_int_equal(ssmax_buffer_create(a, 8, &ba), SSMAX_OK);
    assert_int_equal(ssmax_buffer_create(b, 8, &bb), SSMAX_OK);
    assert_int_equal(ssmax_buffer_write(a, ba, 0, data, 8), SSMAX_OK);

    // another context's buffer: every entry refuses it; destroy leaves it alone
    assert_int_equal(ssmax_buffer_write(b, ba, 0, "zzzzzzz", 8), SSMAX_ERR_INVALID_ARG);
    assert_non_null(strstr(ssmax_last_error(b), "another context"));
    assert_int_equal(ssmax_buffer_read(b, ba, 0, back, 8), SSMAX_ERR_INVALID_ARG);
    assert_int_equal(ssmax_buffer_size(b, ba), 0);
    ssmax_buffer *alias = ba;
    ssmax_buffer_destroy(b, &alias);
    assert_ptr_equal(alias, ba);
    assert_non_null(strstr(ssmax_last_error(b), "another context"));
    assert_int_equal(ssmax_buffer_size(a, ba), 8);
    assert_int_equal(ssmax_buffer_read(a, ba, 0, back, 8), SSMAX_OK);
    assert_memory_equal(back, data, 8);
    assert_int_equal(ssmax_buffer_size(b, bb), 8); // b's own still fine

    // attention with a foreign output: refused before anything is written
    struct ssmax_attn_params p;
    ssmax_attn_params_default(&p);
    p.batch = p.q_heads = p.kv_heads = p.q_len = p.kv_len = 1;
    p.head_dim = 2;
    struct ssmax_attn_buffers ab = { .q = bb, .k = bb, .v = bb, .o = ba };
    assert_int_equal(ssmax_attn(b, &p, &ab), SSMAX_ERR_INVALID_ARG);
    assert_non_null(strstr(ssmax_last_error(b), "bufs->o"));
    assert_non_null(strstr(ssmax_last_error(b), "another context"));
    assert_int_equal(ssmax_buffer_read(a, ba, 0, back, 8), SSMAX_OK);
    assert_memory_equal(back, data, 8);

    // destroyed, and its slot reused by a new buffer: the old handle stays dead
    stale = ba;
    ssmax_buffer_destroy(a, &ba);
    assert_null(ba);
    assert_int_equal(ssmax_buffer_read(a, stale, 0, back, 8), SSMAX_ERR_INVALID_ARG);
    assert_non_null(strstr(ssmax_last_error(a), "destroyed"));
    assert_int_equal(ssmax_buffer_create(a, 4, &fresh), SSMAX_OK);
    assert_ptr_not_equal(fresh, stale);
    assert_int_equal(ssmax_buffer_size(a, stale), 0);
    assert_non_null(strstr(ssmax_last_error(a), "destroyed"));
    ssmax_buffer *again = stale;
    ssmax_buffer_destroy(a, &again); // a double destroy is refused, not a double free
    assert_ptr_equal(again, stale);
    assert_int_equal(ssmax_buffer_size(a, fresh), 4);

    // the device closed (opened again): its buffers are gone
    assert_int_equal(ssmax_device_open(a, ssmax_device_find(a, "cpu")), SSMAX_OK);
    assert_int_equal(ssmax_buffer_write(a, fresh, 0, data, 4), SSMAX_ERR_INVALID_ARG);
    assert_non_null(strstr(ssmax_last_error(a), "closed"));

    // not a handle at all
    static int not_a_buffer;
    assert_int_equal(ssmax_buffer_write(a, (ssmax_buffer *)(void *)&not_a_buffer, 0, data, 1),
                     SSMAX_ERR_INVALID_ARG);
    assert_non_null(strstr(ssmax_last_error(a), "not an ssmax_buffer handle"));

    // a destroyed context's buffer given to a live one
    ssmax_buffer *orphan = NULL;
    assert_int_equal(ssmax_buffer_create(a, 4, &orphan), SSMAX_OK);
    ssmax_context_destroy(&a);
    assert_int_equal(ssmax_buffer_write(b, orphan, 0, data, 1), SSMAX_ERR_INVALID_ARG);
    assert_non_null(strstr(ssmax_last_error(b), "another context"));
    ssmax_context_destroy(&b);
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
    assert_int_equal(ssmax_device_find(ctx, "cpu:-0"), SSMAX_ERR_INVALID_ARG); // digits only
    assert_int_equal(ssmax_device_find(ctx, "cpu:+0"), SSMAX_ERR_INVALID_ARG);
    assert_int_equal(ssmax_device_find(ctx, "cpu: 0"), SSMAX_ERR_INVALID_ARG);
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

/* Device specs by UUID on a context with only the CPU, which has none: a malformed one names the
 * spec and the form expected; a well-formed UUID no device has is SSMAX_ERR_NO_DEVICE naming it. */
static void test_uuid_strings(void **state)
{
    (void)state;
    ssmax_context *ctx = cpu_ctx();
    struct ssmax_device_info d;
    assert_int_equal(ssmax_device_get_info(ctx, 0, &d), SSMAX_OK);
    assert_int_equal(d.has_device_uuid, 0);
    assert_int_equal(d.has_driver_uuid, 0);
    for (int i = 0; i < 16; i++)
        assert_true(d.device_uuid[i] == 0 && d.driver_uuid[i] == 0);
    for (size_t i = 0; i < sizeof(d.reserved); i++)
        assert_int_equal(d.reserved[i], 0);
    static const char *const bad[] = {
        "uuid:",
        "uuid:0123",
        "uuid:0123456789abcdef0123456789abcde",   // 31 digits
        "uuid:0123456789abcdef0123456789abcdef0", // 33
        "uuid:0123456789abcdef0123456789abcdeg",
        "uuid: 0123456789abcdef0123456789abcdef",
        "uuid:0x0123456789abcdef0123456789abcdef",
        "uuid:{01234567-89ab-cdef-0123-456789abcdef}",
        "uuid:01234567-89ab-cdef-0123-456789abcdef:0",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (ssmax_device_find(ctx, bad[i]) != SSMAX_ERR_INVALID_ARG)
            fail_msg("'%s': not refused", bad[i]);
        const char *e = ssmax_last_error(ctx);
        if (!strstr(e, bad[i]) || !strstr(e, "32 hex digits"))
            fail_msg("'%s': the message names neither the spec nor the form: %s", bad[i], e);
    }
    assert_int_equal(ssmax_device_find(ctx, "uuid:01234567-89AB-cdef-0123-456789abcdef"),
                     SSMAX_ERR_NO_DEVICE);
    assert_non_null(strstr(ssmax_last_error(ctx), "01234567-89ab-cdef-0123-456789abcdef"));
    assert_int_equal(ssmax_device_find(ctx, "UUID:0123456789abcdef0123456789abcdef"),
                     SSMAX_ERR_NO_DEVICE);
    // An all-zero UUID is what "unknown" holds: it names no device, the CPU included.
    assert_int_equal(ssmax_device_find(ctx, "uuid:00000000000000000000000000000000"),
                     SSMAX_ERR_NO_DEVICE);
    assert_int_equal(ssmax_device_find(ctx, "uuid"), SSMAX_ERR_INVALID_ARG);
    assert_non_null(strstr(ssmax_last_error(ctx), "uuid:HEX"));
    ssmax_context_destroy(&ctx);
}

/* The fault-injection hooks are for the tests that link the core: the environment variables
 * that once turned them on change nothing in an application. */
static void test_fault_env_ignored(void **state)
{
    (void)state;
    setenv("SSMAX_FAULT_DEVICE_ALLOC", "1", 1);
    setenv("SSMAX_FAULT_DEVICE_LOST", "1", 1);
    ssmax_context *ctx = cpu_ctx();
    ssmax_buffer *b = NULL;
    assert_int_equal(ssmax_buffer_create(ctx, 64, &b), SSMAX_OK);
    ssmax_buffer_destroy(ctx, &b);
    struct hcase c = { 0 };
    ssmax_attn_params_default(&c.p);
    c.p.q_heads = 2, c.p.kv_heads = 1, c.p.q_len = 3, c.p.kv_len = 5, c.p.head_dim = 8;
    c.seed = 7;
    struct hresult r;
    if (h_run(ctx, &c, &r))
        fail_msg("%s", r.why);
    unsetenv("SSMAX_FAULT_DEVICE_ALLOC");
    unsetenv("SSMAX_FAULT_DEVICE_LOST");
    ssmax_context_destroy(&ctx);
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

/* The struct sizes bindings check at load time: each the compiler's sizeof, 0 for anything else. */
static void test_struct_size(void **state)
{
    (void)state;
    assert_int_equal(ssmax_struct_size("ssmax_attn_params"), sizeof(struct ssmax_attn_params));
    assert_int_equal(ssmax_struct_size("ssmax_attn_buffers"), sizeof(struct ssmax_attn_buffers));
    assert_int_equal(ssmax_struct_size("ssmax_attn_host"), sizeof(struct ssmax_attn_host));
    assert_int_equal(ssmax_struct_size("ssmax_exec_args"), sizeof(struct ssmax_exec_args));
    assert_int_equal(ssmax_struct_size("ssmax_device_info"), sizeof(struct ssmax_device_info));
    assert_int_equal(ssmax_struct_size("ssmax_strides"), sizeof(struct ssmax_strides));
    assert_int_equal(ssmax_struct_size("ssmax_compare"), sizeof(struct ssmax_compare));
    assert_int_equal(ssmax_struct_size("ssmax_plan_info"), sizeof(struct ssmax_plan_info));
    assert_int_equal(ssmax_struct_size("ssmax_context_params"),
                     sizeof(struct ssmax_context_params));
    assert_int_equal(ssmax_struct_size("ssmax_tiles"), sizeof(struct ssmax_tiles));
    assert_int_equal(ssmax_struct_size("ssmax_allocator"), sizeof(struct ssmax_allocator));
    assert_int_equal(ssmax_struct_size(NULL), 0);
    assert_int_equal(ssmax_struct_size(""), 0);
    assert_int_equal(ssmax_struct_size("ssmax_attn"), 0);           // a prefix of a name
    assert_int_equal(ssmax_struct_size("struct ssmax_strides"), 0); // the tag only
    assert_int_equal(ssmax_struct_size("SSMAX_STRIDES"), 0);        // case matters
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

/* A plan's mask keeps the plan's kv_len entries a row: an execution with fewer keys reads row i
 * at i * (the plan's kv_len), as the GPU kernels do (here on the cpu device, against the
 * reference given those strides). */
static void test_plan_mask_rows(void **state)
{
    (void)state;
    ssmax_context *ctx = cpu_ctx();
    enum { LQ = 2, LK = 8, D = 4, KV = 4 };
    float q[LQ * D], k[LK * D], v[LK * D], mask[LQ * LK], o[LQ * D];
    for (int i = 0; i < LQ * D; i++)
        q[i] = (float)(i % 3) * 0.5f;
    for (int i = 0; i < LK * D; i++)
        k[i] = (float)((i * 5) % 7) * 0.25f, v[i] = (float)((i * 3) % 5) - 2;
    for (int i = 0; i < LQ; i++)
        for (int j = 0; j < LK; j++)
            mask[i * LK + j] = (float)(i * 10 + j) * 0.1f; // each row's entries differ
    struct ssmax_attn_params p;
    ssmax_attn_params_default(&p);
    p.q_len = LQ, p.kv_len = LK, p.head_dim = D, p.mask = SSMAX_MASK_LQ_LK;
    ssmax_plan *plan = NULL;
    assert_int_equal(ssmax_plan_create(ctx, &p, 0, &plan), SSMAX_OK);
    ssmax_buffer *bq, *bk, *bv, *bo, *bm;
    assert_int_equal(ssmax_buffer_create(ctx, sizeof(q), &bq), 0);
    assert_int_equal(ssmax_buffer_create(ctx, sizeof(k), &bk), 0);
    assert_int_equal(ssmax_buffer_create(ctx, sizeof(v), &bv), 0);
    assert_int_equal(ssmax_buffer_create(ctx, sizeof(o), &bo), 0);
    assert_int_equal(ssmax_buffer_create(ctx, sizeof(mask), &bm), 0);
    assert_int_equal(ssmax_buffer_write(ctx, bq, 0, q, sizeof(q)), 0);
    assert_int_equal(ssmax_buffer_write(ctx, bk, 0, k, sizeof(k)), 0);
    assert_int_equal(ssmax_buffer_write(ctx, bv, 0, v, sizeof(v)), 0);
    assert_int_equal(ssmax_buffer_write(ctx, bm, 0, mask, sizeof(mask)), 0);
    struct ssmax_attn_buffers ab = { .q = bq, .k = bk, .v = bv, .o = bo, .mask = bm };
    struct ssmax_exec_args a;
    ssmax_exec_args_default(&a);
    a.kv_len = KV;
    assert_int_equal(ssmax_plan_execute(ctx, plan, &ab, &a), SSMAX_OK);
    assert_int_equal(ssmax_buffer_read(ctx, bo, 0, o, sizeof(o)), 0);
    struct ssmax_attn_params r = p;
    r.kv_len = KV;
    r.mask_strides[2] = LK * sizeof(float); // the plan's rows
    double want[LQ * D];
    struct ssmax_attn_host io = { q, k, v, NULL, NULL, NULL, want, NULL, mask };
    assert_int_equal(ssmax_attn_ref(&r, &io), SSMAX_OK);
    for (int i = 0; i < LQ * D; i++)
        if (fabs(o[i] - want[i]) > 1e-6)
            fail_msg("O[%d] = %g, want %g (mask rows at the plan's kv_len)", i, (double)o[i],
                     want[i]);
    ssmax_plan_destroy(ctx, &plan);
    ssmax_context_destroy(&ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plan_mask_rows),
        cmocka_unit_test(test_buffers), cmocka_unit_test(test_checked_handles),
        cmocka_unit_test(test_device_strings), cmocka_unit_test(test_strerror_version),
        cmocka_unit_test(test_cpu_device), cmocka_unit_test(test_uuid_strings),
        cmocka_unit_test(test_fault_env_ignored), cmocka_unit_test(test_struct_size),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
