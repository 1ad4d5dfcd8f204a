/*
 * The backend function table. The generic layer (context.c, buffer.c, attn.c, validate.c,
 * plan.c) validates every argument and makes the plan, asking the backend's plan entry for its
 * part; then it calls the other entries, and backends trust what they are given.
 */
#ifndef SSMAX_BACKEND_H
#define SSMAX_BACKEND_H

#include "internal.h"

struct ssmax_backend_fns {
    const char *name;
    enum ssmax_backend id;
    /* Loads the API and lists devices. A missing loader, ICD or zero devices is not an error:
     * return SSMAX_OK with *bpriv NULL or with no devices, after logging why. */
    int (*init)(struct ssmax_context *ctx, void **bpriv);
    void (*uninit)(struct ssmax_context *ctx, void *bpriv);
    /* Number of devices; fills out[0..cap) when out is not NULL. */
    int (*enumerate)(void *bpriv, struct ssmax_device_info *out, int cap);
    int (*open)(struct ssmax_context *ctx, void *bpriv, int local_index, struct ssmax_dev **out);
    void (*close)(struct ssmax_dev *dev);
    int (*buf_create)(struct ssmax_dev *dev, size_t size, void **out);
    void (*buf_destroy)(struct ssmax_dev *dev, void *buf);
    int (*buf_write)(struct ssmax_dev *dev, void *buf, size_t off, const void *src, size_t n);
    int (*buf_read)(struct ssmax_dev *dev, void *buf, size_t off, void *dst, size_t n);
    /* head_dim the kernels take: a multiple of head_dim_step up to head_dim_max. */
    uint32_t head_dim_step, head_dim_max;
    int rows_kernel; // 1: has SSMAX_KERNEL_ROWS (tuned entries may name it)
    /* The backend's part of planning (plan.c calls it once per call, after the path): fills
     * kernel, kernel_name, tiles, bk_kernel and bk_flags, scratch_max and max_groups_x; may split
     * the keys further where the device needs it (an AUTO path only, with the reason in why);
     * checks the device's limits (binding ranges, dispatch counts), naming the argument. */
    int (*plan)(struct ssmax_dev *dev, struct attn_plan *plan);
    /* Runs the plan and waits for it; *device_ns gets the device time. */
    int (*attn)(struct ssmax_dev *dev, const struct attn_plan *plan, const struct attn_bufs *bufs,
                uint64_t *device_ns);
};

extern const struct ssmax_backend_fns ssmax_backend_cpu;
#ifdef SSMAX_HAVE_VULKAN
extern const struct ssmax_backend_fns ssmax_backend_vulkan;
#endif
#ifdef SSMAX_HAVE_OPENCL
extern const struct ssmax_backend_fns ssmax_backend_opencl;
#endif

#endif
