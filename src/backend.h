/*
 * The backend function table. The generic layer (context.c, buffer.c, attn.c, validate.c,
 * plan.c) validates every argument and makes the plan, asking the backend's plan entry for its
 * part; then it calls the other entries, and backends trust what they are given.
 */
#ifndef SSMAX_BACKEND_H
#define SSMAX_BACKEND_H

#include "internal.h"
#include "pipelines.h"

struct ssmax_backend_fns {
    const char *name;
    enum ssmax_backend id;
    /* Loads the API and lists devices. A missing loader, ICD or zero devices is not an error:
     * return SSMAX_OK with *bpriv NULL or with no devices, after logging why. */
    int (*init)(struct ssmax_context *ctx, void **bpriv);
    void (*uninit)(struct ssmax_context *ctx, void *bpriv);
    /* The backend's devices (*count of them), valid while bpriv lives. */
    const struct ssmax_device_info *(*devices)(void *bpriv, int *count);
    /* The backend's device struct, whose first member is a struct ssmax_dev: dev_size bytes,
     * allocated zeroed (base.ctx set) and freed by the generic layer. */
    size_t dev_size;
    /* Opens device local_index of that list (the generic layer checks the index) into dev. On
     * failure it releases what it made; close is not called then. */
    int (*open)(struct ssmax_context *ctx, void *bpriv, int local_index, struct ssmax_dev *dev);
    /* Releases what open made. */
    void (*close)(struct ssmax_dev *dev);
    int (*buf_create)(struct ssmax_dev *dev, size_t size, void **out);
    void (*buf_destroy)(struct ssmax_dev *dev, void *buf);
    int (*buf_write)(struct ssmax_dev *dev, void *buf, size_t off, const void *src, size_t n);
    int (*buf_read)(struct ssmax_dev *dev, void *buf, size_t off, void *dst, size_t n);
    /* head_dim the kernels take: a multiple of head_dim_step up to head_dim_max. */
    uint32_t head_dim_step, head_dim_max;
    int rows_kernel; // 1: has SSMAX_KERNEL_ROWS (tuned entries may name it)
    int inference;   // 1: the kernels take SPEC.md section 7.2-7.4 (masks, windows, per-batch
                     // lengths, soft-capping, sinks); else such a call is SSMAX_ERR_UNSUPPORTED
    int mask_summary; // 1: the kernels read a mask summary after the counts (nvis_bytes)
    int app_scratch;  // 1: recorded executions take the application's scratch (bufs->scratch)
    /* The backend's part of planning (plan.c calls it once per call, after the path): fills
     * kernel, kernel_name, tiles, bk_kernel and bk_flags, scratch_max and max_groups_x; may split
     * the keys further where the device needs it (an AUTO path only, with the reason in why);
     * checks the device's limits (binding ranges, dispatch counts), naming the argument. */
    int (*plan)(struct ssmax_dev *dev, struct attn_plan *plan);
    /* Optional: makes ready what the plan's executions need and would otherwise make at their
     * first run, pipelines or programs and scratch (ssmax_plan_create). */
    int (*prepare)(struct ssmax_dev *dev, const struct attn_plan *plan);
    /* Optional: frees what a plan object kept for recording or enqueueing (see
     * ssmax_plan_record in internal.h); called while the plan's device is open. */
    void (*plan_state_free)(struct ssmax_dev *dev, void *state);
    /* Runs the plan and waits for it; *device_ns gets the device time. */
    int (*attn)(struct ssmax_dev *dev, const struct attn_plan *plan, const struct attn_bufs *bufs,
                uint64_t *device_ns);
    /* Optional (pipelines.h): builds each pipeline the plan runs, with the driver's statistics,
     * and hands it to cb; works on compile_only devices. */
    int (*pipelines)(struct ssmax_dev *dev, const struct attn_plan *plan, ssmax_pipe_cb cb,
                     void *priv);
};

/* A backend's entries, named p_init, p_uninit, ..., and its device struct p_dev: its table
 * takes them with SSMAX_BACKEND_ENTRIES(p, name, ID) (ID: of enum ssmax_backend), its header
 * declares them with SSMAX_BACKEND_DECLS(p). */
#define SSMAX_BACKEND_ENTRIES(p, backend_name, ID)                                                 \
    .name = #backend_name, .id = SSMAX_BACKEND_##ID,                                               \
    .dev_size = sizeof(struct p##_dev), .init = p##_init, .uninit = p##_uninit,                   \
    .devices = p##_devices, .open = p##_open,                                                      \
    .close = p##_close, .buf_create = p##_buf_create, .buf_destroy = p##_buf_destroy,              \
    .buf_write = p##_buf_write, .buf_read = p##_buf_read, .plan = p##_plan, .attn = p##_attn
#define SSMAX_BACKEND_DECLS(p)                                                                     \
    int p##_init(struct ssmax_context *ctx, void **bpriv);                                         \
    void p##_uninit(struct ssmax_context *ctx, void *bpriv);                                       \
    const struct ssmax_device_info *p##_devices(void *bpriv, int *count);                          \
    int p##_open(struct ssmax_context *ctx, void *bpriv, int idx, struct ssmax_dev *base);         \
    void p##_close(struct ssmax_dev *base);                                                        \
    int p##_buf_create(struct ssmax_dev *base, size_t size, void **out);                           \
    void p##_buf_destroy(struct ssmax_dev *base, void *buf);                                       \
    int p##_buf_write(struct ssmax_dev *base, void *buf, size_t off, const void *src, size_t n);   \
    int p##_buf_read(struct ssmax_dev *base, void *buf, size_t off, void *dst, size_t n);          \
    int p##_plan(struct ssmax_dev *base, struct attn_plan *pl);                                    \
    int p##_attn(struct ssmax_dev *base, const struct attn_plan *pl, const struct attn_bufs *ab,   \
                 uint64_t *device_ns);

extern const struct ssmax_backend_fns ssmax_backend_cpu;
#ifdef SSMAX_HAVE_VULKAN
extern const struct ssmax_backend_fns ssmax_backend_vulkan;
#endif
#ifdef SSMAX_HAVE_OPENCL
extern const struct ssmax_backend_fns ssmax_backend_opencl;
#endif

#endif
