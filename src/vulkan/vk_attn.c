/*
 * Vulkan: running a plan. Scratch and pipelines first (a failure leaves every output untouched),
 * then one descriptor set for every pipeline of the call, and the dispatches in the submissions
 * the plan cut them into (max_work_per_submit), each timed by timestamp queries.
 */
#include <string.h>

#include "vk_internal.h"

/* Where a call's commands go: ssmax's own command buffer, cut into submissions it makes and waits
 * for (own), or an application's, where everything is recorded and nothing is submitted. */
struct rec {
    struct vk_dev *d;
    VkCommandBuffer cmd;
    VkDescriptorSet set;
    VkBuffer scr0;        // the unfused scores (copied out to the weights) ...
    VkDeviceSize scr0_at; // ... from this byte
    int own;
    uint64_t *device_ns;
};

static void dispatch(struct rec *rc, VkPipeline pipe, const struct attn_block *pc, uint32_t x,
                     uint32_t y, uint32_t z)
{
    struct vk_dev *d = rc->d;
    d->vkCmdBindPipeline(rc->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, pipe);
    d->vkCmdPushConstants(rc->cmd, d->layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, sizeof(*pc), pc);
    d->vkCmdDispatch(rc->cmd, x, y, z);
}

static void barrier(struct rec *rc, VkPipelineStageFlags src, VkAccessFlags sa,
                    VkPipelineStageFlags dst, VkAccessFlags da)
{
    VkMemoryBarrier mb = { .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
                           .srcAccessMask = sa,
                           .dstAccessMask = da };
    rc->d->vkCmdPipelineBarrier(rc->cmd, src, dst, 0, 1, &mb, 0, NULL, 0, NULL);
}

static void compute_barrier(struct rec *rc)
{
    barrier(rc, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
            VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
            VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT);
}

/* One submission of an attention call on ssmax's own command buffer: begin (timestamp,
 * descriptor set) and end (timestamp, submit, wait, add the device time). */
static int sub_begin(struct rec *rc)
{
    struct vk_dev *d = rc->d;
    int r = vk_cmd_begin(d);
    if (r < 0)
        return r;
    if (d->qpool) {
        d->vkCmdResetQueryPool(d->cmd, d->qpool, 0, 2);
        d->vkCmdWriteTimestamp(d->cmd, VK_PIPELINE_STAGE_TOP_OF_PIPE_BIT, d->qpool, 0);
    }
    d->vkCmdBindDescriptorSets(d->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, d->layout, 0, 1, &rc->set,
                               0, NULL);
    return SSMAX_OK;
}

static int sub_end(struct rec *rc)
{
    struct vk_dev *d = rc->d;
    if (d->qpool)
        d->vkCmdWriteTimestamp(d->cmd, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, d->qpool, 1);
    int r = vk_submit_wait(d);
    if (r < 0)
        return r;
    if (d->qpool) {
        uint64_t ts[2];
        VkResult vr = d->vkGetQueryPoolResults(d->dev, d->qpool, 0, 2, sizeof(ts), ts, 8,
                                               VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT);
        if (vr == VK_SUCCESS)
            *rc->device_ns += (uint64_t)((double)((ts[1] - ts[0]) & d->ts_mask) *
                                         d->ph->props.limits.timestampPeriod);
    }
    return SSMAX_OK;
}

/* Between submissions of ssmax's own call; nothing in an application's command buffer, where the
 * whole call is recorded in order. */
static int sub_next(struct rec *rc)
{
    int r;
    if (rc->own && ((r = sub_end(rc)) < 0 || (r = sub_begin(rc)) < 0))
        return r;
    return SSMAX_OK;
}

