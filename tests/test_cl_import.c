/*
 * ssmax on the application's own OpenCL context, queue and buffers (ssmax_opencl.h), on PoCL:
 * attention on imported ranges of the application's cl_mem objects checked against the float64
 * reference (fused, split-KV, unfused, a plan; f32 and f16), the bad-input cases each named, and
 * what ssmax leaves behind: every reference it took given back, the application's objects working.
 * Tensors past what the kernels index in 32 bits from their cl_mem's start, with that limit
 * lowered by the core's test hook so small buffers reach it.
 * Exit 77 without an OpenCL device, unless SSMAX_REQUIRE_DEVICE=1.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "harness.h"
#include "src/internal.h" // ssmax_cl_index_limit_set, ssmax_fault_set: the core's test hooks
#include "ssmax/ssmax_opencl.h"

static cl_platform_id plat;
static cl_device_id dev;
static const uint64_t seed0 = 20261203;

static cl_uint refcount(cl_mem m)
{
    cl_uint n = 0;
    clGetMemObjectInfo(m, CL_MEM_REFERENCE_COUNT, sizeof(n), &n, NULL);
    return n;
}

static ssmax_context *new_ctx(void)
{
    struct ssmax_context_params cp;
    ssmax_context_params_default(&cp);
    cp.backends = SSMAX_BACKEND_OPENCL_BIT | SSMAX_BACKEND_CPU_BIT;
    ssmax_context *c = NULL;
    assert_int_equal(ssmax_context_create(&cp, &c), SSMAX_OK);
    return c;
}

/* The application's OpenCL context and in-order queue on the device, and a context of ours that
 * imports them. */
static ssmax_context *app_import(cl_context *cx, cl_command_queue *q)
{
    cl_int e;
    *cx = clCreateContext(NULL, 1, &dev, NULL, NULL, &e);
    assert_int_equal(e, CL_SUCCESS);
    *q = clCreateCommandQueue(*cx, dev, 0, &e);
    assert_int_equal(e, CL_SUCCESS);
    ssmax_context *c = new_ctx();
    struct ssmax_opencl_device d = { dev, *cx, *q, { 0 } };
    assert_int_equal(ssmax_opencl_device_import(c, &d), SSMAX_OK);
    return c;
}

/* The application's side of an enqueued execution: ssmax's last event (done) has not run while
 * the application's gate is open; the gate completes, the application reads mo (nbytes) into ho
 * after done, and waits for its read. Releases done and gate. */
static void gate_then_read(cl_command_queue q, cl_event gate, cl_event done, cl_mem mo,
                           size_t nbytes, void *ho)
{
    cl_int status = 0;
    clGetEventInfo(done, CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof(status), &status, NULL);
    assert_true(status != CL_COMPLETE);
    assert_int_equal(clSetUserEventStatus(gate, CL_COMPLETE), CL_SUCCESS);
    cl_event rd;
    assert_int_equal(clEnqueueReadBuffer(q, mo, CL_FALSE, 0, nbytes, ho, 1, &done, &rd),
                     CL_SUCCESS);
    assert_int_equal(clWaitForEvents(1, &rd), CL_SUCCESS);
    clReleaseEvent(rd), clReleaseEvent(done), clReleaseEvent(gate);
}

/* One problem on imported ranges: Q, K and V share one application buffer (at 256, and after),
 * O sits at 64 in another; both buffers hold a guard pattern that must survive. */
static void run_imported(ssmax_context *c, cl_context cx, cl_command_queue q,
                         struct ssmax_attn_params *p, int use_plan, uint64_t seed)
{
    const size_t es = p->dtype == SSMAX_F16 ? 2 : 4;
    const size_t rows = (size_t)p->batch * p->q_heads * p->q_len;
    const size_t nq = rows * p->head_dim, nkv = (size_t)p->batch * p->kv_heads * p->kv_len * p->head_dim;
    const size_t qo = 256, ko = qo + (nq * es + 255) / 256 * 256, vo = ko + (nkv * es + 255) / 256 * 256;
    const size_t in_size = vo + nkv * es + 256, out_size = 64 + nq * es + 64;
    unsigned char *in = malloc(in_size), *out = malloc(out_size), *back = malloc(out_size);
    double *ref = malloc(nq * sizeof(double));
    assert_true(in && out && back && ref);
    memset(in, 0x5a, in_size);
    memset(out, 0xa5, out_size);
    h_fill(in + qo, p->dtype, nq, 1, &seed);
    h_fill(in + ko, p->dtype, nkv, 1, &seed);
    h_fill(in + vo, p->dtype, nkv, 1, &seed);
    cl_int e;
    cl_mem mi = clCreateBuffer(cx, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, in_size, in, &e);
    assert_int_equal(e, CL_SUCCESS);
    cl_mem mo = clCreateBuffer(cx, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, out_size, out, &e);
    assert_int_equal(e, CL_SUCCESS);
    ssmax_buffer *bq, *bk, *bv, *bo;
    assert_int_equal(ssmax_opencl_buffer_import(c, mi, qo, nq * es, &bq), SSMAX_OK);
    assert_int_equal(ssmax_opencl_buffer_import(c, mi, ko, nkv * es, &bk), SSMAX_OK);
    assert_int_equal(ssmax_opencl_buffer_import(c, mi, vo, nkv * es, &bv), SSMAX_OK);
    assert_int_equal(ssmax_opencl_buffer_import(c, mo, 64, nq * es, &bo), SSMAX_OK);
    assert_int_equal(refcount(mi), 4); // ours: three, the application's: one
    struct ssmax_attn_buffers ab = { .q = bq, .k = bk, .v = bv, .o = bo };
    if (use_plan) {
        ssmax_plan *plan = NULL;
        assert_int_equal(ssmax_plan_create(c, p, 0, &plan), SSMAX_OK);
        assert_int_equal(ssmax_plan_execute(c, plan, &ab, NULL), SSMAX_OK);
        ssmax_plan_destroy(c, &plan);
    } else if (ssmax_attn(c, p, &ab) != SSMAX_OK) {
        fail_msg("ssmax_attn: %s", ssmax_last_error(c));
    }
    // The application reads its own buffer.
    assert_int_equal(clEnqueueReadBuffer(q, mo, CL_TRUE, 0, out_size, back, 0, NULL, NULL),
                     CL_SUCCESS);
    for (size_t i = 0; i < 64; i++)
        if (back[i] != 0xa5 || back[64 + nq * es + i] != 0xa5)
            fail_msg("the guard around O changed at %zu", i);
    struct ssmax_attn_host io = { .q = in + qo, .k = in + ko, .v = in + vo, .o_f64 = ref };
    assert_int_equal(ssmax_attn_ref(p, &io), SSMAX_OK);
    struct ssmax_compare cmp;
    if (p->dtype == SSMAX_F16)
        ssmax_compare_f16(ref, (const uint16_t *)(back + 64), nq, 0, &cmp);
    else
        ssmax_compare_f32(ref, (const float *)(back + 64), nq, 0, &cmp);
    struct htol tol = h_tol_o(p->dtype, cmp.max_ref);
    printf("# imported %s %s path %d%s: nmse %.2e max %.2e\n", p->dtype == SSMAX_F16 ? "f16" : "f32",
           p->causal ? "causal" : "full", (int)p->path, use_plan ? " (plan)" : "", cmp.nmse,
           cmp.max_abs);
    if (cmp.nonfinite_mismatch || cmp.nmse > tol.nmse || cmp.max_abs > tol.max_abs)
        fail_msg("imported buffers: nmse %.2e (limit %.2e), max %.2e (limit %.2e)", cmp.nmse,
                 tol.nmse, cmp.max_abs, tol.max_abs);
    // An output range overlapping an input range of the same application buffer is refused.
    ssmax_buffer *alias = NULL;
    assert_int_equal(ssmax_opencl_buffer_import(c, mi, qo, nq * es, &alias), SSMAX_OK);
    struct ssmax_attn_buffers bad = ab;
    bad.o = alias;
    assert_int_equal(ssmax_attn(c, p, &bad), SSMAX_ERR_INVALID_ARG);
    assert_non_null(strstr(ssmax_last_error(c), "overlap"));
    ssmax_buffer_destroy(c, &alias), ssmax_buffer_destroy(c, &bq), ssmax_buffer_destroy(c, &bk);
    ssmax_buffer_destroy(c, &bv), ssmax_buffer_destroy(c, &bo);
    assert_int_equal(refcount(mi), 1);
    assert_int_equal(refcount(mo), 1);
    clReleaseMemObject(mi), clReleaseMemObject(mo);
    free(in), free(out), free(back), free(ref);
}

