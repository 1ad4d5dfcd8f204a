#version 450
// Unfused path, step 1: S = f(n) * scale * Q K^T for a chunk of rows, into the scores scratch.
//
// Bindings: BIND_Q, BIND_K, BIND_COEF (read), BIND_SCR0 scores [bh][i_count][Lk] (write).
// Grid: x = key tiles of 16, y = row tiles of 16 within rows [chunk_i0, chunk_i0 + chunk_ni), z = (batch, head)
// pairs from pc.row_base. 16 x 16 invocations, one score each; D is consumed 8 at a time through
// shared memory. A visible key's score is its final logit (SPEC.md section 7.3: factor, cap, then
// the mask entry); a key the row does not see (outside kv_range, or a -inf mask entry) is written
// as -inf, which softmax.comp and pv.comp take as hidden.
#include "attn_common.glsl"

layout(constant_id = SPEC_D) const uint D = 64;

layout(binding = BIND_SCR0, std430) writeonly buffer BufS { float scores[]; };

shared float Qt[16 * 8];
shared float Kt[16 * 8];

void main()
{
    const uint t = gl_LocalInvocationID.x, ty = t / 16u, tx = t % 16u;
    const uint bh = pc.row_base + gl_WorkGroupID.z, b = bh / pc.Hq, h = bh % pc.Hq, g = h / pc.G;
    const uint i0 = pc.chunk_i0 + gl_WorkGroupID.y * 16u, j0 = gl_WorkGroupID.x * 16u;
    const uint iend = pc.chunk_i0 + pc.chunk_ni;
    const uint qbase = b * st.q_sb + h * st.q_sh, q_sr = st.q_sr;
    const uint kbase = b * st.k_sb + g * st.k_sh, k_sr = st.k_sr;
    // A tile of keys no row of the tile sees (before the first row's range starts, or past the
    // last row's end: kv_range grows with the row) is never read: softmax.comp and pv.comp read
    // only each row's range. So a window costs O(W) a row here too.
    if (i0 >= iend || j0 >= kv_range(b, min(i0 + 15u, iend - 1u)).y || j0 + 16u <= kv_range(b, i0).x)
        return;
    float s = 0.0;
    for (uint d0 = 0u; d0 < D; d0 += 8u) {
        if (t < 128u) {
            uint rr = t / 8u, dd = t % 8u, ii = i0 + rr;
            Qt[t] = ii < iend ? LOAD(q_data, pc.q_off, qbase + ii * q_sr + d0 + dd) : 0.0;
        } else {
            uint u = t - 128u, cc = u / 8u, dd = u % 8u, jj = j0 + cc;
            Kt[u] = jj < pc.Lk ? LOAD(k_data, pc.k_off, kbase + jj * k_sr + d0 + dd) : 0.0;
        }
        barrier();
        [[unroll]] for (uint dd = 0u; dd < 8u; dd++)
            s += Qt[ty * 8u + dd] * Kt[tx * 8u + dd];
        barrier();
    }
    const uint i = i0 + ty, j = j0 + tx;
    if (i < iend && j < pc.Lk) {
        const uvec2 kr = kv_range(b, i);
        float v = NEG_INF;
        if (j >= kr.x && j < kr.y) {
            const float a = (pc.flags & FL_MASK) != 0u ? mask_at(mask_row(b, h, i), j) : 0.0;
            if (!(a == NEG_INF)) // NaN is seen (and makes the row NaN)
                v = softcap(s * row_factor(b, h, i)) + a;
        }
        scores[((gl_WorkGroupID.z * pc.chunk_ni) + (i - pc.chunk_i0)) * pc.Lk + j] = v;
    }
}