int vk_plan_pipes(const struct vk_dev *d, const struct attn_plan *pl,
                  struct vk_pipe_req out[VK_PLAN_PIPES])
{
    const int f16 = pl->p.dtype == SSMAX_F16;
    const uint32_t D = pl->p.head_dim, sg = d->ph->subgroup_size;
    int n0 = 0;
    if (pl->flags & FL_MASK) // the mask rows' visible keys, read by every kernel after it
        out[n0++] = (struct vk_pipe_req){ VK_SH_MASK_COUNT,
                                          { [SPEC_WG] = 64, [SPEC_BR] = 1, [SPEC_BC] = 1,
                                            [SPEC_D] = D, [SPEC_TPR] = 1 },
                                          0, ROLE_MASK };
    out += n0;
    if (pl->path != SSMAX_PATH_UNFUSED) {
        const uint32_t wg = pl->kernel == KERNEL_ROWS    ? sg
                            : pl->kernel == KERNEL_LANES ? pl->wg
                                                         : 16;
        out[0] = (struct vk_pipe_req){ (enum vk_shader_id)pl->bk_kernel,
                                       { [SPEC_WG] = wg, [SPEC_BR] = pl->br, [SPEC_BC] = pl->bc,
                                         [SPEC_D] = D, [SPEC_TPR] = pl->tpr,
                                         [SPEC_SPLIT] = pl->path == SSMAX_PATH_SPLIT_KV,
                                         [SPEC_WIDE] = pl->kernel != KERNEL_TILES ? pl->bk_flags
                                                                                  : 0,
                                         [SPEC_LPR] = pl->kernel == KERNEL_LANES ? pl->lpr : 1 },
                                       pl->subgroup, ROLE_FUSED };
        if (pl->path != SSMAX_PATH_SPLIT_KV)
            return n0 + 1;
        out[1] = (struct vk_pipe_req){ f16 ? VK_SH_MERGE_F16 : VK_SH_MERGE_F32,
                                       { [SPEC_WG] = 64, [SPEC_BR] = 1, [SPEC_BC] = 1,
                                         [SPEC_D] = D, [SPEC_TPR] = 1 },
                                       0, ROLE_MERGE };
        return n0 + 2;
    }
    out[0] = (struct vk_pipe_req){ f16 ? VK_SH_QK_F16 : VK_SH_QK_F32,
                                   { [SPEC_WG] = 256, [SPEC_BR] = 1, [SPEC_BC] = 1, [SPEC_D] = D,
                                     [SPEC_TPR] = 1 },
                                   0, ROLE_QK };
    out[1] = (struct vk_pipe_req){ VK_SH_SOFTMAX,
                                   { [SPEC_WG] = 64, [SPEC_BR] = 1, [SPEC_BC] = 1, [SPEC_D] = D,
                                     [SPEC_TPR] = 1 },
                                   0, ROLE_SOFTMAX };
    out[2] = (struct vk_pipe_req){ f16 ? VK_SH_PV_F16 : VK_SH_PV_F32,
                                   { [SPEC_WG] = pl->br * pl->tpr, [SPEC_BR] = pl->br,
                                     [SPEC_BC] = pl->bc, [SPEC_D] = D, [SPEC_TPR] = pl->tpr },
                                   0, ROLE_PV };
    return n0 + 3;
}

/* The plan's pipelines: with a mask, mask_count; then fused (and merge), or the three unfused
 * kernels. */
static int pipelines(struct vk_dev *d, const struct attn_plan *pl, VkPipeline pipe[VK_PLAN_PIPES])
{
    struct vk_pipe_req req[VK_PLAN_PIPES];
    const int n = vk_plan_pipes(d, pl, req);
    for (int i = 0; i < n; i++) {
        int r = vk_pipeline(d, req[i].id, req[i].spec, req[i].subgroup, &pipe[i]);
        if (r < 0)
            return r;
    }
    return SSMAX_OK;
}

/* The plan's scratch, coefficient buffer and pipelines: made before anything is recorded. */
static int prepare(struct vk_dev *d, const struct attn_plan *pl, VkPipeline pipe[VK_PLAN_PIPES])
{
    int r;
    if ((pl->scr0_bytes && (r = vk_buf_ensure(d, &d->scr0, pl->scr0_bytes, 0)) < 0) ||
        (pl->scr1_bytes && (r = vk_buf_ensure(d, &d->scr1, pl->scr1_bytes, 0)) < 0) ||
        (pl->nvis_bytes && (r = vk_buf_ensure(d, &d->nvis, pl->nvis_bytes, 0)) < 0) ||
        (r = vk_buf_ensure(d, &d->coef, pl->coef_bytes, 1)) < 0)
        return r;
    return pipelines(d, pl, pipe);
}

