#version 450
// Visible keys of each mask row (SPEC.md section 7.2), for the row factor's n: the keys j of
// kv_range(b, i) whose mask entry is not -inf (a NaN entry counts: the key is seen, and makes the
// row NaN). Runs only with FL_MASK, before the attention kernels of the same call, which read the
// counts through row_n().
//
// Bindings: BIND_MASK, BIND_COEF (read), BIND_NVIS (write). Grid: x = query rows i from
// pc.row_base, y = mask heads hm (Hq with FL_MASK_HEADS, else 1), z = batch items. One workgroup
// a row; the sum through shared memory (no subgroup needed).
#include "attn_common.glsl"

shared uint red[WG];

void main()
{
    const uint t = gl_LocalInvocationID.x;
    const uint i = gl_WorkGroupID.x + pc.row_base, hm = gl_WorkGroupID.y, b = gl_WorkGroupID.z;
    if (i >= pc.Lq)
        return;
    const uvec2 kr = kv_range(b, i);
    const uint mrow = mask_row(b, hm, i);
    uint n = 0u;
    for (uint j0 = kr.x; j0 < kr.y; j0 += 4u * WG)
        [[unroll]] for (uint u = 0u; u < 4u; u++) {
            const uint j = j0 + u * WG + t;
            if (j < kr.y && !(mask_at(mrow, j) == NEG_INF))
                n++;
        }
    red[t] = n;
    barrier();
    [[unroll]] for (uint s = WG / 2u; s > 0u; s >>= 1u) {
        if (t < s)
            red[t] += red[t + s];
        barrier();
    }
    if (t == 0u)
        nvis[nvis_index(b, hm, i)] = red[0];
}
