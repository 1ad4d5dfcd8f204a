/*
 * OpenCL: running a plan. Program and scratch first (a failure leaves every output untouched),
 * then the parameter block, the launches in the submissions the plan cut them into (each flushed
 * to the device), one wait, and the device time from the first and last launch's profiling events.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "cl_internal.h"

static int set_args(struct cl_dev *d, cl_kernel k, int n, const size_t *sizes, const void **vals)
{
    for (int i = 0; i < n; i++) {
        cl_int e = d->ci->f.clSetKernelArg(k, (cl_uint)i, sizes[i], vals[i]);
        if (e != CL_SUCCESS)
            return cl_err(d->base.ctx, e, "clSetKernelArg");
    }
    return SSMAX_OK;
}

/* The launches of one call, and the first and last events for the device time. */
struct launches {
    struct cl_dev *d;
    struct cl_prog *pg;
    cl_event first, last;
    uint32_t launched; // kernels launched, a bit each
    cl_uint nwait;     // the application's events the first launch waits for
    const cl_event *wait;
};

static cl_int launch(struct launches *ls, int kid, cl_uint dims, const size_t *g, const size_t *l)
{
    struct cl_fns *f = &ls->d->ci->f;
    cl_event ev;
    const int first = !ls->first; // the queue is in order: the rest follow the first
    cl_int e = f->clEnqueueNDRangeKernel(ls->d->q, ls->pg->k[kid], dims, NULL, g, l,
                                         first ? ls->nwait : 0, first ? ls->wait : NULL, &ev);
    if (e != CL_SUCCESS)
        return e;
    ls->launched |= 1u << kid;
    if (!ls->first) {
        ls->first = ev;
    } else {
        if (ls->last)
            f->clReleaseEvent(ls->last);
        ls->last = ev;
    }
    return CL_SUCCESS;
}

/* m[]: params, coef, q, k, v, o, lse, scratch 0 and 1, mask, nvis (unused ones bound to a dummy). */
enum { M_COUNT = 11 };

/* With a mask: the visible keys of every mask row (n of the row factor), before the call's other
 * kernels (the first launch: it waits for the application's events). */
static int enqueue_mask_count(struct launches *ls, const struct attn_plan *pl, cl_mem m[M_COUNT])
{
    if (!(pl->flags & FL_MASK))
        return SSMAX_OK;
    const size_t ms = sizeof(cl_mem);
    const size_t sz[] = { ms, ms, ms, ms };
    const void *va[] = { &m[0], &m[1], &m[9], &m[10] };
    int r = set_args(ls->d, ls->pg->k[K_MASK_COUNT], 4, sz, va);
    if (r < 0)
        return r;
    const uint64_t rows = pl->mask_rows;
    size_t g = (size_t)rows * 64, l = 64;
    cl_int e = launch(ls, K_MASK_COUNT, 1, &g, &l);
    return e == CL_SUCCESS ? SSMAX_OK : cl_err(ls->d->base.ctx, e, "kernel launch");
}

/* The fused and split-KV paths: the plan's row blocks (a work-group each: 16 work-items for the
 * tiles kernel, pl->wg for the GPU kernel), blocks_per_sub a launch, then the merge. */
