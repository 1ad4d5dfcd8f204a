#version 450
// Fused SSMax flash attention for GPUs (the "lanes" kernel), and its split-KV variant (SPLIT = 1).
// Same bindings, grid and results as flash_attn.comp and flash_rows.comp.
//
// Every invocation works; none waits at a barrier inside the key loop, and no shared memory is
// used there:
//   - a query row is held by LPR neighbouring lanes of one subgroup, each with DL = D / LPR of its
//     dimensions of the scaled query and of the output accumulator, in registers;
//   - a workgroup of WG invocations is KG key groups of BR rows x LPR lanes (WG = KG * BR * LPR).
//     Rows are packed as in the other kernels (R = i * G + hh), so the G query heads of one KV head
//     share every K and V read. Prefill takes KG = 1 and many rows; decode takes as many rows as
//     there are (no padding) and splits the keys over KG key groups, merged once at the end
//     through a little shared memory;
//   - per step of BC keys, each lane loads its DL words of the BC K rows first (wide loads when
//     WIDE), then the partial dot products, then the LPR-lane sums by xor shuffles (the same
//     value in every lane of the row: each stage adds the same two numbers), then the running
//     max and sum once for the step, then V likewise. Lanes of different rows that read the same
//     K or V words in the same instruction are served by one cache access.
// f16 storage is converted as it is used (compilers fuse the conversion into a mixed-precision
// FMA where the hardware has one); logits, the factor, running max and sum stay fp32.
// Masked keys (causal edge, key tail, window start, the additive mask) are selected away, never
// multiplied: NaN or Inf in a hidden key or value never reaches O.
// Inference (SPEC.md section 7): a row sees keys [x, y) of kv_range; the walk runs from the
// block's smallest x to its largest y (a window costs O(W) a row), unmasked where every row sees
// every key of the step and there is no mask. Logits are capped after the factor, then the mask
// entry is added (-inf hides the key). With a mask, a row's lanes skip a step none of its keys is
// visible in before reading K (all lanes of a row take the same branch, so its shuffles stay
// among active lanes; a subgroup whose rows all skip branches over the step). The sink is folded
// in at the end (by the merge with split-KV).
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require
#include "attn_common.glsl"

layout(constant_id = SPEC_BR) const uint BR = 16; // rows per key group
layout(constant_id = SPEC_BC) const uint BC = 4;  // keys per step
layout(constant_id = SPEC_D) const uint D = 64;
layout(constant_id = SPEC_SPLIT) const uint SPLIT = 0;
layout(constant_id = SPEC_WIDE) const uint WIDE = 0; // 1: K and V read 4 elements at a time
layout(constant_id = SPEC_LPR) const uint LPR = 8;   // lanes per row: 1, 2, 4, 8 or 16
const uint DL = D / LPR;          // dimensions per lane, even
const uint KG = WG / (BR * LPR);  // key groups
const uint DH = D / 2u;
const uint MERGE_ROWS = KG > 1u ? (KG - 1u) * BR : 1u; // key groups 1.. hand over to group 0
const uint MERGE_WORDS = KG > 1u ? (KG - 1u) * BR * D : 1u;

#ifdef IO_F16
layout(binding = BIND_K, std430) readonly buffer BufK4 { uvec2 k_wide[]; };
layout(binding = BIND_V, std430) readonly buffer BufV4 { uvec2 v_wide[]; };
vec4 load4(uvec2 w) { return vec4(unpackHalf2x16(w.x), unpackHalf2x16(w.y)); }
#else
layout(binding = BIND_K, std430) readonly buffer BufK4 { vec4 k_wide[]; };
layout(binding = BIND_V, std430) readonly buffer BufV4 { vec4 v_wide[]; };
vec4 load4(vec4 w) { return w; }
#endif

layout(binding = BIND_SCR0, std430) writeonly buffer BufPO { vec2 part_o[]; };
layout(binding = BIND_SCR1, std430) writeonly buffer BufPM { vec2 part_ml[]; };

shared float sh_ml[2u * MERGE_ROWS]; // key groups' (max, sum) per row
shared float sh_o[MERGE_WORDS];      // key groups' output accumulators

float qv[DL], ov[DL]; // this lane's dimensions of its row's scaled query and of its output
float m_run, l_run;
uint kbase, k_sr, vbase, v_sr; // K and V of this workgroup's head: first element, row stride