static void test_imported(void **state)
{
    (void)state;
    cl_int e;
    cl_context cx = clCreateContext(NULL, 1, &dev, NULL, NULL, &e);
    assert_int_equal(e, CL_SUCCESS);
    cl_command_queue q = clCreateCommandQueue(cx, dev, 0, &e); // no profiling: device time 0
    assert_int_equal(e, CL_SUCCESS);
    cl_uint cx_refs = 0, q_refs = 0, n = 0; // as the application holds them (objects retain too)
    clGetContextInfo(cx, CL_CONTEXT_REFERENCE_COUNT, sizeof(cx_refs), &cx_refs, NULL);
    clGetCommandQueueInfo(q, CL_QUEUE_REFERENCE_COUNT, sizeof(q_refs), &q_refs, NULL);
    ssmax_context *c = new_ctx();
    struct ssmax_opencl_device d = { dev, cx, q, { 0 } };
    assert_int_equal(ssmax_opencl_device_import(c, &d), SSMAX_OK);
    clGetCommandQueueInfo(q, CL_QUEUE_REFERENCE_COUNT, sizeof(n), &n, NULL);
    assert_int_equal(n, q_refs + 1); // ours
    struct ssmax_device_info di;
    assert_int_equal(ssmax_device_current(c, &di), SSMAX_OK);
    assert_int_equal(di.backend, SSMAX_BACKEND_OPENCL);
    printf("# imported %s\n", di.name);
    uint64_t seed = seed0;
    printf("# seed %llu\n", (unsigned long long)seed);
    const uint64_t subs = ssmax_cl_sub_buffers_made();
    for (int f16 = 0; f16 < 2; f16++)
        for (int path = 1; path <= 3; path++) {
            struct ssmax_attn_params p;
            ssmax_attn_params_default(&p);
            p.batch = 2, p.q_heads = 4, p.kv_heads = 2, p.q_len = 7, p.kv_len = 113;
            p.head_dim = 64, p.causal = path != 3, p.path = (enum ssmax_path)path;
            p.dtype = f16 ? SSMAX_F16 : SSMAX_F32;
            run_imported(c, cx, q, &p, path == 1 && f16, seed++);
        }
    assert_int_equal(ssmax_cl_sub_buffers_made(), subs); // every cl_mem bound whole
    uint64_t ns = 1;
    assert_int_equal(ssmax_last_device_time(c, &ns), SSMAX_OK);
    assert_int_equal(ns, 0); // the queue has no profiling
    ssmax_context_destroy(&c);
    // Every reference ssmax took is given back; the application's objects still work.
    clGetContextInfo(cx, CL_CONTEXT_REFERENCE_COUNT, sizeof(n), &n, NULL);
    assert_int_equal(n, cx_refs);
    clGetCommandQueueInfo(q, CL_QUEUE_REFERENCE_COUNT, sizeof(n), &n, NULL);
    assert_int_equal(n, q_refs);
    float x = 1.5f, y = 0;
    cl_mem m = clCreateBuffer(cx, CL_MEM_READ_WRITE, 4, NULL, &e);
    assert_int_equal(e, CL_SUCCESS);
    assert_int_equal(clEnqueueWriteBuffer(q, m, CL_TRUE, 0, 4, &x, 0, NULL, NULL), CL_SUCCESS);
    assert_int_equal(clEnqueueReadBuffer(q, m, CL_TRUE, 0, 4, &y, 0, NULL, NULL), CL_SUCCESS);
    assert_true(y == 1.5f);
    clReleaseMemObject(m);
    clReleaseCommandQueue(q);
    clReleaseContext(cx);
}

/* Enqueued on the application's queue: the execution waits for the application's event (a user
 * event it completes later), the application chains its read of O after ssmax's event, and a
 * decode loop of steps goes out without a wait in between; O checked against the reference. */