static int enqueue_fused(struct launches *ls, const struct attn_plan *pl, cl_mem m[M_COUNT])
{
    struct cl_dev *d = ls->d;
    const struct ssmax_attn_params *p = &pl->p;
    const size_t ms = sizeof(cl_mem), us = sizeof(cl_uint);
    const int lanes = pl->kernel == KERNEL_LANES, split = pl->path == SSMAX_PATH_SPLIT_KV;
    const int kid = lanes ? (split ? K_ROWG_SPLIT : K_ROWG) : split ? K_FLASH_SPLIT : K_FLASH;
    const size_t wg = lanes ? pl->wg : 16; // work-items a row block
    cl_kernel k = ls->pg->k[kid];
    cl_uint zero = 0;
    const size_t sz[] = { ms, ms, ms, ms, ms, ms, ms, ms, ms, ms, ms, us };
    const void *va[] = { &m[0], &m[1], &m[2], &m[3], &m[4],  &m[5],
                         &m[6], &m[7], &m[8], &m[9], &m[10], &zero };
    int r = set_args(d, k, 12, sz, va);
    cl_int e = CL_SUCCESS;
    for (uint32_t x0 = 0; r == SSMAX_OK && x0 < pl->blocks; x0 += pl->blocks_per_sub) {
        cl_uint rb = x0;
        if ((e = d->ci->f.clSetKernelArg(k, 11, us, &rb)) != CL_SUCCESS)
            break;
        size_t n = pl->blocks - x0 < pl->blocks_per_sub ? pl->blocks - x0 : pl->blocks_per_sub;
        size_t g[3] = { n * wg, (size_t)p->batch * pl->nsplit, p->kv_heads }, l[3] = { wg, 1, 1 };
        if ((e = launch(ls, kid, 3, g, l)) != CL_SUCCESS)
            break;
        if (x0 + pl->blocks_per_sub < pl->blocks)
            d->ci->f.clFlush(d->q);
    }
    if (r == SSMAX_OK && e == CL_SUCCESS && pl->path == SSMAX_PATH_SPLIT_KV) {
        const size_t sz2[] = { ms, ms, ms, ms, ms, ms };
        const void *va2[] = { &m[0], &m[1], &m[7], &m[8], &m[5], &m[6] };
        size_t g2 = (size_t)pl->rows * 64, l2 = 64;
        if ((r = set_args(d, ls->pg->k[K_MERGE], 6, sz2, va2)) == SSMAX_OK)
            e = launch(ls, K_MERGE, 1, &g2, &l2);
    }
    return r < 0 ? r : e == CL_SUCCESS ? SSMAX_OK : cl_err(d->base.ctx, e, "kernel launch");
}

/* The unfused path: for each chunk of (batch, head) pairs and query rows, the scores, their
 * softmax and P V (and the weights copied out), chunks_per_sub a submission. */
static int enqueue_unfused(struct launches *ls, const struct attn_plan *pl,
                           const struct attn_bufs *ab, cl_mem m[M_COUNT])
{
    struct cl_dev *d = ls->d;
    struct cl_fns *f = &d->ci->f;
    const struct ssmax_attn_params *p = &pl->p;
    const size_t ms = sizeof(cl_mem), us = sizeof(cl_uint);
    const uint32_t nbh = p->batch * p->q_heads;
    uint32_t chunk = 0;
    cl_int e = CL_SUCCESS;
    int r;
    for (uint32_t bh0 = 0; bh0 < nbh; bh0 += pl->bh_per) {
        cl_uint nb = nbh - bh0 < pl->bh_per ? nbh - bh0 : pl->bh_per;
        for (cl_uint i0 = 0; i0 < p->q_len; i0 += pl->i_count, chunk++) {
            cl_uint ni = p->q_len - i0 < pl->i_count ? p->q_len - i0 : pl->i_count;
            if (chunk && chunk % pl->chunks_per_sub == 0)
                f->clFlush(d->q);
            const size_t s1z[] = { ms, ms, ms, ms, ms, ms, ms, us, us, us };
            const void *v1[] = { &m[0], &m[1], &m[2], &m[3], &m[9], &m[10], &m[7], &bh0, &i0, &ni };
            const size_t s2z[] = { ms, ms, ms, ms, us, us, us };
            const void *v2[] = { &m[0], &m[1], &m[7], &m[6], &bh0, &i0, &ni };
            const size_t s3z[] = { ms, ms, ms, ms, ms, ms, us, us, us };
            const void *v3[] = { &m[0], &m[1], &m[7], &m[4], &m[5], &m[9], &bh0, &i0, &ni };
            if ((r = set_args(d, ls->pg->k[K_QK], 10, s1z, v1)) < 0 ||
                (r = set_args(d, ls->pg->k[K_SOFTMAX], 7, s2z, v2)) < 0 ||
                (r = set_args(d, ls->pg->k[K_PV], 9, s3z, v3)) < 0)
                return r;
            size_t gq[3] = { (size_t)((p->kv_len + 15) / 16) * 256, (ni + 15) / 16, nb };
            size_t lq[3] = { 256, 1, 1 };
            size_t gs[2] = { (size_t)ni * 64, nb }, ls2[2] = { 64, 1 };
            size_t gp[2] = { (size_t)((ni + pl->br - 1) / pl->br) * pl->br * pl->tpr, nb };
            size_t lp[2] = { pl->br * pl->tpr, 1 };
            if ((e = launch(ls, K_QK, 3, gq, lq)) != CL_SUCCESS ||
                (e = launch(ls, K_SOFTMAX, 2, gs, ls2)) != CL_SUCCESS ||
                (e = launch(ls, K_PV, 2, gp, lp)) != CL_SUCCESS)
                return cl_err(d->base.ctx, e, "kernel launch");
            if (ab->probs) {
                uint64_t row0 = (uint64_t)bh0 * p->q_len + i0;
                e = f->clEnqueueCopyBuffer(d->q, m[7], ab->probs, 0,
                                           ab->probs_off + row0 * p->kv_len * 4,
                                           (size_t)nb * ni * p->kv_len * 4, 0, NULL, NULL);
                if (e != CL_SUCCESS)
                    return cl_err(d->base.ctx, e, "clEnqueueCopyBuffer (weights)");
            }
        }
    }
    return SSMAX_OK;
}

