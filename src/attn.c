/*
 * The attention entries: each call validates and plans once (plan.c), then the open device's
 * backend runs the plan; the reports (ssmax_last_plan, ssmax_last_path, ssmax_last_device_time)
 * read what ran. And the reference entry, which needs no device.
 */
#include <stdio.h>
#include <string.h>

#include "backend.h"
#include "internal.h"

static void plan_info(const struct attn_plan *pl, struct ssmax_plan_info *out)
{
    memset(out, 0, sizeof(*out));
    out->path = pl->path;
    out->kv_splits = pl->splits;
    snprintf(out->kernel, sizeof(out->kernel), "%s", pl->kernel_name ? pl->kernel_name : "");
    out->tile_rows = pl->br;
    out->tile_keys = pl->bc;
    out->submissions = pl->submissions ? pl->submissions : 1;
    // A plan's: what the application's scratch must hold (coefficients, scratch and mask counts
    // at aligned offsets); a call's: what it uses.
    out->scratch_bytes = pl->app_scratch_bytes ? pl->app_scratch_bytes
                                               : pl->scr0_bytes + pl->scr1_bytes + pl->nvis_bytes;
    out->scratch_align = pl->app_scratch_bytes ? (pl->scratch_align > 4 ? pl->scratch_align : 4) : 0;
    snprintf(out->why, sizeof(out->why), "%s", pl->why);
}

/* Runs a finished plan on resolved buffers; the reports take what ran. */
static void bufs_of(const struct ssmax_attn_buffers *b, struct attn_bufs *ab)
{
    // Offsets from the start of the backend objects: imported ranges start at their base.
    *ab = (struct attn_bufs){
        b->q->bk, b->k->bk, b->v->bk, b->o->bk, b->lse ? b->lse->bk : NULL,
        b->probs ? b->probs->bk : NULL, b->q->base + b->q_off, b->k->base + b->k_off,
        b->v->base + b->v_off, b->o->base + b->o_off, b->lse ? b->lse->base + b->lse_off : 0,
        b->probs ? b->probs->base + b->probs_off : 0, b->mask ? b->mask->bk : NULL,
        b->mask ? b->mask->base + b->mask_off : 0, b->scratch ? b->scratch->bk : NULL,
        b->scratch ? b->scratch->base + b->scratch_off : 0,
    };
}

/* The application's scratch is for recorded executions only (ssmax.h). */
static int no_scratch(ssmax_context *ctx, const struct ssmax_attn_buffers *b)
{
    if (b && b->scratch)
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG,
                               "bufs->scratch: only recorded executions "
                               "(ssmax_vulkan_plan_record) take the application's scratch; set it "
                               "to NULL");
    return SSMAX_OK;
}

static int run(ssmax_context *ctx, const struct attn_plan *pl, const struct ssmax_attn_buffers *b)
{
    struct attn_bufs ab;
    bufs_of(b, &ab);
    uint64_t ns = 0;
    int r = ctx->dev->fns->attn(ctx->dev, pl, &ab, &ns);
    if (r == SSMAX_OK) {
        ctx->last_ns = ns;
        plan_info(pl, &ctx->last_plan);
    } else if (r == SSMAX_ERR_DEVICE_LOST) {
        ctx->failed = 1;
    }
    return r;
}

int ssmax_attn_buffers_resolve(ssmax_context *ctx, const struct ssmax_attn_buffers *b,
                               struct ssmax_attn_buffers *out)
{
    *out = *b;
    if ((b->q && !(out->q = ssmax_buffer_resolve(ctx, b->q, "bufs->q"))) ||
        (b->k && !(out->k = ssmax_buffer_resolve(ctx, b->k, "bufs->k"))) ||
        (b->v && !(out->v = ssmax_buffer_resolve(ctx, b->v, "bufs->v"))) ||
        (b->o && !(out->o = ssmax_buffer_resolve(ctx, b->o, "bufs->o"))) ||
        (b->lse && !(out->lse = ssmax_buffer_resolve(ctx, b->lse, "bufs->lse"))) ||
        (b->probs && !(out->probs = ssmax_buffer_resolve(ctx, b->probs, "bufs->probs"))) ||
        (b->mask && !(out->mask = ssmax_buffer_resolve(ctx, b->mask, "bufs->mask"))) ||
        (b->scratch && !(out->scratch = ssmax_buffer_resolve(ctx, b->scratch, "bufs->scratch"))))
        return SSMAX_ERR_INVALID_ARG;
    return SSMAX_OK;
}

