/*
 * The CPU backend: host buffers and the float64 reference, results rounded to the storage type.
 * It makes every part of the API usable without a GPU driver.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../backend.h"

struct cpu_dev {
    struct ssmax_dev base;
};

static int cpu_init(struct ssmax_context *ctx, void **bpriv)
{
    struct ssmax_device_info *d = ssmax_calloc(ctx, 1, sizeof(*d));
    if (!d)
        return ssmax_set_error(ctx, SSMAX_ERR_OUT_OF_HOST_MEMORY, "cpu: out of host memory");
    d->backend = SSMAX_BACKEND_CPU;
    d->type = SSMAX_DEVICE_CPU;
    snprintf(d->name, sizeof(d->name), "CPU reference (float64)");
    snprintf(d->vendor, sizeof(d->vendor), "ssmax");
    snprintf(d->api_version, sizeof(d->api_version), "C11 float64");
    snprintf(d->driver_version, sizeof(d->driver_version), "%s", ssmax_version());
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    d->compute_units = n > 0 ? (uint32_t)n : 1;
    d->max_workgroup_size = 1;
    d->max_buffer_size = d->max_alloc_size = SIZE_MAX / 2;
    d->fp16_storage = 1;
    *bpriv = d;
    return SSMAX_OK;
}

static void cpu_uninit(struct ssmax_context *ctx, void *bpriv) { ssmax_free(ctx, bpriv); }

static const struct ssmax_device_info *cpu_devices(void *bpriv, int *count)
{
    *count = 1;
    return bpriv;
}

static int cpu_open(struct ssmax_context *ctx, void *bpriv, int idx, struct ssmax_dev *base)
{
    (void)ctx, (void)bpriv, (void)idx, (void)base;
    return SSMAX_OK;
}

static void cpu_close(struct ssmax_dev *dev) { (void)dev; }

static int cpu_buf_create(struct ssmax_dev *dev, size_t size, void **out)
{
    *out = ssmax_fault_alloc(dev->ctx) ? NULL : ssmax_malloc(dev->ctx, size);
    if (!*out)
        return ssmax_set_error(dev->ctx, SSMAX_ERR_OUT_OF_DEVICE_MEMORY,
                               "size: %zu bytes could not be allocated", size);
    return SSMAX_OK;
}

static void cpu_buf_destroy(struct ssmax_dev *dev, void *buf) { ssmax_free(dev->ctx, buf); }

static int cpu_buf_write(struct ssmax_dev *dev, void *buf, size_t off, const void *src, size_t n)
{
    (void)dev;
    memcpy((char *)buf + off, src, n);
    return SSMAX_OK;
}

static int cpu_buf_read(struct ssmax_dev *dev, void *buf, size_t off, void *dst, size_t n)
{
    (void)dev;
    memcpy(dst, (char *)buf + off, n);
    return SSMAX_OK;
}

/* The reference runs any path as one computation: nothing to choose. */
static int cpu_plan(struct ssmax_dev *dev, struct attn_plan *pl)
{
    (void)dev;
    pl->kernel = KERNEL_REFERENCE;
    pl->kernel_name = "reference";
    ssmax_plan_why(pl, "the cpu device runs the float64 reference, the same for every path");
    return SSMAX_OK;
}

static int cpu_attn(struct ssmax_dev *dev, const struct attn_plan *pl, const struct attn_bufs *b,
                    uint64_t *ns)
{
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct ssmax_attn_host io = {
        .q = (const char *)b->q + b->q_off,
        .k = (const char *)b->k + b->k_off,
        .v = (const char *)b->v + b->v_off,
        .o = (char *)b->o + b->o_off,
        .lse = b->lse ? (float *)((char *)b->lse + b->lse_off) : NULL,
        .probs = b->probs ? (float *)((char *)b->probs + b->probs_off) : NULL,
        .mask = b->mask ? (const char *)b->mask + b->mask_off : NULL,
    };
    if (ssmax_fault_lost(dev->ctx))
        return ssmax_set_error(dev->ctx, SSMAX_ERR_DEVICE_LOST, "cpu: device lost (injected)");
    char msg[512];
    int r = ssmax_ref_compute(&pl->p, &io, msg, sizeof(msg));
    if (r < 0)
        return ssmax_set_error(dev->ctx, r, "%s", msg);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    *ns = (uint64_t)(t1.tv_sec - t0.tv_sec) * 1000000000ull + (uint64_t)(t1.tv_nsec - t0.tv_nsec);
    return SSMAX_OK;
}

const struct ssmax_backend_fns ssmax_backend_cpu = {
    SSMAX_BACKEND_ENTRIES(cpu, cpu, CPU),
    .head_dim_step = 1, .head_dim_max = SSMAX_MAX_REF_HEAD_DIM, .rows_kernel = 0,
    .inference = 1,
};
