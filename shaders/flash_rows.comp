#version 450
// Fused SSMax flash attention with query rows held per subgroup lane (the "rows" kernel), and its
// split-KV variant (SPLIT = 1). Same bindings, grid and results as flash_attn.comp.
//
// Built for CPU Vulkan drivers. On llvmpipe (lavapipe) an invocation is one SIMD lane, and every
// shared- or storage-memory read inside a loop becomes a per-lane loop with a branch per word,
// while registers and subgroupShuffle with a constant lane (one vector permute) are cheap. So
// this kernel keeps its working set in registers and moves data between lanes with shuffles:
//   - a workgroup is one subgroup of WG lanes and a block of BR = RL * WG packed rows; lane t owns
//     rows blk * BR + t + r * WG, r < RL (packed as in flash_attn.comp: R = i * G + hh, so GQA
//     heads share each K/V read);
//   - the lane's scaled query rows q[RL][D] and output accumulators o[RL][D] live in registers;
//   - per step of BC keys, lane t reads words [t * DS, (t + 1) * DS) of each key's K and V row
//     (DS = D / WG), and K[j][d] / V[j][d] reach every lane as subgroupShuffle(word, d / DS),
//     each feeding RL rows' multiply-adds;
//   - scores, running max, rescale and P V are plain per-lane arithmetic: no barriers, no shared
//     memory, no cross-lane reductions.
// Keys are walked in chunks of 64 (walk()): a chunk every row of the subgroup sees whole, the
// mask adding nothing, is walked unmasked; the rest (causal edge, the key tail, window starts, the
// additive mask) select hidden terms away, so NaN or Inf in a hidden key never reaches O.
// Inference (SPEC.md section 7): row keys [x, y) from kv_range, the walk from the block's smallest
// x to its largest y (a window costs O(W) a row); logits capped after the factor, then the mask
// entry added (-inf hides the key). With a mask, mask_count.comp's summary says per row and chunk
// whether any key is seen and whether the entries must be read: a chunk no row sees is skipped
// whole, a step no lane sees anything of is skipped before K is read (ORs over the subgroup by
// xor shuffles). The sink is folded in at the end (by the merge with split-KV).
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require
#include "attn_common.glsl"

layout(constant_id = SPEC_BR) const uint BR = 8; // rows per workgroup: RL per lane, WG lanes
layout(constant_id = SPEC_BC) const uint BC = 4; // keys per step
layout(constant_id = SPEC_D) const uint D = 64;
layout(constant_id = SPEC_SPLIT) const uint SPLIT = 0;
layout(constant_id = SPEC_WIDE) const uint WIDE = 0; // 1: K/V read 4 words at a time (see below)
const uint RL = BR / WG; // rows per lane: lane t owns rows t, t + WG, ... of the block
const uint DS = D / WG;  // words of a K or V row each lane reads
const uint DH = D / 2u;

// K and V seen 4 elements at a time; used when WIDE = 1, which the host sets only when both
// offsets, strides and DS are multiples of 4, so every read below is aligned.
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

float qv[RL * D], ov[RL * D]; // this lane's query rows (times their factor), output accumulators
float m_run[RL], l_run[RL];
uint kbase, k_sr, vbase, v_sr; // K and V of this workgroup's head: first element, row stride

// This lane's DS words of each of the step's BC K or V rows, 4 at a time when WIDE. Keys past
// ke_wg (masked steps only) read the last key instead, so nothing outside the tensor is touched.
#define READ_WORDS(dst, wide, data, off, base, rs)                                                 \
    [[unroll]] for (uint c = 0u; c < BC; c++) {                                                    \
        const uint e = (base) + (masked ? min(kt + c, ke_wg - 1u) : kt + c) * (rs) + t * DS;       \
        if (WIDE != 0u) {                                                                          \
            [[unroll]] for (uint u = 0u; u < DS; u += 4u) {                                        \
                const vec4 x = load4(wide[((off) + e + u) / 4u]);                                  \
                [[unroll]] for (uint w = 0u; w < 4u; w++)                                          \
                    dst[c * DS + u + w] = x[w];                                                    \
            }                                                                                      \
        } else {                                                                                   \
            [[unroll]] for (uint u = 0u; u < DS; u++)                                              \
                dst[c * DS + u] = LOAD(data, (off), e + u);                                        \
        }                                                                                          \
    }

// OR of x over the subgroup (WG lanes: the workgroup), by xor shuffles (stages written out: a
// loop would count against llvmpipe's loop budget).
uint sg_or(uint v)
{
    if (WG > 1u)
        v |= subgroupShuffleXor(v, 1u);
    if (WG > 2u)
        v |= subgroupShuffleXor(v, 2u);
    if (WG > 4u)
        v |= subgroupShuffleXor(v, 4u);
    if (WG > 8u)
        v |= subgroupShuffleXor(v, 8u);
    if (WG > 16u)
        v |= subgroupShuffleXor(v, 16u);
    if (WG > 32u)
        v |= subgroupShuffleXor(v, 32u);
    if (WG > 64u)
        v |= subgroupShuffleXor(v, 64u);
    return v;
}

