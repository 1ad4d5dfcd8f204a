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
    r = ctx->dev->fns->buf_create(ctx->dev, size, &b->bk);
    if (r < 0) {
        ssmax_free(ctx, b);
        return r;
    }
    b->size = size;
    b->next = ctx->buffers;
    if (ctx->buffers)
        ctx->buffers->prev = b;
    ctx->buffers = b;
    *out = b;
    return SSMAX_OK;
}

void ssmax_buffer_destroy(ssmax_context *ctx, ssmax_buffer **pb)
{
    if (!ctx || !pb || !*pb)
        return;
    ssmax_buffer *b = *pb;
    if (ctx->dev)
        ctx->dev->fns->buf_destroy(ctx->dev, b->bk);
    if (b->prev)
        b->prev->next = b->next;
    else
        ctx->buffers = b->next;
    if (b->next)
        b->next->prev = b->prev;
    ssmax_free(ctx, b);
    *pb = NULL;
}

size_t ssmax_buffer_size(const ssmax_buffer *buf) { return buf ? buf->size : 0; }

static int check_range(ssmax_context *ctx, const ssmax_buffer *b, size_t off, const void *host,
                       size_t size, const char *bufname, const char *hostname)
{
    int r = ssmax_need_device(ctx);
    if (r < 0)
        return r;
    if (!b)
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG, "%s: must not be NULL", bufname);
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
    int r = check_range(ctx, dst, off, src, size, "dst", "src");
    if (r < 0 || !size)
        return r;
    return sticky(ctx, ctx->dev->fns->buf_write(ctx->dev, dst->bk, off, src, size));
}

int ssmax_buffer_read(ssmax_context *ctx, ssmax_buffer *src, size_t off, void *dst, size_t size)
{
    int r = check_range(ctx, src, off, dst, size, "src", "dst");
    if (r < 0 || !size)
        return r;
    return sticky(ctx, ctx->dev->fns->buf_read(ctx->dev, src->bk, off, dst, size));
}