static void test_enqueued(void **state)
{
    (void)state;
    cl_int e;
    cl_context cx;
    cl_command_queue q;
    ssmax_context *c = app_import(&cx, &q);
    const uint32_t cap = 200, D = 64, hq = 4, hkv = 2;
    struct ssmax_attn_params p;
    ssmax_attn_params_default(&p);
    p.q_heads = hq, p.kv_heads = hkv, p.q_len = 1, p.kv_len = cap, p.head_dim = D, p.causal = 1;
    const size_t nq = (size_t)hq * D, nkv = (size_t)hkv * cap * D;
    float *hqv = malloc(nq * 4), *hk = malloc(nkv * 4), *hv = malloc(nkv * 4), *ho = malloc(nq * 4);
    double *ref = malloc(nq * sizeof(double));
    uint64_t seed = seed0 + 99;
    h_fill(hqv, SSMAX_F32, nq, 1, &seed);
    h_fill(hk, SSMAX_F32, nkv, 1, &seed);
    h_fill(hv, SSMAX_F32, nkv, 1, &seed);
    cl_mem mq = clCreateBuffer(cx, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, nq * 4, hqv, &e);
    cl_mem mk = clCreateBuffer(cx, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, nkv * 4, hk, &e);
    cl_mem mv = clCreateBuffer(cx, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, nkv * 4, hv, &e);
    cl_mem mo = clCreateBuffer(cx, CL_MEM_READ_WRITE, nq * 4, NULL, &e);
    assert_int_equal(e, CL_SUCCESS);
    ssmax_buffer *bq, *bk, *bv, *bo;
    assert_int_equal(ssmax_opencl_buffer_import(c, mq, 0, nq * 4, &bq), SSMAX_OK);
    assert_int_equal(ssmax_opencl_buffer_import(c, mk, 0, nkv * 4, &bk), SSMAX_OK);
    assert_int_equal(ssmax_opencl_buffer_import(c, mv, 0, nkv * 4, &bv), SSMAX_OK);
    assert_int_equal(ssmax_opencl_buffer_import(c, mo, 0, nq * 4, &bo), SSMAX_OK);
    struct ssmax_attn_buffers ab = { .q = bq, .k = bk, .v = bv, .o = bo };
    for (int path = 1; path <= 3; path++) {
        p.path = (enum ssmax_path)path;
        p.kv_splits = path == 2 ? 3 : 0;
        ssmax_plan *plan = NULL;
        assert_int_equal(ssmax_plan_create(c, &p, 0, &plan), SSMAX_OK);
        cl_event gate = clCreateUserEvent(cx, &e), done = NULL;
        assert_int_equal(e, CL_SUCCESS);
        static const uint32_t steps[] = { 1, 33, 150, 200 };
        for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
            struct ssmax_exec_args a;
            ssmax_exec_args_default(&a);
            a.kv_len = steps[i];
            cl_event ev = NULL;
            int r = ssmax_opencl_plan_enqueue(c, plan, &ab, &a, i ? 0 : 1, i ? NULL : &gate, &ev);
            if (r < 0)
                fail_msg("enqueue step %zu: %s", i, ssmax_last_error(c));
            assert_non_null(ev);
            if (done)
                clReleaseEvent(done);
            done = ev;
        }
        // Nothing runs before the application's event completes.
        gate_then_read(q, gate, done, mo, nq * 4, ho);
        struct ssmax_attn_params rp = p;
        rp.path = SSMAX_PATH_AUTO, rp.kv_splits = 0;
        struct ssmax_attn_host io = { .q = hqv, .k = hk, .v = hv, .o_f64 = ref };
        assert_int_equal(ssmax_attn_ref(&rp, &io), SSMAX_OK);
        struct ssmax_compare cmp;
        ssmax_compare_f32(ref, ho, nq, 0, &cmp);
        struct htol tol = h_tol_o(SSMAX_F32, cmp.max_ref);
        printf("# enqueued path %d: nmse %.2e max %.2e\n", path, cmp.nmse, cmp.max_abs);
        assert_true(!cmp.nonfinite_mismatch && cmp.nmse <= tol.nmse && cmp.max_abs <= tol.max_abs);
        ssmax_plan_destroy(c, &plan);
    }
    // Bad input: a wait list that does not match its count; a device ssmax made itself.
    ssmax_plan *plan = NULL;
    assert_int_equal(ssmax_plan_create(c, &p, 0, &plan), SSMAX_OK);
    assert_int_equal(ssmax_opencl_plan_enqueue(c, plan, &ab, NULL, 2, NULL, NULL),
                     SSMAX_ERR_INVALID_ARG);
    assert_non_null(strstr(ssmax_last_error(c), "event_wait_list"));
    ssmax_buffer_destroy(c, &bq), ssmax_buffer_destroy(c, &bk);
    ssmax_buffer_destroy(c, &bv), ssmax_buffer_destroy(c, &bo);
    assert_int_equal(ssmax_device_open(c, ssmax_device_find(c, "opencl")), SSMAX_OK);
    assert_int_equal(ssmax_plan_create(c, &p, 0, &plan), SSMAX_OK);
    assert_int_equal(ssmax_opencl_plan_enqueue(c, plan, &ab, NULL, 0, NULL, NULL),
                     SSMAX_ERR_INVALID_ARG);
    assert_non_null(strstr(ssmax_last_error(c), "ssmax_opencl_device_import"));
    ssmax_context_destroy(&c);
    clReleaseMemObject(mq), clReleaseMemObject(mk), clReleaseMemObject(mv);
    clReleaseMemObject(mo);
    clReleaseCommandQueue(q);
    clReleaseContext(cx);
    free(hqv), free(hk), free(hv), free(ho), free(ref);
}

/* Enqueued with SPEC.md section 7: a [B, 1, Lq, Lk] mask (f32 and f16) at a byte offset inside
 * an application buffer that also holds Q, per-batch lengths as the execution's arguments, a
 * sink and a soft-cap; the mask's counts run first, after the application's event. */