// One step over keys [kt, kt + BC). masked: keys outside [ks_row, ke_row) are not seen by this
// lane's rows, with read_mask also those with a -inf mask entry, and keys at or past ke_wg (no
// lane sees them) are not read.
void step(uint kt, uint t, bool masked, bool read_mask, uint ks_row[RL], uint ke_row[RL],
          uint mrow[RL], uint ke_wg)
{
    bool vis[RL * BC];
    float bias[RL * BC];
    [[unroll]] for (uint r = 0u; r < RL; r++)
        [[unroll]] for (uint c = 0u; c < BC; c++) {
            bool v = !masked || (kt + c >= ks_row[r] && kt + c < ke_row[r]);
            float a = 0.0;
            if (masked && read_mask && v) {
                a = mask_at(mrow[r], kt + c);
                v = !(a == NEG_INF); // NaN is seen (and makes the row NaN)
            }
            vis[r * BC + c] = v;
            bias[r * BC + c] = a;
        }
    if (masked && read_mask) {
        bool any = false;
        [[unroll]] for (uint k = 0u; k < RL * BC; k++)
            any = any || vis[k];
        if (sg_or(any ? 1u : 0u) == 0u)
            return; // no row of the subgroup sees a key of this step: K and V are not read
    }
    float kr[BC * DS];
    READ_WORDS(kr, k_wide, k_data, pc.k_off, kbase, k_sr);
    float s[RL * BC];
    [[unroll]] for (uint k = 0u; k < RL * BC; k++)
        s[k] = 0.0;
    [[unroll]] for (uint d = 0u; d < D; d++)
        [[unroll]] for (uint c = 0u; c < BC; c++) {
            const float x = subgroupShuffle(kr[c * DS + d % DS], d / DS);
            [[unroll]] for (uint r = 0u; r < RL; r++)
                s[r * BC + c] = fma(qv[r * D + d], x, s[r * BC + c]);
        }

    float a[RL], p[RL * BC];
    [[unroll]] for (uint r = 0u; r < RL; r++) {
        float mt = m_run[r];
        [[unroll]] for (uint c = 0u; c < BC; c++) {
            s[r * BC + c] = softcap(s[r * BC + c]) + bias[r * BC + c];
            mt = vis[r * BC + c] ? max(mt, s[r * BC + c]) : mt;
        }
        a[r] = exp(m_run[r] - mt);
        m_run[r] = mt;
        float ps = 0.0;
        [[unroll]] for (uint c = 0u; c < BC; c++) {
            p[r * BC + c] = vis[r * BC + c] ? exp(s[r * BC + c] - mt) : 0.0;
            ps += p[r * BC + c];
        }
        // Blocked sums: the step's terms (ps here, acc below) are summed from 0 and folded into
        // the running l and O once per step. Added key by key to the running totals, a long
        // row's small terms are lost against the large totals (NMSE 1e-7 over 1M keys). l and O
        // take the same scheme, so their errors stay alike (V = 1 gives exactly 1).
        l_run[r] = fma(l_run[r], a[r], ps);
    }

    float vr[BC * DS];
    READ_WORDS(vr, v_wide, v_data, pc.v_off, vbase, v_sr);
    [[unroll]] for (uint d = 0u; d < D; d++) {
        float acc[RL];
        [[unroll]] for (uint r = 0u; r < RL; r++)
            acc[r] = 0.0;
        [[unroll]] for (uint c = 0u; c < BC; c++) {
            const float x = subgroupShuffle(vr[c * DS + d % DS], d / DS);
            [[unroll]] for (uint r = 0u; r < RL; r++) // select: NaN in a hidden V stays out
                acc[r] = vis[r * BC + c] ? fma(p[r * BC + c], x, acc[r]) : acc[r];
        }
        [[unroll]] for (uint r = 0u; r < RL; r++)
            ov[r * D + d] = fma(ov[r * D + d], a[r], acc[r]);
    }
}

