/*
 * Vulkan: running a plan. Scratch and pipelines first (a failure leaves every output untouched),
 * then one descriptor set for every pipeline of the call, and the dispatches in the submissions
 * the plan cut them into (max_work_per_submit), each timed by timestamp queries.
 */
#include <string.h>

#include "vk_internal.h"

static void dispatch(struct vk_dev *d, VkPipeline pipe, const struct attn_block *pc, uint32_t x,
                     uint32_t y, uint32_t z)
{
    d->vkCmdBindPipeline(d->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, pipe);
    d->vkCmdPushConstants(d->cmd, d->layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, sizeof(*pc), pc);
    d->vkCmdDispatch(d->cmd, x, y, z);
}

static void compute_barrier(struct vk_dev *d)
{
    vk_barrier(d, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
               VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
               VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT);
}

/* One submission of an attention call: begin (timestamp, descriptor set) and end (timestamp,
 * submit, wait, add the device time). */
static int sub_begin(struct vk_dev *d, VkDescriptorSet set)
{
    int r = vk_cmd_begin(d);
    if (r < 0)
        return r;
    if (d->qpool) {
        d->vkCmdResetQueryPool(d->cmd, d->qpool, 0, 2);
        d->vkCmdWriteTimestamp(d->cmd, VK_PIPELINE_STAGE_TOP_OF_PIPE_BIT, d->qpool, 0);
    }
    d->vkCmdBindDescriptorSets(d->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, d->layout, 0, 1, &set, 0,
                               NULL);
    return SSMAX_OK;
}

static int sub_end(struct vk_dev *d, uint64_t *device_ns)
{
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
            *device_ns += (uint64_t)((double)((ts[1] - ts[0]) & d->ts_mask) *
                                     d->ph->props.limits.timestampPeriod);
    }
    return SSMAX_OK;
}

int vk_plan_pipes(const struct vk_dev *d, const struct attn_plan *pl, struct vk_pipe_req out[3])
{
    const int f16 = pl->p.dtype == SSMAX_F16;
    const uint32_t D = pl->p.head_dim, sg = d->ph->subgroup_size;
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
            return 1;
        out[1] = (struct vk_pipe_req){ f16 ? VK_SH_MERGE_F16 : VK_SH_MERGE_F32,
                                       { [SPEC_WG] = 64, [SPEC_BR] = 1, [SPEC_BC] = 1,
                                         [SPEC_D] = D, [SPEC_TPR] = 1 },
                                       0, ROLE_MERGE };
        return 2;
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
    return 3;
}

/* The plan's pipelines: fused (and merge), or the three unfused kernels. */
static int pipelines(struct vk_dev *d, const struct attn_plan *pl, VkPipeline pipe[3])
{
    struct vk_pipe_req req[3];
    const int n = vk_plan_pipes(d, pl, req);
    for (int i = 0; i < n; i++) {
        int r = vk_pipeline(d, req[i].id, req[i].spec, req[i].subgroup, &pipe[i]);
        if (r < 0)
            return r;
    }
    return SSMAX_OK;
}

/* The fused and split-KV paths: the plan's row blocks, blocks_per_sub a submission, then the
 * merge of the splits. */
static int record_fused(struct vk_dev *d, const struct attn_plan *pl, VkDescriptorSet set,
                        const VkPipeline pipe[3], struct attn_block *pc, uint64_t *device_ns)
{
    const struct ssmax_attn_params *p = &pl->p;
    int r;
    for (uint32_t x0 = 0; x0 < pl->blocks; x0 += pl->blocks_per_sub) {
        if (x0 && ((r = sub_end(d, device_ns)) < 0 || (r = sub_begin(d, set)) < 0))
            return r;
        pc->row_base = x0;
        uint32_t n = pl->blocks - x0 < pl->blocks_per_sub ? pl->blocks - x0 : pl->blocks_per_sub;
        dispatch(d, pipe[0], pc, n, p->kv_heads, p->batch * pl->nsplit);
    }
    if (pl->path == SSMAX_PATH_SPLIT_KV) {
        compute_barrier(d);
        const uint32_t maxx = pl->max_groups_x;
        for (uint64_t x0 = 0; x0 < pl->rows; x0 += maxx) {
            pc->row_base = (uint32_t)x0;
            dispatch(d, pipe[1], pc, (uint32_t)(pl->rows - x0 < maxx ? pl->rows - x0 : maxx), 1, 1);
        }
    }
    return SSMAX_OK;
}

/* The unfused path: for each chunk of (batch, head) pairs and query rows, the scores, their
 * softmax and P V (and the weights copied out), chunks_per_sub a submission. */
