/*
 * The OpenCL backend's shared state. One file a responsibility:
 *   cl_instance.c  the ICD loader, platforms and devices (once per process)
 *   cl_device.c    a device's context and profiling queue, buffers and scratch
 *   cl_program.c   programs from cl/attn.cl built per (dtype, head dim, tiles), and their binary
 *                  cache on disk
 *   cl_plan.c      the backend's part of the plan: tiles and device limits
 *   cl_attn.c      enqueuing a plan, and the backend table
 */
#ifndef SSMAX_CL_INTERNAL_H
#define SSMAX_CL_INTERNAL_H

#define CL_TARGET_OPENCL_VERSION 120
#define CL_USE_DEPRECATED_OPENCL_1_2_APIS
#include <CL/cl.h>

#include "../backend.h"

#define CL_FNS(X)                                                                                  \
    X(clGetPlatformIDs)                                                                            \
    X(clGetPlatformInfo)                                                                           \
    X(clGetDeviceIDs)                                                                              \
    X(clGetDeviceInfo)                                                                             \
    X(clCreateContext)                                                                             \
    X(clReleaseContext)                                                                            \
    X(clCreateCommandQueue)                                                                        \
    X(clReleaseCommandQueue)                                                                       \
    X(clCreateBuffer)                                                                              \
    X(clReleaseMemObject)                                                                          \
    X(clEnqueueWriteBuffer)                                                                        \
    X(clEnqueueReadBuffer)                                                                         \
    X(clEnqueueCopyBuffer)                                                                         \
    X(clCreateProgramWithSource)                                                                   \
    X(clCreateProgramWithBinary)                                                                   \
    X(clBuildProgram)                                                                              \
    X(clGetProgramBuildInfo)                                                                       \
    X(clGetProgramInfo)                                                                            \
    X(clReleaseProgram)                                                                            \
    X(clCreateKernel)                                                                              \
    X(clGetKernelWorkGroupInfo)                                                                    \
    X(clReleaseKernel)                                                                             \
    X(clSetKernelArg)                                                                              \
    X(clEnqueueNDRangeKernel)                                                                      \
    X(clFinish)                                                                                    \
    X(clFlush)                                                                                     \
    X(clGetEventProfilingInfo)                                                                     \
    X(clReleaseEvent)                                                                              \
    X(clRetainContext)                                                                             \
    X(clRetainCommandQueue)                                                                        \
    X(clGetCommandQueueInfo)                                                                       \
    X(clRetainMemObject)                                                                           \
    X(clGetMemObjectInfo)                                                                          \
    X(clCreateSubBuffer)

struct cl_fns {
#define DECL(f) __typeof__(f) *f;
    CL_FNS(DECL)
};

struct cl_devrec {
    cl_platform_id plat;
    cl_device_id dev;
    char key[600]; // device, driver and platform versions: part of the binary-cache key
    uint64_t base_align; // CL_DEVICE_MEM_BASE_ADDR_ALIGN in bytes: where sub-buffers may start
};

struct cl_inst {
    void *lib;
    struct cl_fns f;
    struct ssmax_device_info *infos;
    struct cl_devrec *recs;
    int ndev;
};

/* The kernels of cl/attn.cl. A program holds the tiles kernels (K_TILES_SET), or, built with
 * -DLANES=1, the GPU kernel and the merge (K_ROWG_SET); both hold mask_count. */
enum { K_FLASH, K_FLASH_SPLIT, K_MERGE, K_QK, K_SOFTMAX, K_PV, K_ROWG, K_ROWG_SPLIT, K_MASK_COUNT,
       K_COUNT };
#define K_TILES_SET ((1u << K_FLASH) | (1u << K_FLASH_SPLIT) | (1u << K_MERGE) | (1u << K_QK) |    \
                     (1u << K_SOFTMAX) | (1u << K_PV) | (1u << K_MASK_COUNT))
#define K_ROWG_SET ((1u << K_ROWG) | (1u << K_ROWG_SPLIT) | (1u << K_MERGE) | (1u << K_MASK_COUNT))
struct cl_prog {
    char opts[160];
    cl_program prog;
    cl_kernel k[K_COUNT];
    uint32_t kmask; // the kernels the program holds (K_TILES_SET or K_ROWG_SET)
    uint32_t used;  // kernels launched in this process
    uint32_t saved; // kernels launched when the binary was last written
    uint32_t pending; // kernels enqueued (cl_enqueue) and not yet known to have run
    char marker[800]; // loaded from the cache: the marker kept until every kernel ran (see there)
};

struct cl_dev {
    struct ssmax_dev base;
    struct cl_inst *ci;
    struct cl_devrec *rec;
    cl_context cx;
    cl_command_queue q;
    struct cl_prog *progs;
    int nprogs, cap_progs;
    cl_mem params, coef, scr0, scr1, dummy;
    cl_mem nvis; // with a mask: each mask row's visible keys (mask_count), like the scratch
    size_t coef_size, scr0_size, scr1_size, nvis_size;
    char cache_dir[512];
    uint64_t mac_key[2]; // the cache directory's secret (see the cache section)
    int mac_state;       // 0: not read yet, 1: mac_key valid, -1: no secret (no caching)
    int imported;        // cx and q are the application's (retained by us, released at close)
    int profiling;       // q has CL_QUEUE_PROFILING_ENABLE: device times; else they read 0
};

/* The backend's entries (backend.h): cl_instance.c (init, uninit, devices), cl_device.c (open,
 * close, buffers), cl_plan.c (plan), cl_attn.c (attn). */
SSMAX_BACKEND_DECLS(cl)

/* cl_device.c */
/* The error for a failed OpenCL call: out of memory and size limits get their own codes. */
int cl_err(struct ssmax_context *ctx, cl_int e, const char *what);
/* The rest of opening once d->ci, d->rec, d->cx and d->q are set; on failure it closes d. */
int cl_open_common(struct ssmax_context *ctx, struct cl_dev *d);
/* Grows a scratch buffer *m (of *have bytes) to at least need bytes. */
int cl_scratch(struct cl_dev *d, cl_mem *m, size_t *have, size_t need);

/* cl_attn.c: one execution enqueued after the wait list, its last launch's event in *event
 * (NULL: none kept); nothing waited for. */
int cl_enqueue(struct ssmax_dev *base, const struct attn_plan *pl, const struct attn_bufs *ab,
               cl_uint nwait, const cl_event *wait, cl_event *event);

/* cl_plan.c */
/* The build options of the plan's program (cl/attn.cl's defines). */
void cl_plan_opts(const struct attn_plan *pl, char *out, size_t n);
/* The elements the kernels index from a binding's start: 2^32 - 1, or less for tests
 * (ssmax_cl_index_limit_set). */
uint64_t cl_index_limit(void);

/* cl_program.c */
/* The kernels' names in cl/attn.cl, by K_*. */
extern const char *const cl_kernel_names[K_COUNT];
/* The program built with these options (from the cache, or the source), made once per device. */
int cl_program_get(struct cl_dev *d, const char *opts, struct cl_prog **out);
/* After a successful call that launched the kernels in launched: saves the binary again when it
 * gained code (see the cache section), and drops the crash marker once every kernel ran. */
void cl_program_ran(struct cl_dev *d, struct cl_prog *pg, uint32_t launched);
/* After the queue finished: cl_program_ran for the kernels enqueued without a wait. */
void cl_programs_settle(struct cl_dev *d);
/* Releases the device's programs and their markers. */
void cl_programs_release(struct cl_dev *d);

#endif