static void test_enqueued_mask(void **state)
{
    (void)state;
    cl_int e;
    cl_context cx;
    cl_command_queue q;
    ssmax_context *c = app_import(&cx, &q);
    const uint32_t B = 2, cap = 150, D = 64, hq = 4, hkv = 2, lq = 3;
    const uint32_t kvl[2] = { 40, 150 };
    const float sinks[4] = { 0.5f, -1.0f, 2.0f, 0.0f };
    const size_t nq = (size_t)B * hq * lq * D, nkv = (size_t)B * hkv * cap * D;
    const size_t nm = (size_t)B * lq * cap, moff = 260; // the mask after Q, at an odd half
    float *hqv = malloc(nq * 4), *hk = malloc(nkv * 4), *hv = malloc(nkv * 4), *ho = malloc(nq * 4);
    float *mf = malloc(nm * 4);
    uint16_t *mh = malloc(nm * 2);
    unsigned char *qm = malloc(moff + nm * 4);
    double *ref = malloc(nq * sizeof(double));
    assert_true(hqv && hk && hv && ho && mf && mh && qm && ref);
    uint64_t seed = seed0 + 7;
    h_fill(hqv, SSMAX_F32, nq, 1, &seed);
    h_fill(hk, SSMAX_F32, nkv, 1, &seed);
    h_fill(hv, SSMAX_F32, nkv, 1, &seed);
    h_fill(mf, SSMAX_F32, nm, 1, &seed);
    for (size_t i = 0; i < nm; i++) {
        if ((i * 2654435761u >> 7) % 10 < 3 || i / cap == 1) // 30% hidden, and row 1 of item 0
            mf[i] = -INFINITY;
        mh[i] = ssmax_f32_to_f16(mf[i]);
        mf[i] = ssmax_f16_to_f32(mh[i]); // the same values in both dtypes
    }
    cl_mem mq = clCreateBuffer(cx, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, nq * 4, hqv, &e);
    cl_mem mk = clCreateBuffer(cx, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, nkv * 4, hk, &e);
    cl_mem mv = clCreateBuffer(cx, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, nkv * 4, hv, &e);
    cl_mem mo = clCreateBuffer(cx, CL_MEM_READ_WRITE, nq * 4, NULL, &e);
    cl_mem mm = clCreateBuffer(cx, CL_MEM_READ_WRITE, moff + nm * 4, NULL, &e);
    assert_int_equal(e, CL_SUCCESS);
    ssmax_buffer *bq, *bk, *bv, *bo, *bm;
    assert_int_equal(ssmax_opencl_buffer_import(c, mq, 0, nq * 4, &bq), SSMAX_OK);
    assert_int_equal(ssmax_opencl_buffer_import(c, mk, 0, nkv * 4, &bk), SSMAX_OK);
    assert_int_equal(ssmax_opencl_buffer_import(c, mv, 0, nkv * 4, &bv), SSMAX_OK);
    assert_int_equal(ssmax_opencl_buffer_import(c, mo, 0, nq * 4, &bo), SSMAX_OK);
    assert_int_equal(ssmax_opencl_buffer_import(c, mm, 4, moff - 4 + nm * 4, &bm), SSMAX_OK);
    for (int f16 = 0; f16 < 2; f16++)
        for (int path = 1; path <= 3; path++) {
            const size_t mes = f16 ? 2 : 4;
            memset(qm, 0x7f, moff); // NaN before the mask: an offset ignored would show
            memcpy(qm + moff, f16 ? (void *)mh : (void *)mf, nm * mes);
            assert_int_equal(clEnqueueWriteBuffer(q, mm, CL_TRUE, 0, moff + nm * mes, qm, 0,
                                                  NULL, NULL), CL_SUCCESS);
            struct ssmax_attn_params p;
            ssmax_attn_params_default(&p);
            p.batch = B, p.q_heads = hq, p.kv_heads = hkv, p.q_len = lq, p.kv_len = cap;
            p.head_dim = D, p.causal = 1, p.softcap = 4, p.sinks = sinks;
            p.mask = SSMAX_MASK_B1_LQ_LK, p.mask_dtype = f16 ? SSMAX_F16 : SSMAX_F32;
            p.path = (enum ssmax_path)path;
            p.kv_splits = path == 2 ? 3 : 0;
            ssmax_plan *plan = NULL;
            if (ssmax_plan_create(c, &p, 0, &plan) != SSMAX_OK)
                fail_msg("plan: %s", ssmax_last_error(c));
            cl_event gate = clCreateUserEvent(cx, &e), done = NULL;
            assert_int_equal(e, CL_SUCCESS);
            struct ssmax_exec_args a;
            ssmax_exec_args_default(&a);
            a.kv_lens = kvl;
            struct ssmax_attn_buffers ab = { .q = bq, .k = bk, .v = bv, .o = bo, .mask = bm,
                                             .mask_off = moff - 4 };
            if (ssmax_opencl_plan_enqueue(c, plan, &ab, &a, 1, &gate, &done) < 0)
                fail_msg("enqueue: %s", ssmax_last_error(c));
            assert_non_null(done);
            gate_then_read(q, gate, done, mo, nq * 4, ho);
            struct ssmax_attn_params rp = p;
            rp.path = SSMAX_PATH_AUTO, rp.kv_splits = 0, rp.kv_lens = kvl;
            struct ssmax_attn_host io = { .q = hqv, .k = hk, .v = hv, .o_f64 = ref,
                                          .mask = f16 ? (void *)mh : (void *)mf };
            assert_int_equal(ssmax_attn_ref(&rp, &io), SSMAX_OK);
            struct ssmax_compare cmp;
            ssmax_compare_f32(ref, ho, nq, 0, &cmp);
            struct htol tol = h_tol_o(SSMAX_F32, cmp.max_ref);
            printf("# enqueued mask %s path %d: nmse %.2e max %.2e\n", f16 ? "f16" : "f32", path,
                   cmp.nmse, cmp.max_abs);
            assert_true(!cmp.nonfinite_mismatch && cmp.nmse <= tol.nmse &&
                        cmp.max_abs <= tol.max_abs);
            ssmax_plan_destroy(c, &plan);
        }
    ssmax_buffer_destroy(c, &bq), ssmax_buffer_destroy(c, &bk), ssmax_buffer_destroy(c, &bv);
    ssmax_buffer_destroy(c, &bo), ssmax_buffer_destroy(c, &bm);
    ssmax_context_destroy(&c);
    clReleaseMemObject(mq), clReleaseMemObject(mk), clReleaseMemObject(mv);
    clReleaseMemObject(mo), clReleaseMemObject(mm);
    clReleaseCommandQueue(q);
    clReleaseContext(cx);
    free(hqv), free(hk), free(hv), free(ho), free(mf), free(mh), free(qm), free(ref);
}

/* ---- tensors far into their cl_mem ---- */

/* Elements the kernels index from a binding's start, lowered (ssmax_cl_index_limit_set) so
 * every tensor below lies past it from its cl_mem's start, while each fits it on its own. */
enum { FAR_LIMIT = 4096 };

struct far {
    cl_context cx;
    cl_command_queue q;
    cl_mem parent, mi, mo; // mi: a sub-buffer of parent (Q, K, V, mask); mo: O, LSE, probs
    size_t mi_size, mo_size, import_base;
    ssmax_buffer *bi, *bo;
    unsigned char *hin; // mi's contents
};

/* Where the next tensor goes: at *at (4-aligned), then gap bytes after it. */
static size_t far_place(size_t *at, size_t bytes, size_t gap)
{
    size_t r = *at;
    *at = (r + bytes + gap + 3) / 4 * 4;
    return r;
}

/* One problem: Q, K, V and the mask (the input dtype) past FAR_LIMIT elements in mi (through an
 * import that starts at import_base), O, LSE and (unfused) the weights past it in mo; mode 0:
 * ssmax_attn, 1: a plan executed, 2: a plan enqueued. O, LSE and the weights checked against the
 * reference, and mo's other bytes unchanged. */