// Keys [kt, ke_wg) in chunks of MASK_CHUNK keys (64, aligned; BC divides 64, so no step spans
// two chunks). A chunk every row sees whole, with no mask or one that adds nothing to it (code 1
// of every row's summary, shaders/attn_iface.h), takes unmasked steps; a chunk no row sees any key
// of (bit 0 clear in every row's code) is skipped, and so is the rest of a summary word (16
// chunks) where no row sees anything (one word a row read per 16 chunks, ORed over the rows and
// the subgroup at once); the rest take masked steps, reading the mask's entries where some row's
// code says so (bit 1). A chunk costs one loop iteration besides its
// steps, which max_tiles_per_wg in src/vulkan/vk_plan.c counts.
void walk(uint kt, uint t, uint ks_row[RL], uint ke_row[RL], uint mrow[RL], uint srow[RL],
          uint ke_wg, uint ks_max, uint ke_min)
{
    kt -= kt % BC;
    uint wi = 0xffffffffu, codes = 0u; // the summary word index held, its codes ORed over rows
    while (kt < ke_wg) {
        const uint c = kt / MASK_CHUNK;
        uint code = 1u;
        if ((pc.flags & FL_MASK) != 0u) {
            if (c / MASK_CODES != wi) { // a word a row, ORed over the rows and the subgroup
                wi = c / MASK_CODES;
                codes = 0u;
                [[unroll]] for (uint r = 0u; r < RL; r++)
                    codes |= nvis[srow[r] + wi];
                codes = sg_or(codes);
            }
            const uint rest = codes >> (2u * (c % MASK_CODES));
            if ((rest & 0x55555555u) == 0u) { // no row sees a key up to the word's end
                kt = (wi + 1u) * MASK_CHUNK * MASK_CODES;
                continue;
            }
            code = rest & 3u;
        }
        const uint kend = min(c * MASK_CHUNK + MASK_CHUNK, ke_wg);
        if (code == 1u && kt >= ks_max && kend <= ke_min && (kend - kt) % BC == 0u) {
            for (; kt < kend; kt += BC)
                step(kt, t, false, false, ks_row, ke_row, mrow, ke_wg);
        } else if ((code & 1u) != 0u) {
            const bool rm = code != 1u;
            for (; kt < kend; kt += BC)
                step(kt, t, true, rm, ks_row, ke_row, mrow, ke_wg);
        }
        kt = kend;
    }
}

void main()
{
    const uint t = gl_SubgroupInvocationID;
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
    kbase = b * st.k_sb + g * st.k_sh, k_sr = st.k_sr;
    vbase = b * st.v_sb + g * st.v_sh, v_sr = st.v_sr;

    uint rowi[RL], orow[RL], ks_row[RL], ke_row[RL], mrow[RL], srow[RL], hrow[RL];
    [[unroll]] for (uint r = 0u; r < RL; r++) {
        const uint R = first + r * WG + t, RR = R < GL ? R : last;
        const uint i = RR / pc.G, hq = g * pc.G + RR % pc.G;
        rowi[r] = (b * pc.Hq + hq) * pc.Lq + i;
        orow[r] = b * st.o_sb + hq * st.o_sh + i * st.o_sr;
        const uvec2 kr = kv_range(b, i);
        ks_row[r] = max(ks, kr.x);
        ke_row[r] = R < GL ? min(ke_split, kr.y) : 0u;
        mrow[r] = (pc.flags & FL_MASK) != 0u ? mask_row(b, hq, i) : 0u;
        srow[r] = (pc.flags & FL_MASK) != 0u ? mask_summary(b, hq, i) : 0u;
        hrow[r] = hq;
        const float f = row_factor(b, hq, i);
        const uint qrow = b * st.q_sb + hq * st.q_sh + i * st.q_sr;
        [[unroll]] for (uint d = 0u; d < D; d++) {
            qv[r * D + d] = LOAD(q_data, pc.q_off, qrow + d) * f;
            ov[r * D + d] = 0.0;
        }
        m_run[r] = M_INIT;
        l_run[r] = 0.0;
    }

    walk(ks_wg, t, ks_row, ke_row, mrow, srow, ke_wg, ks_max, ke_min);

    [[unroll]] for (uint r = 0u; r < RL; r++) {
        if (first + r * WG + t >= GL)
            continue;
        const uint row = rowi[r];
        float l = l_run[r], m = m_run[r];
        if (SPLIT == 0u) {
            float inv = sink_fold(hrow[r], m, l);
            inv = l == 0.0 ? 0.0 : inv / l;
            [[unroll]] for (uint p2 = 0u; p2 < DH; p2++)
                store_o2(orow[r] + 2u * p2, vec2(ov[r * D + 2u * p2], ov[r * D + 2u * p2 + 1u]) * inv);
            if (pc.want_lse != 0u)
                lse_data[pc.lse_off + row] = l == 0.0 ? NEG_INF : m + log(l);
        } else {
            const uint prow = sp * (pc.B * pc.Hq * pc.Lq) + row;
            [[unroll]] for (uint p2 = 0u; p2 < DH; p2++)
                part_o[prow * DH + p2] = vec2(ov[r * D + 2u * p2], ov[r * D + 2u * p2 + 1u]);
            part_ml[prow] = vec2(m, l);
        }
    }
}
