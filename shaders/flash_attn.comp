#version 450
// Fused SSMax flash attention (DESIGN.md "Fused"), and its split-KV variant (SPLIT = 1).
//
// Bindings: BIND_Q, BIND_K, BIND_V (read), BIND_O, BIND_LSE (write), BIND_COEF (factor
// coefficients); SPLIT = 1 writes BIND_SCR0 (partial O, unnormalised) and BIND_SCR1 (max, sum).
// Grid: x = row blocks of BR packed rows (+ pc.row_base), y = KV head g, z = batch * pc.nsplit.
// Keys of split sp: [sp * split_len, (sp + 1) * split_len).
//
// A workgroup owns BR "packed" rows of one KV head: packed row R = i * G + hh is query row i of
// head g * G + hh, so the G query heads that share a KV head (GQA) read each K/V tile once, and
// rows with equal i (equal causal visibility) sit together. Q is staged scaled by its row factor
// f(n) * scale in fp32 (SPEC.md section 3). K/V stream through shared memory in tiles of BC keys
// (vec4 loads); each invocation computes BR*BC/WG scores as a register tile; each row keeps a
// running max m (from -FLT_MAX/2) and sum l; keys a row cannot see are skipped (a branch, never a
// multiply by 0), so masked keys give exactly 0 even when their V holds NaN. Tiles past the block's
// last visible key are skipped. O is normalised once: O = acc / l (l = 0 -> 0), LSE = m + ln(l).
#include "attn_common.glsl"

layout(constant_id = SPEC_BR) const uint BR = 16;
layout(constant_id = SPEC_BC) const uint BC = 32;
layout(constant_id = SPEC_D) const uint D = 64;
layout(constant_id = SPEC_TPR) const uint TPR = 4;
layout(constant_id = SPEC_SPLIT) const uint SPLIT = 0;
const uint DP = D / (2u * TPR); // column pairs owned by each invocation
const uint D4 = D / 4u;
const uint NS = (BR * BC + WG - 1u) / WG; // scores per invocation

layout(binding = BIND_SCR0, std430) writeonly buffer BufPO { vec2 part_o[]; };
layout(binding = BIND_SCR1, std430) writeonly buffer BufPM { vec2 part_ml[]; };

shared vec4 Qs[BR * D4];
shared vec4 KVs[BC * D4];
shared float Ss[BR * BC];

vec2 kv_pair(uint c, uint p) // column pair p of key c
{
    vec4 x = KVs[c * D4 + (p >> 1)];
    return (p & 1u) != 0u ? x.zw : x.xy;
}

void main()
{
    const uint t = gl_LocalInvocationID.x, r = t / TPR, tr = t % TPR;
    const uint blk = gl_WorkGroupID.x + pc.row_base, g = gl_WorkGroupID.y;
    const uint b = gl_WorkGroupID.z / pc.nsplit, sp = gl_WorkGroupID.z % pc.nsplit;
    const uint GL = pc.G * pc.Lq, R = blk * BR + r;
    const bool valid = R < GL;
    const uint i = valid ? R / pc.G : 0u, h = g * pc.G + R % pc.G;

    for (uint e = t; e < BR * D4; e += WG) {
        uint rr = blk * BR + e / D4, d = 4u * (e % D4);
        vec4 x = vec4(0.0);
        if (rr < GL) {
            uint ii = rr / pc.G, hq = g * pc.G + rr % pc.G;
            x = LOAD4(q_data, pc.q_off, ((b * pc.Hq + hq) * pc.Lq + ii) * D + d) * row_factor(hq, ii);
        }
        Qs[e] = x;
    }

    const uint ks = sp * pc.split_len, ke_split = min(ks + pc.split_len, pc.Lk);
    const uint last = min(blk * BR + BR, GL) - 1u;
    const uint ke_wg = min(ke_split, kv_end(last / pc.G));
    const uint ke_row = valid ? min(ke_split, kv_end(i)) : 0u;
    const uint kvbase = (b * pc.Hkv + g) * pc.Lk * D;

    float m = M_INIT, l = 0.0;
    vec2 acc[DP];
    [[unroll]] for (uint k = 0u; k < DP; k++)
        acc[k] = vec2(0.0);
    barrier();

    for (uint kt = ks; kt < ke_wg; kt += BC) {
        for (uint e = t; e < BC * D4; e += WG) {
            uint j = kt + e / D4;
            KVs[e] = j < pc.Lk ? LOAD4(k_data, pc.k_off, kvbase + j * D + 4u * (e % D4)) : vec4(0.0);
        }
        barrier();
        float s[NS];
        [[unroll]] for (uint k = 0u; k < NS; k++)
            s[k] = 0.0;
        for (uint d = 0u; d < D4; d++)
            [[unroll]] for (uint k = 0u; k < NS; k++) {
                const uint e = min(t + k * WG, BR * BC - 1u);
                s[k] += dot(Qs[(e / BC) * D4 + d], KVs[(e % BC) * D4 + d]);
            }
        [[unroll]] for (uint k = 0u; k < NS; k++)
            if (t + k * WG < BR * BC)
                Ss[t + k * WG] = s[k];
        barrier();
        for (uint e = t; e < BC * D4; e += WG) {
            uint j = kt + e / D4;
            KVs[e] = j < pc.Lk ? LOAD4(v_data, pc.v_off, kvbase + j * D + 4u * (e % D4)) : vec4(0.0);
        }
        barrier();
        const uint cmax = uint(clamp(int(ke_row) - int(kt), 0, int(BC)));
        if (cmax > 0u) {
            float mt = m;
            for (uint c0 = 0u; c0 < cmax; c0 += 4u)
                [[unroll]] for (uint u = 0u; u < 4u; u++)
                    if (c0 + u < cmax)
                        mt = max(mt, Ss[r * BC + c0 + u]);
            const float alpha = exp(m - mt);
            m = mt;
            l *= alpha;
            [[unroll]] for (uint k = 0u; k < DP; k++)
                acc[k] *= alpha;
            for (uint c0 = 0u; c0 < cmax; c0 += 4u)
                [[unroll]] for (uint u = 0u; u < 4u; u++) {
                    const uint c = c0 + u;
                    if (c < cmax) { // keys this row cannot see are skipped, never multiplied by 0
                        const float p = exp(Ss[r * BC + c] - m);
                        l += p;
                        [[unroll]] for (uint k = 0u; k < DP; k++)
                            acc[k] += p * kv_pair(c, tr + TPR * k);
                    }
                }
        }
        barrier();
    }

    if (!valid)
        return;
    const uint row = (b * pc.Hq + h) * pc.Lq + i;
    if (SPLIT == 0u) {
        const float inv = l > 0.0 ? 1.0 / l : 0.0;
        [[unroll]] for (uint k = 0u; k < DP; k++)
            store_o2(row * D + 2u * (tr + TPR * k), acc[k] * inv);
        if (tr == 0u && pc.want_lse != 0u)
            lse_data[pc.lse_off + row] = l > 0.0 ? m + log(l) : NEG_INF;
    } else {
        const uint prow = sp * (pc.B * pc.Hq * pc.Lq) + row;
        [[unroll]] for (uint k = 0u; k < DP; k++)
            part_o[prow * (D / 2u) + tr + TPR * k] = acc[k];
        if (tr == 0u)
            part_ml[prow] = vec2(m, l);
    }
}