/* The kernels a plan launches with their work-group sizes (as enqueue_fused and enqueue_unfused
 * launch them), and clGetKernelWorkGroupInfo's view of each, for `ssmax pipelines`. */
static int cl_pipelines(struct ssmax_dev *base, const struct attn_plan *pl, ssmax_pipe_cb cb,
                        void *priv)
{
    static const char *const roles[] = { "fused", "merge", "qk", "softmax", "pv", "mask" };
    struct cl_dev *d = (struct cl_dev *)base;
    struct cl_fns *f = &d->ci->f;
    char opts[160];
    cl_plan_opts(pl, opts, sizeof(opts));
    struct cl_prog *pg = NULL;
    int r = cl_program_get(d, opts, &pg);
    if (r < 0)
        return r;
    struct cl_pipe_k {
        int k;
        enum attn_role role;
        uint32_t wg;
    } ks[4];
    int n = 0;
    if (pl->flags & FL_MASK) // the mask rows' counts, before the attention kernels
        ks[n++] = (struct cl_pipe_k){ K_MASK_COUNT, ROLE_MASK, 64 };
    if (pl->path != SSMAX_PATH_UNFUSED) {
        const int lanes = pl->kernel == KERNEL_LANES, split = pl->path == SSMAX_PATH_SPLIT_KV;
        ks[n++] = (struct cl_pipe_k){ lanes ? (split ? K_ROWG_SPLIT : K_ROWG)
                                            : split ? K_FLASH_SPLIT : K_FLASH,
                                      ROLE_FUSED, lanes ? pl->wg : 16 };
        if (pl->path == SSMAX_PATH_SPLIT_KV)
            ks[n++] = (struct cl_pipe_k){ K_MERGE, ROLE_MERGE, 64 };
    } else {
        ks[n++] = (struct cl_pipe_k){ K_QK, ROLE_QK, 256 };
        ks[n++] = (struct cl_pipe_k){ K_SOFTMAX, ROLE_SOFTMAX, 64 };
        ks[n++] = (struct cl_pipe_k){ K_PV, ROLE_PV, pl->br * pl->tpr };
    }
    for (int i = 0; i < n; i++) {
        struct ssmax_pipe_info pi;
        memset(&pi, 0, sizeof(pi));
        pi.role = roles[ks[i].role];
        snprintf(pi.kernel, sizeof(pi.kernel), "%s", cl_kernel_names[ks[i].k]);
        snprintf(pi.options, sizeof(pi.options), "%s", opts);
        pi.workgroup_size = ks[i].wg;
        pi.shared_bytes = ssmax_role_shared_bytes(pl, ks[i].role);
        pi.nstats = -1;
        cl_kernel k = pg->k[ks[i].k];
        size_t wgs = 0, mult = 0;
        cl_ulong lm = 0, pm = 0;
        cl_int e = f->clGetKernelWorkGroupInfo(k, d->rec->dev, CL_KERNEL_WORK_GROUP_SIZE,
                                               sizeof(wgs), &wgs, NULL);
        if (e == CL_SUCCESS)
            e = f->clGetKernelWorkGroupInfo(k, d->rec->dev,
                                            CL_KERNEL_PREFERRED_WORK_GROUP_SIZE_MULTIPLE,
                                            sizeof(mult), &mult, NULL);
        if (e == CL_SUCCESS)
            e = f->clGetKernelWorkGroupInfo(k, d->rec->dev, CL_KERNEL_LOCAL_MEM_SIZE, sizeof(lm),
                                            &lm, NULL);
        if (e == CL_SUCCESS)
            e = f->clGetKernelWorkGroupInfo(k, d->rec->dev, CL_KERNEL_PRIVATE_MEM_SIZE,
                                            sizeof(pm), &pm, NULL);
        if (e != CL_SUCCESS)
            return cl_err(base->ctx, e, "clGetKernelWorkGroupInfo");
        pi.cl_info = 1;
        pi.cl_work_group_size = wgs, pi.cl_preferred_multiple = mult;
        pi.cl_local_mem_size = lm, pi.cl_private_mem_size = pm;
        if ((r = cb(priv, &pi)) < 0)
            return r;
    }
    return SSMAX_OK;
}