static int write_set(struct vk_dev *d, VkDescriptorPool pool, const VkDescriptorBufferInfo *bi,
                     VkDescriptorSet *set);

/* lavapipe (a CPU device) compiles a pipeline's code at its first dispatch, not when the pipeline
 * is made: a plan made ahead of time dispatches each of its pipelines not dispatched yet once,
 * with no workgroups (nothing runs, nothing is read or written), so that its first execution
 * compiles nothing. Every binding holds the dummy buffer. */
static int warm_up(struct vk_dev *d, const VkPipeline pipe[], int n)
{
    struct vk_pipe *todo[VK_PLAN_PIPES];
    int m = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < d->npipes; j++)
            if (d->pipes[j].pipe == pipe[i] && !d->pipes[j].warm) {
                todo[m++] = &d->pipes[j];
                break;
            }
    if (!m)
        return SSMAX_OK;
    d->vkResetDescriptorPool(d->dev, d->dpool, 0);
    VkDescriptorBufferInfo bi[NUM_BINDINGS];
    for (int i = 0; i < NUM_BINDINGS; i++)
        bi[i] = (VkDescriptorBufferInfo){ d->dummy.buf, 0, VK_WHOLE_SIZE };
    VkDescriptorSet set;
    int r = write_set(d, d->dpool, bi, &set);
    if (r < 0 || (r = vk_cmd_begin(d)) < 0)
        return r;
    struct rec rc = { d, d->cmd, set, VK_NULL_HANDLE, 0, 1, NULL };
    d->vkCmdBindDescriptorSets(d->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, d->layout, 0, 1, &set, 0,
                               NULL);
    struct attn_block pc;
    memset(&pc, 0, sizeof(pc));
    for (int i = 0; i < m; i++) {
        compute_barrier(&rc);
        dispatch(&rc, todo[i]->pipe, &pc, 0, 0, 0);
    }
    if ((r = vk_submit_wait(d)) < 0)
        return r;
    for (int i = 0; i < m; i++)
        todo[i]->warm = 1;
    return SSMAX_OK;
}

int vk_prepare(struct ssmax_dev *base, const struct attn_plan *pl)
{
    struct vk_dev *d = (struct vk_dev *)base;
    VkPipeline pipe[VK_PLAN_PIPES];
    int r = prepare(d, pl, pipe);
    if (r < 0 || d->ph->props.deviceType != VK_PHYSICAL_DEVICE_TYPE_CPU)
        return r;
    struct vk_pipe_req req[VK_PLAN_PIPES];
    return warm_up(d, pipe, vk_plan_pipes(d, pl, req));
}

/* With a mask: each mask row's visible keys into BIND_NVIS (mask_count.comp), before the kernels
 * that read them (their n), in the call's first submission. */
static void record_mask_count(struct rec *rc, const struct attn_plan *pl, VkPipeline pipe,
                              struct attn_block *pc)
{
    const struct ssmax_attn_params *p = &pl->p;
    const uint32_t hm = (pl->flags & FL_MASK_HEADS) ? p->q_heads : 1, maxx = pl->max_groups_x;
    for (uint32_t x0 = 0; x0 < p->q_len; x0 += maxx) {
        pc->row_base = x0;
        dispatch(rc, pipe, pc, p->q_len - x0 < maxx ? p->q_len - x0 : maxx, hm, p->batch);
    }
    pc->row_base = 0;
    compute_barrier(rc);
}

/* The call's kernels: mask_count first where there is a mask, then the path's. */
static int record_all(struct rec *rc, const struct attn_plan *pl, const struct attn_bufs *ab,
                      const VkPipeline pipe[VK_PLAN_PIPES], struct attn_block *pc);

/* The fused and split-KV paths: the plan's row blocks, blocks_per_sub a submission, then the
 * merge of the splits. */
