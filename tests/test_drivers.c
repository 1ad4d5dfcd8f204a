/* The drivers under many contexts: contexts created, used and destroyed on many threads at once
 * (each with its Vulkan and OpenCL device and a small attention call), and the host memory a
 * context leaves behind once destroyed. Run as "test_drivers stress" or "test_drivers rss"; each
 * is its own process so the other's allocator state does not blur the measurement.
 *
 * Without the drivers the GPU steps are skipped (the ThreadSanitizer build has none), unless
 * SSMAX_REQUIRE_DEVICE=1 makes a context without its Vulkan or OpenCL device a failure. */
#include <malloc.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"
#include "ssmax/ssmax.h"

#define THREADS 8

static const char *const gpu_backends[] = { "vulkan", "opencl" };

/* One cycle: a context, then each GPU device in turn (and the CPU) with a small attention call,
 * then destroy; only the device named by only when it is not NULL. Returns 0, or -1 with why
 * filled. */
static int cycle(uint64_t seed, int need_gpus, const char *only, char *why, size_t len)
{
    ssmax_context *ctx = NULL;
    int r = ssmax_context_create(NULL, &ctx);
    if (r < 0) {
        snprintf(why, len, "ssmax_context_create: %s", ssmax_last_error(NULL));
        return -1;
    }
    const char *devs[3] = { gpu_backends[0], gpu_backends[1], "cpu" };
    int st = 0;
    for (int k = 0; k < 3 && !st; k++) {
        if (only && strcmp(only, devs[k]))
            continue;
        int i = ssmax_device_find(ctx, devs[k]);
        if (i < 0) {
            if (k < 2 && need_gpus) {
                snprintf(why, len, "no %s device: %s", devs[k], ssmax_last_error(ctx));
                st = -1;
            }
            continue;
        }
        if (ssmax_device_open(ctx, i) < 0) {
            snprintf(why, len, "open %s: %s", devs[k], ssmax_last_error(ctx));
            st = -1;
            break;
        }
        struct hcase c = { 0 };
        ssmax_attn_params_default(&c.p);
        c.p.q_heads = 2, c.p.kv_heads = 1, c.p.q_len = 5, c.p.kv_len = 19, c.p.head_dim = 8;
        c.p.causal = 1;
        c.seed = seed;
        c.want_lse = 1;
        struct hresult hr;
        if (h_run(ctx, &c, &hr) != 0 || hr.status != SSMAX_OK || !hr.pass) {
            snprintf(why, len, "attention on %s: status %d, %s %s", devs[k], hr.status, hr.why,
                     ssmax_last_error(ctx));
            st = -1;
        }
    }
    if (ssmax_validation_errors(ctx) && !st) {
        snprintf(why, len, "%llu validation errors",
                 (unsigned long long)ssmax_validation_errors(ctx));
        st = -1;
    }
    ssmax_context_destroy(&ctx);
    return st;
}

struct job {
    int id, cycles, fails;
    char why[700];
};

static void *worker(void *arg)
{
    struct job *j = arg;
    for (int i = 0; i < j->cycles; i++) {
        char why[600];
        if (cycle((uint64_t)j->id * 1000 + (uint64_t)i, h_require_devices(), NULL, why, sizeof(why)) < 0) {
            if (!j->fails++)
                snprintf(j->why, sizeof(j->why), "thread %d, cycle %d: %s", j->id, i, why);
        }
    }
    return NULL;
}

/* 8 threads x 50 cycles at once: every context gets its devices and a correct result. */
static void test_stress(void **state)
{
    (void)state;
    int cycles = 50;
    const char *e = getenv("SSMAX_TEST_DRIVER_CYCLES");
    if (e && atoi(e) > 0)
        cycles = atoi(e);
    struct job jobs[THREADS];
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) {
        jobs[i] = (struct job){ .id = i, .cycles = cycles };
        assert_int_equal(pthread_create(&t[i], NULL, worker, &jobs[i]), 0);
    }
    int fails = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        if (jobs[i].fails)
            fprintf(stderr, "%s (%d failed cycles)\n", jobs[i].why, jobs[i].fails);
        fails += jobs[i].fails;
    }
    printf("# %d threads x %d cycles: %d failed\n", THREADS, cycles, fails);
    assert_int_equal(fails, 0);
}

