/*
 * An OpenCL application that runs ssmax on its own context, queue and buffers, chained by events:
 * each decode step the application writes the new query without blocking, ssmax's attention waits
 * for that write's event, and the application's read of the output waits for ssmax's event. The
 * host never waits inside the loop. The same steps run once more through the blocking one-call
 * form, ssmax_attn, to show what the host gives back: the time of each call on the host, per step.
 *
 * Shape: B1 Hq32 Hkv8 Lq1 D128 over a 4096-key cache, f32, the last STEPS keys filled one a step.
 *   opencl_app         exit 0 on a match with the float64 reference, 1 on a mismatch or error,
 *                      77 without an OpenCL device (unless SSMAX_REQUIRE_DEVICE=1)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <ssmax/ssmax_opencl.h>

enum { HQ = 32, HKV = 8, D = 128, CAP = 4096, STEPS = 24 };

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

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static int failed(int r, ssmax_context *ctx, const char *what)
{
    if (r < 0)
        fprintf(stderr, "opencl_app: %s: %s (%s)\n", what, ssmax_strerror(r), ssmax_last_error(ctx));
    return r < 0;
}

int main(void)
{
    const char *req = getenv("SSMAX_REQUIRE_DEVICE");
    const int required = req && !strcmp(req, "1");
    cl_platform_id plat;
    cl_device_id dev;
    cl_uint np = 0;
    if (clGetPlatformIDs(1, &plat, &np) != CL_SUCCESS || !np ||
        clGetDeviceIDs(plat, CL_DEVICE_TYPE_ALL, 1, &dev, NULL) != CL_SUCCESS) {
        fprintf(stderr, "opencl_app: no OpenCL device\n");
        return required ? 1 : 77;
    }
    // The application's own context, in-order queue and buffers.
    cl_int e;
    cl_context cx = clCreateContext(NULL, 1, &dev, NULL, NULL, &e);
    cl_command_queue queue = clCreateCommandQueue(cx, dev, 0, &e);
    const size_t nq = (size_t)HQ * D, nkv = (size_t)HKV * CAP * D;
    float *k = malloc(nkv * 4), *v = malloc(nkv * 4), *q = malloc(STEPS * nq * 4), o[HQ * D];
    for (size_t i = 0; i < nkv; i++)
        k[i] = value((uint32_t)i, 1), v[i] = value((uint32_t)i, 2);
    for (size_t i = 0; i < STEPS * nq; i++)
        q[i] = value((uint32_t)i, 3);
    cl_mem mk = clCreateBuffer(cx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, nkv * 4, k, &e);
    cl_mem mv = clCreateBuffer(cx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, nkv * 4, v, &e);
    cl_mem mq = clCreateBuffer(cx, CL_MEM_READ_ONLY, nq * 4, NULL, &e);
    cl_mem mo = clCreateBuffer(cx, CL_MEM_WRITE_ONLY, nq * 4, NULL, &e);

    // ssmax on them: nothing copied, nothing of the application's released.
    ssmax_context *ctx = NULL;
    ssmax_buffer *bq = NULL, *bk = NULL, *bv = NULL, *bo = NULL;
    ssmax_plan *plan = NULL;
    struct ssmax_opencl_device d = { dev, cx, queue, { 0 } };
    struct ssmax_attn_params p;
    ssmax_attn_params_default(&p);
    p.q_heads = HQ, p.kv_heads = HKV, p.q_len = 1, p.kv_len = CAP, p.head_dim = D, p.causal = 1;
    int bad = failed(ssmax_context_create(NULL, &ctx), NULL, "ssmax_context_create") ||
              failed(ssmax_opencl_device_import(ctx, &d), ctx, "ssmax_opencl_device_import") ||
              failed(ssmax_opencl_buffer_import(ctx, mq, 0, nq * 4, &bq), ctx, "import q") ||
              failed(ssmax_opencl_buffer_import(ctx, mk, 0, nkv * 4, &bk), ctx, "import k") ||
              failed(ssmax_opencl_buffer_import(ctx, mv, 0, nkv * 4, &bv), ctx, "import v") ||
              failed(ssmax_opencl_buffer_import(ctx, mo, 0, nq * 4, &bo), ctx, "import o") ||
              failed(ssmax_plan_create(ctx, &p, 0, &plan), ctx, "ssmax_plan_create");
    struct ssmax_attn_buffers b = { .q = bq, .k = bk, .v = bv, .o = bo };
    double host_enq[STEPS], host_blk[STEPS], wall_enq = 0;

    // 1. Chained by events: write q (no wait) -> attention -> next step ... -> read o.
    cl_event last = NULL;
    double t0 = now_ms();
    for (uint32_t s = 0; s < STEPS && !bad; s++) {
        cl_event wrote, done;
        e = clEnqueueWriteBuffer(queue, mq, CL_FALSE, 0, nq * 4, q + s * nq, last ? 1 : 0,
                                 last ? &last : NULL, &wrote);
        if (last)
            clReleaseEvent(last);
        struct ssmax_exec_args a;
        ssmax_exec_args_default(&a);
        a.kv_len = CAP - STEPS + 1 + s; // the cache fills up to CAP
        double h0 = now_ms();
        bad = e != CL_SUCCESS ||
              failed(ssmax_opencl_plan_enqueue(ctx, plan, &b, &a, 1, &wrote, &done), ctx,
                     "ssmax_opencl_plan_enqueue");
        host_enq[s] = now_ms() - h0;
        clReleaseEvent(wrote);
        last = bad ? NULL : done;
    }
    if (!bad) {
        cl_event read;
        bad = clEnqueueReadBuffer(queue, mo, CL_FALSE, 0, sizeof(o), o, 1, &last, &read) !=
                  CL_SUCCESS ||
              clWaitForEvents(1, &read) != CL_SUCCESS; // the one wait, at the end
        wall_enq = now_ms() - t0;
        clReleaseEvent(read);
    }
    if (last)
        clReleaseEvent(last);

    // The last step against the reference: all CAP keys, row 0 at position CAP - 1.
    double ref[HQ * D];
    struct ssmax_attn_host io = { .q = q + (STEPS - 1) * nq, .k = k, .v = v, .o_f64 = ref };
    struct ssmax_compare c = { 0 };
    bad = bad || failed(ssmax_attn_ref(&p, &io), NULL, "ssmax_attn_ref");
    if (!bad) {
        ssmax_compare_f32(ref, o, HQ * D, 0, &c);
        bad = !(c.nmse <= 1e-8) || c.nonfinite_mismatch;
    }

    // 2. The same steps through ssmax_attn, which plans, runs and waits for each. The cache is
    // laid out for CAP keys: the heads CAP rows apart, whatever this step's kv_len.
    struct ssmax_strides st = { 0 };
    st.k[1] = st.v[1] = (uint64_t)CAP * D * 4;
    for (uint32_t s = 0; s < STEPS && !bad; s++) {
        struct ssmax_attn_params ps = p;
        ps.kv_len = CAP - STEPS + 1 + s;
        ps.strides = &st;
        bad = clEnqueueWriteBuffer(queue, mq, CL_TRUE, 0, nq * 4, q + s * nq, 0, NULL, NULL) !=
              CL_SUCCESS;
        double h0 = now_ms();
        bad = bad || failed(ssmax_attn(ctx, &ps, &b), ctx, "ssmax_attn");
        host_blk[s] = now_ms() - h0;
    }
    if (!bad) {
        const double he = median(host_enq, STEPS), hb = median(host_blk, STEPS);
        printf("B1 Hq%d Hkv%d Lq1 Lk%d D%d f32, %d steps: enqueued: %.3f ms of host time a step "
               "(the call), %.3f ms a step in all; ssmax_attn: %.3f ms a step on the host "
               "(the call, waiting); last step nmse %.2e max_abs %.2e: ok\n",
               HQ, HKV, CAP, D, STEPS, he, wall_enq / STEPS, hb, c.nmse, c.max_abs);
    } else if (c.count) {
        printf("MISMATCH: nmse %.2e max_abs %.2e\n", c.nmse, c.max_abs);
    }
    ssmax_plan_destroy(ctx, &plan);
    ssmax_context_destroy(&ctx); // releases its own references only
    clReleaseMemObject(mq), clReleaseMemObject(mk), clReleaseMemObject(mv);
    clReleaseMemObject(mo);
    clReleaseCommandQueue(queue);
    clReleaseContext(cx);
    free(k), free(v), free(q);
    return bad;
}
