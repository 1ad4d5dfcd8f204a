#version 450
// Unfused path, step 2: row softmax of the scores in place, giving P (hidden keys, -inf scores,
// exactly 0), and the row's LSE. A sink (FL_SINKS) joins the denominator only. One workgroup per
// row, over the row's key range [x, y); reductions through shared memory (no subgroup needed).
//
// Bindings: BIND_SCR0 scores/P (read-write), BIND_LSE (write). Grid: x = rows i in
// [chunk_i0, chunk_i0 + chunk_ni), y = (batch, head) pairs from pc.row_base.
#include "attn_common.glsl"

layout(binding = BIND_SCR0, std430) buffer BufS { float scores[]; };

shared float red[WG];

void main()
{
    const uint t = gl_LocalInvocationID.x;
    const uint i = pc.chunk_i0 + gl_WorkGroupID.x, bh = pc.row_base + gl_WorkGroupID.y;
    const uint base = (gl_WorkGroupID.y * pc.chunk_ni + gl_WorkGroupID.x) * pc.Lk;
    const uint b = bh / pc.Hq, h = bh % pc.Hq;
    const uvec2 kr = kv_range(b, i);
    const uint x = kr.x, n = kr.y;
    float m = M_INIT; // -inf (hidden) scores change nothing
    for (uint j0 = x; j0 < n; j0 += 4u * WG)
        [[unroll]] for (uint u = 0u; u < 4u; u++) {
            const uint j = j0 + u * WG + t;
            if (j < n)
                m = max(m, scores[base + j]);
        }
    red[t] = m;
    barrier();
    [[unroll]] for (uint s = WG / 2u; s > 0u; s >>= 1u) {
        if (t < s)
            red[t] = max(red[t], red[t + s]);
        barrier();
    }
    m = red[0];
    barrier();
    float l = 0.0;
    for (uint j0 = x; j0 < n; j0 += 4u * WG)
        [[unroll]] for (uint u = 0u; u < 4u; u++) {
            const uint j = j0 + u * WG + t;
            if (j < n)
                l += exp(scores[base + j] - m);
        }
    red[t] = l;
    barrier();
    [[unroll]] for (uint s = WG / 2u; s > 0u; s >>= 1u) {
        if (t < s)
            red[t] += red[t + s];
        barrier();
    }
    l = red[0];
    sink_fold(h, m, l); // m and l with the sink: P = exp(z - m) / l
    const float inv = l == 0.0 ? 0.0 : 1.0 / l;
    for (uint j0 = 0u; j0 < pc.Lk; j0 += 4u * WG)
        [[unroll]] for (uint u = 0u; u < 4u; u++) {
            const uint j = j0 + u * WG + t;
            if (j < pc.Lk)
                scores[base + j] = j >= x && j < n ? exp(scores[base + j] - m) * inv : 0.0;
        }
    if (t == 0u && pc.want_lse != 0u)
        lse_data[pc.lse_off + bh * pc.Lq + i] = l == 0.0 ? NEG_INF : m + log(l);
}
