/*
 * The first attention call of a new process: what a plan made ahead of time moves out of it.
 * One process, one shape, one of two ways:
 *   plan  ssmax_plan_create (builds the pipelines), then ssmax_plan_execute twice
 *   attn  ssmax_attn twice (the first builds the pipelines)
 * Prints one line per step, "step<TAB>wall_ms<TAB>cpu_ms" (cpu: CLOCK_PROCESS_CPUTIME_ID, every
 * thread of the process, so a driver's worker threads count too), after the context and device are
 * open and the inputs written (the "open" line). Run it with MESA_SHADER_CACHE_DISABLE=true and an
 * empty SSMAX_CACHE_DIR to see the compile a new process pays.
 *
 *   first_call DEVICE plan|attn decode|prefill [f32|f16]
 * Shapes: B1 Hq8 Hkv8 D64; decode Lq1 Lk1024, prefill Lq=Lk=256. Exit 0, or 1 on an error.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <ssmax/ssmax.h>

static double ms(clockid_t c)
{
    struct timespec t;
    clock_gettime(c, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static double w0, c0;

static void mark(const char *step)
{
    double w = ms(CLOCK_MONOTONIC), c = ms(CLOCK_PROCESS_CPUTIME_ID);
    printf("%s\t%.1f\t%.1f\n", step, w - w0, c - c0);
    w0 = w, c0 = c;
}

static int fail(int r, ssmax_context *ctx, const char *what)
{
    fprintf(stderr, "first_call: %s: %s (%s)\n", what, ssmax_strerror(r), ssmax_last_error(ctx));
    return 1;
}

int main(int argc, char **argv)
{
    if (argc < 4 || (strcmp(argv[2], "plan") && strcmp(argv[2], "attn")) ||
        (strcmp(argv[3], "decode") && strcmp(argv[3], "prefill"))) {
        fprintf(stderr, "usage: first_call DEVICE plan|attn decode|prefill [f32|f16]\n");
        return 1;
    }
    const int use_plan = !strcmp(argv[2], "plan");
    const int f16 = argc > 4 && !strcmp(argv[4], "f16");
    struct ssmax_attn_params p;
    ssmax_attn_params_default(&p);
    p.dtype = f16 ? SSMAX_F16 : SSMAX_F32;
    p.batch = 1, p.q_heads = 8, p.kv_heads = 8, p.head_dim = 64;
    if (!strcmp(argv[3], "decode"))
        p.q_len = 1, p.kv_len = 1024;
    else
        p.q_len = 256, p.kv_len = 256;

    w0 = ms(CLOCK_MONOTONIC), c0 = ms(CLOCK_PROCESS_CPUTIME_ID);
    ssmax_context *ctx = NULL;
    struct ssmax_context_params cp;
    ssmax_context_params_default(&cp);
    int r = ssmax_context_create(&cp, &ctx);
    if (r < 0)
        return fail(r, ctx, "context");
    int dev = ssmax_device_find(ctx, argv[1]);
    if (dev < 0)
        return fail(dev, ctx, argv[1]);
    if ((r = ssmax_device_open(ctx, dev)) < 0)
        return fail(r, ctx, "device_open");

    const size_t esz = f16 ? 2 : 4;
    const size_t nq = (size_t)p.q_heads * p.q_len * p.head_dim * esz;
    const size_t nk = (size_t)p.kv_heads * p.kv_len * p.head_dim * esz;
    unsigned char *host = malloc(nk);
    if (!host)
        return 1;
    for (size_t i = 0; i < nk; i++) // small values, finite as f32 or f16 bit patterns
        host[i] = (i % esz == esz - 1) ? 0x3c : (unsigned char)(i * 2654435761u >> 24);
    struct ssmax_attn_buffers b;
    memset(&b, 0, sizeof(b));
    if ((r = ssmax_buffer_create(ctx, nq, &b.q)) < 0 || (r = ssmax_buffer_create(ctx, nk, &b.k)) < 0 ||
        (r = ssmax_buffer_create(ctx, nk, &b.v)) < 0 || (r = ssmax_buffer_create(ctx, nq, &b.o)) < 0)
        return fail(r, ctx, "buffer_create");
    if ((r = ssmax_buffer_write(ctx, b.q, 0, host, nq)) < 0 ||
        (r = ssmax_buffer_write(ctx, b.k, 0, host, nk)) < 0 ||
        (r = ssmax_buffer_write(ctx, b.v, 0, host, nk)) < 0)
        return fail(r, ctx, "buffer_write");
    mark("open");

    if (use_plan) {
        ssmax_plan *plan = NULL;
        if ((r = ssmax_plan_create(ctx, &p, 0, &plan)) < 0)
            return fail(r, ctx, "plan_create");
        mark("plan_create");
        if ((r = ssmax_plan_execute(ctx, plan, &b, NULL)) < 0)
            return fail(r, ctx, "plan_execute 1");
        mark("execute1");
        if ((r = ssmax_plan_execute(ctx, plan, &b, NULL)) < 0)
            return fail(r, ctx, "plan_execute 2");
        mark("execute2");
        ssmax_plan_destroy(ctx, &plan);
    } else {
        if ((r = ssmax_attn(ctx, &p, &b)) < 0)
            return fail(r, ctx, "attn 1");
        mark("attn1");
        if ((r = ssmax_attn(ctx, &p, &b)) < 0)
            return fail(r, ctx, "attn 2");
        mark("attn2");
    }
    struct ssmax_plan_info info;
    if (ssmax_last_plan(ctx, &info) == 0)
        fprintf(stderr, "first_call: %s, tiles %u x %u, splits %u\n", info.kernel, info.tile_rows,
                info.tile_keys, info.kv_splits);
    free(host);
    ssmax_context_destroy(&ctx);
    return 0;
}
