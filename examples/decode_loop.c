/*
 * A decode loop: a KV cache that grows by one token a step, one plan for the whole generation,
 * attention in place every step. Two cache layouts an inference engine uses:
 *   head-major  K, V [Hkv, capacity, D]      (a head's keys contiguous)
 *   token-major K, V [capacity, Hkv, D]      ([B, L, H, D]: a token's heads contiguous)
 * Neither is copied or transposed: the plan reads them through strides. After the last step the
 * output is checked against ssmax's float64 reference.
 *
 *   decode_loop [DEVICE]      DEVICE as in `ssmax devices` (default: auto)
 * Exit 0 on a match, 1 on a mismatch or error, 77 when the device is missing (unless
 * SSMAX_REQUIRE_DEVICE=1).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <ssmax/ssmax.h>

enum { HQ = 8, HKV = 2, D = 64, CAP = 256, STEPS = 200 };

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static float value(uint32_t i, uint32_t salt) // deterministic values in [-1, 1]
{
    uint32_t x = i * 2654435761u ^ salt * 40503u;
    x ^= x >> 15, x *= 2246822519u, x ^= x >> 13;
    return (float)(x % 20001u) / 10000.0f - 1.0f;
}

static int check(int r, ssmax_context *ctx, const char *what)
{
    if (r < 0)
        fprintf(stderr, "decode_loop: %s: %s (%s)\n", what, ssmax_strerror(r), ssmax_last_error(ctx));
    return r < 0;
}

/* One generation of STEPS tokens with the cache in one layout. Returns 0 when the last step
 * matches the reference. */
static int generate(ssmax_context *ctx, int token_major)
{
    const size_t es = sizeof(float), row = (size_t)D * es, cache = (size_t)CAP * HKV * row;
    // The layout, in bytes (batch, head, row); Q and O stay dense [1, HQ, 1, D].
    struct ssmax_strides st = { 0 };
    if (token_major) {
        st.k[1] = st.v[1] = row;            // heads of one token side by side
        st.k[2] = st.v[2] = HKV * row;      // then the next token
    } else {
        st.k[1] = st.v[1] = CAP * row;      // a head's CAP rows, then the next head
    }
    struct ssmax_attn_params p;
    ssmax_attn_params_default(&p);
    p.q_heads = HQ, p.kv_heads = HKV, p.q_len = 1, p.kv_len = CAP, p.head_dim = D;
    p.causal = 1;
    p.strides = &st;

    float *k = calloc(CAP * HKV * D, es), *v = calloc(CAP * HKV * D, es);
    float q[HQ * D], o[HQ * D];
    ssmax_buffer *bq = NULL, *bk = NULL, *bv = NULL, *bo = NULL;
    ssmax_plan *plan = NULL;
    int bad = !k || !v;
    bad = bad || check(ssmax_buffer_create(ctx, sizeof(q), &bq), ctx, "buffer q") ||
          check(ssmax_buffer_create(ctx, cache, &bk), ctx, "buffer k") ||
          check(ssmax_buffer_create(ctx, cache, &bv), ctx, "buffer v") ||
          check(ssmax_buffer_create(ctx, sizeof(o), &bo), ctx, "buffer o") ||
          // Everything that takes time happens here, once: validation, choices, pipelines.
          check(ssmax_plan_create(ctx, &p, 0, &plan), ctx, "ssmax_plan_create");
    struct ssmax_attn_buffers b = { .q = bq, .k = bk, .v = bv, .o = bo };
    double ms = 0;
    for (uint32_t t = 0; t < STEPS && !bad; t++) {
        // The new token: its K and V rows go into the cache where the layout puts them.
        for (uint32_t h = 0; h < HKV && !bad; h++) {
            size_t at = token_major ? ((size_t)t * HKV + h) * D : ((size_t)h * CAP + t) * D;
            for (uint32_t d = 0; d < D; d++) {
                k[at + d] = value((uint32_t)(at + d), 1);
                v[at + d] = value((uint32_t)(at + d), 2);
            }
            bad = check(ssmax_buffer_write(ctx, bk, at * es, k + at, row), ctx, "write k") ||
                  check(ssmax_buffer_write(ctx, bv, at * es, v + at, row), ctx, "write v");
        }
        for (uint32_t i = 0; i < HQ * D; i++)
            q[i] = value(i + t * HQ * D, 3);
        bad = bad || check(ssmax_buffer_write(ctx, bq, 0, q, sizeof(q)), ctx, "write q");
        // This step attends over the t + 1 keys there are; row 0 sits at position t.
        struct ssmax_exec_args a;
        ssmax_exec_args_default(&a);
        a.kv_len = t + 1;
        double t0 = now_ms();
        bad = bad || check(ssmax_plan_execute(ctx, plan, &b, &a), ctx, "ssmax_plan_execute");
        ms += now_ms() - t0;
    }
    bad = bad || check(ssmax_buffer_read(ctx, bo, 0, o, sizeof(o)), ctx, "read o");
    if (!bad) {
        // The reference over the same cache, the same strides, the keys of the last step.
        struct ssmax_attn_params rp = p;
        rp.kv_len = STEPS;
        double ref[HQ * D];
        struct ssmax_attn_host io = { .q = q, .k = k, .v = v, .o_f64 = ref };
        struct ssmax_compare c;
        bad = check(ssmax_attn_ref(&rp, &io), NULL, "ssmax_attn_ref");
        if (!bad) {
            ssmax_compare_f32(ref, o, HQ * D, 0, &c);
            bad = !(c.nmse <= 1e-8) || c.nonfinite_mismatch;
            printf("%s cache: %u steps, %.3f ms a step (execute, wall), last step nmse %.2e "
                   "max_abs %.2e: %s\n", token_major ? "token-major" : "head-major", STEPS,
                   ms / STEPS, c.nmse, c.max_abs, bad ? "MISMATCH" : "ok");
        }
    }
    ssmax_plan_destroy(ctx, &plan);
    ssmax_buffer_destroy(ctx, &bq), ssmax_buffer_destroy(ctx, &bk);
    ssmax_buffer_destroy(ctx, &bv), ssmax_buffer_destroy(ctx, &bo);
    free(k), free(v);
    return bad;
}

int main(int argc, char **argv)
{
    const char *spec = argc > 1 ? argv[1] : NULL;
    const char *req = getenv("SSMAX_REQUIRE_DEVICE");
    ssmax_context *ctx = NULL;
    if (check(ssmax_context_create(NULL, &ctx), NULL, "ssmax_context_create"))
        return 1;
    int idx = ssmax_device_find(ctx, spec);
    if (idx < 0) {
        fprintf(stderr, "decode_loop: no device %s: %s\n", spec ? spec : "auto",
                ssmax_last_error(ctx));
        ssmax_context_destroy(&ctx);
        return req && !strcmp(req, "1") ? 1 : 77;
    }
    struct ssmax_device_info info;
    if (check(ssmax_device_open(ctx, idx), ctx, "ssmax_device_open") ||
        check(ssmax_device_current(ctx, &info), ctx, "ssmax_device_current")) {
        ssmax_context_destroy(&ctx);
        return 1;
    }
    printf("device: %s\n", info.name);
    int bad = generate(ctx, 0) | generate(ctx, 1);
    ssmax_context_destroy(&ctx);
    return bad;
}
