/*
 * ssmax on the application's own OpenCL context, queue and buffers.
 *
 * An application that already has a cl_context and an in-order cl_command_queue on a device can
 * hand them to a context: ssmax then builds its programs in that context and enqueues on that
 * queue, and reads and writes the application's cl_mem objects in place. ssmax retains what it
 * is given and releases exactly that when the device closes: it never releases the application's
 * own references. Include this header only where <CL/cl.h> is available.
 */
#ifndef SSMAX_SSMAX_OPENCL_H
#define SSMAX_SSMAX_OPENCL_H

#ifndef CL_TARGET_OPENCL_VERSION
#define CL_TARGET_OPENCL_VERSION 120
#endif
#include <CL/cl.h>

#include "ssmax.h"

#ifdef __cplusplus
extern "C" {
#endif

/** The application's device, context and queue. */
struct ssmax_opencl_device {
    cl_device_id device;    ///< a device the OpenCL loader lists (sub-devices are not taken)
    cl_context context;     ///< holding device
    /** In order (no CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE), on device, in context. With
     *  CL_QUEUE_PROFILING_ENABLE, ssmax_last_device_time reports device time; without, 0. The
     *  blocking calls (ssmax_attn, ssmax_plan_execute, ssmax_buffer_read/write) wait for the
     *  queue with clFinish: for the application's work queued before them too. */
    cl_command_queue queue;
    uint8_t reserved[32];   ///< must be zero
};

/** Closes ctx's open device (as ssmax_device_open does, with its buffers and plans) and opens
 *  d's device over the application's context and queue. ctx must have the OpenCL backend. The
 *  arguments are checked before the open device closes; a failure after that (a driver error)
 *  leaves no device open.
 *  @return SSMAX_OK; SSMAX_ERR_INVALID_ARG naming the field (NULL handles, a queue of another
 *  context or device, an out-of-order queue, reserved bytes); SSMAX_ERR_NO_DEVICE when the loader
 *  does not list the device; SSMAX_ERR_BACKEND for a failed OpenCL call. */
SSMAX_API int ssmax_opencl_device_import(ssmax_context *ctx, const struct ssmax_opencl_device *d);

/** An ssmax_buffer over bytes [offset, offset + size) of the application's mem, which must belong
 *  to the imported context (ssmax_opencl_device_import). offset is a multiple of 4; size >= 1.
 *  ssmax retains mem and releases it when the buffer is destroyed (ssmax_buffer_destroy, or the
 *  device's close): the application's own reference stays valid. Offsets in ssmax_attn_buffers
 *  and ssmax_buffer_read/write count from offset. Ranges of one mem are seen as one buffer by the
 *  overlap check (an output over an input is refused); sub-buffers of one parent are separate
 *  memory objects to it: do not let an output sub-buffer alias an input's. A tensor may lie
 *  anywhere in mem: when one ends past 2^32-1 elements from mem's start, the call binds its
 *  tensors through sub-buffers it makes (of mem's parent when mem is a sub-buffer) from their
 *  offsets rounded down to CL_DEVICE_MEM_BASE_ADDR_ALIGN, and releases them as it returns. */
SSMAX_API int ssmax_opencl_buffer_import(ssmax_context *ctx, cl_mem mem, size_t offset,
                                         size_t size, ssmax_buffer **out);

/** Enqueues one execution of plan (ssmax_plan_create) on bufs with args (NULL: the defaults) on
 *  the imported queue, after the events of event_wait_list, and returns at once: no clFinish, no
 *  blocking write (the parameters travel in small buffers made from host memory as the call
 *  enqueues). *event (when event is not NULL) is a new event of the execution's last command,
 *  the application's to wait on and to release; the queue is in order, so later commands on it
 *  follow anyway. Needs an imported device (ssmax_opencl_device_import).
 *  The plan and the buffers must outlive the enqueued commands (destroy the plan after they
 *  completed). ssmax_last_plan reports the execution; ssmax_last_device_time reads 0.
 *  @return SSMAX_OK, the errors of ssmax_plan_execute, or SSMAX_ERR_INVALID_ARG when the device
 *  is not imported or the wait list does not match its count. Nothing is enqueued on failure,
 *  except when the driver refuses a launch midway (SSMAX_ERR_BACKEND): then clFinish the queue
 *  before reusing the outputs. */
SSMAX_API int ssmax_opencl_plan_enqueue(ssmax_context *ctx, ssmax_plan *plan,
                                        const struct ssmax_attn_buffers *bufs,
                                        const struct ssmax_exec_args *args,
                                        cl_uint num_events_in_wait_list,
                                        const cl_event *event_wait_list, cl_event *event);

#ifdef __cplusplus
}
#endif
#endif /* SSMAX_SSMAX_OPENCL_H */