/* The tensors the kernels index (q, k, v, o, lse, mask): the cl_mem each is bound as and its first
 * element there. The kernels index elements in 32 bits (pl->fit.index_max) from a binding's start.
 * When every tensor ends within that from the start of its cl_mem, the cl_mem objects are bound
 * whole. Otherwise every tensor of the call is bound through a sub-buffer of its own from its
 * offset rounded down to CL_DEVICE_MEM_BASE_ADDR_ALIGN (where ssmax_plan_fit saw it fit): all of
 * them, so no kernel reads a buffer while writing a sub-buffer of it (undefined in OpenCL). The
 * sub-buffers go once the commands are enqueued (OpenCL keeps them until they complete), and on
 * every failure. */
enum { T_COUNT = 6 };
struct tensors {
    cl_mem mem[T_COUNT]; // NULL: not bound (no LSE, no mask)
    cl_mem sub[T_COUNT]; // the sub-buffers made for the call
    uint32_t off[T_COUNT];
};

static void tensors_release(struct cl_dev *d, struct tensors *t)
{
    for (int i = 0; i < T_COUNT; i++)
        if (t->sub[i])
            d->ci->f.clReleaseMemObject(t->sub[i]);
    memset(t->sub, 0, sizeof(t->sub));
}

static _Atomic uint64_t sub_buffers_made; // for tests (ssmax_cl_sub_buffers_made)

uint64_t ssmax_cl_sub_buffers_made(void)
{
    return atomic_load(&sub_buffers_made);
}

/* A sub-buffer of m (or of its parent, when m is itself one) from byte off rounded down to the
 * device's base alignment, covering bytes (within the parent's size); *first: off's element. */