static void far_run(ssmax_context *c, struct far *f, int f16, int path, int mode, uint64_t *seed)
{
    struct ssmax_attn_params p;
    ssmax_attn_params_default(&p);
    p.batch = 1, p.q_heads = 2, p.kv_heads = 1, p.q_len = 5, p.kv_len = 40, p.head_dim = 32;
    p.causal = 1, p.path = (enum ssmax_path)path, p.kv_splits = path == 2 ? 3 : 0;
    p.dtype = f16 ? SSMAX_F16 : SSMAX_F32;
    p.mask = SSMAX_MASK_B1_LQ_LK, p.mask_dtype = p.dtype;
    const int probs = path == 3;
    const size_t es = f16 ? 2 : 4, rows = (size_t)p.q_heads * p.q_len;
    const size_t nq = rows * p.head_dim, nkv = (size_t)p.kv_len * p.head_dim;
    const size_t nm = (size_t)p.q_len * p.kv_len, np = rows * p.kv_len;
    // Every offset past FAR_LIMIT elements of either dtype, and off the device's alignment.
    size_t at = f->import_base + FAR_LIMIT * 4 + 36;
    const size_t qo = far_place(&at, nq * es, 100), ko = far_place(&at, nkv * es, 52);
    const size_t vo = far_place(&at, nkv * es, 8), mko = far_place(&at, nm * es, 0);
    assert_true(at <= f->mi_size);
    at = FAR_LIMIT * 4 + 68;
    const size_t oo = far_place(&at, nq * es, 20), lo = far_place(&at, rows * 4, 44);
    const size_t po = far_place(&at, np * 4, 0);
    assert_true(at <= f->mo_size);
    unsigned char *in = f->hin;
    h_fill(in + qo, p.dtype, nq, 1, seed);
    h_fill(in + ko, p.dtype, nkv, 1, seed);
    h_fill(in + vo, p.dtype, nkv, 1, seed);
    float *mf = malloc(nm * 4);
    assert_non_null(mf);
    h_fill(mf, SSMAX_F32, nm, 1, seed);
    for (size_t i = 0; i < nm; i++) {
        float x = (i * 2654435761u >> 9) % 4 == 0 ? -INFINITY : mf[i];
        if (f16) {
            uint16_t h = ssmax_f32_to_f16(x);
            memcpy(in + mko + 2 * i, &h, 2);
        } else {
            memcpy(in + mko + 4 * i, &x, 4);
        }
    }
    free(mf);
    unsigned char *out = malloc(f->mo_size), *back = malloc(f->mo_size);
    assert_true(out && back);
    memset(out, 0xa5, f->mo_size); // also over the last run's results
    assert_int_equal(clEnqueueWriteBuffer(f->q, f->mi, CL_TRUE, 0, f->mi_size, in, 0, NULL, NULL),
                     CL_SUCCESS);
    assert_int_equal(clEnqueueWriteBuffer(f->q, f->mo, CL_TRUE, 0, f->mo_size, out, 0, NULL, NULL),
                     CL_SUCCESS);
    const size_t ib = f->import_base;
    struct ssmax_attn_buffers ab = { .q = f->bi, .k = f->bi, .v = f->bi, .o = f->bo,
                                     .lse = f->bo, .probs = probs ? f->bo : NULL,
                                     .mask = f->bi, .q_off = qo - ib, .k_off = ko - ib,
                                     .v_off = vo - ib, .o_off = oo, .lse_off = lo,
                                     .probs_off = probs ? po : 0, .mask_off = mko - ib };
    const uint64_t subs = ssmax_cl_sub_buffers_made();
    int r;
    if (mode == 0) {
        r = ssmax_attn(c, &p, &ab);
    } else {
        ssmax_plan *plan = NULL;
        const uint32_t fl = SSMAX_PLAN_LSE | (probs ? SSMAX_PLAN_PROBS : 0);
        if (ssmax_plan_create(c, &p, fl, &plan) != SSMAX_OK)
            fail_msg("plan: %s", ssmax_last_error(c));
        if (mode == 1) {
            r = ssmax_plan_execute(c, plan, &ab, NULL);
        } else {
            cl_event ev = NULL;
            r = ssmax_opencl_plan_enqueue(c, plan, &ab, NULL, 0, NULL, &ev);
            if (r == SSMAX_OK) {
                assert_non_null(ev);
                assert_int_equal(clWaitForEvents(1, &ev), CL_SUCCESS);
                clReleaseEvent(ev);
            }
        }
        ssmax_plan_destroy(c, &plan);
    }
    if (r != SSMAX_OK)
        fail_msg("%s path %d mode %d: %s", f16 ? "f16" : "f32", path, mode, ssmax_last_error(c));
    // Every tensor was bound through a sub-buffer of its own: Q, K, V, O, LSE and the mask.
    assert_int_equal(ssmax_cl_sub_buffers_made() - subs, 6);
    assert_int_equal(clEnqueueReadBuffer(f->q, f->mo, CL_TRUE, 0, f->mo_size, back, 0, NULL, NULL),
                     CL_SUCCESS);
    for (size_t i = 0; i < f->mo_size; i++) {
        const int inside = (i >= oo && i < oo + nq * es) || (i >= lo && i < lo + rows * 4) ||
                           (probs && i >= po && i < po + np * 4);
        if (!inside && back[i] != 0xa5)
            fail_msg("%s path %d mode %d: byte %zu of O's buffer changed", f16 ? "f16" : "f32",
                     path, mode, i);
    }
    double *ref = malloc(nq * sizeof(double)), *lref = malloc(rows * sizeof(double));
    float *pref = malloc(np * 4);
    assert_true(ref && lref && pref);
    struct ssmax_attn_params rp = p;
    rp.path = SSMAX_PATH_AUTO, rp.kv_splits = 0;
    struct ssmax_attn_host io = { .q = in + qo, .k = in + ko, .v = in + vo, .o_f64 = ref,
                                  .lse_f64 = lref, .probs = pref, .mask = in + mko };
    assert_int_equal(ssmax_attn_ref(&rp, &io), SSMAX_OK);
    struct ssmax_compare cmp, lcmp;
    if (f16)
        ssmax_compare_f16(ref, (const uint16_t *)(back + oo), nq, 0, &cmp);
    else
        ssmax_compare_f32(ref, (const float *)(back + oo), nq, 0, &cmp);
    ssmax_compare_f32(lref, (const float *)(back + lo), rows, 0, &lcmp);
    struct htol tol = h_tol_o(p.dtype, cmp.max_ref), ltol = h_tol_lse(lcmp.max_ref);
    printf("# far %s path %d mode %d: O nmse %.2e max %.2e, LSE max %.2e\n", f16 ? "f16" : "f32",
           path, mode, cmp.nmse, cmp.max_abs, lcmp.max_abs);
    if (cmp.nonfinite_mismatch || cmp.nmse > tol.nmse || cmp.max_abs > tol.max_abs)
        fail_msg("far O: nmse %.2e (limit %.2e), max %.2e (limit %.2e)", cmp.nmse, tol.nmse,
                 cmp.max_abs, tol.max_abs);
    if (lcmp.nonfinite_mismatch || lcmp.nmse > ltol.nmse || lcmp.max_abs > ltol.max_abs)
        fail_msg("far LSE: nmse %.2e, max %.2e", lcmp.nmse, lcmp.max_abs);
    if (probs) {
        double *pd = malloc(np * sizeof(double));
        assert_non_null(pd);
        for (size_t i = 0; i < np; i++)
            pd[i] = pref[i];
        struct ssmax_compare pcmp;
        ssmax_compare_f32(pd, (const float *)(back + po), np, 0, &pcmp);
        struct htol ptol = h_tol_probs(lcmp.max_ref);
        if (pcmp.nonfinite_mismatch || pcmp.max_abs > ptol.max_abs)
            fail_msg("far probs: max %.2e (limit %.2e)", pcmp.max_abs, ptol.max_abs);
        free(pd);
    }
    free(ref), free(lref), free(pref), free(out), free(back);
}