static int record_fused(struct rec *rc, const struct attn_plan *pl, const VkPipeline pipe[],
                        struct attn_block *pc)
{
    const struct ssmax_attn_params *p = &pl->p;
    int r;
    for (uint32_t x0 = 0; x0 < pl->blocks; x0 += pl->blocks_per_sub) {
        if (x0 && (r = sub_next(rc)) < 0)
            return r;
        pc->row_base = x0;
        uint32_t n = pl->blocks - x0 < pl->blocks_per_sub ? pl->blocks - x0 : pl->blocks_per_sub;
        dispatch(rc, pipe[0], pc, n, p->batch * pl->nsplit, p->kv_heads); // (blocks, b*s, g)
    }
    if (pl->path == SSMAX_PATH_SPLIT_KV) {
        compute_barrier(rc);
        const uint32_t maxx = pl->max_groups_x;
        for (uint64_t x0 = 0; x0 < pl->rows; x0 += maxx) {
            pc->row_base = (uint32_t)x0;
            dispatch(rc, pipe[1], pc, (uint32_t)(pl->rows - x0 < maxx ? pl->rows - x0 : maxx), 1,
                     1);
        }
    }
    return SSMAX_OK;
}

/* The unfused path: for each chunk of (batch, head) pairs and query rows, the scores, their
 * softmax and P V (and the weights copied out), chunks_per_sub a submission. */
static int record_unfused(struct rec *rc, const struct attn_plan *pl, const struct attn_bufs *ab,
                          const VkPipeline pipe[], struct attn_block *pc)
{
    struct vk_dev *d = rc->d;
    const struct ssmax_attn_params *p = &pl->p;
    const uint32_t nbh = p->batch * p->q_heads;
    struct vk_buf *probs = ab->probs;
    uint32_t chunk = 0;
    int r;
    for (uint32_t bh0 = 0; bh0 < nbh; bh0 += pl->bh_per) {
        uint32_t nb = nbh - bh0 < pl->bh_per ? nbh - bh0 : pl->bh_per;
        for (uint32_t i0 = 0; i0 < p->q_len; i0 += pl->i_count, chunk++) {
            uint32_t ni = p->q_len - i0 < pl->i_count ? p->q_len - i0 : pl->i_count;
            if (rc->own && chunk && chunk % pl->chunks_per_sub == 0) { // orders it after the last
                if ((r = sub_next(rc)) < 0)
                    return r;
            } else if (chunk) { // the previous chunk's P·V (and copy) read the scratch
                barrier(rc, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
                        0, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, 0);
            }
            pc->row_base = bh0, pc->chunk_i0 = i0, pc->chunk_ni = ni;
            dispatch(rc, pipe[0], pc, (p->kv_len + 15) / 16, (ni + 15) / 16, nb);
            compute_barrier(rc);
            dispatch(rc, pipe[1], pc, ni, nb, 1);
            compute_barrier(rc);
            dispatch(rc, pipe[2], pc, (ni + pl->br - 1) / pl->br, nb, 1);
            if (probs) {
                barrier(rc, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                        VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_READ_BIT);
                uint64_t row0 = (uint64_t)bh0 * p->q_len + i0;
                VkBufferCopy reg = { rc->scr0_at, ab->probs_off + row0 * p->kv_len * 4,
                                     (uint64_t)nb * ni * p->kv_len * 4 };
                d->vkCmdCopyBuffer(rc->cmd, rc->scr0, probs->buf, 1, &reg);
            }
        }
    }
    return SSMAX_OK;
}

/* The descriptor writes of a call: the tensors at their bindings (k_bytes, v_bytes: what K and
 * V's bindings cover), the coefficients and the scratch. Fills bi and the elements' offsets. */
static int record_all(struct rec *rc, const struct attn_plan *pl, const struct attn_bufs *ab,
                      const VkPipeline pipe[VK_PLAN_PIPES], struct attn_block *pc)
{
    const int n0 = (pl->flags & FL_MASK) ? 1 : 0;
    if (n0)
        record_mask_count(rc, pl, pipe[0], pc);
    return pl->path != SSMAX_PATH_UNFUSED ? record_fused(rc, pl, pipe + n0, pc)
                                          : record_unfused(rc, pl, ab, pipe + n0, pc);
}

/* Where a call's coefficients and scratch are bound (buffer VK_NULL_HANDLE: none; the dummy is
 * bound): ssmax's own buffers whole, or regions of the application's scratch. */
struct vk_scratch {
    VkDescriptorBufferInfo coef, scr0, scr1, nvis;
};

