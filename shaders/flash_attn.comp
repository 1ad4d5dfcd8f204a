#version 450
// Fused SSMax flash attention (DESIGN.md "Fused"), and its split-KV variant (SPLIT = 1).
//
// Bindings: BIND_Q, BIND_K, BIND_V (read), BIND_O, BIND_LSE (write), BIND_COEF (factor
// coefficients); SPLIT = 1 writes BIND_SCR0 (partial O, unnormalised) and BIND_SCR1 (max, sum).
// Grid: x = row blocks of BR packed rows (+ pc.row_base), y = KV head g, z = batch * pc.nsplit.
// Keys of split sp: [sp * split_len, (sp + 1) * split_len). 16 invocations per workgroup.
//
// A workgroup owns BR "packed" rows of one KV head: packed row R = i * G + hh is query row i of
// head g * G + hh, so the G query heads that share a KV head (GQA) read each K/V tile once, and
// rows with equal i (equal causal visibility) sit together. Q is staged scaled by its row factor
// f(n) * scale in fp32 (SPEC.md section 3). Per tile of BC keys:
//   1. K is staged transposed, KV[d][c];
//   2. S = Q K^T as register blocks: invocation (sr, sc) of a 2 x 8 grid owns rows sr + 2i and keys
//      sc + 8j, so each staged word read feeds several multiply-adds;
//   3. the new running max m per row (from -FLT_MAX/2) and the rescale factor: built with SGRED
//      (used where the device has subgroup shuffles and subgroups of 8 or more lanes) the 8 invocations that share a row
//      combine their register maxima with a 3-step shuffle butterfly and keep m in registers;
//      otherwise one invocation per row scans the scores in shared memory;
//   4. P = exp(S - m) for the keys the row sees, a negative mark (-1) for the others; V staged as
//      KV[c][d];
//   5. O += P V as register blocks: invocation (pr, pc) owns rows pr + 2i and columns pc + 8j; in a
//      tile where some row cannot see some key the term is selected away (never multiplied by 0),
//      so NaN in masked V cannot reach O.
// Inference (SPEC.md section 7): each row sees keys [x, y) of kv_range (per batch item, window),
// clipped to the split; the key loop runs from the block's smallest x to its largest y, so a
// window costs O(W) a row. A tile every row sees whole, without a mask, takes the fast steps 3-5
// above; any other tile first stages each score's additive term in Ps (the mask entry, 0, or -inf
// for a hidden key: outside the row's range or a -inf mask entry) and is skipped, before K and V
// are read, when no row of the block sees any of its keys. Logits are capped (softcap) after the
// factor, then the term is added. O is normalised once at the end, with the sink folded into the
// sum (sink_fold; the split-KV merge folds it instead): O = acc / l (l = 0 -> 0),
// LSE = m + ln(l) (l = 0 -> -inf).
#ifdef SGRED // a separate SPIR-V variant, so the other one needs no subgroup capability
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require
#endif
#include "attn_common.glsl"

layout(constant_id = SPEC_BR) const uint BR = 16;
layout(constant_id = SPEC_BC) const uint BC = 32;
layout(constant_id = SPEC_D) const uint D = 64;
layout(constant_id = SPEC_SPLIT) const uint SPLIT = 0;
const uint RS = BR / 2u; // rows per invocation (S and O)
const uint CS = BC / 8u; // keys per invocation (S)
const uint CP = D / 8u;  // columns per invocation (O)
const uint DH = D / 2u;

layout(binding = BIND_SCR0, std430) writeonly buffer BufPO { vec2 part_o[]; };
layout(binding = BIND_SCR1, std430) writeonly buffer BufPM { vec2 part_ml[]; };

shared float Qs[BR * D];   // Q * factor; at the end, the output staged for paired stores
shared float KV[BC * D];   // K^T [D][BC] for the scores, then V [BC][D]
shared float Ps[BR * BC];  // S, then P
shared float Mrow[BR], Arow[BR], Lrow[BR];
shared uint Seen[BR];      // [0], [1]: steps some row sees something in, by parity (see below)

// The logit of a score s (Q already carries the row factor): capped, then its staged additive
// term Ps[e] added (-inf: hidden) unless the tile is full.
float logit(float s, bool full, uint e)
{
    const float z = softcap(s);
    if (full)
        return z;
    const float a = Ps[e];
    return a == NEG_INF ? NEG_INF : z + a;
}

