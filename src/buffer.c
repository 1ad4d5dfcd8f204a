/*
 * Generic buffers: argument, size and overflow checks, then the backend table.
 */
#include <string.h>

#include "backend.h"
#include "internal.h"

int ssmax_buffer_create(ssmax_context *ctx, size_t size, ssmax_buffer **out)
{
    int r = ssmax_need_runnable(ctx);
    if (r < 0)
        return r;
    if (!out)
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG, "out: must not be NULL");
    *out = NULL;
    if (!size)
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG, "size: must be >= 1");
    uint64_t lim = ctx->dev->info.max_alloc_size;
    if (lim && size > lim)
        return ssmax_set_error(ctx, SSMAX_ERR_LIMIT_EXCEEDED,
                               "size: %zu bytes exceeds the device's largest allocation %llu",
                               size, (unsigned long long)lim);
    ssmax_buffer *b = ssmax_calloc(ctx, 1, sizeof(*b));
    if (!b)
        return ssmax_set_error(ctx, SSMAX_ERR_OUT_OF_HOST_MEMORY, "buffer: out of host memory");
    if ((r = ssmax_handle_new(ctx, HANDLE_BUFFER, b, &b->handle)) < 0) {
        ssmax_free(ctx, b);
        return r;
    }
    r = ctx->dev->fns->buf_create(ctx->dev, size, &b->bk);
    if (r < 0) {
        ssmax_handle_free(ctx, b->handle);
        ssmax_free(ctx, b);
        return r;
    }
    b->size = size;
    *out = b->handle;
    return SSMAX_OK;
}

int ssmax_buffer_adopt(ssmax_context *ctx, void *bk, size_t base, size_t size, ssmax_buffer **out)
{
    ssmax_buffer *b = ssmax_calloc(ctx, 1, sizeof(*b));
    if (!b)
        return ssmax_set_error(ctx, SSMAX_ERR_OUT_OF_HOST_MEMORY, "buffer: out of host memory");
    int r = ssmax_handle_new(ctx, HANDLE_BUFFER, b, &b->handle);
    if (r < 0) {
        ssmax_free(ctx, b);
        return r;
    }
    b->bk = bk;
    b->base = base;
    b->size = size;
    b->imported = 1;
    *out = b->handle;
    return SSMAX_OK;
}

/* Frees a resolved buffer whose handle is already dead (ssmax_buffer_destroy, device close). */
void ssmax_buffer_release(ssmax_context *ctx, void *obj)
{
    ssmax_buffer *b = obj;
    if (ctx->dev)
        ctx->dev->fns->buf_destroy(ctx->dev, b->bk);
    ssmax_free(ctx, b);
}

void ssmax_buffer_destroy(ssmax_context *ctx, ssmax_buffer **pb)
{
    if (!ctx || !pb || !*pb)
        return;
    ssmax_buffer *b = ssmax_handle_get(ctx, *pb, HANDLE_BUFFER, "buf");
    if (!b)
        return; // not ours, or already gone: left alone, the message says which
    ssmax_handle_free(ctx, b->handle);
    ssmax_buffer_release(ctx, b);
    *pb = NULL;
}

size_t ssmax_buffer_size(ssmax_context *ctx, const ssmax_buffer *buf)
{
    if (!ctx) {
        ssmax_set_error(NULL, SSMAX_ERR_INVALID_ARG, "ctx: must not be NULL");
        return 0;
    }
    if (!buf)
        return 0;
    const ssmax_buffer *b = ssmax_handle_get(ctx, buf, HANDLE_BUFFER, "buf");
    return b ? b->size : 0;
}

ssmax_buffer *ssmax_buffer_resolve(ssmax_context *ctx, const ssmax_buffer *h, const char *arg)
{
    return h ? ssmax_handle_get(ctx, h, HANDLE_BUFFER, arg) : NULL;
}

/* Resolves handle b into *out and checks the range. */
static int check_range(ssmax_context *ctx, const ssmax_buffer *b, size_t off, const void *host,
                       size_t size, const char *bufname, const char *hostname,
                       const ssmax_buffer **out)
{
    int r = ssmax_need_device(ctx);
    if (r < 0)
        return r;
    if (!b)
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG, "%s: must not be NULL", bufname);
    if (!(b = ssmax_handle_get(ctx, b, HANDLE_BUFFER, bufname)))
        return SSMAX_ERR_INVALID_ARG;
    *out = b;
    if (!host && size)
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG, "%s: must not be NULL", hostname);
    if (off > b->size || size > b->size - off)
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG,
                               "off + size: %zu + %zu exceeds the buffer size %zu", off, size,
                               b->size);
    return SSMAX_OK;
}

static int sticky(ssmax_context *ctx, int r)
{
    if (r == SSMAX_ERR_DEVICE_LOST)
        ctx->failed = 1;
    return r;
}

int ssmax_buffer_write(ssmax_context *ctx, ssmax_buffer *dst, size_t off, const void *src,
                       size_t size)
{
    const ssmax_buffer *b = NULL;
    int r = check_range(ctx, dst, off, src, size, "dst", "src", &b);
    if (r < 0 || !size)
        return r;
    return sticky(ctx, ctx->dev->fns->buf_write(ctx->dev, b->bk, b->base + off, src, size));
}

int ssmax_buffer_read(ssmax_context *ctx, ssmax_buffer *src, size_t off, void *dst, size_t size)
{
    const ssmax_buffer *b = NULL;
    int r = check_range(ctx, src, off, dst, size, "src", "dst", &b);
    if (r < 0 || !size)
        return r;
    return sticky(ctx, ctx->dev->fns->buf_read(ctx->dev, b->bk, b->base + off, dst, size));
}