static struct vk_scratch own_scratch(const struct vk_buf *coef, const struct vk_buf *scr0,
                                     const struct vk_buf *scr1, const struct vk_buf *nvis)
{
    return (struct vk_scratch){ { coef->buf, 0, VK_WHOLE_SIZE },
                                { scr0->buf, 0, VK_WHOLE_SIZE },
                                { scr1->buf, 0, VK_WHOLE_SIZE },
                                { nvis->buf, 0, VK_WHOLE_SIZE } };
}

static VkDescriptorBufferInfo or_dummy(const struct vk_dev *d, VkDescriptorBufferInfo b)
{
    return b.buffer ? b : (VkDescriptorBufferInfo){ d->dummy.buf, 0, VK_WHOLE_SIZE };
}

static void bindings(struct vk_dev *d, const struct attn_plan *pl, const struct attn_bufs *ab,
                     uint64_t k_bytes, uint64_t v_bytes, const struct vk_scratch *sc,
                     VkDescriptorBufferInfo bi[NUM_BINDINGS], uint32_t offs[6])
{
    const uint32_t esz = pl->elem_size;
    struct vk_bind bq = vk_bind_of(d, ab->q_off, pl->q_bytes, esz),
                   bk = vk_bind_of(d, ab->k_off, k_bytes, esz),
                   bv = vk_bind_of(d, ab->v_off, v_bytes, esz),
                   bo = vk_bind_of(d, ab->o_off, pl->o_bytes, esz),
                   bl = pl->want_lse ? vk_bind_of(d, ab->lse_off, pl->lse_bytes, 4)
                                     : (struct vk_bind){ 0, VK_WHOLE_SIZE, 0 };
    bi[BIND_Q] = (VkDescriptorBufferInfo){ ((struct vk_buf *)ab->q)->buf, bq.base, bq.range };
    bi[BIND_K] = (VkDescriptorBufferInfo){ ((struct vk_buf *)ab->k)->buf, bk.base, bk.range };
    bi[BIND_V] = (VkDescriptorBufferInfo){ ((struct vk_buf *)ab->v)->buf, bv.base, bv.range };
    bi[BIND_O] = (VkDescriptorBufferInfo){ ((struct vk_buf *)ab->o)->buf, bo.base, bo.range };
    bi[BIND_LSE] = (VkDescriptorBufferInfo){
        pl->want_lse ? ((struct vk_buf *)ab->lse)->buf : d->dummy.buf, bl.base, bl.range };
    bi[BIND_COEF] = sc->coef;
    bi[BIND_SCR0] = or_dummy(d, sc->scr0);
    bi[BIND_SCR1] = or_dummy(d, sc->scr1);
    // SPEC.md section 7: the mask (aligned like the tensors) and its rows' counts; dummies
    // without a mask.
    const int masked = ab->mask && (pl->flags & FL_MASK);
    struct vk_bind bm = masked ? vk_bind_of(d, ab->mask_off, pl->mask_bytes, pl->mask_esz)
                               : (struct vk_bind){ 0, VK_WHOLE_SIZE, 0 };
    if (masked) { // whole words: an f16 mask is read as uint pairs (see vk_buf_create)
        const VkDeviceSize size = ((const struct vk_buf *)ab->mask)->size, r4 = (bm.range + 3) & ~3ull;
        bm.range = bm.base + r4 <= size ? r4 : size - bm.base;
    }
    bi[BIND_MASK] = (VkDescriptorBufferInfo){
        masked ? ((struct vk_buf *)ab->mask)->buf : d->dummy.buf, bm.base, bm.range };
    bi[BIND_NVIS] = masked ? or_dummy(d, sc->nvis)
                           : (VkDescriptorBufferInfo){ d->dummy.buf, 0, VK_WHOLE_SIZE };
    offs[0] = bq.elem_off, offs[1] = bk.elem_off, offs[2] = bv.elem_off, offs[3] = bo.elem_off;
    offs[4] = bl.elem_off, offs[5] = bm.elem_off;
}

