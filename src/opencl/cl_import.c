/*
 * OpenCL: a device over the application's context and queue, and buffers over its cl_mem objects
 * (include/ssmax/ssmax_opencl.h). What the application hands over is retained, and released
 * exactly once when the device (or the buffer) goes.
 */
#include <string.h>

#include "ssmax/ssmax_opencl.h"

#include "cl_internal.h"

static int import_open(struct ssmax_context *ctx, void *bpriv, int idx, struct ssmax_dev *base,
                       const void *arg)
{
    const struct ssmax_opencl_device *a = arg;
    struct cl_inst *ci = bpriv;
    struct cl_dev *d = (struct cl_dev *)base;
    d->ci = ci;
    d->rec = &ci->recs[idx];
    cl_int e = ci->f.clRetainContext(a->context);
    if (e != CL_SUCCESS)
        return cl_err(ctx, e, "clRetainContext (the application's context)");
    d->cx = a->context;
    if ((e = ci->f.clRetainCommandQueue(a->queue)) != CL_SUCCESS) {
        cl_close(base);
        return cl_err(ctx, e, "clRetainCommandQueue (the application's queue)");
    }
    d->q = a->queue;
    d->imported = 1;
    cl_command_queue_properties qp = 0;
    ci->f.clGetCommandQueueInfo(a->queue, CL_QUEUE_PROPERTIES, sizeof(qp), &qp, NULL);
    d->profiling = (qp & CL_QUEUE_PROFILING_ENABLE) != 0;
    return cl_open_common(ctx, d);
}

int ssmax_opencl_device_import(ssmax_context *ctx, const struct ssmax_opencl_device *a)
{
    if (!ctx)
        return ssmax_set_error(NULL, SSMAX_ERR_INVALID_ARG, "ctx: must not be NULL");
    ssmax_error_clear(ctx);
    if (!a)
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG, "d: must not be NULL");
    if (!a->device || !a->context || !a->queue)
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG, "d->%s: must not be NULL",
                               !a->device ? "device" : !a->context ? "context" : "queue");
    for (size_t i = 0; i < sizeof(a->reserved); i++)
        if (a->reserved[i])
            return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG, "d->reserved: must be zero");
    struct cl_inst *ci = ctx->slots[SSMAX_BACKEND_OPENCL].priv;
    if (!ctx->slots[SSMAX_BACKEND_OPENCL].fns || !ci)
        return ssmax_set_error(ctx, SSMAX_ERR_NO_DEVICE,
                               "ctx: has no OpenCL backend (not in backends, or no ICD loader)");
    int idx = -1;
    for (int i = 0; i < ci->ndev; i++)
        if (ci->recs[i].dev == a->device)
            idx = i;
    if (idx < 0)
        return ssmax_set_error(ctx, SSMAX_ERR_NO_DEVICE,
                               "d->device: not a device the OpenCL loader lists (sub-devices and "
                               "devices of another loader are not taken)");
    // The queue must be in order and belong to this context and device.
    cl_context qcx = NULL;
    cl_device_id qdev = NULL;
    cl_command_queue_properties qp = 0;
    cl_int e = ci->f.clGetCommandQueueInfo(a->queue, CL_QUEUE_CONTEXT, sizeof(qcx), &qcx, NULL);
    if (e == CL_SUCCESS)
        e = ci->f.clGetCommandQueueInfo(a->queue, CL_QUEUE_DEVICE, sizeof(qdev), &qdev, NULL);
    if (e == CL_SUCCESS)
        e = ci->f.clGetCommandQueueInfo(a->queue, CL_QUEUE_PROPERTIES, sizeof(qp), &qp, NULL);
    if (e != CL_SUCCESS)
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG,
                               "d->queue: not a command queue (clGetCommandQueueInfo: error %d)",
                               (int)e);
    if (qcx != a->context)
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG,
                               "d->queue: belongs to another context than d->context");
    if (qdev != a->device)
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG,
                               "d->queue: is a queue of another device than d->device");
    if (qp & CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE)
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG,
                               "d->queue: is out of order; ssmax needs an in-order queue");
    return ssmax_device_adopt(ctx, SSMAX_BACKEND_OPENCL, idx, import_open, a);
}