/* A call that fails (a tensor over the limit on its own; a sub-buffer the driver refuses) leaves
 * O's buffer as it was and holds no reference to the application's objects. */
static void far_refused(ssmax_context *c, struct far *f, int mode, int code, const char *what)
{
    struct ssmax_attn_params p;
    ssmax_attn_params_default(&p);
    p.q_heads = 2, p.kv_heads = 1, p.q_len = 5, p.kv_len = 40, p.head_dim = 32;
    unsigned char *out = malloc(f->mo_size), *back = malloc(f->mo_size);
    assert_true(out && back);
    memset(out, 0xa5, f->mo_size);
    assert_int_equal(clEnqueueWriteBuffer(f->q, f->mo, CL_TRUE, 0, f->mo_size, out, 0, NULL, NULL),
                     CL_SUCCESS);
    const size_t base = FAR_LIMIT * 4 + 36;
    struct ssmax_attn_buffers ab = { .q = f->bi, .k = f->bi, .v = f->bi, .o = f->bo,
                                     .q_off = base, .k_off = base + 4096, .v_off = base + 12288,
                                     .o_off = FAR_LIMIT * 4 + 68 };
    const cl_uint ri = refcount(f->mi), ro = refcount(f->mo), rp = refcount(f->parent);
    int r;
    if (mode == 0) {
        r = ssmax_attn(c, &p, &ab);
    } else { // a plan (refused already when a tensor alone is over the limit), enqueued
        ssmax_plan *plan = NULL;
        cl_event ev = NULL;
        if ((r = ssmax_plan_create(c, &p, 0, &plan)) == SSMAX_OK)
            r = ssmax_opencl_plan_enqueue(c, plan, &ab, NULL, 0, NULL, &ev);
        assert_null(ev);
        ssmax_plan_destroy(c, &plan);
    }
    if (r != code || !strstr(ssmax_last_error(c), what))
        fail_msg("refused mode %d: %d '%s', wanted %d '%s'", mode, r, ssmax_last_error(c), code,
                 what);
    printf("# refused: %s\n", ssmax_last_error(c));
    assert_int_equal(clFinish(f->q), CL_SUCCESS);
    assert_int_equal(refcount(f->mi), ri);
    assert_int_equal(refcount(f->mo), ro);
    assert_int_equal(refcount(f->parent), rp);
    assert_int_equal(clEnqueueReadBuffer(f->q, f->mo, CL_TRUE, 0, f->mo_size, back, 0, NULL, NULL),
                     CL_SUCCESS);
    assert_memory_equal(back, out, f->mo_size);
    free(out), free(back);
}

static void test_far_offsets(void **state)
{
    (void)state;
    cl_int e;
    struct far f = { 0 };
    ssmax_context *c = app_import(&f.cx, &f.q);
    // The inputs' cl_mem is itself a sub-buffer (ssmax then makes its own of the parent).
    cl_uint align_bits = 0;
    clGetDeviceInfo(dev, CL_DEVICE_MEM_BASE_ADDR_ALIGN, sizeof(align_bits), &align_bits, NULL);
    const size_t sub_at = 2 * (align_bits / 8 ? align_bits / 8 : 128);
    f.mi_size = 64 << 10, f.mo_size = 40 << 10, f.import_base = 8;
    f.parent = clCreateBuffer(f.cx, CL_MEM_READ_WRITE, sub_at + f.mi_size, NULL, &e);
    assert_int_equal(e, CL_SUCCESS);
    cl_buffer_region reg = { sub_at, f.mi_size };
    f.mi = clCreateSubBuffer(f.parent, 0, CL_BUFFER_CREATE_TYPE_REGION, &reg, &e);
    assert_int_equal(e, CL_SUCCESS);
    f.mo = clCreateBuffer(f.cx, CL_MEM_READ_WRITE, f.mo_size, NULL, &e);
    assert_int_equal(e, CL_SUCCESS);
    f.hin = malloc(f.mi_size);
    assert_non_null(f.hin);
    memset(f.hin, 0x7f, f.mi_size); // NaN around the inputs: a wrong offset would show
    assert_int_equal(ssmax_opencl_buffer_import(c, f.mi, f.import_base, f.mi_size - f.import_base,
                                                &f.bi),
                     SSMAX_OK);
    assert_int_equal(ssmax_opencl_buffer_import(c, f.mo, 0, f.mo_size, &f.bo), SSMAX_OK);
    ssmax_cl_index_limit_set(FAR_LIMIT);
    uint64_t seed = seed0 + 4242;
    for (int f16 = 0; f16 < 2; f16++)
        for (int path = 0; path <= 3; path++)
            for (int mode = 0; mode < 3; mode++)
                far_run(c, &f, f16, path, mode, &seed);
    // Refused: K's extent (1280 elements, and its offset's misalignment) over a lower limit; the
    // message names the tensor and the limit.
    ssmax_cl_index_limit_set(1024);
    far_refused(c, &f, 0, SSMAX_ERR_LIMIT_EXCEEDED, "k: ");
    far_refused(c, &f, 1, SSMAX_ERR_LIMIT_EXCEEDED, "exceed the 1024 elements the kernels index");
    // The driver refusing the second or fourth sub-buffer: nothing runs, nothing leaks.
    ssmax_cl_index_limit_set(FAR_LIMIT);
    for (int mode = 0; mode < 2; mode++)
        for (int n = 2; n <= 4; n += 2) {
            ssmax_fault_set(c, n, 0);
            far_refused(c, &f, mode, SSMAX_ERR_OUT_OF_DEVICE_MEMORY, "clCreateSubBuffer");
        }
    ssmax_fault_set(c, 0, 0);
    ssmax_cl_index_limit_set(0);
    ssmax_buffer_destroy(c, &f.bi), ssmax_buffer_destroy(c, &f.bo);
    ssmax_context_destroy(&c);
    assert_int_equal(refcount(f.mi), 1);
    assert_int_equal(refcount(f.mo), 1);
    clReleaseMemObject(f.mi), clReleaseMemObject(f.mo), clReleaseMemObject(f.parent);
    clReleaseCommandQueue(f.q);
    clReleaseContext(f.cx);
    free(f.hin);
}

