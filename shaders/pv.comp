#version 450
// Unfused path, step 3: O = P V for a chunk of rows. Like the fused kernel's second half: a
// workgroup owns BR rows of one (batch, head), P and V tiles of BC keys go through shared memory,
// and each row reads only its key range [x, y) of kv_range, from the block's smallest x to its
// largest y; within it a key the mask hides is selected away, never multiplied, so NaN in a
// hidden V never reaches O.
//
// Bindings: BIND_SCR0 P [bh][i_count][Lk], BIND_V (read), BIND_O (write).
// Grid: x = row blocks of BR within [chunk_i0, chunk_i0 + chunk_ni), y = (batch, head) pairs from pc.row_base.
#include "attn_common.glsl"

layout(constant_id = SPEC_BR) const uint BR = 16;
layout(constant_id = SPEC_BC) const uint BC = 32;
layout(constant_id = SPEC_D) const uint D = 64;
layout(constant_id = SPEC_TPR) const uint TPR = 4;
const uint DP = D / (2u * TPR);
const uint D4 = D / 4u;

layout(binding = BIND_SCR0, std430) readonly buffer BufS { float probs[]; };

shared float Ps[BR * BC];
shared vec4 Vs[BC * D4];

vec2 v_pair(uint c, uint p)
{
    vec4 x = Vs[c * D4 + (p >> 1)];
    return (p & 1u) != 0u ? x.zw : x.xy;
}

void main()
{
    const uint t = gl_LocalInvocationID.x, r = t / TPR, tr = t % TPR;
    const uint bh = pc.row_base + gl_WorkGroupID.y, b = bh / pc.Hq, h = bh % pc.Hq, g = h / pc.G;
    const uint ib = pc.chunk_i0 + gl_WorkGroupID.x * BR, iend = pc.chunk_i0 + pc.chunk_ni;
    const uint i = ib + r;
    const bool valid = i < iend;
    const uvec2 kr = kv_range(b, min(i, iend - 1u));
    const uint x = kr.x, n = valid ? kr.y : 0u;
    // kv_range grows with the row: the block's first and last rows bound its keys
    const uint nwg = kv_range(b, min(ib + BR, iend) - 1u).y;
    const uint xwg = min(kv_range(b, ib).x, nwg);
    const uint pbase = (gl_WorkGroupID.y * pc.chunk_ni + (ib - pc.chunk_i0)) * pc.Lk;
    const uint vbase = b * st.v_sb + g * st.v_sh, v_sr = st.v_sr;
    vec2 acc[DP];
    [[unroll]] for (uint k = 0u; k < DP; k++)
        acc[k] = vec2(0.0);
    for (uint kt = xwg; kt < nwg; kt += BC) {
        for (uint e = t; e < BR * BC; e += WG) {
            uint rr = e / BC, j = kt + e % BC;
            float pw = ib + rr < iend && j < pc.Lk ? probs[pbase + rr * pc.Lk + j] : 0.0;
            // A key the mask hides: -0.0 here, never multiplied. A key the row sees whose weight
            // is 0 (underflow) stays +0.0 and is, so NaN in its V reaches O as in the reference.
            if ((pc.flags & FL_MASK) != 0u && ib + rr < iend && j < pc.Lk &&
                mask_at(mask_row(b, h, ib + rr), j) == NEG_INF)
                pw = -0.0;
            Ps[e] = pw;
        }
        for (uint e = t; e < BC * D4; e += WG) {
            uint j = kt + e / D4;
            Vs[e] = j < pc.Lk ? LOAD4(v_data, pc.v_off, vbase + j * v_sr + 4u * (e % D4)) : vec4(0.0);
        }
        barrier();
        // A blocked sum: the tile's terms from 0, then one add to the running total (key by key
        // into it, a long row's small terms were lost: NMSE 2e-6 over 1M keys of one sign).
        const uint cmin = uint(clamp(int(x) - int(kt), 0, int(BC)));
        const uint cmax = uint(clamp(int(n) - int(kt), 0, int(BC)));
        vec2 tacc[DP];
        [[unroll]] for (uint k = 0u; k < DP; k++)
            tacc[k] = vec2(0.0);
        // (from 0, not cmin: a loop from a constant start that the compiler can bound keeps
        // llvmpipe's loop budget, which the host counts; see attn_common.glsl)
        for (uint c0 = 0u; c0 < cmax; c0 += 4u)
            [[unroll]] for (uint u = 0u; u < 4u; u++) {
                const uint c = c0 + u;
                if (c >= cmin && c < cmax) {
                    const float p = Ps[r * BC + c];
                    if (floatBitsToUint(p) != 0x80000000u) // -0.0: hidden by the mask
                        [[unroll]] for (uint k = 0u; k < DP; k++)
                            tacc[k] += p * v_pair(c, tr + TPR * k);
                }
            }
        [[unroll]] for (uint k = 0u; k < DP; k++)
            acc[k] += tacc[k];
        barrier();
    }
    if (valid)
        [[unroll]] for (uint k = 0u; k < DP; k++)
            store_o2(b * st.o_sb + h * st.o_sh + i * st.o_sr + 2u * (tr + TPR * k), acc[k]);
}