static int write_set(struct vk_dev *d, VkDescriptorPool pool, const VkDescriptorBufferInfo *bi,
                     VkDescriptorSet *set)
{
    VkDescriptorSetAllocateInfo dsai = { .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO,
                                         .descriptorPool = pool,
                                         .descriptorSetCount = 1,
                                         .pSetLayouts = &d->dsl };
    VkResult vr = d->vkAllocateDescriptorSets(d->dev, &dsai, set);
    if (vr != VK_SUCCESS)
        return vk_err(d->base.ctx, vr, "vkAllocateDescriptorSets");
    VkWriteDescriptorSet w[NUM_BINDINGS];
    for (uint32_t i = 0; i < NUM_BINDINGS; i++)
        w[i] = (VkWriteDescriptorSet){ .sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
                                       .dstSet = *set,
                                       .dstBinding = i,
                                       .descriptorCount = 1,
                                       .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                       .pBufferInfo = &bi[i] };
    d->vkUpdateDescriptorSets(d->dev, NUM_BINDINGS, w, 0, NULL);
    return SSMAX_OK;
}

int vk_attn(struct ssmax_dev *base, const struct attn_plan *pl, const struct attn_bufs *ab,
            uint64_t *device_ns)
{
    struct vk_dev *d = (struct vk_dev *)base;

    // Scratch and pipelines first, so a failure leaves every output untouched.
    VkPipeline pipe[VK_PLAN_PIPES] = { 0 };
    int r = prepare(d, pl, pipe);
    if (r < 0)
        return r;
    memcpy(d->coef.map, pl->coef, pl->coef_bytes);

    // Descriptors: one set for every pipeline of this call (they share the layout).
    d->vkResetDescriptorPool(d->dev, d->dpool, 0);
    VkDescriptorBufferInfo bi[NUM_BINDINGS];
    uint32_t offs[6] = { 0 };
    const struct vk_scratch sc = own_scratch(&d->coef, &d->scr0, &d->scr1, &d->nvis);
    bindings(d, pl, ab, pl->k_bytes, pl->v_bytes, &sc, bi, offs);
    struct rec rc = { d, d->cmd, VK_NULL_HANDLE, d->scr0.buf, 0, 1, device_ns };
    if ((r = write_set(d, d->dpool, bi, &rc.set)) < 0)
        return r;
    struct attn_block pc;
    ssmax_plan_block(pl, offs, &pc);
    *device_ns = 0;
    if ((r = sub_begin(&rc)) < 0)
        return r;
    r = record_all(&rc, pl, ab, pipe, &pc);
    return r < 0 ? r : sub_end(&rc);
}

/* ---- recording into the application's command buffer ----
 * A plan that records keeps what its recorded commands use alive as long as it lives: its own
 * coefficients and scratch, and a descriptor pool with one set a set of bindings (a decode loop
 * binds the same buffers every step, so one set serves it). */
#define VK_PLAN_SETS 32

struct vk_plan_state {
    struct vk_buf coef, scr0, scr1, nvis; // made at the first recording without bufs->scratch
    int own;
    VkDescriptorPool pool;
    int nsets;
    struct {
        VkDescriptorBufferInfo bi[NUM_BINDINGS];
        uint64_t ids[7]; // the buffers' identities: a handle value alone may be a new buffer's
        VkDescriptorSet set;
    } sets[VK_PLAN_SETS];
};

void vk_plan_state_free(struct ssmax_dev *base, void *state)
{
    struct vk_dev *d = (struct vk_dev *)base;
    struct vk_plan_state *st = state;
    if (!st)
        return;
    vk_buf_free(d, &st->coef);
    vk_buf_free(d, &st->scr0);
    vk_buf_free(d, &st->scr1);
    vk_buf_free(d, &st->nvis);
    if (st->pool)
        d->vkDestroyDescriptorPool(d->dev, st->pool, NULL);
    ssmax_free(base->ctx, st);
}

/* The plan's recording state: its descriptor pool, and with own its coefficients and scratch
 * (the plan's sizes; the coefficients uploaded once). */