// This lane's DL words of the step's BC rows of K or V (keys past ke_wg read the last key, so
// nothing outside the tensor is touched; they are masked).
#define READ_WORDS(dst, wide, data, off, base, rs)                                                 \
    [[unroll]] for (uint c = 0u; c < BC; c++) {                                                    \
        const uint e = (base) + min(kt + c, ke_wg - 1u) * (rs) + lane * DL;                        \
        if (WIDE != 0u) {                                                                          \
            [[unroll]] for (uint u = 0u; u < DL; u += 4u) {                                        \
                const vec4 x = load4(wide[((off) + e + u) / 4u]);                                  \
                [[unroll]] for (uint w = 0u; w < 4u; w++)                                          \
                    dst[c * DL + u + w] = x[w];                                                    \
            }                                                                                      \
        } else {                                                                                   \
            [[unroll]] for (uint u = 0u; u < DL; u++)                                              \
                dst[c * DL + u] = LOAD(data, (off), e + u);                                        \
        }                                                                                          \
    }

// One step over keys [kt, kt + BC). masked: keys at or past ke_row are not seen by this row (the
// step crosses the causal edge or the key tail); otherwise every row sees every key of the step
// and no select is needed.
void step(uint kt, uint lane, uint ks_row, uint ke_row, uint mrow, uint ke_wg, bool masked)
{
    bool vis[BC];
    float bias[BC];
    bool any = false;
    [[unroll]] for (uint c = 0u; c < BC; c++) {
        bool v = !masked || (kt + c >= ks_row && kt + c < ke_row);
        float a = 0.0;
        if (masked && (pc.flags & FL_MASK) != 0u && v) {
            a = mask_at(mrow, kt + c);
            v = !(a == NEG_INF); // NaN is seen (and makes the row NaN)
        }
        vis[c] = v;
        bias[c] = a;
        any = any || v;
    }
    if (masked && (pc.flags & FL_MASK) != 0u && !any)
        return; // this row sees no key of the step: its lanes read no K or V
    float kr[BC * DL];
    READ_WORDS(kr, k_wide, k_data, pc.k_off, kbase, k_sr);
    float s[BC];
    [[unroll]] for (uint c = 0u; c < BC; c++) {
        float x = 0.0;
        [[unroll]] for (uint u = 0u; u < DL; u++)
            x = fma(qv[u], kr[c * DL + u], x);
        s[c] = x;
    }
    // (stages written out: a loop here would count against llvmpipe's loop budget)
    [[unroll]] for (uint c = 0u; c < BC; c++) {
        if (LPR > 1u)
            s[c] += subgroupShuffleXor(s[c], 1u);
        if (LPR > 2u)
            s[c] += subgroupShuffleXor(s[c], 2u);
        if (LPR > 4u)
            s[c] += subgroupShuffleXor(s[c], 4u);
        if (LPR > 8u)
            s[c] += subgroupShuffleXor(s[c], 8u);
    }

    float mt = m_run;
    [[unroll]] for (uint c = 0u; c < BC; c++) {
        s[c] = softcap(s[c]) + bias[c];
        mt = vis[c] ? max(mt, s[c]) : mt;
    }
    const float a = exp(m_run - mt);
    m_run = mt;
    float p[BC], ps = 0.0;
    [[unroll]] for (uint c = 0u; c < BC; c++) {
        p[c] = vis[c] ? exp(s[c] - mt) : 0.0;
        ps += p[c];
    }
    // Blocked sums: the step's terms are summed from 0 and folded in once (see flash_rows.comp).
    l_run = fma(l_run, a, ps);

    READ_WORDS(kr, v_wide, v_data, pc.v_off, vbase, v_sr);
    [[unroll]] for (uint u = 0u; u < DL; u++) {
        float acc = 0.0;
        [[unroll]] for (uint c = 0u; c < BC; c++) // select: NaN in a hidden V stays out
            acc = vis[c] ? fma(p[c], kr[c * DL + u], acc) : acc;
        ov[u] = fma(ov[u], a, acc);
    }
}