/* The real limit, with SSMAX_TEST_LARGE=1 on a device that allocates 8 GiB (PoCL: with
 * POCL_MEMORY_LIMIT of 20 or more; it touches about 250 MiB): f16 tensors at the end of an 8 GiB
 * cl_mem, O's last element at index 2^32 - 1, so its end lies past 2^32 - 1 elements and the
 * call binds sub-buffers past 4 GiB; every path and mode against the reference. */
static void test_far_offsets_8gib(void **state)
{
    (void)state;
    const char *env = getenv("SSMAX_TEST_LARGE");
    cl_ulong maxa = 0;
    clGetDeviceInfo(dev, CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof(maxa), &maxa, NULL);
    const size_t size = (size_t)8 << 30;
    if (!env || strcmp(env, "1") || maxa < size) {
        printf("# skipped: needs SSMAX_TEST_LARGE=1 and an 8 GiB allocation (the device: %llu "
               "bytes)\n", (unsigned long long)maxa);
        skip();
    }
    ssmax_cl_index_limit_set(0); // the kernels' own (a failed test before may have left it low)
    cl_int e;
    cl_context cx;
    cl_command_queue q;
    ssmax_context *c = app_import(&cx, &q);
    cl_mem m = clCreateBuffer(cx, CL_MEM_READ_WRITE, size, NULL, &e);
    assert_int_equal(e, CL_SUCCESS);
    ssmax_buffer *b = NULL;
    assert_int_equal(ssmax_opencl_buffer_import(c, m, 0, size, &b), SSMAX_OK);
    struct ssmax_attn_params p;
    ssmax_attn_params_default(&p);
    p.q_heads = 4, p.kv_heads = 2, p.q_len = 9, p.kv_len = 77, p.head_dim = 64, p.causal = 1;
    p.dtype = SSMAX_F16;
    const size_t rows = 36, nq = rows * 64, nkv = 2 * 77 * 64;
    // O ends at the buffer's end; below it LSE, V, K and Q, at odd gaps.
    const size_t oo = size - nq * 2, lo = oo - rows * 4 - 64, vo = lo - nkv * 2 - 4;
    const size_t ko = vo - nkv * 2 - 100, qo = ko - nq * 2 - 12;
    uint16_t *hq = malloc(nq * 2), *hk = malloc(nkv * 2), *hv = malloc(nkv * 2);
    uint16_t *ho = malloc(nq * 2);
    float *hl = malloc(rows * 4);
    double *ref = malloc(nq * 8), *lref = malloc(rows * 8);
    assert_true(hq && hk && hv && ho && hl && ref && lref);
    uint64_t seed = seed0 + 8;
    h_fill(hq, SSMAX_F16, nq, 1, &seed);
    h_fill(hk, SSMAX_F16, nkv, 1, &seed);
    h_fill(hv, SSMAX_F16, nkv, 1, &seed);
    assert_int_equal(clEnqueueWriteBuffer(q, m, CL_TRUE, qo, nq * 2, hq, 0, NULL, NULL), 0);
    assert_int_equal(clEnqueueWriteBuffer(q, m, CL_TRUE, ko, nkv * 2, hk, 0, NULL, NULL), 0);
    assert_int_equal(clEnqueueWriteBuffer(q, m, CL_TRUE, vo, nkv * 2, hv, 0, NULL, NULL), 0);
    struct ssmax_attn_host io = { .q = hq, .k = hk, .v = hv, .o_f64 = ref, .lse_f64 = lref };
    assert_int_equal(ssmax_attn_ref(&p, &io), SSMAX_OK);
    for (int path = 0; path <= 3; path++)
        for (int mode = 0; mode < 3; mode++) {
            p.path = (enum ssmax_path)path, p.kv_splits = path == 2 ? 3 : 0;
            memset(ho, 0xff, nq * 2);
            assert_int_equal(clEnqueueWriteBuffer(q, m, CL_TRUE, oo, nq * 2, ho, 0, NULL, NULL), 0);
            struct ssmax_attn_buffers ab = { .q = b, .k = b, .v = b, .o = b, .lse = b, .q_off = qo,
                                             .k_off = ko, .v_off = vo, .o_off = oo, .lse_off = lo };
            const uint64_t subs = ssmax_cl_sub_buffers_made();
            int r;
            if (mode == 0) {
                r = ssmax_attn(c, &p, &ab);
            } else {
                ssmax_plan *plan = NULL;
                cl_event ev = NULL;
                if ((r = ssmax_plan_create(c, &p, SSMAX_PLAN_LSE, &plan)) == SSMAX_OK)
                    r = mode == 1 ? ssmax_plan_execute(c, plan, &ab, NULL)
                                  : ssmax_opencl_plan_enqueue(c, plan, &ab, NULL, 0, NULL, &ev);
                if (ev) {
                    assert_int_equal(clWaitForEvents(1, &ev), CL_SUCCESS);
                    clReleaseEvent(ev);
                }
                ssmax_plan_destroy(c, &plan);
            }
            if (r != SSMAX_OK)
                fail_msg("8 GiB path %d mode %d: %s", path, mode, ssmax_last_error(c));
            assert_int_equal(ssmax_cl_sub_buffers_made() - subs, 5); // Q, K, V, O, LSE
            assert_int_equal(clEnqueueReadBuffer(q, m, CL_TRUE, oo, nq * 2, ho, 0, NULL, NULL), 0);
            assert_int_equal(clEnqueueReadBuffer(q, m, CL_TRUE, lo, rows * 4, hl, 0, NULL, NULL),
                             0);
            struct ssmax_compare cmp, lcmp;
            ssmax_compare_f16(ref, ho, nq, 0, &cmp);
            ssmax_compare_f32(lref, hl, rows, 0, &lcmp);
            struct htol tol = h_tol_o(SSMAX_F16, cmp.max_ref), ltol = h_tol_lse(lcmp.max_ref);
            printf("# 8 GiB path %d mode %d: O nmse %.2e max %.2e, LSE max %.2e\n", path, mode,
                   cmp.nmse, cmp.max_abs, lcmp.max_abs);
            assert_true(!cmp.nonfinite_mismatch && cmp.nmse <= tol.nmse &&
                        cmp.max_abs <= tol.max_abs);
            assert_true(!lcmp.nonfinite_mismatch && lcmp.nmse <= ltol.nmse &&
                        lcmp.max_abs <= ltol.max_abs);
        }
    ssmax_buffer_destroy(c, &b);
    ssmax_context_destroy(&c);
    clReleaseMemObject(m);
    clReleaseCommandQueue(q);
    clReleaseContext(cx);
    free(hq), free(hk), free(hv), free(ho), free(hl), free(ref), free(lref);
}

