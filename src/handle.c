/*
 * Checked handles. The ssmax_buffer (and ssmax_plan) pointers the API hands out are not addresses
 * but numbers: the context's serial, a slot in the context's table and the slot's generation,
 * with the low bit set. Every call resolves them here before touching an object, so a handle of
 * another context, of a closed device or of a destroyed object is an error with a message, never
 * a read of freed memory; and a slot reused by a new object has a new generation, so the old
 * handle stays dead. Inside the library the same pointer types hold the resolved objects.
 */
#include <stdatomic.h>
#include <string.h>

#include "internal.h"

/* Field widths: 20 + 20 + 23 + 1 bits where pointers have 64, 7 + 14 + 10 + 1 where they have 32. */
#if UINTPTR_MAX > 0xffffffffu
#define SERIAL_BITS 20
#define SLOT_BITS 20
#define GEN_BITS 23
#else
#define SERIAL_BITS 7
#define SLOT_BITS 14
#define GEN_BITS 10
#endif
#define FIELD(x, bits) ((uintptr_t)(x) & (((uintptr_t)1 << (bits)) - 1))
#define SLOT_MAX ((uint32_t)1 << SLOT_BITS)

struct handle_slot {
    void *obj;      // NULL: free
    uint32_t gen;   // generation of the handle that names it now (or named it last)
    uint32_t kind;  // enum handle_kind
    uint32_t next;  // free list: next free slot + 1, 0 = none
};

static _Atomic uint32_t serial_counter;

void ssmax_handles_init(struct ssmax_context *ctx)
{
    // 0 is never a serial, so a handle is never 0 or 1 (NULL stays NULL).
    uint32_t s;
    do
        s = (uint32_t)FIELD(atomic_fetch_add(&serial_counter, 1) + 1, SERIAL_BITS);
    while (!s);
    ctx->serial = s;
}

void ssmax_handles_release(struct ssmax_context *ctx)
{
    ssmax_free(ctx, ctx->handles);
    ctx->handles = NULL;
    ctx->nhandles = ctx->caphandles = 0;
    ctx->free_handle = 0;
}

static uintptr_t encode(const struct ssmax_context *ctx, uint32_t slot, uint32_t gen)
{
    return (FIELD(ctx->serial, SERIAL_BITS) << (SLOT_BITS + GEN_BITS + 1)) |
           (FIELD(slot, SLOT_BITS) << (GEN_BITS + 1)) | (FIELD(gen, GEN_BITS) << 1) | 1u;
}

int ssmax_handle_new(struct ssmax_context *ctx, enum handle_kind kind, void *obj, void **out)
{
    uint32_t slot;
    if (ctx->free_handle) {
        slot = ctx->free_handle - 1;
        ctx->free_handle = ctx->handles[slot].next;
    } else {
        if (ctx->nhandles == SLOT_MAX)
            return ssmax_set_error(ctx, SSMAX_ERR_LIMIT_EXCEEDED,
                                   "handles: %u buffers and plans are alive in this context, the "
                                   "most it holds", SLOT_MAX);
        if (ctx->nhandles == ctx->caphandles) {
            uint32_t cap = ctx->caphandles ? ctx->caphandles * 2 : 64;
            if (cap > SLOT_MAX)
                cap = SLOT_MAX;
            struct handle_slot *t = ssmax_calloc(ctx, cap, sizeof(*t));
            if (!t)
                return ssmax_set_error(ctx, SSMAX_ERR_OUT_OF_HOST_MEMORY,
                                       "handles: out of host memory");
            if (ctx->nhandles)
                memcpy(t, ctx->handles, ctx->nhandles * sizeof(*t));
            ssmax_free(ctx, ctx->handles);
            ctx->handles = t;
            ctx->caphandles = cap;
        }
        slot = ctx->nhandles++;
        ctx->handles[slot].gen = 0;
    }
    struct handle_slot *s = &ctx->handles[slot];
    s->obj = obj;
    s->kind = kind;
    s->next = 0;
    *out = (void *)encode(ctx, slot, s->gen);
    return SSMAX_OK;
}

static const char *kind_name(uint32_t kind)
{
    return kind == HANDLE_PLAN ? "plan" : "buffer";
}

void *ssmax_handle_get(struct ssmax_context *ctx, const void *h, enum handle_kind kind,
                       const char *arg)
{
    const uintptr_t v = (uintptr_t)h;
    const uint32_t serial = (uint32_t)FIELD(v >> (SLOT_BITS + GEN_BITS + 1), SERIAL_BITS);
    const uint32_t slot = (uint32_t)FIELD(v >> (GEN_BITS + 1), SLOT_BITS);
    const uint32_t gen = (uint32_t)FIELD(v >> 1, GEN_BITS);
    if (!(v & 1u) || (v >> (SERIAL_BITS + SLOT_BITS + GEN_BITS)) >> 1) {
        ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG, "%s: %p is not an ssmax_%s handle", arg, h,
                        kind_name(kind));
        return NULL;
    }
    if (serial != ctx->serial) {
        ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG,
                        "%s: the %s belongs to another context (or to one that was destroyed)",
                        arg, kind_name(kind));
        return NULL;
    }
    const struct handle_slot *s = slot < ctx->nhandles ? &ctx->handles[slot] : NULL;
    if (!s || !s->obj || FIELD(s->gen, GEN_BITS) != gen) {
        ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG,
                        "%s: the %s was destroyed (or the device it was made on was closed)", arg,
                        kind_name(kind));
        return NULL;
    }
    if (s->kind != kind) {
        ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG, "%s: is an ssmax_%s, not an ssmax_%s", arg,
                        kind_name(s->kind), kind_name(kind));
        return NULL;
    }
    return s->obj;
}

void ssmax_handle_free(struct ssmax_context *ctx, const void *h)
{
    const uintptr_t v = (uintptr_t)h;
    const uint32_t slot = (uint32_t)FIELD(v >> (GEN_BITS + 1), SLOT_BITS);
    if (slot >= ctx->nhandles)
        return;
    struct handle_slot *s = &ctx->handles[slot];
    s->obj = NULL;
    s->gen++; // the handle just freed never matches again (until the counter wraps)
    s->next = ctx->free_handle;
    ctx->free_handle = slot + 1;
}

void ssmax_handles_drop(struct ssmax_context *ctx, enum handle_kind kind,
                        void (*fn)(struct ssmax_context *ctx, void *obj))
{
    for (uint32_t i = 0; i < ctx->nhandles; i++) {
        struct handle_slot *s = &ctx->handles[i];
        if (s->obj && s->kind == kind) {
            void *obj = s->obj;
            ssmax_handle_free(ctx, (const void *)encode(ctx, i, s->gen));
            fn(ctx, obj);
        }
    }
}
