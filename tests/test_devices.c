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

int main(void)
{
    ssmax_context *ctx = NULL;
    if (ssmax_context_create(NULL, &ctx) < 0)
        return 1;
    int n = ssmax_device_count(ctx);
    ssmax_context_destroy(&ctx);
    if (n <= 1 && !h_require_devices()) {
        printf("no Vulkan or OpenCL device: skipped\n");
        return 77;
    }
    const struct CMUnitTest tests[] = { cmocka_unit_test(test_listing) };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
