#version 450
// Fused SSMax flash attention with one query row per subgroup lane (the "rows" kernel), and its
// split-KV variant (SPLIT = 1). Same bindings, grid and results as flash_attn.comp.
//
// Built for CPU Vulkan drivers. On llvmpipe (lavapipe) an invocation is one SIMD lane, and every
// shared- or storage-memory read inside a loop becomes a per-lane loop with a branch per word,
// while registers and subgroupShuffle with a constant lane (one vector permute) are cheap. So
// this kernel keeps its working set in registers and moves data between lanes with shuffles:
//   - a workgroup is one subgroup of BR lanes; lane t owns packed row R = blk * BR + t (packed as
//     in flash_attn.comp: R = i * G + hh, so GQA heads share each K/V read);
//   - the lane's scaled query row q[D] and its output accumulator o[D] live in registers;
//   - per step of BC keys, lane t reads words [t * DS, (t + 1) * DS) of each key's K and V row
//     (DS = D / BR), and K[j][d] / V[j][d] reach every lane as subgroupShuffle(word, d / DS);
//   - scores, running max, rescale and P V are plain per-lane arithmetic: no barriers, no shared
//     memory, no cross-lane reductions.
// Keys every row of the subgroup sees are walked unmasked; the rest (causal edge, the key tail)
// select masked terms away, so NaN or Inf in a hidden key never reaches O.
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require
#include "attn_common.glsl"

layout(constant_id = SPEC_BR) const uint BR = 8; // rows per workgroup = WG = subgroup size
layout(constant_id = SPEC_BC) const uint BC = 4; // keys per step
layout(constant_id = SPEC_D) const uint D = 64;
layout(constant_id = SPEC_SPLIT) const uint SPLIT = 0;
const uint DS = D / BR; // words of a K or V row each lane reads
const uint DH = D / 2u;

layout(binding = BIND_SCR0, std430) writeonly buffer BufPO { vec2 part_o[]; };
layout(binding = BIND_SCR1, std430) writeonly buffer BufPM { vec2 part_ml[]; };

float qv[D], ov[D]; // this lane's query row (times its factor) and output accumulator
float m_run, l_run;

// One step over keys [kt, kt + BC). masked: keys at or past ke_row are not seen by this lane, and
// keys at or past ke_wg (no lane sees them) are not read.
void step(uint kt, uint kvbase, uint t, bool masked, uint ke_row, uint ke_wg)
{
    float kr[BC * DS];
    [[unroll]] for (uint c = 0u; c < BC; c++) {
        const uint j = masked ? min(kt + c, ke_wg - 1u) : kt + c;
        [[unroll]] for (uint u = 0u; u < DS; u++)
            kr[c * DS + u] = LOAD(k_data, pc.k_off, kvbase + j * D + t * DS + u);
    }
    float s[BC];
    [[unroll]] for (uint c = 0u; c < BC; c++)
        s[c] = 0.0;
    [[unroll]] for (uint d = 0u; d < D; d++)
        [[unroll]] for (uint c = 0u; c < BC; c++)
            s[c] = fma(qv[d], subgroupShuffle(kr[c * DS + d % DS], d / DS), s[c]);

    bool vis[BC];
    float mt = m_run;
    [[unroll]] for (uint c = 0u; c < BC; c++) {
        vis[c] = !masked || kt + c < ke_row;
        mt = vis[c] ? max(mt, s[c]) : mt;
    }
    const float a = exp(m_run - mt);
    m_run = mt;
    float p[BC], ps = 0.0;
    [[unroll]] for (uint c = 0u; c < BC; c++) {
        p[c] = vis[c] ? exp(s[c] - mt) : 0.0;
        ps += p[c];
    }
    l_run = l_run * a + ps;

    float vr[BC * DS];
    [[unroll]] for (uint c = 0u; c < BC; c++) {
        const uint j = masked ? min(kt + c, ke_wg - 1u) : kt + c;
        [[unroll]] for (uint u = 0u; u < DS; u++)
            vr[c * DS + u] = LOAD(v_data, pc.v_off, kvbase + j * D + t * DS + u);
    }
    [[unroll]] for (uint d = 0u; d < D; d++) {
        float acc = ov[d] * a;
        [[unroll]] for (uint c = 0u; c < BC; c++) {
            const float x = subgroupShuffle(vr[c * DS + d % DS], d / DS);
            acc = vis[c] ? fma(p[c], x, acc) : acc; // select: NaN in a hidden V stays out
        }
        ov[d] = acc;
    }
}

void main()
{
    const uint t = gl_SubgroupInvocationID;
    const uint blk = gl_WorkGroupID.x + pc.row_base, g = gl_WorkGroupID.y;
    const uint b = gl_WorkGroupID.z / pc.nsplit, sp = gl_WorkGroupID.z % pc.nsplit;
    const uint GL = pc.G * pc.Lq;
    const uint first = blk * BR, last = min(first + BR, GL) - 1u, R = first + t;
    const bool valid = R < GL;
    const uint i = (valid ? R : last) / pc.G, hq = g * pc.G + (valid ? R : last) % pc.G;
    const uint row = (b * pc.Hq + hq) * pc.Lq + i;

    const float f = row_factor(hq, i);
    [[unroll]] for (uint d = 0u; d < D; d++) {
        qv[d] = LOAD(q_data, pc.q_off, row * D + d) * f;
        ov[d] = 0.0;
    }
    m_run = M_INIT;
    l_run = 0.0;

    const uint ks = sp * pc.split_len, ke_split = min(ks + pc.split_len, pc.Lk);
    const uint ke_wg = min(ke_split, kv_end(last / pc.G));   // keys the last row sees
    const uint ke_min = min(ke_split, kv_end(first / pc.G)); // keys every row sees
    const uint ke_row = valid ? min(ke_split, kv_end(i)) : 0u;
    const uint kvbase = (b * pc.Hkv + g) * pc.Lk * D;
    uint kt = ks;
    if (ke_min > ks)
        for (; kt + BC <= ke_min; kt += BC)
            step(kt, kvbase, t, false, ke_row, ke_wg);
    for (; kt < ke_wg; kt += BC)
        step(kt, kvbase, t, true, ke_row, ke_wg);

    if (!valid)
        return;
    if (SPLIT == 0u) {
        const float inv = l_run == 0.0 ? 0.0 : 1.0 / l_run;
        [[unroll]] for (uint p2 = 0u; p2 < DH; p2++)
            store_o2(row * D + 2u * p2, vec2(ov[2u * p2], ov[2u * p2 + 1u]) * inv);
        if (pc.want_lse != 0u)
            lse_data[pc.lse_off + row] = l_run == 0.0 ? NEG_INF : m_run + log(l_run);
    } else {
        const uint prow = sp * (pc.B * pc.Hq * pc.Lq) + row;
        [[unroll]] for (uint p2 = 0u; p2 < DH; p2++)
            part_o[prow * DH + p2] = vec2(ov[2u * p2], ov[2u * p2 + 1u]);
        part_ml[prow] = vec2(m_run, l_run);
    }
}