/* Each bad argument is a named error; nothing is retained by a refused call. */
static void test_bad_import(void **state)
{
    (void)state;
    cl_int e;
    cl_context cx = clCreateContext(NULL, 1, &dev, NULL, NULL, &e), cx2 = NULL;
    assert_int_equal(e, CL_SUCCESS);
    cx2 = clCreateContext(NULL, 1, &dev, NULL, NULL, &e);
    assert_int_equal(e, CL_SUCCESS);
    cl_command_queue q = clCreateCommandQueue(cx, dev, CL_QUEUE_PROFILING_ENABLE, &e);
    assert_int_equal(e, CL_SUCCESS);
    cl_command_queue q2 = clCreateCommandQueue(cx2, dev, 0, &e);
    assert_int_equal(e, CL_SUCCESS);
    cl_command_queue qooo = clCreateCommandQueue(cx, dev, CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE, &e);
    ssmax_context *c = new_ctx();
    struct ssmax_opencl_device d = { dev, cx, q, { 0 } };
    struct {
        struct ssmax_opencl_device d;
        const char *what;
    } bad[] = {
        { { NULL, cx, q, { 0 } }, "d->device" },
        { { dev, NULL, q, { 0 } }, "d->context" },
        { { dev, cx, NULL, { 0 } }, "d->queue" },
        { { dev, cx, q2, { 0 } }, "another context" },
        { { dev, cx, q, { 1 } }, "d->reserved" },
        { { (cl_device_id)(uintptr_t)0x10, cx, q, { 0 } }, "d->device" },
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int r = ssmax_opencl_device_import(c, &bad[i].d);
        if (r >= 0 || !strstr(ssmax_last_error(c), bad[i].what))
            fail_msg("bad import %zu: %d '%s', wanted '%s'", i, r, ssmax_last_error(c),
                     bad[i].what);
    }
    assert_int_equal(ssmax_opencl_device_import(c, NULL), SSMAX_ERR_INVALID_ARG);
    if (e == CL_SUCCESS) { // PoCL takes out-of-order queues
        struct ssmax_opencl_device o = { dev, cx, qooo, { 0 } };
        assert_int_equal(ssmax_opencl_device_import(c, &o), SSMAX_ERR_INVALID_ARG);
        assert_non_null(strstr(ssmax_last_error(c), "out of order"));
        clReleaseCommandQueue(qooo);
    }
    // Buffers: only on an imported device, of its context, in range, aligned.
    cl_mem m = clCreateBuffer(cx, CL_MEM_READ_WRITE, 1024, NULL, &e);
    cl_mem m2 = clCreateBuffer(cx2, CL_MEM_READ_WRITE, 1024, NULL, &e);
    ssmax_buffer *b = NULL;
    assert_int_equal(ssmax_device_open(c, ssmax_device_find(c, "opencl")), SSMAX_OK);
    assert_int_equal(ssmax_opencl_buffer_import(c, m, 0, 16, &b), SSMAX_ERR_INVALID_ARG);
    assert_non_null(strstr(ssmax_last_error(c), "not an imported"));
    assert_int_equal(ssmax_opencl_device_import(c, &d), SSMAX_OK);
    assert_int_equal(ssmax_opencl_buffer_import(c, m, 2, 16, &b), SSMAX_ERR_INVALID_ARG);
    assert_non_null(strstr(ssmax_last_error(c), "offset"));
    assert_int_equal(ssmax_opencl_buffer_import(c, m, 1020, 8, &b), SSMAX_ERR_INVALID_ARG);
    assert_non_null(strstr(ssmax_last_error(c), "exceeds"));
    assert_int_equal(ssmax_opencl_buffer_import(c, m, SIZE_MAX - 3, 8, &b), SSMAX_ERR_INVALID_ARG);
    assert_int_equal(ssmax_opencl_buffer_import(c, m, 0, 0, &b), SSMAX_ERR_INVALID_ARG);
    assert_int_equal(ssmax_opencl_buffer_import(c, m2, 0, 16, &b), SSMAX_ERR_INVALID_ARG);
    assert_non_null(strstr(ssmax_last_error(c), "another context"));
    assert_int_equal(ssmax_opencl_buffer_import(c, NULL, 0, 16, &b), SSMAX_ERR_INVALID_ARG);
    assert_null(b);
    assert_int_equal(refcount(m), 1);
    // Buffers left alive go with the device, and give their references back.
    assert_int_equal(ssmax_opencl_buffer_import(c, m, 0, 16, &b), SSMAX_OK);
    assert_int_equal(refcount(m), 2);
    ssmax_context_destroy(&c);
    assert_int_equal(refcount(m), 1);
    clReleaseMemObject(m), clReleaseMemObject(m2);
    clReleaseCommandQueue(q), clReleaseCommandQueue(q2);
    clReleaseContext(cx), clReleaseContext(cx2);
}

int main(void)
{
    cl_uint np = 0;
    if (clGetPlatformIDs(1, &plat, &np) != CL_SUCCESS || !np ||
        clGetDeviceIDs(plat, CL_DEVICE_TYPE_ALL, 1, &dev, NULL) != CL_SUCCESS) {
        printf("no OpenCL device%s\n", h_require_devices() ? " (required): FAIL" : ": skipped");
        return h_require_devices() ? 1 : 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_imported),
        cmocka_unit_test(test_enqueued),
        cmocka_unit_test(test_enqueued_mask),
        cmocka_unit_test(test_bad_import),
        cmocka_unit_test(test_far_offsets),
        cmocka_unit_test(test_far_offsets_8gib),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