static int plan_state(struct vk_dev *d, const struct attn_plan *base, int own, void **state)
{
    struct vk_plan_state *st = *state;
    if (!st) {
        if (!(st = ssmax_calloc(d->base.ctx, 1, sizeof(*st))))
            return ssmax_set_error(d->base.ctx, SSMAX_ERR_OUT_OF_HOST_MEMORY,
                                   "vulkan: out of host memory");
        VkDescriptorPoolSize ps = { VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                    NUM_BINDINGS * VK_PLAN_SETS };
        VkDescriptorPoolCreateInfo dpci = { .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO,
                                            .maxSets = VK_PLAN_SETS,
                                            .poolSizeCount = 1,
                                            .pPoolSizes = &ps };
        VkResult vr = d->vkCreateDescriptorPool(d->dev, &dpci, NULL, &st->pool);
        if (vr != VK_SUCCESS) {
            ssmax_free(d->base.ctx, st);
            return vk_err(d->base.ctx, vr, "vkCreateDescriptorPool");
        }
        *state = st;
    }
    if (!own || st->own)
        return SSMAX_OK;
    int r = vk_buf_ensure(d, &st->coef, base->coef_bytes, 1);
    if (r == SSMAX_OK && base->scr0_bytes)
        r = vk_buf_ensure(d, &st->scr0, base->scr0_bytes, 0);
    if (r == SSMAX_OK && base->scr1_bytes)
        r = vk_buf_ensure(d, &st->scr1, base->scr1_bytes, 0);
    if (r == SSMAX_OK && base->nvis_bytes)
        r = vk_buf_ensure(d, &st->nvis, base->nvis_bytes, 0);
    if (r < 0) { // none kept: the next recording tries again
        vk_buf_free(d, &st->coef);
        vk_buf_free(d, &st->scr0);
        vk_buf_free(d, &st->scr1);
        vk_buf_free(d, &st->nvis);
        return r;
    }
    memcpy(st->coef.map, base->coef, base->coef_bytes);
    st->own = 1;
    return SSMAX_OK;
}

/* nw coefficient words into buf at byte at, recorded (vkCmdUpdateBuffer, 64 KiB a command), after
 * the kernels recorded before have read the old ones and before those recorded after read them. */
static void update_words(struct rec *rc, VkBuffer buf, VkDeviceSize at, const uint32_t *src,
                         uint64_t nw)
{
    barrier(rc, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, 0, VK_PIPELINE_STAGE_TRANSFER_BIT,
            VK_ACCESS_TRANSFER_WRITE_BIT);
    for (uint64_t w = 0; w < nw; w += 16384) {
        const uint64_t n = nw - w < 16384 ? nw - w : 16384;
        rc->d->vkCmdUpdateBuffer(rc->cmd, buf, at + w * 4, n * 4, src + w);
    }
    barrier(rc, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT,
            VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_READ_BIT);
}

