/* Device listing through the real loaders: lavapipe (Vulkan), PoCL (OpenCL) and the CPU. Without
 * them the test is skipped (exit 77), unless SSMAX_REQUIRE_DEVICE=1 makes a missing device fail. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "harness.h"
#include "ssmax/ssmax.h"

static void test_listing(void **state)
{
    (void)state;
    ssmax_context *ctx = NULL;
    assert_int_equal(ssmax_context_create(NULL, &ctx), SSMAX_OK);
    int n = ssmax_device_count(ctx), vk = 0, cl = 0, cpu = 0;
    for (int i = 0; i < n; i++) {
        struct ssmax_device_info d;
        assert_int_equal(ssmax_device_get_info(ctx, i, &d), SSMAX_OK);
        printf("# %d: backend %d index %d '%s' (%s) shared %llu, wg %u, subgroup %u, max buffer "
               "%llu\n", i, d.backend, d.index, d.name, d.api_version,
               (unsigned long long)d.shared_memory, d.max_workgroup_size, d.subgroup_size,
               (unsigned long long)d.max_buffer_size);
        assert_true(d.name[0] != 0);
        assert_true(d.max_buffer_size > 0);
        if (d.backend == SSMAX_BACKEND_VULKAN && strstr(d.name, "llvmpipe")) {
            vk++;
            assert_int_equal(d.subgroup_size, 8);
            assert_int_equal(d.shared_memory, 32768);
            assert_int_equal(d.max_buffer_size, 134217728);
        }
        if (d.backend == SSMAX_BACKEND_OPENCL && strstr(d.api_version, "PoCL")) {
            cl++;
            assert_int_equal(d.fp16_arith, 0);
        }
        cpu += d.backend == SSMAX_BACKEND_CPU;
        if (d.compile_only) { // RADV_FORCE_FAMILY in the caller's environment: see radv-null
            printf("#   compile only: not run\n");
            continue;
        }
        if (d.backend != SSMAX_BACKEND_CPU) {
            assert_int_equal(ssmax_device_open(ctx, i), SSMAX_OK);
            ssmax_buffer *b = NULL;
            assert_int_equal(ssmax_buffer_create(ctx, 1000, &b), SSMAX_OK);
            char in[1000], out[1000];
            for (int k = 0; k < 1000; k++)
                in[k] = (char)(k * 7);
            assert_int_equal(ssmax_buffer_write(ctx, b, 0, in, 1000), SSMAX_OK);
            memset(out, 0, sizeof(out));
            assert_int_equal(ssmax_buffer_read(ctx, b, 500, out, 500), SSMAX_OK);
            assert_memory_equal(out, in + 500, 500);
            ssmax_buffer_destroy(ctx, &b);
        }
    }
    assert_int_equal(cpu, 1);
    if (h_require_devices()) {
        assert_int_equal(vk, 1);
        assert_int_equal(cl, 1);
    } else {
        printf("# lavapipe %d, PoCL %d\n", vk, cl);
    }
    assert_int_equal(ssmax_validation_errors(ctx), 0);
    ssmax_context_destroy(&ctx);
}

static void uuid_hex(const uint8_t u[16], int dashes, int upper, char *out)
{
    const char *hex = upper ? "0123456789ABCDEF" : "0123456789abcdef";
    for (int i = 0; i < 16; i++) {
        if (dashes && (i == 4 || i == 6 || i == 8 || i == 10))
            *out++ = '-';
        *out++ = hex[u[i] >> 4];
        *out++ = hex[u[i] & 15];
    }
    *out = 0;
}

/* Device and driver UUIDs: lavapipe reports both, the CPU none; where two devices both report
 * one they differ (or the first listed is the one "uuid:" finds); "uuid:HEX" finds each device
 * by its UUID in every spelling, and the device opened that way reports the same UUID. */