void main()
{
    const uint t = gl_LocalInvocationID.x, gr = t / 8u, gc = t % 8u; // 2 x 8 grid
    // y: batch item and split, z: KV head, so the workgroups of one batch item are spread over
    // the dispatch (drivers that hand out contiguous ranges, lavapipe's threads, balance a
    // padded batch's long and short sequences)
    const uint blk = gl_WorkGroupID.x + pc.row_base, g = gl_WorkGroupID.z;
    const uint b = gl_WorkGroupID.y / pc.nsplit, sp = gl_WorkGroupID.y % pc.nsplit;
    const uint GL = pc.G * pc.Lq;

    for (uint e = t; e < BR * D; e += WG) {
        uint rr = blk * BR + e / D, d = e % D;
        float x = 0.0;
        if (rr < GL) {
            uint ii = rr / pc.G, hq = g * pc.G + rr % pc.G;
            x = LOAD(q_data, pc.q_off, b * st.q_sb + hq * st.q_sh + ii * st.q_sr + d) *
                row_factor(b, hq, ii);
        }
        Qs[e] = x;
    }
    const uint ks = sp * pc.split_len, ke_split = min(ks + pc.split_len, pc.Lk);
    const uint first = blk * BR, last = min(first + BR, GL) - 1u;
    // kv_range grows with the row, so the first and last rows bound the block's ranges.
    const uvec2 rf = kv_range(b, first / pc.G), rl = kv_range(b, last / pc.G);
    const uint ke_wg = min(ke_split, rl.y);      // largest key end in the block
    const uint ke_min = min(ke_split, rf.y);     // smallest
    const uint ks_wg = max(ks, min(rf.x, ke_wg)); // smallest key start
    const uint ks_max = max(ks, rl.x);           // largest
    const bool masked = (pc.flags & FL_MASK) != 0u;
    const uint kbase = b * st.k_sb + g * st.k_sh, k_sr = st.k_sr;
    const uint vbase = b * st.v_sb + g * st.v_sh, v_sr = st.v_sr;
    for (uint r = t; r < BR; r += WG)
        Mrow[r] = M_INIT;
    if (t < 2u)
        Seen[t] = 0u;
    float acc[RS * CP], l[RS], mr[RS]; // output and row sums, folded once per tile (step 5)
    [[unroll]] for (uint k = 0u; k < RS * CP; k++)
        acc[k] = 0.0;
    [[unroll]] for (uint i = 0u; i < RS; i++) {
        l[i] = 0.0;
        mr[i] = M_INIT;
    }
    barrier();

    uint nstep = 0u;
    for (uint kt = ks_wg; kt < ke_wg; kt += BC) {
        nstep++;
        // every row sees every key of this tile, and there is no mask: steps 3-5 need no terms
        const bool full = !masked && kt >= ks_max && kt + BC <= ke_min;
        if (!full) {
            // 0. each score's additive term, staged by the invocation that holds the score: the
            // mask entry (0 without a mask) where the row sees the key, -inf where it does not.
            // Seen[nstep & 1] takes this step's number where some row sees a key: the flag of the
            // step before has the other parity, so no invocation overwrites a flag another one
            // has yet to read (each step has a barrier between the write and the read below).
            bool any = false;
            [[unroll]] for (uint i = 0u; i < RS; i++) {
                // the row's keys [x, y) within the split (none for a padding row), its mask row
                const uint r = gr + 2u * i, R = first + r, ii = R / pc.G;
                const uvec2 kr = R < GL ? kv_range(b, ii) : uvec2(0u);
                const uint x = max(kr.x, ks), y = min(kr.y, ke_split);
                const uint mb = masked ? mask_row(b, g * pc.G + R % pc.G, ii) : 0u;
                [[unroll]] for (uint j = 0u; j < CS; j++) {
                    const uint c = gc + 8u * j, key = kt + c;
                    bool v = key >= x && key < y;
                    float a = 0.0;
                    if (masked && v) {
                        a = mask_at(mb, key);
                        v = !(a == NEG_INF); // NaN is seen (and makes the row NaN)
                    }
                    any = any || v;
                    Ps[r * BC + c] = v ? a : NEG_INF;
                }
            }
            if (any)
                Seen[nstep & 1u] = nstep;
            barrier();
            if (Seen[nstep & 1u] != nstep)
                continue; // no row sees a key of this tile: K and V are not read
        }
        // 1. K^T (4 words an iteration)
        for (uint e = 4u * t; e < BC * D; e += 4u * WG) {
            const uint c = e / D, d = e % D, j = kt + c;
            vec4 x = j < ke_wg ? LOAD4(k_data, pc.k_off, kbase + j * k_sr + d) : vec4(0.0);
            [[unroll]] for (uint u = 0u; u < 4u; u++)
                KV[(d + u) * BC + c] = x[u];
        }
        barrier();
        // 2. S block: rows gr + 2i, keys gc + 8j
        float s[RS * CS];
        [[unroll]] for (uint k = 0u; k < RS * CS; k++)
            s[k] = 0.0;
        for (uint d = 0u; d < D; d++) {
            float q[RS], kk[CS];
            [[unroll]] for (uint i = 0u; i < RS; i++)
                q[i] = Qs[(gr + 2u * i) * D + d];
            [[unroll]] for (uint j = 0u; j < CS; j++)
                kk[j] = KV[d * BC + gc + 8u * j];
            [[unroll]] for (uint i = 0u; i < RS; i++)
                [[unroll]] for (uint j = 0u; j < CS; j++)
                    s[i * CS + j] = fma(q[i], kk[j], s[i * CS + j]);
        }
        float ar[RS];
#ifdef SGRED
        {
            // 3. (subgroups) max over the row's keys in registers, then across the 8 invocations
            // that hold the row (lanes t ^ 1, 2, 4 of the same subgroup); 4. P for the block.
            barrier(); // every invocation is done reading K before V overwrites it below
            const uint lane = gl_SubgroupInvocationID;
            [[unroll]] for (uint i = 0u; i < RS; i++) {
                float mt = mr[i];
                [[unroll]] for (uint j = 0u; j < CS; j++) {
                    const float z = logit(s[i * CS + j], full, (gr + 2u * i) * BC + gc + 8u * j);
                    s[i * CS + j] = z;
                    mt = max(mt, z); // -inf (hidden) changes nothing: mt starts finite
                }
                mt = max(mt, subgroupShuffle(mt, lane ^ 1u));
                mt = max(mt, subgroupShuffle(mt, lane ^ 2u));
                mt = max(mt, subgroupShuffle(mt, lane ^ 4u));
                ar[i] = exp(mr[i] - mt);
                mr[i] = mt;
                [[unroll]] for (uint j = 0u; j < CS; j++) {
                    const float z = s[i * CS + j];
                    Ps[(gr + 2u * i) * BC + gc + 8u * j] = z == NEG_INF ? -1.0 : exp(z - mt);
                }
            }
        }
#else
        {
            [[unroll]] for (uint i = 0u; i < RS; i++)
                [[unroll]] for (uint j = 0u; j < CS; j++) {
                    const uint e = (gr + 2u * i) * BC + gc + 8u * j;
                    s[i * CS + j] = logit(s[i * CS + j], full, e);
                    Ps[e] = s[i * CS + j];
                }
            barrier();
            // 3. row max and rescale factor (hidden keys are -inf: they change nothing)
            for (uint r = t; r < BR; r += WG) {
                float mo = Mrow[r], mt = mo;
                for (uint c0 = 0u; c0 < BC; c0 += 4u)
                    [[unroll]] for (uint u = 0u; u < 4u; u++)
                        mt = max(mt, Ps[r * BC + c0 + u]);
                Mrow[r] = mt;
                Arow[r] = exp(mo - mt);
            }
            barrier();
            // 4. P for the block; V (K is no longer read)
            [[unroll]] for (uint i = 0u; i < RS; i++) {
                const uint r = gr + 2u * i;
                const float m = Mrow[r];
                ar[i] = Arow[r];
                [[unroll]] for (uint j = 0u; j < CS; j++) {
                    const float z = s[i * CS + j];
                    Ps[r * BC + gc + 8u * j] = z == NEG_INF ? -1.0 : exp(z - m);
                }
            }
        }
#endif
        for (uint e = 4u * t; e < BC * D; e += 4u * WG) {
            const uint j = kt + e / D;
            vec4 x = j < ke_wg ? LOAD4(v_data, pc.v_off, vbase + j * v_sr + e % D) : vec4(0.0);
            [[unroll]] for (uint u = 0u; u < 4u; u++)
                KV[e + u] = x[u];
        }
        barrier();
        // 5. O block: rows gr + 2i, columns gc + 8j, as blocked sums: the tile's terms go to
        // fresh partials (pl, tacc), folded into the running l and acc once per tile. Summed key
        // by key into the running totals, a long row's small terms are lost against the large
        // totals (NMSE 1e-7 over 1M keys); one fold per tile loses BC times less. l and acc take
        // the same scheme, so their errors stay alike (V = 1 gives exactly 1).
        float pl[RS], tacc[RS * CP];
        [[unroll]] for (uint i = 0u; i < RS; i++)
            pl[i] = 0.0;
        [[unroll]] for (uint k = 0u; k < RS * CP; k++)
            tacc[k] = 0.0;
        if (full) {
            for (uint c = 0u; c < BC; c++) {
                float p[RS], v[CP];
                [[unroll]] for (uint i = 0u; i < RS; i++)
                    p[i] = Ps[(gr + 2u * i) * BC + c];
                [[unroll]] for (uint j = 0u; j < CP; j++)
                    v[j] = KV[c * D + gc + 8u * j];
                [[unroll]] for (uint i = 0u; i < RS; i++) {
                    pl[i] += p[i];
                    [[unroll]] for (uint j = 0u; j < CP; j++)
                        tacc[i * CP + j] = fma(p[i], v[j], tacc[i * CP + j]);
                }
            }
        } else {
            for (uint c = 0u; c < BC; c++) {
                float p[RS], v[CP];
                [[unroll]] for (uint i = 0u; i < RS; i++)
                    p[i] = Ps[(gr + 2u * i) * BC + c];
                [[unroll]] for (uint j = 0u; j < CP; j++)
                    v[j] = KV[c * D + gc + 8u * j];
                [[unroll]] for (uint i = 0u; i < RS; i++) {
                    const bool seen = !(p[i] < 0.0); // the -1 mark: hidden (NaN is seen)
                    pl[i] += seen ? p[i] : 0.0;
                    [[unroll]] for (uint j = 0u; j < CP; j++)
                        tacc[i * CP + j] += seen ? p[i] * v[j] : 0.0; // select: NaN stays out
                }
            }
        }
        [[unroll]] for (uint i = 0u; i < RS; i++) {
            l[i] = fma(l[i], ar[i], pl[i]);
            [[unroll]] for (uint j = 0u; j < CP; j++)
                acc[i * CP + j] = fma(acc[i * CP + j], ar[i], tacc[i * CP + j]);
        }
        barrier();
    }

    // Stage the normalised (or partial) output in Qs, then store column pairs; each row's final
    // max and sum go to Arow and Lrow (Mrow may still be read by the other invocations).
    [[unroll]] for (uint i = 0u; i < RS; i++) {
        const uint r = gr + 2u * i, R = min(first + r, GL - 1u);
#ifdef SGRED
        float m = mr[i];
#else
        float m = Mrow[r];
#endif
        float lr = l[i], inv = 1.0;
        if (SPLIT == 0u) {
            inv = sink_fold(g * pc.G + R % pc.G, m, lr);
            inv = lr == 0.0 ? 0.0 : inv / lr;
        }
        [[unroll]] for (uint j = 0u; j < CP; j++)
            Qs[r * D + gc + 8u * j] = acc[i * CP + j] * inv;
        if (gc == 0u) {
            Lrow[r] = lr;
            Arow[r] = m;
        }
    }
    barrier();
    for (uint e = t; e < BR * DH; e += WG) {
        const uint r = e / DH, p2 = e % DH, R = first + r;
        if (R >= GL)
            continue;
        const uint i = R / pc.G, h = g * pc.G + R % pc.G, row = (b * pc.Hq + h) * pc.Lq + i;
        const vec2 o = vec2(Qs[r * D + 2u * p2], Qs[r * D + 2u * p2 + 1u]);
        const float m = Arow[r], lr = Lrow[r];
        if (SPLIT == 0u) {
            store_o2(b * st.o_sb + h * st.o_sh + i * st.o_sr + 2u * p2, o);
            if (p2 == 0u && pc.want_lse != 0u)
                lse_data[pc.lse_off + row] = lr == 0.0 ? NEG_INF : m + log(lr);
        } else {
            const uint prow = sp * (pc.B * pc.Hq * pc.Lq) + row;
            part_o[prow * DH + p2] = o;
            if (p2 == 0u)
                part_ml[prow] = vec2(m, lr);
        }
    }
}