void main()
{
    // Lanes of a row are neighbours in one subgroup (LPR divides the subgroup size).
    const uint inv = gl_SubgroupID * gl_SubgroupSize + gl_SubgroupInvocationID;
    const uint lane = inv % LPR, slot = inv / LPR, r = slot % BR, kg = slot / BR;
    // y: batch item and split, z: KV head, so the workgroups of one batch item are spread over
    // the dispatch (drivers that hand out contiguous ranges, lavapipe's threads, balance a
    // padded batch's long and short sequences)
    const uint blk = gl_WorkGroupID.x + pc.row_base, g = gl_WorkGroupID.z;
    const uint b = gl_WorkGroupID.y / pc.nsplit, sp = gl_WorkGroupID.y % pc.nsplit;
    const uint GL = pc.G * pc.Lq;
    const uint first = blk * BR, last = min(first + BR, GL) - 1u;
    const uint ks = sp * pc.split_len, ke_split = min(ks + pc.split_len, pc.Lk);
    // kv_range grows with the row, so the first and last rows bound the block's ranges.
    const uvec2 rf = kv_range(b, first / pc.G), rl = kv_range(b, last / pc.G);
    const uint ke_wg = min(ke_split, rl.y);       // keys the last row sees
    const uint ke_min = min(ke_split, rf.y);      // keys every row sees, up to
    const uint ks_wg = max(ks, min(rf.x, ke_wg)); // the first key some row sees
    const uint ks_max = max(ks, rl.x);            // keys every row sees, from
    const bool fast = (pc.flags & FL_MASK) == 0u; // unmasked steps exist
    kbase = b * st.k_sb + g * st.k_sh, k_sr = st.k_sr;
    vbase = b * st.v_sb + g * st.v_sh, v_sr = st.v_sr;

    const uint R = first + r, RR = R < GL ? R : last;
    const uint i = RR / pc.G, hq = g * pc.G + RR % pc.G;
    const uint row = (b * pc.Hq + hq) * pc.Lq + i;
    const uint qrow = b * st.q_sb + hq * st.q_sh + i * st.q_sr;
    const uvec2 kr = kv_range(b, i);
    const uint ks_row = max(ks, kr.x), ke_row = R < GL ? min(ke_split, kr.y) : 0u;
    const uint mrow = (pc.flags & FL_MASK) != 0u ? mask_row(b, hq, i) : 0u;
    const float f = row_factor(b, hq, i);
    [[unroll]] for (uint u = 0u; u < DL; u++) {
        qv[u] = LOAD(q_data, pc.q_off, qrow + lane * DL + u) * f;
        ov[u] = 0.0;
    }
    m_run = M_INIT;
    l_run = 0.0;

    // Key group kg takes every KG-th step; the bounds are the same for every lane of a row. Steps
    // every row of the block sees whole run without selects (none with a mask): masked steps up
    // to the first such step, those, then masked ones to the end.
    uint kt = ks_wg + kg * BC;
    for (; kt < ke_wg && !(fast && kt >= ks_max && kt + BC <= ke_min); kt += KG * BC)
        step(kt, lane, ks_row, ke_row, mrow, ke_wg, true);
    if (fast)
        for (; kt + BC <= ke_min; kt += KG * BC)
            step(kt, lane, ks_row, ke_row, mrow, ke_wg, false);
    for (; kt < ke_wg; kt += KG * BC)
        step(kt, lane, ks_row, ke_row, mrow, ke_wg, true);

    if (KG > 1u) { // fold key groups 1.. into key group 0, which keeps its own in registers
        if (kg != 0u) {
            const uint me = (kg - 1u) * BR + r;
            if (lane == 0u) {
                sh_ml[2u * me] = m_run;
                sh_ml[2u * me + 1u] = l_run;
            }
            [[unroll]] for (uint u = 0u; u < DL; u++)
                sh_o[me * D + lane * DL + u] = ov[u];
        }
        barrier();
        if (kg != 0u)
            return;
        float mx = m_run;
        for (uint k = 1u; k < KG; k++)
            mx = max(mx, sh_ml[2u * ((k - 1u) * BR + r)]);
        const float w0 = exp(m_run - mx);
        float l = l_run * w0;
        [[unroll]] for (uint u = 0u; u < DL; u++)
            ov[u] *= w0;
        for (uint k = 1u; k < KG; k++) {
            const uint src = (k - 1u) * BR + r;
            const float w = exp(sh_ml[2u * src] - mx);
            l = fma(sh_ml[2u * src + 1u], w, l);
            [[unroll]] for (uint u = 0u; u < DL; u++)
                ov[u] = fma(sh_o[src * D + lane * DL + u], w, ov[u]);
        }
        m_run = mx;
        l_run = l;
    }
    if (R >= GL)
        return;
    if (SPLIT == 0u) {
        float invl = sink_fold(hq, m_run, l_run);
        invl = l_run == 0.0 ? 0.0 : invl / l_run;
        [[unroll]] for (uint u = 0u; u < DL; u += 2u)
            store_o2(b * st.o_sb + hq * st.o_sh + i * st.o_sr + lane * DL + u,
                     vec2(ov[u], ov[u + 1u]) * invl);
        if (pc.want_lse != 0u && lane == 0u)
            lse_data[pc.lse_off + row] = l_run == 0.0 ? NEG_INF : m_run + log(l_run);
    } else {
        const uint prow = sp * (pc.B * pc.Hq * pc.Lq) + row;
        [[unroll]] for (uint u = 0u; u < DL; u += 2u)
            part_o[prow * DH + (lane * DL + u) / 2u] = vec2(ov[u], ov[u + 1u]);
        if (lane == 0u)
            part_ml[prow] = vec2(m_run, l_run);
    }
}