static int sub_buffer(struct cl_dev *d, cl_mem m, uint64_t off, uint64_t bytes, uint32_t esz,
                      cl_mem *out, uint32_t *first)
{
    struct cl_fns *f = &d->ci->f;
    cl_mem parent = NULL;
    size_t base = 0, size = 0;
    cl_int e = f->clGetMemObjectInfo(m, CL_MEM_ASSOCIATED_MEMOBJECT, sizeof(parent), &parent, NULL);
    if (e == CL_SUCCESS && parent) // sub-buffers are made of buffers only
        e = f->clGetMemObjectInfo(m, CL_MEM_OFFSET, sizeof(base), &base, NULL);
    if (e == CL_SUCCESS && !parent)
        parent = m;
    if (e == CL_SUCCESS)
        e = f->clGetMemObjectInfo(parent, CL_MEM_SIZE, sizeof(size), &size, NULL);
    if (e != CL_SUCCESS)
        return cl_err(d->base.ctx, e, "clGetMemObjectInfo");
    const uint64_t at = base + off, a = d->rec->base_align;
    const uint64_t end = at + bytes < size ? at + bytes : size;
    cl_buffer_region reg = { (size_t)(at / a * a), 0 };
    reg.size = (size_t)(end - reg.origin);
    e = CL_MEM_OBJECT_ALLOCATION_FAILURE;
    *out = ssmax_fault_alloc(d->base.ctx)
               ? NULL
               : f->clCreateSubBuffer(parent, 0, CL_BUFFER_CREATE_TYPE_REGION, &reg, &e);
    if (e != CL_SUCCESS) {
        *out = NULL;
        return cl_err(d->base.ctx, e, "clCreateSubBuffer");
    }
    atomic_fetch_add(&sub_buffers_made, 1);
    *first = (uint32_t)((at - reg.origin) / esz);
    return SSMAX_OK;
}

static int tensors_bind(struct cl_dev *d, const struct attn_plan *pl, const struct attn_bufs *ab,
                        struct tensors *t)
{
    const int masked = (pl->flags & FL_MASK) && ab->mask && d->nvis;
    const uint32_t esz = pl->elem_size;
    const struct {
        cl_mem m;
        uint64_t off, bytes;
        uint32_t esz;
    } ts[T_COUNT] = {
        { ab->q, ab->q_off, pl->q_bytes, esz },
        { ab->k, ab->k_off, pl->k_bytes, esz },
        { ab->v, ab->v_off, pl->v_bytes, esz },
        { ab->o, ab->o_off, pl->o_bytes, esz },
        { ab->lse, ab->lse_off, pl->lse_bytes, 4 },
        { masked ? ab->mask : NULL, ab->mask_off, pl->mask_bytes, pl->mask_esz },
    };
    const uint64_t lim = pl->fit.index_max ? pl->fit.index_max : UINT32_MAX;
    int whole = 1;
    memset(t, 0, sizeof(*t));
    for (int i = 0; i < T_COUNT; i++) {
        t->mem[i] = ts[i].m;
        if (ts[i].m && (ts[i].off + ts[i].bytes) / ts[i].esz > lim)
            whole = 0;
        else if (ts[i].m)
            t->off[i] = (uint32_t)(ts[i].off / ts[i].esz);
    }
    for (int i = 0; !whole && i < T_COUNT; i++) {
        if (!ts[i].m)
            continue;
        // An f16 mask to its last whole word (the kernels may read it in words).
        const uint64_t bytes = i == 5 ? (ts[i].bytes + 3) & ~3ull : ts[i].bytes;
        int r = sub_buffer(d, ts[i].m, ts[i].off, bytes, ts[i].esz, &t->sub[i], &t->off[i]);
        if (r < 0) {
            tensors_release(d, t);
            return r;
        }
        t->mem[i] = t->sub[i];
    }
    return SSMAX_OK;
}

/* The kernels' buffers (M_COUNT): unused ones bound to a dummy. */
static void bind(struct cl_dev *d, const struct tensors *t, cl_mem params, cl_mem coef,
                 cl_mem m[M_COUNT])
{
    const cl_mem *tm = t->mem;
    const cl_mem v[M_COUNT] = { params, coef, tm[0], tm[1], tm[2], tm[3],
                                tm[4] ? tm[4] : d->dummy, d->scr0 ? d->scr0 : d->dummy,
                                d->scr1 ? d->scr1 : d->dummy, tm[5] ? tm[5] : d->dummy,
                                tm[5] ? d->nvis : d->dummy };
    memcpy(m, v, sizeof(v));
}