int ssmax_opencl_buffer_import(ssmax_context *ctx, cl_mem mem, size_t offset, size_t size,
                               ssmax_buffer **out)
{
    int r = ssmax_need_runnable(ctx);
    if (r < 0)
        return r;
    if (!out)
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG, "out: must not be NULL");
    *out = NULL;
    if (ctx->dev->fns->id != SSMAX_BACKEND_OPENCL || !((struct cl_dev *)ctx->dev)->imported)
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG,
                               "mem: the open device is not an imported OpenCL context "
                               "(ssmax_opencl_device_import first)");
    struct cl_dev *d = (struct cl_dev *)ctx->dev;
    if (!mem)
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG, "mem: must not be NULL");
    if (!size)
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG, "size: must be >= 1");
    if (offset % 4)
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG,
                               "offset: %zu is not a multiple of 4 bytes", offset);
    cl_context mcx = NULL;
    size_t msize = 0;
    cl_int e = d->ci->f.clGetMemObjectInfo(mem, CL_MEM_CONTEXT, sizeof(mcx), &mcx, NULL);
    if (e == CL_SUCCESS)
        e = d->ci->f.clGetMemObjectInfo(mem, CL_MEM_SIZE, sizeof(msize), &msize, NULL);
    if (e != CL_SUCCESS)
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG,
                               "mem: not a memory object (clGetMemObjectInfo: error %d)", (int)e);
    if (mcx != d->cx)
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG,
                               "mem: belongs to another context than the imported one");
    if (offset > msize || size > msize - offset)
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG,
                               "offset + size: %zu + %zu exceeds the memory object's %zu bytes",
                               offset, size, msize);
    if ((e = d->ci->f.clRetainMemObject(mem)) != CL_SUCCESS)
        return cl_err(ctx, e, "clRetainMemObject");
    r = ssmax_buffer_adopt(ctx, mem, offset, size, out);
    if (r < 0)
        d->ci->f.clReleaseMemObject(mem);
    return r;
}

/* ---- enqueueing on the application's queue ---- */

struct enq {
    cl_uint nwait;
    const cl_event *wait;
    cl_event *event;
};

static int enqueue_cb(struct ssmax_dev *dev, const struct attn_plan *base, void **state,
                      const struct attn_plan *pl, const struct attn_bufs *ab, void *arg)
{
    (void)base, (void)state;
    const struct enq *q = arg;
    return cl_enqueue(dev, pl, ab, q->nwait, q->wait, q->event);
}

int ssmax_opencl_plan_enqueue(ssmax_context *ctx, ssmax_plan *plan,
                              const struct ssmax_attn_buffers *bufs,
                              const struct ssmax_exec_args *args, cl_uint num_events_in_wait_list,
                              const cl_event *event_wait_list, cl_event *event)
{
    int r = ssmax_need_runnable(ctx);
    if (r < 0)
        return r;
    if (ctx->dev->fns->id != SSMAX_BACKEND_OPENCL || !((struct cl_dev *)ctx->dev)->imported)
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG,
                               "queue: enqueueing needs the application's own context and queue "
                               "(ssmax_opencl_device_import)");
    if ((num_events_in_wait_list > 0) != (event_wait_list != NULL))
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG,
                               "event_wait_list: %s with num_events_in_wait_list %u",
                               event_wait_list ? "given" : "NULL", num_events_in_wait_list);
    for (cl_uint i = 0; i < num_events_in_wait_list; i++)
        if (!event_wait_list[i])
            return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG,
                                   "event_wait_list[%u]: must not be NULL", i);
    if (event)
        *event = NULL;
    struct enq q = { num_events_in_wait_list, event_wait_list, event };
    return ssmax_plan_record(ctx, plan, bufs, args, enqueue_cb, &q);
}
