/* Concurrency on the CPU backend (ThreadSanitizer-clean): contexts are independent, so two threads
 * with a context each run freely; one context shared by two threads is used under a mutex, as the
 * header's Thread-safety rule says. Errors are per context and per thread. */
#include <pthread.h>
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

#define ITERS 20

static ssmax_context *cpu_context(void)
{
    struct ssmax_context_params cp;
    ssmax_context_params_default(&cp);
    cp.backends = SSMAX_BACKEND_CPU_BIT;
    ssmax_context *ctx = NULL;
    if (ssmax_context_create(&cp, &ctx) < 0 || ssmax_device_open(ctx, -1) < 0)
        return NULL;
    return ctx;
}

struct job {
    ssmax_context *ctx;
    pthread_mutex_t *lock; // NULL: the context is this thread's own
    uint64_t seed;
    int fails;
};

static void *worker(void *arg)
{
    struct job *j = arg;
    for (int i = 0; i < ITERS; i++) {
        struct hcase c = { 0 };
        ssmax_attn_params_default(&c.p);
        c.p.q_heads = 2, c.p.kv_heads = 1, c.p.q_len = 3 + i % 5, c.p.kv_len = 17, c.p.head_dim = 8;
        c.p.causal = i % 2;
        c.seed = j->seed + (uint64_t)i;
        c.want_lse = 1;
        struct hresult r;
        if (j->lock)
            pthread_mutex_lock(j->lock);
        int st = h_run(j->ctx, &c, &r);
        // a bad call's message stays in this thread's context-free error slot
        char msg[128];
        c.p.head_dim = 0;
        int bad = ssmax_attn_validate(&c.p, msg, sizeof(msg));
        if (j->lock)
            pthread_mutex_unlock(j->lock);
        if (st != 0 || bad != SSMAX_ERR_INVALID_ARG || strcmp(ssmax_last_error(NULL), msg))
            j->fails++;
    }
    return NULL;
}

/* Runs the two jobs on two threads and checks neither saw a failure. */
static void run_pair(struct job *a, struct job *b)
{
    pthread_t ta, tb;
    assert_int_equal(pthread_create(&ta, NULL, worker, a), 0);
    assert_int_equal(pthread_create(&tb, NULL, worker, b), 0);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    assert_int_equal(a->fails + b->fails, 0);
}

static void test_own_contexts(void **state)
{
    (void)state;
    struct job a = { cpu_context(), NULL, 100, 0 }, b = { cpu_context(), NULL, 200, 0 };
    assert_non_null(a.ctx);
    assert_non_null(b.ctx);
    run_pair(&a, &b);
    ssmax_context_destroy(&a.ctx);
    ssmax_context_destroy(&b.ctx);
}

static void test_shared_context(void **state)
{
    (void)state;
    pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    ssmax_context *ctx = cpu_context();
    assert_non_null(ctx);
    struct job a = { ctx, &lock, 300, 0 }, b = { ctx, &lock, 400, 0 };
    run_pair(&a, &b);
    ssmax_context_destroy(&ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_own_contexts),
        cmocka_unit_test(test_shared_context),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