int vk_record(struct ssmax_dev *dev, const struct attn_plan *base, void **state,
              const struct attn_plan *pl, const struct attn_bufs *ab, VkCommandBuffer cmd)
{
    struct vk_dev *d = (struct vk_dev *)dev;
    VkPipeline pipe[VK_PLAN_PIPES] = { 0 };
    const struct vk_buf *app = ab->scratch; // the application's scratch (checked by plan.c)
    // ssmax updates the coefficients in it and copies the weights out of it
    if (app && app->imported && !(app->usage & VK_BUFFER_USAGE_TRANSFER_DST_BIT))
        return ssmax_set_error(dev->ctx, SSMAX_ERR_INVALID_ARG,
                               "bufs->scratch: the imported VkBuffer was created without "
                               "VK_BUFFER_USAGE_TRANSFER_DST_BIT, which the coefficients' update "
                               "needs");
    if (app && app->imported && pl->want_probs &&
        !(app->usage & VK_BUFFER_USAGE_TRANSFER_SRC_BIT))
        return ssmax_set_error(dev->ctx, SSMAX_ERR_INVALID_ARG,
                               "bufs->scratch: the imported VkBuffer was created without "
                               "VK_BUFFER_USAGE_TRANSFER_SRC_BIT, which the weights' copy needs");
    int r = pipelines(d, pl, pipe); // made with the plan: found, not built
    if (r < 0 || (r = plan_state(d, base, !app, state)) < 0)
        return r;
    struct vk_plan_state *st = *state;
    if (pl->scr0_bytes > base->scr0_bytes || pl->scr1_bytes > base->scr1_bytes ||
        pl->nvis_bytes > base->nvis_bytes)
        return ssmax_set_error(dev->ctx, SSMAX_ERR_BACKEND,
                               "vulkan: internal: an execution's scratch outgrew its plan's");
    // The coefficients and scratch: the plan's own buffers, or regions of the application's at
    // the plan's layout (so a loop's executions share one set whatever their kv_len).
    struct vk_scratch sc;
    if (app) {
        uint64_t off[4], total;
        ssmax_scratch_layout(base, off, &total);
        const VkDeviceSize at = ab->scratch_off;
        const uint64_t sz[4] = { base->coef_bytes, base->scr0_bytes, base->scr1_bytes,
                                 base->nvis_bytes };
        VkDescriptorBufferInfo *reg[4] = { &sc.coef, &sc.scr0, &sc.scr1, &sc.nvis };
        for (int i = 0; i < 4; i++)
            *reg[i] = sz[i] ? (VkDescriptorBufferInfo){ app->buf, at + off[i], sz[i] }
                            : (VkDescriptorBufferInfo){ VK_NULL_HANDLE, 0, 0 };
    } else {
        sc = own_scratch(&st->coef, &st->scr0, &st->scr1, &st->nvis);
    }
    // K and V are bound over the plan's kv_len, so every step of a loop on the same buffers
    // finds the same set.
    VkDescriptorBufferInfo bi[NUM_BINDINGS];
    uint32_t offs[6] = { 0 };
    bindings(d, pl, ab, base->k_bytes, base->v_bytes, &sc, bi, offs);
    const struct vk_buf *const tb[7] = { ab->q, ab->k, ab->v, ab->o, ab->lse, ab->mask, app };
    uint64_t ids[7];
    for (int i = 0; i < 7; i++)
        ids[i] = tb[i] ? tb[i]->id : 0;
    VkDescriptorSet set = VK_NULL_HANDLE;
    for (int i = 0; i < st->nsets && !set; i++)
        if (!memcmp(st->sets[i].bi, bi, sizeof(bi)) && !memcmp(st->sets[i].ids, ids, sizeof(ids)))
            set = st->sets[i].set;
    if (!set) {
        if (st->nsets == VK_PLAN_SETS)
            return ssmax_set_error(dev->ctx, SSMAX_ERR_LIMIT_EXCEEDED,
                                   "bufs: a plan records with at most %d different sets of buffers "
                                   "and offsets; make another plan for more",
                                   VK_PLAN_SETS);
        if ((r = write_set(d, st->pool, bi, &set)) < 0)
            return r;
        memcpy(st->sets[st->nsets].bi, bi, sizeof(bi));
        memcpy(st->sets[st->nsets].ids, ids, sizeof(ids));
        st->sets[st->nsets++].set = set;
    }
    struct attn_block pc;
    ssmax_plan_block(pl, offs, &pc);
    uint64_t ns = 0;
    struct rec rc = { d, cmd, set, sc.scr0.buffer, sc.scr0.offset, 0, &ns };
    // The previous recorded execution of this plan (or another on the same scratch) read and
    // wrote the same scratch.
    compute_barrier(&rc);
    if (app) // the whole coefficient block, this execution's
        update_words(&rc, app->buf, sc.coef.offset, (const uint32_t *)pl->coef,
                     pl->coef_bytes / 4);
    else if (pl->flags & FL_SEQ) // uploaded with the plan: this execution's 2 B per-batch words
        update_words(&rc, st->coef.buf, (STRIDE_WORDS + 3ull * pl->p.q_heads) * 4,
                     (const uint32_t *)pl->coef + STRIDE_WORDS + 3ull * pl->p.q_heads,
                     2ull * pl->p.batch);
    d->vkCmdBindDescriptorSets(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, d->layout, 0, 1, &set, 0,
                               NULL);
    return record_all(&rc, pl, ab, pipe, &pc);
}

const struct ssmax_backend_fns ssmax_backend_vulkan = {
    SSMAX_BACKEND_ENTRIES(vk, vulkan, VULKAN),
    .pipelines = vk_pipelines,
    .prepare = vk_prepare,
    .plan_state_free = vk_plan_state_free,
    .head_dim_step = 8, .head_dim_max = SSMAX_MAX_HEAD_DIM, .rows_kernel = 1,
    .inference = 1, .mask_summary = 1, .app_scratch = 1,
};
