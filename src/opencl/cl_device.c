/*
 * OpenCL: a device's context and in-order profiling queue, its buffers, and the scratch buffers
 * of the attention paths.
 */
#include <stdio.h>
#include <string.h>

#include "cl_internal.h"

int cl_err(struct ssmax_context *ctx, cl_int e, const char *what)
{
    int code = SSMAX_ERR_BACKEND;
    if (e == CL_OUT_OF_HOST_MEMORY)
        code = SSMAX_ERR_OUT_OF_HOST_MEMORY;
    else if (e == CL_MEM_OBJECT_ALLOCATION_FAILURE || e == CL_OUT_OF_RESOURCES)
        code = SSMAX_ERR_OUT_OF_DEVICE_MEMORY;
    else if (e == CL_INVALID_BUFFER_SIZE)
        code = SSMAX_ERR_LIMIT_EXCEEDED;
    return ssmax_set_error(ctx, code, "opencl: %s failed: error %d", what, (int)e);
}

/* ---- device ---- */

/* The device's own buffers, once d->cx and d->q are there (its own, or the application's). */
int cl_open_common(struct ssmax_context *ctx, struct cl_dev *d)
{
    struct cl_inst *ci = d->ci;
    cl_int e;
    d->dummy = ci->f.clCreateBuffer(d->cx, CL_MEM_READ_WRITE, 256, NULL, &e);
    if (e == CL_SUCCESS)
        d->params = ci->f.clCreateBuffer(d->cx, CL_MEM_READ_ONLY, PARAM_WORDS * 4, NULL, &e);
    if (e != CL_SUCCESS) {
        cl_close(&d->base);
        return cl_err(ctx, e, "context setup");
    }
    ssmax_cache_dir(ctx, d->cache_dir, sizeof(d->cache_dir));
    return SSMAX_OK;
}

int cl_open(struct ssmax_context *ctx, void *bpriv, int idx, struct ssmax_dev *base)
{
    struct cl_inst *ci = bpriv;
    struct cl_dev *d = (struct cl_dev *)base;
    d->ci = ci;
    d->rec = &ci->recs[idx];
    cl_int e;
    cl_context_properties props[] = { CL_CONTEXT_PLATFORM, (cl_context_properties)d->rec->plat, 0 };
    d->cx = ci->f.clCreateContext(props, 1, &d->rec->dev, NULL, NULL, &e);
    if (e == CL_SUCCESS)
        d->q = ci->f.clCreateCommandQueue(d->cx, d->rec->dev, CL_QUEUE_PROFILING_ENABLE, &e);
    if (e != CL_SUCCESS) {
        cl_close(&d->base);
        return cl_err(ctx, e, "context setup");
    }
    d->profiling = 1;
    return cl_open_common(ctx, d);
}

void cl_close(struct ssmax_dev *base)
{
    struct cl_dev *d = (struct cl_dev *)base;
    struct cl_fns *f = &d->ci->f;
    if (d->q && f->clFinish(d->q) == CL_SUCCESS)
        cl_programs_settle(d);
    cl_programs_release(d);
    cl_mem mems[] = { d->params, d->coef, d->scr0, d->scr1, d->dummy, d->nvis };
    for (size_t i = 0; i < SSMAX_ARRAY_LEN(mems); i++)
        if (mems[i])
            f->clReleaseMemObject(mems[i]);
    if (d->q)
        f->clReleaseCommandQueue(d->q);
    if (d->cx)
        f->clReleaseContext(d->cx);
}

int cl_buf_create(struct ssmax_dev *base, size_t size, void **out)
{
    struct cl_dev *d = (struct cl_dev *)base;
    cl_int e = CL_MEM_OBJECT_ALLOCATION_FAILURE;
    cl_mem m = ssmax_fault_alloc(base->ctx)
                   ? NULL
                   : d->ci->f.clCreateBuffer(d->cx, CL_MEM_READ_WRITE, size, NULL, &e);
    if (e != CL_SUCCESS)
        return cl_err(base->ctx, e, "clCreateBuffer");
    *out = m;
    return SSMAX_OK;
}

void cl_buf_destroy(struct ssmax_dev *base, void *b)
{
    ((struct cl_dev *)base)->ci->f.clReleaseMemObject(b);
}

int cl_buf_write(struct ssmax_dev *base, void *b, size_t off, const void *src, size_t n)
{
    struct cl_dev *d = (struct cl_dev *)base;
    cl_int e = d->ci->f.clEnqueueWriteBuffer(d->q, b, CL_TRUE, off, n, src, 0, NULL, NULL);
    return e == CL_SUCCESS ? SSMAX_OK : cl_err(base->ctx, e, "clEnqueueWriteBuffer");
}

int cl_buf_read(struct ssmax_dev *base, void *b, size_t off, void *dst, size_t n)
{
    struct cl_dev *d = (struct cl_dev *)base;
    cl_int e = d->ci->f.clEnqueueReadBuffer(d->q, b, CL_TRUE, off, n, dst, 0, NULL, NULL);
    return e == CL_SUCCESS ? SSMAX_OK : cl_err(base->ctx, e, "clEnqueueReadBuffer");
}

int cl_scratch(struct cl_dev *d, cl_mem *m, size_t *have, size_t need)
{
    if (*m && *have >= need)
        return SSMAX_OK;
    if (*m)
        d->ci->f.clReleaseMemObject(*m);
    *m = NULL;
    *have = 0;
    cl_int e = CL_MEM_OBJECT_ALLOCATION_FAILURE;
    size_t n = need < 4096 ? 4096 : need;
    *m = ssmax_fault_alloc(d->base.ctx)
             ? NULL
             : d->ci->f.clCreateBuffer(d->cx, CL_MEM_READ_WRITE, n, NULL, &e);
    if (e != CL_SUCCESS) {
        *m = NULL;
        return cl_err(d->base.ctx, e, "clCreateBuffer (scratch)");
    }
    *have = n;
    return SSMAX_OK;
}