static int record_unfused(struct vk_dev *d, const struct attn_plan *pl, const struct attn_bufs *ab,
                          VkDescriptorSet set, const VkPipeline pipe[3], struct attn_block *pc,
                          uint64_t *device_ns)
{
    const struct ssmax_attn_params *p = &pl->p;
    const uint32_t nbh = p->batch * p->q_heads;
    struct vk_buf *probs = ab->probs;
    uint32_t chunk = 0;
    int r;
    for (uint32_t bh0 = 0; bh0 < nbh; bh0 += pl->bh_per) {
        uint32_t nb = nbh - bh0 < pl->bh_per ? nbh - bh0 : pl->bh_per;
        for (uint32_t i0 = 0; i0 < p->q_len; i0 += pl->i_count, chunk++) {
            uint32_t ni = p->q_len - i0 < pl->i_count ? p->q_len - i0 : pl->i_count;
            if (chunk && chunk % pl->chunks_per_sub == 0) { // also orders it after the last chunk
                if ((r = sub_end(d, device_ns)) < 0 || (r = sub_begin(d, set)) < 0)
                    return r;
            } else if (chunk) { // the previous chunk's P·V (and copy) read the scratch
                vk_barrier(d, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
                           0, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, 0);
            }
            pc->row_base = bh0, pc->chunk_i0 = i0, pc->chunk_ni = ni;
            dispatch(d, pipe[0], pc, (p->kv_len + 15) / 16, (ni + 15) / 16, nb);
            compute_barrier(d);
            dispatch(d, pipe[1], pc, ni, nb, 1);
            compute_barrier(d);
            dispatch(d, pipe[2], pc, (ni + pl->br - 1) / pl->br, nb, 1);
            if (probs) {
                vk_barrier(d, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                           VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_READ_BIT);
                uint64_t row0 = (uint64_t)bh0 * p->q_len + i0;
                VkBufferCopy reg = { 0, ab->probs_off + row0 * p->kv_len * 4,
                                     (uint64_t)nb * ni * p->kv_len * 4 };
                d->vkCmdCopyBuffer(d->cmd, d->scr0.buf, probs->buf, 1, &reg);
            }
        }
    }
    return SSMAX_OK;
}

int vk_attn(struct ssmax_dev *base, const struct attn_plan *pl, const struct attn_bufs *ab,
            uint64_t *device_ns)
{
    struct vk_dev *d = (struct vk_dev *)base;
    const uint32_t esz = pl->elem_size;

    // Scratch and pipelines first, so a failure leaves every output untouched.
    int r;
    if ((pl->scr0_bytes && (r = vk_buf_ensure(d, &d->scr0, pl->scr0_bytes, 0)) < 0) ||
        (pl->scr1_bytes && (r = vk_buf_ensure(d, &d->scr1, pl->scr1_bytes, 0)) < 0) ||
        (r = vk_buf_ensure(d, &d->coef, pl->coef_bytes, 1)) < 0)
        return r;
    memcpy(d->coef.map, pl->coef, pl->coef_bytes);
    VkPipeline pipe[3] = { 0 };
    if ((r = pipelines(d, pl, pipe)) < 0)
        return r;

    // Descriptors: one set for every pipeline of this call (they share the layout).
    d->vkResetDescriptorPool(d->dev, d->dpool, 0);
    VkDescriptorSet set;
    VkDescriptorSetAllocateInfo dsai = { .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO,
                                         .descriptorPool = d->dpool,
                                         .descriptorSetCount = 1,
                                         .pSetLayouts = &d->dsl };
    VkResult vr = d->vkAllocateDescriptorSets(d->dev, &dsai, &set);
    if (vr != VK_SUCCESS)
        return vk_err(base->ctx, vr, "vkAllocateDescriptorSets");
    struct vk_bind bq = vk_bind_of(d, ab->q_off, pl->q_bytes, esz),
                   bk = vk_bind_of(d, ab->k_off, pl->k_bytes, esz),
                   bv = vk_bind_of(d, ab->v_off, pl->v_bytes, esz),
                   bo = vk_bind_of(d, ab->o_off, pl->o_bytes, esz),
                   bl = pl->want_lse ? vk_bind_of(d, ab->lse_off, pl->lse_bytes, 4)
                                     : (struct vk_bind){ 0, VK_WHOLE_SIZE, 0 };
    VkDescriptorBufferInfo bi[NUM_BINDINGS] = {
        [BIND_Q] = { ((struct vk_buf *)ab->q)->buf, bq.base, bq.range },
        [BIND_K] = { ((struct vk_buf *)ab->k)->buf, bk.base, bk.range },
        [BIND_V] = { ((struct vk_buf *)ab->v)->buf, bv.base, bv.range },
        [BIND_O] = { ((struct vk_buf *)ab->o)->buf, bo.base, bo.range },
        [BIND_LSE] = { pl->want_lse ? ((struct vk_buf *)ab->lse)->buf : d->dummy.buf, bl.base,
                       bl.range },
        [BIND_COEF] = { d->coef.buf, 0, VK_WHOLE_SIZE },
        [BIND_SCR0] = { d->scr0.buf ? d->scr0.buf : d->dummy.buf, 0, VK_WHOLE_SIZE },
        [BIND_SCR1] = { d->scr1.buf ? d->scr1.buf : d->dummy.buf, 0, VK_WHOLE_SIZE },
    };
    VkWriteDescriptorSet w[NUM_BINDINGS];
    for (uint32_t i = 0; i < NUM_BINDINGS; i++)
        w[i] = (VkWriteDescriptorSet){ .sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
                                       .dstSet = set,
                                       .dstBinding = i,
                                       .descriptorCount = 1,
                                       .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                       .pBufferInfo = &bi[i] };
    d->vkUpdateDescriptorSets(d->dev, NUM_BINDINGS, w, 0, NULL);

    const uint32_t offs[5] = { bq.elem_off, bk.elem_off, bv.elem_off, bo.elem_off, bl.elem_off };
    struct attn_block pc;
    ssmax_plan_block(pl, offs, &pc);
    *device_ns = 0;
    if ((r = sub_begin(d, set)) < 0)
        return r;
    r = pl->path != SSMAX_PATH_UNFUSED ? record_fused(d, pl, set, pipe, &pc, device_ns)
                                       : record_unfused(d, pl, ab, set, pipe, &pc, device_ns);
    return r < 0 ? r : sub_end(d, device_ns);
}

const struct ssmax_backend_fns ssmax_backend_vulkan = {
    SSMAX_BACKEND_ENTRIES(vk, vulkan, VULKAN),
    .pipelines = vk_pipelines,
    .head_dim_step = 8, .head_dim_max = SSMAX_MAX_HEAD_DIM, .rows_kernel = 1,
};