static void test_uuids(void **state)
{
    (void)state;
    ssmax_context *ctx = NULL;
    assert_int_equal(ssmax_context_create(NULL, &ctx), SSMAX_OK);
    int n = ssmax_device_count(ctx), lavapipe = 0;
    struct ssmax_device_info d[16];
    n = n > 16 ? 16 : n;
    for (int i = 0; i < n; i++) {
        assert_int_equal(ssmax_device_get_info(ctx, i, &d[i]), SSMAX_OK);
        char dev[40], drv[40];
        uuid_hex(d[i].device_uuid, 1, 0, dev);
        uuid_hex(d[i].driver_uuid, 1, 0, drv);
        printf("# %d: %s: device UUID %s (%d), driver UUID %s (%d)\n", i, d[i].name, dev,
               d[i].has_device_uuid, drv, d[i].has_driver_uuid);
        assert_true(d[i].has_device_uuid <= 1 && d[i].has_driver_uuid <= 1);
        for (int k = 0; k < 16; k++) { // unknown: all zero
            assert_true(d[i].has_device_uuid || !d[i].device_uuid[k]);
            assert_true(d[i].has_driver_uuid || !d[i].driver_uuid[k]);
        }
        for (size_t k = 0; k < sizeof(d[i].reserved); k++)
            assert_int_equal(d[i].reserved[k], 0);
        if (d[i].backend == SSMAX_BACKEND_CPU)
            assert_true(!d[i].has_device_uuid && !d[i].has_driver_uuid);
        if (d[i].backend == SSMAX_BACKEND_VULKAN && strstr(d[i].name, "llvmpipe")) {
            lavapipe++;
            assert_int_equal(d[i].has_device_uuid, 1);
            assert_int_equal(d[i].has_driver_uuid, 1);
        }
    }
    if (h_require_devices())
        assert_int_equal(lavapipe, 1);
    for (int i = 0; i < n; i++) {
        if (!d[i].has_device_uuid)
            continue;
        int first = i;
        for (int j = 0; j < i; j++)
            if (d[j].has_device_uuid && !memcmp(d[j].device_uuid, d[i].device_uuid, 16))
                first = j;
        // One GPU through Vulkan and OpenCL reports one UUID twice; two devices of one backend
        // never share one.
        if (first != i)
            assert_int_not_equal(d[first].backend, d[i].backend);
        char spec[64];
        for (int form = 0; form < 4; form++) {
            memcpy(spec, form == 3 ? "UUID:" : "uuid:", 5);
            uuid_hex(d[i].device_uuid, form & 1, form >= 2, spec + 5);
            int found = ssmax_device_find(ctx, spec);
            if (found != first)
                fail_msg("'%s': found %d, want %d (%s)", spec, found, first,
                         found < 0 ? ssmax_last_error(ctx) : "");
        }
        if (d[first].compile_only)
            continue;
        assert_int_equal(ssmax_device_open(ctx, first), SSMAX_OK);
        struct ssmax_device_info cur;
        assert_int_equal(ssmax_device_current(ctx, &cur), SSMAX_OK);
        assert_int_equal(cur.has_device_uuid, 1);
        assert_memory_equal(cur.device_uuid, d[i].device_uuid, 16);
    }
    // A UUID that no device here has (every byte flipped from the first known one, or ones).
    uint8_t other[16];
    memset(other, 0xff, sizeof(other));
    for (int i = 0; i < n; i++)
        if (d[i].has_device_uuid) {
            for (int k = 0; k < 16; k++)
                other[k] = (uint8_t)~d[i].device_uuid[k];
            break;
        }
    for (int i = 0; i < n; i++)
        assert_false(d[i].has_device_uuid && !memcmp(d[i].device_uuid, other, 16));
    char spec[64] = "uuid:", text[40];
    uuid_hex(other, 0, 0, spec + 5);
    uuid_hex(other, 1, 0, text);
    assert_int_equal(ssmax_device_find(ctx, spec), SSMAX_ERR_NO_DEVICE);
    assert_non_null(strstr(ssmax_last_error(ctx), text));
    // Malformed: one digit short, a non-hex digit.
    spec[strlen(spec) - 1] = 0;
    assert_int_equal(ssmax_device_find(ctx, spec), SSMAX_ERR_INVALID_ARG);
    assert_non_null(strstr(ssmax_last_error(ctx), spec));
    assert_non_null(strstr(ssmax_last_error(ctx), "32 hex digits"));
    strcat(spec, "g");
    assert_int_equal(ssmax_device_find(ctx, spec), SSMAX_ERR_INVALID_ARG);
    assert_non_null(strstr(ssmax_last_error(ctx), "'g' is not a hex digit"));
    ssmax_context_destroy(&ctx);
}

