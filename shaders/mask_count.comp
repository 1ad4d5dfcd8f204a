#version 450
// Visible keys of each mask row (SPEC.md section 7.2), for the row factor's n: the keys j of
// kv_range(b, i) whose mask entry is not -inf (a NaN entry counts: the key is seen, and makes the
// row NaN); and the row's summary, a code per chunk of 64 keys (shaders/attn_iface.h, MASK_CHUNK)
// by which the attention kernels skip chunks the row does not see and walk chunks whose entries
// are all 0 without reading them. Runs only with FL_MASK, before the attention kernels of the same
// call, which read the counts through row_n() and the codes from mask_summary() on.
//
// Bindings: BIND_MASK, BIND_COEF (read), BIND_NVIS (write). Grid: x = query rows i from
// pc.row_base, y = mask heads hm (Hq with FL_MASK_HEADS, else 1), z = batch items. One workgroup
// a row, an invocation a chunk at a time; codes gathered into words and the count summed through
// shared memory (no subgroup needed). WG is a multiple of MASK_CODES (the host sets 64).
#include "attn_common.glsl"

shared uint red[WG];
shared uint words[WG / MASK_CODES];

void main()
{
    const uint t = gl_LocalInvocationID.x;
    const uint i = gl_WorkGroupID.x + pc.row_base, hm = gl_WorkGroupID.y, b = gl_WorkGroupID.z;
    if (i >= pc.Lq)
        return;
    const uvec2 kr = kv_range(b, i);
    const uint mrow = mask_row(b, hm, i), srow = mask_summary(b, hm, i), nw = MASK_WORDS(pc.Lk);
    // chunks [c0, c1) hold the row's keys, c0 the first of its word; words outside are 0
    const uint c0 = kr.x / (MASK_CHUNK * MASK_CODES) * MASK_CODES;
    const uint c1 = (kr.y + MASK_CHUNK - 1u) / MASK_CHUNK;
    for (uint w = t; w < nw; w += WG)
        if (w * MASK_CODES < c0 || w * MASK_CODES >= c1)
            nvis[srow + w] = 0u;
    uint n = 0u;
    for (uint cb = c0; cb < c1; cb += WG) {
        if (t < WG / MASK_CODES)
            words[t] = 0u;
        barrier();
        const uint c = cb + t;
        const uint j0 = max(c * MASK_CHUNK, kr.x), j1 = min(c * MASK_CHUNK + MASK_CHUNK, kr.y);
        uint code = 0u;
        for (uint j = j0; j < j1; j += 4u)
            [[unroll]] for (uint u = 0u; u < 4u; u++)
                if (j + u < j1) {
                    const float a = mask_at(mrow, j + u);
                    const bool v = !(a == NEG_INF); // NaN is seen
                    n += v ? 1u : 0u;
                    code |= (v ? 1u : 0u) | (a != 0.0 ? 2u : 0u); // NaN != 0
                }
        if (code != 0u)
            atomicOr(words[t / MASK_CODES], code << (2u * (t % MASK_CODES)));
        barrier();
        if (t < WG / MASK_CODES && cb / MASK_CODES + t < nw)
            nvis[srow + cb / MASK_CODES + t] = words[t];
        barrier();
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
