#version 450
// Fused SSMax flash attention (DESIGN.md "Fused"), and its split-KV variant (SPLIT = 1).
//
// Bindings: BIND_Q, BIND_K, BIND_V (read), BIND_O, BIND_LSE (write), BIND_COEF (factor
// coefficients); SPLIT = 1 writes BIND_SCR0 (partial O, unnormalised) and BIND_SCR1 (max, sum).
// Grid: x = row blocks of BR packed rows (+ pc.row_base), y = KV head g, z = batch * pc.nsplit.
// Keys of split sp: [sp * split_len, (sp + 1) * split_len). Workgroup size WG = BC.
//
// A workgroup owns BR "packed" rows of one KV head: packed row R = i * G + hh is query row i of
// head g * G + hh, so the G query heads that share a KV head (GQA) read each K/V tile once, and
// rows with equal i (equal causal visibility) sit together. Q is staged scaled by its row factor
// f(n) * scale in fp32 (SPEC.md section 3). Per tile of BC keys:
//   1. K is staged transposed, KV[d][c];
//   2. S = Q K^T: invocation c owns key c for all BR rows (Q is read at uniform addresses);
//   3. one invocation per row: the new running max m (from -FLT_MAX/2) and the rescale factor;
//   4. P = exp(S - m) for the keys the row sees, exactly 0 for the others; V staged as KV[c][d];
//   5. O += P V: invocation t owns columns t, t + WG, ... of all BR rows (P read at uniform
//      addresses, each V word reused BR times); in a tile where some row cannot see some key the
//      term is selected away (never multiplied by 0), so NaN in masked V cannot reach O.
// Uniform addresses and register tiles matter everywhere (a GPU's broadcast, a CPU driver's SIMD
// lanes). Tiles past the block's last visible key are skipped. O is normalised once at the end:
// O = acc / l (l = 0 -> 0), LSE = m + ln(l) (l = 0 -> -inf).
#include "attn_common.glsl"

layout(constant_id = SPEC_BR) const uint BR = 16;
layout(constant_id = SPEC_BC) const uint BC = 64;
layout(constant_id = SPEC_D) const uint D = 64;
layout(constant_id = SPEC_SPLIT) const uint SPLIT = 0;
const uint CPT = (D + WG - 1u) / WG; // output columns per invocation
const uint DH = D / 2u;

layout(binding = BIND_SCR0, std430) writeonly buffer BufPO { vec2 part_o[]; };
layout(binding = BIND_SCR1, std430) writeonly buffer BufPM { vec2 part_ml[]; };

shared float Qs[BR * D];   // Q * factor; at the end, the output staged for paired stores
shared float KV[BC * D];   // K^T [D][BC] for the scores, then V [BC][D]
shared float Ps[BR * BC];  // P
shared float Mrow[BR], Arow[BR], Lrow[BR];
shared uint Crow[BR];      // keys of this tile each row sees