/* RADV's null hardware (RADV_FORCE_FAMILY=navi21, set by main before any context): listed as a
 * device that compiles but cannot run; auto never picks it; opening it works and every call that
 * would run fails by name. */
static int null_index = -1;

static void test_radv_null(void **state)
{
    (void)state;
    ssmax_context *ctx = NULL;
    assert_int_equal(ssmax_context_create(NULL, &ctx), SSMAX_OK);
    struct ssmax_device_info d;
    assert_int_equal(ssmax_device_get_info(ctx, null_index, &d), SSMAX_OK);
    assert_int_equal(d.compile_only, 1);
    for (size_t i = 0; i < sizeof(d.reserved); i++)
        assert_int_equal(d.reserved[i], 0);
    int a = ssmax_device_find(ctx, "auto"), v = ssmax_device_find(ctx, "vulkan");
    assert_true(a >= 0 && a != null_index);
    assert_true(v != null_index);
    struct ssmax_device_info ai;
    assert_int_equal(ssmax_device_get_info(ctx, a, &ai), SSMAX_OK);
    assert_int_equal(ai.compile_only, 0);
    assert_int_equal(ssmax_device_open(ctx, -1), SSMAX_OK); // auto
    struct ssmax_device_info cur;
    assert_int_equal(ssmax_device_current(ctx, &cur), SSMAX_OK);
    assert_int_equal(cur.compile_only, 0);

    assert_int_equal(ssmax_device_open(ctx, null_index), SSMAX_OK);
    ssmax_buffer *b = NULL;
    assert_int_equal(ssmax_buffer_create(ctx, 1000, &b), SSMAX_ERR_UNSUPPORTED);
    assert_null(b);
    assert_non_null(strstr(ssmax_last_error(ctx), "Null hardware"));
    assert_non_null(strstr(ssmax_last_error(ctx), "cannot run"));
    struct ssmax_attn_params p;
    ssmax_attn_params_default(&p);
    p.batch = p.q_heads = p.kv_heads = p.q_len = p.kv_len = 1;
    p.head_dim = 64;
    struct ssmax_attn_buffers bufs;
    memset(&bufs, 0, sizeof(bufs));
    assert_int_equal(ssmax_attn(ctx, &p, &bufs), SSMAX_ERR_UNSUPPORTED);
    assert_non_null(strstr(ssmax_last_error(ctx), "vulkan:"));
    assert_int_equal(ssmax_attn_supported(ctx, &p), SSMAX_ERR_UNSUPPORTED);
    struct ssmax_plan_info pi;
    assert_int_equal(ssmax_attn_plan_info(ctx, &p, NULL, &pi), SSMAX_ERR_UNSUPPORTED);
    assert_int_equal(ssmax_validation_errors(ctx), 0);
    ssmax_context_destroy(&ctx); // closes the null device: no crash
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "radv-null")) {
        // This process only: the shared Vulkan instance is made with the first context.
        setenv("RADV_FORCE_FAMILY", "navi21", 1);
        ssmax_context *ctx = NULL;
        if (ssmax_context_create(NULL, &ctx) < 0)
            return 1;
        for (int i = 0, n = ssmax_device_count(ctx); i < n; i++) {
            struct ssmax_device_info d;
            ssmax_device_get_info(ctx, i, &d);
            if (d.backend == SSMAX_BACKEND_VULKAN && !strncmp(d.name, "Null hardware", 13))
                null_index = i;
        }
        ssmax_context_destroy(&ctx);
        if (null_index < 0) {
            printf("RADV's null hardware is not listed (RADV missing?): skipped\n");
            return 77;
        }
        const struct CMUnitTest tests[] = { cmocka_unit_test(test_radv_null) };
        return cmocka_run_group_tests(tests, NULL, NULL);
    }
    ssmax_context *ctx = NULL;
    if (ssmax_context_create(NULL, &ctx) < 0)
        return 1;
    int n = ssmax_device_count(ctx);
    ssmax_context_destroy(&ctx);
    if (n <= 1 && !h_require_devices()) {
        printf("no Vulkan or OpenCL device: skipped\n");
        return 77;
    }
    const struct CMUnitTest tests[] = { cmocka_unit_test(test_listing),
                                        cmocka_unit_test(test_uuids) };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
