#version 450
// Split-KV merge (flash-decoding): combines the pc.nsplit partial results of each row with the
// log-sum-exp rule. The SSMax factor depends on the row only, so it is already in every partial;
// a sink (FL_SINKS) is folded into the merged sum.
//
// Bindings: BIND_SCR0 partial O [nsplit][rows][D] (unnormalised), BIND_SCR1 (max, sum)
// [nsplit][rows]; writes BIND_O and BIND_LSE. Grid: x = rows (+ pc.row_base), one workgroup each.
#include "attn_common.glsl"

layout(constant_id = SPEC_D) const uint D = 64;

layout(binding = BIND_SCR0, std430) readonly buffer BufPO { vec2 part_o[]; };
layout(binding = BIND_SCR1, std430) readonly buffer BufPM { vec2 part_ml[]; };

void main()
{
    const uint rows = pc.B * pc.Hq * pc.Lq, row = gl_WorkGroupID.x + pc.row_base;
    const uint t = gl_LocalInvocationID.x;
    if (row >= rows)
        return;
    float M = M_INIT;
    for (uint s = 0u; s < pc.nsplit; s++)
        M = max(M, part_ml[s * rows + row].x);
    float L = 0.0;
    for (uint s = 0u; s < pc.nsplit; s++) {
        vec2 ml = part_ml[s * rows + row];
        L += ml.y * exp(ml.x - M);
    }
    const uint i = row % pc.Lq, h = (row / pc.Lq) % pc.Hq, b = row / (pc.Lq * pc.Hq);
    // The sink joins the denominator once, here: the partials leave it out (SPEC.md section 7.4).
    sink_fold(h, M, L); // M and L with the sink: the partials below are scaled to the new M
    const float inv = L == 0.0 ? 0.0 : 1.0 / L;
    const uint orow = b * st.o_sb + h * st.o_sh + i * st.o_sr;
    for (uint p = t; p < D / 2u; p += WG) {
        vec2 o = vec2(0.0);
        for (uint s = 0u; s < pc.nsplit; s++) {
            vec2 ml = part_ml[s * rows + row];
            if (ml.y != 0.0) // empty splits hold nothing (a NaN sum still propagates)
                o += part_o[(s * rows + row) * (D / 2u) + p] * exp(ml.x - M);
        }
        store_o2(orow + 2u * p, o * inv);
    }
    if (t == 0u && pc.want_lse != 0u)
        lse_data[pc.lse_off + row] = L == 0.0 ? NEG_INF : M + log(L);
}