int ssmax_attn_supported(ssmax_context *ctx, const struct ssmax_attn_params *p)
{
    int r = ssmax_need_runnable(ctx);
    if (r < 0)
        return r;
    struct attn_plan pl;
    r = ssmax_plan_make(ctx, p, NULL, &pl);
    ssmax_plan_free(ctx, &pl);
    return r;
}

int ssmax_attn_plan_info(ssmax_context *ctx, const struct ssmax_attn_params *p,
                         const struct ssmax_attn_buffers *bufs, struct ssmax_plan_info *out)
{
    int r = ssmax_need_runnable(ctx);
    if (r < 0)
        return r;
    if (!out)
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG, "out: must not be NULL");
    if ((r = no_scratch(ctx, bufs)) < 0)
        return r;
    struct ssmax_attn_buffers rb;
    if (bufs && (r = ssmax_attn_buffers_resolve(ctx, bufs, &rb)) < 0)
        return r;
    struct attn_plan pl;
    r = ssmax_plan_make(ctx, p, bufs ? &rb : NULL, &pl);
    if (r == SSMAX_OK)
        plan_info(&pl, out);
    ssmax_plan_free(ctx, &pl);
    return r;
}

int ssmax_attn_pipelines(ssmax_context *ctx, const struct ssmax_attn_params *p,
                         struct ssmax_plan_info *out, ssmax_pipe_cb cb, void *priv)
{
    int r = ssmax_need_device(ctx); // compile_only devices too: they exist for this
    if (r < 0)
        return r;
    if (!cb)
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG, "cb: must not be NULL");
    if (!ctx->dev->fns->pipelines)
        return ssmax_set_error(ctx, SSMAX_ERR_UNSUPPORTED, "the %s device builds no pipelines",
                               ctx->dev->fns->name);
    struct attn_plan pl;
    r = ssmax_plan_make(ctx, p, NULL, &pl);
    if (r == SSMAX_OK && out)
        plan_info(&pl, out);
    if (r == SSMAX_OK)
        r = ctx->dev->fns->pipelines(ctx->dev, &pl, cb, priv);
    ssmax_plan_free(ctx, &pl);
    return r;
}

int ssmax_attn(ssmax_context *ctx, const struct ssmax_attn_params *p,
               const struct ssmax_attn_buffers *b)
{
    int r = ssmax_need_runnable(ctx);
    if (r < 0)
        return r;
    if (!b)
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG, "bufs: must not be NULL");
    if ((r = no_scratch(ctx, b)) < 0)
        return r;
    struct ssmax_attn_buffers rb;
    if ((r = ssmax_attn_buffers_resolve(ctx, b, &rb)) < 0)
        return r;
    struct attn_plan pl;
    r = ssmax_plan_make(ctx, p, &rb, &pl);
    if (r == SSMAX_OK)
        r = run(ctx, &pl, &rb);
    ssmax_plan_free(ctx, &pl);
    return r;
}

/* ---- plans ---- */

struct ssmax_plan {
    struct attn_plan pl; // made for the plan's kv_len; each execution derives its own from it
    void *handle;
    void *bk_state;      // the backend's, for recording or enqueueing (plan_state_free)
};

static void plan_release(ssmax_context *ctx, void *obj)
{
    struct ssmax_plan *plan = obj;
    if (plan->bk_state && ctx->dev && ctx->dev->fns->plan_state_free)
        ctx->dev->fns->plan_state_free(ctx->dev, plan->bk_state);
    ssmax_plan_free(ctx, &plan->pl);
    ssmax_free(ctx, plan);
}

void ssmax_exec_args_default(struct ssmax_exec_args *a)
{
    if (a) {
        memset(a, 0, sizeof(*a));
        a->q_pos = -1;
    }
}