static long rss_bytes(void)
{
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        return -1;
    if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
        resident = -1;
    fclose(f);
    return resident < 0 ? -1 : resident * sysconf(_SC_PAGESIZE);
}

static int cmp_long(const void *a, const void *b)
{
    long x = *(const long *)a, y = *(const long *)b;
    return x < y ? -1 : x > y;
}

/* The median of n samples (sorts them). */
static long median(long *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_long);
    return v[n / 2];
}

/* Bytes of heap in use (glibc's main arena and its mmap'ed blocks), or -1 where unknown. */
static long heap_bytes(void)
{
#ifdef __GLIBC__
    struct mallinfo2 m = mallinfo2();
    return (long)(m.uordblks + m.hblkhd);
#else
    return -1;
#endif
}

/* Growth a cycle between the medians of the first and the last WINDOW of n samples. */
static double growth(const long *s, int n, int window)
{
    long first[64], last[64];
    memcpy(first, s, sizeof(*s) * (size_t)window);
    memcpy(last, s + n - window, sizeof(*s) * (size_t)window);
    return (double)(median(last, window) - median(first, window)) / (n - window);
}

/* Host memory a destroyed context leaves behind, for each device on its own: after a warm-up,
 * 200 more cycles may not grow the resident set by more than 256 bytes a cycle on average, nor
 * the heap in use by more than 128 (a context that loaded and unloaded the drivers left about 290
 * bytes of heap behind). The warm-up is long because the drivers fill caches of their own over
 * the first couple of hundred contexts, then stay flat; a leak per context grows without end. RSS
 * moves in pages and the allocator may give memory back to the system at any time, so the heap
 * is watched too (it is exact, so its bound is tighter), and each growth is taken between the
 * medians of the first and the last 25 samples, not between two readings; a device fails when
 * three rounds in a row grow past a bound. */
static void test_rss(void **state)
{
    (void)state;
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    // The sanitizers' allocators hold freed memory back (quarantine, shadow): no leak bound holds.
    printf("# built with a sanitizer: skipped\n");
    skip();
#endif
    if (rss_bytes() < 0) {
        printf("# /proc/self/statm unreadable: skipped\n");
        skip();
    }
    enum { WARMUP = 300, CYCLES = 200, WINDOW = 25 };
    static const char *const devs[] = { "vulkan", "opencl", "cpu" };
    char why[600];
    int bad = 0;
    for (size_t d = 0; d < sizeof(devs) / sizeof(devs[0]); d++) {
        for (int i = 0; i < WARMUP; i++)
            if (cycle((uint64_t)i, h_require_devices(), devs[d], why, sizeof(why)) < 0)
                fail_msg("%s: warm-up cycle %d: %s", devs[d], i, why);
        // A leak grows in every round; a driver that maps a few more pages once (a JIT arena, a
        // thread stack) does not, so a round over a bound is measured again, up to 3 rounds.
        double r = 0, h = 0;
        for (int round = 0; round < 3; round++) {
            long rss[CYCLES], heap[CYCLES];
            for (int i = 0; i < CYCLES; i++) {
                if (cycle((uint64_t)i, h_require_devices(), devs[d], why, sizeof(why)) < 0)
                    fail_msg("%s: cycle %d: %s", devs[d], i, why);
                rss[i] = rss_bytes();
                heap[i] = heap_bytes();
            }
            r = growth(rss, CYCLES, WINDOW), h = heap[0] < 0 ? 0 : growth(heap, CYCLES, WINDOW);
            printf("# %s: %d cycles after %d: RSS %.0f, heap %.0f bytes a cycle\n", devs[d],
                   CYCLES, WARMUP + round * CYCLES, r, h);
            if (r <= 256 && h <= 128)
                break;
        }
        if (r > 256 || h > 128) {
            fprintf(stderr, "%s: a context leaves %.0f bytes of RSS (limit 256), %.0f of heap "
                            "(limit 128)\n",
                    devs[d], r, h);
            bad++;
        }
    }
    assert_int_equal(bad, 0);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest stress[] = { cmocka_unit_test(test_stress) };
    const struct CMUnitTest rss[] = { cmocka_unit_test(test_rss) };
    if (argc > 1 && !strcmp(argv[1], "rss"))
        return cmocka_run_group_tests(rss, NULL, NULL);
    return cmocka_run_group_tests(stress, NULL, NULL);
}