/* Every launch of one call, in order: the mask's counts, then the path's kernels. */
static int enqueue_all(struct launches *ls, const struct attn_plan *pl, const struct attn_bufs *ab,
                       cl_mem m[M_COUNT])
{
    int r = enqueue_mask_count(ls, pl, m);
    if (r < 0)
        return r;
    return pl->path != SSMAX_PATH_UNFUSED ? enqueue_fused(ls, pl, m)
                                          : enqueue_unfused(ls, pl, ab, m);
}

/* The plan's program and scratch: built and allocated before anything is enqueued. */
static int prepare(struct cl_dev *d, const struct attn_plan *pl, struct cl_prog **pg)
{
    char opts[160];
    cl_plan_opts(pl, opts, sizeof(opts));
    int r;
    if ((r = cl_program_get(d, opts, pg)) < 0 ||
        (pl->scr0_bytes && (r = cl_scratch(d, &d->scr0, &d->scr0_size, pl->scr0_bytes)) < 0) ||
        (pl->scr1_bytes && (r = cl_scratch(d, &d->scr1, &d->scr1_size, pl->scr1_bytes)) < 0) ||
        // the mask rows' counts (the OpenCL kernels scan the mask's entries: no summary)
        (pl->mask_rows && (r = cl_scratch(d, &d->nvis, &d->nvis_size, 4 * pl->mask_rows)) < 0) ||
        (r = cl_scratch(d, &d->coef, &d->coef_size, pl->coef_bytes)) < 0)
        return r;
    return SSMAX_OK;
}

static int cl_prepare(struct ssmax_dev *base, const struct attn_plan *pl)
{
    struct cl_prog *pg;
    return prepare((struct cl_dev *)base, pl, &pg);
}

/* What every execution does first: program and scratch, the tensors' bindings (sub-buffers where
 * they need them: the caller releases them) and the parameter block. */
static int begin(struct cl_dev *d, const struct attn_plan *pl, const struct attn_bufs *ab,
                 struct cl_prog **pg, struct tensors *t, struct attn_block *blk)
{
    int r = prepare(d, pl, pg);
    if (r < 0 || (r = tensors_bind(d, pl, ab, t)) < 0)
        return r;
    ssmax_plan_block(pl, t->off, blk);
    return SSMAX_OK;
}

int cl_attn(struct ssmax_dev *base, const struct attn_plan *pl, const struct attn_bufs *ab,
            uint64_t *device_ns)
{
    struct cl_dev *d = (struct cl_dev *)base;
    struct ssmax_context *ctx = base->ctx;
    struct cl_fns *f = &d->ci->f;
    struct cl_prog *pg = NULL;
    struct tensors t;
    struct attn_block blk;
    int r = begin(d, pl, ab, &pg, &t, &blk);
    if (r < 0)
        return r;
    cl_int e = f->clEnqueueWriteBuffer(d->q, d->params, CL_TRUE, 0, sizeof(blk), &blk, 0, NULL,
                                       NULL);
    if (e == CL_SUCCESS)
        e = f->clEnqueueWriteBuffer(d->q, d->coef, CL_TRUE, 0, pl->coef_bytes, pl->coef, 0, NULL,
                                    NULL);
    if (e != CL_SUCCESS) {
        tensors_release(d, &t);
        return cl_err(ctx, e, "clEnqueueWriteBuffer (parameters)");
    }

    cl_mem m[M_COUNT];
    bind(d, &t, d->params, d->coef, m);
    struct launches ls = { d, pg, NULL, NULL, 0, 0, NULL };
    r = enqueue_all(&ls, pl, ab, m);
    tensors_release(d, &t);
    e = f->clFinish(d->q);
    if (r == SSMAX_OK && e == CL_SUCCESS && ssmax_fault_lost(ctx))
        r = ssmax_set_error(ctx, SSMAX_ERR_DEVICE_LOST, "opencl: device lost (injected)");
    else if (r == SSMAX_OK && e != CL_SUCCESS)
        r = cl_err(ctx, e, "clFinish");
    if (r == SSMAX_OK) {
        cl_ulong t0 = 0, t1 = 0;
        f->clGetEventProfilingInfo(ls.first, CL_PROFILING_COMMAND_START, sizeof(t0), &t0, NULL);
        f->clGetEventProfilingInfo(ls.last ? ls.last : ls.first, CL_PROFILING_COMMAND_END,
                                   sizeof(t1), &t1, NULL);
        *device_ns = t1 > t0 ? t1 - t0 : 0;
    }
    if (ls.first)
        f->clReleaseEvent(ls.first);
    if (ls.last)
        f->clReleaseEvent(ls.last);
    if (r == SSMAX_OK) {
        cl_program_ran(d, pg, ls.launched);
        cl_programs_settle(d); // the queue finished: enqueued kernels ran too
    }
    return r;
}