int ssmax_plan_create(ssmax_context *ctx, const struct ssmax_attn_params *p, uint32_t flags,
                      ssmax_plan **out)
{
    int r = ssmax_need_runnable(ctx);
    if (r < 0)
        return r;
    if (!out)
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG, "out: must not be NULL");
    *out = NULL;
    if (flags & ~(uint32_t)(SSMAX_PLAN_LSE | SSMAX_PLAN_PROBS))
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG,
                               "flags: 0x%x has bits outside SSMAX_PLAN_LSE | SSMAX_PLAN_PROBS",
                               flags);
    struct ssmax_plan *plan = ssmax_calloc(ctx, 1, sizeof(*plan));
    if (!plan)
        return ssmax_set_error(ctx, SSMAX_ERR_OUT_OF_HOST_MEMORY, "plan: out of host memory");
    r = ssmax_plan_make_for(ctx, p, NULL, !!(flags & SSMAX_PLAN_LSE),
                            !!(flags & SSMAX_PLAN_PROBS), &plan->pl);
    // The layout, resolved for the plan's kv_len, kept by the plan: executions with fewer keys
    // read the same layout (the reference on the cpu device too).
    for (int t = 0; t < 4; t++) {
        uint64_t *dst = t == 0 ? plan->pl.own_strides.q : t == 1 ? plan->pl.own_strides.k
                        : t == 2 ? plan->pl.own_strides.v : plan->pl.own_strides.o;
        memcpy(dst, plan->pl.strides[t], sizeof(plan->pl.strides[t]));
    }
    plan->pl.p.strides = &plan->pl.own_strides;
    // So is the mask's: its rows hold the plan's kv_len entries whatever an execution's kv_len
    // (the kernels' element strides were resolved so; the cpu device resolves from these).
    if (r == SSMAX_OK && plan->pl.p.mask) {
        uint64_t ms[3], ext;
        ssmax_mask_layout(&plan->pl.p, ms, &ext);
        memcpy(plan->pl.p.mask_strides, ms, sizeof(ms));
    }
    // Everything an execution needs that takes time: pipelines or programs, scratch.
    if (r == SSMAX_OK && ctx->dev->fns->prepare)
        r = ctx->dev->fns->prepare(ctx->dev, &plan->pl);
    if (r == SSMAX_OK)
        r = ssmax_handle_new(ctx, HANDLE_PLAN, plan, &plan->handle);
    if (r < 0) {
        if (r == SSMAX_ERR_DEVICE_LOST)
            ctx->failed = 1;
        plan_release(ctx, plan);
        return r;
    }
    *out = plan->handle;
    return SSMAX_OK;
}

void ssmax_plan_destroy(ssmax_context *ctx, ssmax_plan **pp)
{
    if (!ctx || !pp || !*pp)
        return;
    struct ssmax_plan *plan = ssmax_handle_get(ctx, *pp, HANDLE_PLAN, "plan");
    if (!plan)
        return;
    ssmax_handle_free(ctx, plan->handle);
    plan_release(ctx, plan);
    *pp = NULL;
}

void ssmax_plans_drop(ssmax_context *ctx)
{
    ssmax_handles_drop(ctx, HANDLE_PLAN, plan_release);
}

int ssmax_plan_get_info(ssmax_context *ctx, const ssmax_plan *h, struct ssmax_plan_info *out)
{
    if (!ctx)
        return ssmax_set_error(NULL, SSMAX_ERR_INVALID_ARG, "ctx: must not be NULL");
    ssmax_error_clear(ctx);
    if (!h || !out)
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG, "%s: must not be NULL",
                               h ? "out" : "plan");
    const struct ssmax_plan *plan = ssmax_handle_get(ctx, h, HANDLE_PLAN, "plan");
    if (!plan)
        return SSMAX_ERR_INVALID_ARG;
    plan_info(&plan->pl, out);
    return SSMAX_OK;
}

/* What every execution does first: the plan resolved, args checked, the buffers resolved (*rb)
 * and the execution's plan derived (*pl). */