void main()
{
    const uint t = gl_LocalInvocationID.x;
    const uint blk = gl_WorkGroupID.x + pc.row_base, g = gl_WorkGroupID.y;
    const uint b = gl_WorkGroupID.z / pc.nsplit, sp = gl_WorkGroupID.z % pc.nsplit;
    const uint GL = pc.G * pc.Lq;

    for (uint e = t; e < BR * D; e += WG) {
        uint rr = blk * BR + e / D, d = e % D;
        float x = 0.0;
        if (rr < GL) {
            uint ii = rr / pc.G, hq = g * pc.G + rr % pc.G;
            x = LOAD(q_data, pc.q_off, ((b * pc.Hq + hq) * pc.Lq + ii) * D + d) * row_factor(hq, ii);
        }
        Qs[e] = x;
    }
    const uint ks = sp * pc.split_len, ke_split = min(ks + pc.split_len, pc.Lk);
    const uint first = blk * BR, last = min(first + BR, GL) - 1u;
    const uint ke_wg = min(ke_split, kv_end(last / pc.G));  // largest key range in the block
    const uint ke_min = min(ke_split, kv_end(first / pc.G)); // smallest
    const uint kvbase = (b * pc.Hkv + g) * pc.Lk * D;
    if (t < BR)
        Mrow[t] = M_INIT;
    float acc[BR * CPT], l[BR];
    [[unroll]] for (uint k = 0u; k < BR * CPT; k++)
        acc[k] = 0.0;
    [[unroll]] for (uint r = 0u; r < BR; r++)
        l[r] = 0.0;
    barrier();

    for (uint kt = ks; kt < ke_wg; kt += BC) {
        // 1. K^T: invocation c loads key c
        const uint jc = kt + t;
        for (uint d0 = 0u; d0 < D; d0 += 4u) {
            vec4 x = jc < ke_wg ? LOAD4(k_data, pc.k_off, kvbase + jc * D + d0) : vec4(0.0);
            [[unroll]] for (uint u = 0u; u < 4u; u++)
                KV[(d0 + u) * BC + t] = x[u];
        }
        barrier();
        // 2. S for key t, all rows
        float s[BR];
        [[unroll]] for (uint r = 0u; r < BR; r++)
            s[r] = 0.0;
        for (uint d0 = 0u; d0 < D; d0 += 4u)
            [[unroll]] for (uint u = 0u; u < 4u; u++) {
                const float kv = KV[(d0 + u) * BC + t];
                [[unroll]] for (uint r = 0u; r < BR; r++)
                    s[r] += Qs[r * D + d0 + u] * kv;
            }
        [[unroll]] for (uint r = 0u; r < BR; r++)
            Ps[r * BC + t] = s[r];
        barrier();
        // 3. row max and rescale factor
        if (t < BR) {
            const uint R = first + t;
            const uint ke = R < GL ? min(ke_split, kv_end(R / pc.G)) : 0u;
            const uint cmax = uint(clamp(int(ke) - int(kt), 0, int(BC)));
            float mo = Mrow[t], mt = mo;
            for (uint c0 = 0u; c0 < cmax; c0 += 4u)
                [[unroll]] for (uint u = 0u; u < 4u; u++)
                    if (c0 + u < cmax)
                        mt = max(mt, Ps[t * BC + c0 + u]);
            Mrow[t] = mt;
            Arow[t] = exp(mo - mt);
            Crow[t] = cmax;
        }
        barrier();
        // 4. P for key t; V (K is no longer read)
        [[unroll]] for (uint r = 0u; r < BR; r++)
            Ps[r * BC + t] = t < Crow[r] ? exp(s[r] - Mrow[r]) : 0.0;
        for (uint e0 = 0u; e0 < BC * D; e0 += 4u * WG) {
            const uint e = e0 + 4u * t, j = kt + e / D;
            if (e < BC * D) {
                vec4 x = j < ke_wg ? LOAD4(v_data, pc.v_off, kvbase + j * D + e % D) : vec4(0.0);
                [[unroll]] for (uint u = 0u; u < 4u; u++)
                    KV[e + u] = x[u];
            }
        }
        barrier();
        // 5. O += P V
        [[unroll]] for (uint r = 0u; r < BR; r++) {
            const float a = Arow[r];
            l[r] *= a;
            [[unroll]] for (uint j = 0u; j < CPT; j++)
                acc[r * CPT + j] *= a;
        }
        const bool full = kt + BC <= ke_min; // every row sees every key of this tile
        if (full) {
            for (uint c = 0u; c < BC; c++) {
                float v[CPT];
                [[unroll]] for (uint j = 0u; j < CPT; j++)
                    v[j] = KV[c * D + min(t + j * WG, D - 1u)];
                [[unroll]] for (uint r = 0u; r < BR; r++) {
                    const float p = Ps[r * BC + c];
                    l[r] += p;
                    [[unroll]] for (uint j = 0u; j < CPT; j++)
                        acc[r * CPT + j] += p * v[j];
                }
            }
        } else {
            for (uint c = 0u; c < BC; c++) {
                float v[CPT];
                [[unroll]] for (uint j = 0u; j < CPT; j++)
                    v[j] = KV[c * D + min(t + j * WG, D - 1u)];
                [[unroll]] for (uint r = 0u; r < BR; r++) {
                    const float p = Ps[r * BC + c];
                    const bool seen = c < Crow[r];
                    l[r] += p;
                    [[unroll]] for (uint j = 0u; j < CPT; j++)
                        acc[r * CPT + j] += seen ? p * v[j] : 0.0; // select: NaN stays out
                }
            }
        }
        barrier();
    }

    // Stage the normalised (or partial) output in Qs, then store column pairs.
    [[unroll]] for (uint r = 0u; r < BR; r++) {
        const float inv = SPLIT == 0u ? (l[r] > 0.0 ? 1.0 / l[r] : 0.0) : 1.0;
        [[unroll]] for (uint j = 0u; j < CPT; j++)
            if (t + j * WG < D)
                Qs[r * D + t + j * WG] = acc[r * CPT + j] * inv;
    }
    if (t == 0u)
        [[unroll]] for (uint r = 0u; r < BR; r++)
            Lrow[r] = l[r];
    barrier();
    for (uint e = t; e < BR * DH; e += WG) {
        const uint r = e / DH, p2 = e % DH, R = first + r;
        if (R >= GL)
            continue;
        const uint i = R / pc.G, h = g * pc.G + R % pc.G, row = (b * pc.Hq + h) * pc.Lq + i;
        const vec2 o = vec2(Qs[r * D + 2u * p2], Qs[r * D + 2u * p2 + 1u]);
        const float m = Mrow[r], lr = Lrow[r];
        if (SPLIT == 0u) {
            store_o2(row * D + 2u * p2, o);
            if (p2 == 0u && pc.want_lse != 0u)
                lse_data[pc.lse_off + row] = lr > 0.0 ? m + log(lr) : NEG_INF;
        } else {
            const uint prow = sp * (pc.B * pc.Hq * pc.Lq) + row;
            part_o[prow * DH + p2] = o;
            if (p2 == 0u)
                part_ml[prow] = vec2(m, lr);
        }
    }
}