/* One execution enqueued on the application's queue after its wait list, with no host wait and no
 * blocking write: the parameter block and coefficients go in small buffers made from host memory
 * at creation (CL_MEM_COPY_HOST_PTR) and released once enqueued (OpenCL keeps them until the
 * kernels are done). *event: the execution's last launch. */
int cl_enqueue(struct ssmax_dev *base, const struct attn_plan *pl, const struct attn_bufs *ab,
               cl_uint nwait, const cl_event *wait, cl_event *event)
{
    struct cl_dev *d = (struct cl_dev *)base;
    struct ssmax_context *ctx = base->ctx;
    struct cl_fns *f = &d->ci->f;
    struct cl_prog *pg = NULL;
    struct tensors t;
    struct attn_block blk;
    int r = begin(d, pl, ab, &pg, &t, &blk); // program and scratch made with the plan: found
    if (r < 0)
        return r;
    cl_int e;
    cl_mem params = f->clCreateBuffer(d->cx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, sizeof(blk),
                                      &blk, &e);
    if (e != CL_SUCCESS) {
        tensors_release(d, &t);
        return cl_err(ctx, e, "clCreateBuffer (parameters)");
    }
    cl_mem coef = f->clCreateBuffer(d->cx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
                                    pl->coef_bytes, pl->coef, &e);
    if (e != CL_SUCCESS) {
        f->clReleaseMemObject(params);
        tensors_release(d, &t);
        return cl_err(ctx, e, "clCreateBuffer (coefficients)");
    }
    cl_mem m[M_COUNT];
    bind(d, &t, params, coef, m);
    struct launches ls = { d, pg, NULL, NULL, 0, nwait, wait };
    r = enqueue_all(&ls, pl, ab, m);
    f->clReleaseMemObject(params);
    f->clReleaseMemObject(coef);
    tensors_release(d, &t);
    if (r == SSMAX_OK) {
        f->clFlush(d->q);
        if (event && ls.last) { // the last launch's event becomes the application's
            *event = ls.last;
            ls.last = NULL;
        } else if (event) {
            *event = ls.first;
            ls.first = NULL;
        }
        // Whether the kernels ran is known only once the queue finished: the binary is saved
        // (and the crash marker dropped) then, never while the driver may still be compiling.
        pg->pending |= ls.launched;
    }
    if (ls.first)
        f->clReleaseEvent(ls.first);
    if (ls.last)
        f->clReleaseEvent(ls.last);
    return r;
}

const struct ssmax_backend_fns ssmax_backend_opencl = {
    SSMAX_BACKEND_ENTRIES(cl, opencl, OPENCL),
    .pipelines = cl_pipelines,
    .prepare = cl_prepare,
    .head_dim_step = 8, .head_dim_max = SSMAX_MAX_HEAD_DIM, .rows_kernel = 0, .inference = 1,
};