static int exec_begin(ssmax_context *ctx, const void *h, const struct ssmax_attn_buffers *b,
                      const struct ssmax_exec_args *args, struct ssmax_plan **out,
                      struct ssmax_attn_buffers *rb, struct attn_plan *pl)
{
    pl->own = NULL; // ssmax_plan_free(pl) is safe from here on
    int r = ssmax_need_runnable(ctx);
    if (r < 0)
        return r;
    if (!h || !b)
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG, "%s: must not be NULL",
                               h ? "bufs" : "plan");
    struct ssmax_plan *plan = ssmax_handle_get(ctx, h, HANDLE_PLAN, "plan");
    if (!plan)
        return SSMAX_ERR_INVALID_ARG;
    struct ssmax_exec_args a;
    ssmax_exec_args_default(&a);
    if (args) {
        a = *args;
        for (size_t i = 0; i < sizeof(a.reserved); i++)
            if (a.reserved[i])
                return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG, "args->reserved: must be zero");
    }
    if ((r = ssmax_attn_buffers_resolve(ctx, b, rb)) < 0)
        return r;
    *out = plan;
    if (!a.kv_len)
        a.kv_len = plan->pl.p.kv_len;
    return ssmax_plan_exec(ctx, &plan->pl, rb, &a, pl);
}

int ssmax_plan_execute(ssmax_context *ctx, ssmax_plan *h, const struct ssmax_attn_buffers *b,
                       const struct ssmax_exec_args *args)
{
    struct ssmax_plan *plan;
    struct ssmax_attn_buffers rb;
    struct attn_plan pl;
    pl.own = NULL;
    int r = ctx ? no_scratch(ctx, b) : SSMAX_OK;
    if (r == SSMAX_OK)
        r = exec_begin(ctx, h, b, args, &plan, &rb, &pl);
    if (r == SSMAX_OK)
        r = run(ctx, &pl, &rb);
    ssmax_plan_free(ctx, &pl);
    return r;
}

int ssmax_plan_record(ssmax_context *ctx, void *h, const struct ssmax_attn_buffers *b,
                      const struct ssmax_exec_args *args, ssmax_record_fn rec, void *arg)
{
    struct ssmax_plan *plan = NULL;
    struct ssmax_attn_buffers rb;
    struct attn_plan pl;
    int r = exec_begin(ctx, h, b, args, &plan, &rb, &pl);
    if (r < 0) {
        ssmax_plan_free(ctx, &pl);
        return r;
    }
    struct attn_bufs ab;
    bufs_of(&rb, &ab);
    r = rec(ctx->dev, &plan->pl, &plan->bk_state, &pl, &ab, arg);
    if (r == SSMAX_OK) {
        ctx->last_ns = 0; // not waited for: no device time
        plan_info(&pl, &ctx->last_plan);
    } else if (r == SSMAX_ERR_DEVICE_LOST) {
        ctx->failed = 1;
    }
    ssmax_plan_free(ctx, &pl);
    return r;
}

int ssmax_last_device_time(ssmax_context *ctx, uint64_t *device_ns)
{
    if (ctx)
        ssmax_error_clear(ctx);
    if (!ctx || !device_ns)
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG, "%s: must not be NULL",
                               ctx ? "device_ns" : "ctx");
    *device_ns = ctx->last_ns;
    return SSMAX_OK;
}

int ssmax_last_path(ssmax_context *ctx, enum ssmax_path *path, uint32_t *kv_splits)
{
    if (ctx)
        ssmax_error_clear(ctx);
    if (!ctx)
        return ssmax_set_error(NULL, SSMAX_ERR_INVALID_ARG, "ctx: must not be NULL");
    if (path)
        *path = ctx->last_plan.path;
    if (kv_splits)
        *kv_splits = ctx->last_plan.kv_splits;
    return SSMAX_OK;
}

int ssmax_last_plan(ssmax_context *ctx, struct ssmax_plan_info *out)
{
    if (ctx)
        ssmax_error_clear(ctx);
    if (!ctx || !out)
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG, "%s: must not be NULL",
                               ctx ? "out" : "ctx");
    *out = ctx->last_plan;
    return SSMAX_OK;
}

int ssmax_attn_ref(const struct ssmax_attn_params *p, const struct ssmax_attn_host *io)
{
    ssmax_error_clear(NULL);
    char msg[512];
    int r = ssmax_validate_params(p, msg, sizeof(msg));
    if (r < 0)
        return ssmax_set_error(NULL, r, "%s", msg);
    if (!io)
        return ssmax_set_error(NULL, SSMAX_ERR_INVALID_ARG, "io: must not be NULL");
    r = ssmax_ref_compute(p, io, msg, sizeof(msg));
    if (r < 0)
        return ssmax_set_error(NULL, r, "%s", msg);
    return SSMAX_OK;
}
