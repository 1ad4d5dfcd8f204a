// SSMax attention kernels: fused flash attention (and its split-KV form), the split merge, and
// the unfused QK^T / softmax / PV path, and mask_count. The same algorithms as shaders/*.comp;
// see there and DESIGN.md for the scheme. Keys outside every row's range (SPEC.md section 7.2)
// are skipped by loop bounds; a key hidden from one row (its range, the mask's -inf) is selected
// away, never multiplied by 0: a hidden K or V may hold NaN.
// Built with -DLANES=1 the program holds the GPU kernel (flash_rowgroups, below) and the merge
// instead: its tile defines differ (BR, BC, LPR, WG, MR).
#include "attn_common.clh"

// The arguments of every fused kernel (flash_attn, flash_rowgroups and their split forms).
#define FLASH_ARGS                                                                                 \
    __constant uint *P, __global const float *coef, __global const io_t *q,                        \
        __global const io_t *k, __global const io_t *v, __global io_t *o, __global float *lse,      \
        __global float2 *part_o, __global float2 *part_ml, __global const uint *mask,              \
        __global const uint *nvis, uint row_base

#ifndef LANES
inline float2 kv_pair(__local const float4 *T, uint c, uint p)
{
    float4 x = T[c * D4 + (p >> 1)];
    return (p & 1u) ? x.zw : x.xy;
}

// Fused flash attention; 16 work-items as a 2 x 8 grid hold register blocks of (BR/2) x (BC/8)
// scores and (BR/2) x (D/8) outputs (see shaders/flash_attn.comp for the scheme, steps 1-5).
#define FWG 16u
#define RS (BR / 2)
#define CS (BC / 8)
#define CP (D / 8)
// Which keys (scores) and output columns work-item column gc holds: interleaved (gc + 8j) spreads
// neighbouring work-items over neighbouring local-memory words (GPUs); CHUNKED (gc * n + j) gives
// each work-item a contiguous run, which CPU compilers turn into vector loads and FMAs.
#ifdef CHUNKED
#define KCOL(j) (gc * CS + (j))
#define OCOL(j) (gc * CP + (j))
#else
#define KCOL(j) (gc + 8u * (j))
#define OCOL(j) (gc + 8u * (j))
#endif

inline void flash_body(__constant uint *P, __global const float *coef, __global const io_t *q,
                       __global const io_t *k, __global const io_t *v, __global io_t *o,
                       __global float *lse, __global float2 *part_o, __global float2 *part_ml,
                       __global const uint *mask, __global const uint *nvis, uint row_base,
                       const uint split, __local float *Qs, __local float *KV, __local float *Ps,
                       __local float *Mrow, __local float *Arow, __local float *Lrow,
                       __local uint *Flag)
{
    const uint t = get_local_id(0), gr = t / 8u, gc = t % 8u;
    // y: batch item and split, z: KV head (drivers that hand out contiguous ranges of work-groups
    // then balance a padded batch's long and short sequences)
    const uint blk = get_group_id(0) + row_base, g = get_group_id(2);
    const uint b = get_group_id(1) / PV(nsplit), sp = get_group_id(1) % PV(nsplit);
    const uint GL = PV(G) * PV(Lq);
    for (uint e = t; e < BR * D; e += FWG) {
        uint rr = blk * BR + e / D, d = e % D;
        float x = 0.0f;
        if (rr < GL) {
            uint ii = rr / PV(G), hq = g * PV(G) + rr % PV(G);
            x = LD(q, PV(q_off), b * SV(q_sb) + hq * SV(q_sh) + ii * SV(q_sr) + d) *
                row_factor(P, coef, nvis, b, hq, ii);
        }
        Qs[e] = x;
    }
    const uint ks = sp * PV(split_len), ke_split = min(ks + PV(split_len), PV(Lk));
    const uint first = blk * BR, last = min(first + BR, GL) - 1u;
    // A row's range starts and ends no earlier than the row before it: the work-group's keys are
    // [first row's start, last row's end), and every row sees [last row's start, first row's end)
    // before the mask.
    const uint2 kr0 = kv_range(P, coef, b, first / PV(G)), kr1 = kv_range(P, coef, b, last / PV(G));
    const uint kb_wg = max(ks, kr0.x), ke_wg = min(ke_split, kr1.y);
    const uint kb_all = kr1.x, ke_all = min(ke_split, kr0.y);
    const bool masked = (PV(flags) & FL_MASK) != 0u;
    const uint kbase = b * SV(k_sb) + g * SV(k_sh), k_sr = SV(k_sr);
    const uint vbase = b * SV(v_sb) + g * SV(v_sh), v_sr = SV(v_sr);
    for (uint r = t; r < BR; r += FWG)
        Mrow[r] = M_INIT;
    if (t < 2u)
        Flag[t] = 0u;
    float acc[RS * CP], l[RS];
    for (uint kk = 0u; kk < RS * CP; kk++)
        acc[kk] = 0.0f;
    for (uint i = 0u; i < RS; i++)
        l[i] = 0.0f;
    barrier(CLK_LOCAL_MEM_FENCE);
    uint tn = 0u;
    for (uint kt = kb_wg; kt < ke_wg; kt += BC, tn++) {
        // Every row sees every key of the tile: no bias, no selection.
        const bool full = !masked && kt >= kb_all && kt + BC <= ke_all;
        // 0. Else what each row sees of the tile: Ps holds the key's bias (its mask entry, 0
        // without a mask; -inf: hidden). Flag[tn % 2] says whether any row sees any key: a tile
        // no row sees (the mask hides it) is skipped before its K and V are read. The flag of
        // the tile before was read before that tile's last barrier: it is cleared for the next.
        if (t == 0u)
            Flag[(tn + 1u) & 1u] = 0u;
        bool seen = false;
        for (uint e = t; !full && e < BR * BC; e += FWG) {
            const uint r = e / BC, R = first + r;
            float bias = -INFINITY;
            if (R < GL) {
                const uint i = R / PV(G);
                uint2 kr = kv_range(P, coef, b, i);
                kr = (uint2)(max(kr.x, ks), min(kr.y, ke_split));
                bias = key_bias(P, mask, kr, mask_row(P, coef, b, g * PV(G) + R % PV(G), i),
                                kt + e % BC);
            }
            Ps[e] = bias;
            seen = seen || bias != -INFINITY;
        }
        if (seen)
            Flag[tn & 1u] = 1u;
        if (!full) {
            barrier(CLK_LOCAL_MEM_FENCE);
            if (Flag[tn & 1u] == 0u) { // the same for every work-item
                barrier(CLK_LOCAL_MEM_FENCE); // every work-item has read the flag
                continue;
            }
        }
        for (uint e = 4u * t; e < BC * D; e += 4u * FWG) {
            const uint c = e / D, d = e % D, j = kt + c;
            float4 x = j < ke_wg ? LD4(k, PV(k_off), kbase + j * k_sr + d) : (float4)(0.0f);
            KV[d * BC + c] = x.x;
            KV[(d + 1u) * BC + c] = x.y;
            KV[(d + 2u) * BC + c] = x.z;
            KV[(d + 3u) * BC + c] = x.w;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        float s[RS * CS];
        for (uint kk = 0u; kk < RS * CS; kk++)
            s[kk] = 0.0f;
        for (uint d = 0u; d < D; d++) {
            float qv[RS], kv[CS];
            for (uint i = 0u; i < RS; i++)
                qv[i] = Qs[(gr + 2u * i) * D + d];
            for (uint j = 0u; j < CS; j++)
                kv[j] = KV[d * BC + KCOL(j)];
            for (uint i = 0u; i < RS; i++)
                for (uint j = 0u; j < CS; j++)
                    s[i * CS + j] = fma(qv[i], kv[j], s[i * CS + j]);
        }
        // The logits (factor in Q, then cap and bias; -inf where hidden) over the biases.
        for (uint i = 0u; i < RS; i++)
            for (uint j = 0u; j < CS; j++) {
                const uint x = (gr + 2u * i) * BC + KCOL(j);
                s[i * CS + j] = key_logit(P, s[i * CS + j], full ? 0.0f : Ps[x]);
                Ps[x] = s[i * CS + j];
            }
        barrier(CLK_LOCAL_MEM_FENCE);
        for (uint r = t; r < BR; r += FWG) {
            float mo = Mrow[r], mt = mo;
            for (uint c = 0u; c < BC; c++)
                mt = fmax(mt, Ps[r * BC + c]);
            Mrow[r] = mt;
            Arow[r] = exp(mo - mt);
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        for (uint i = 0u; i < RS; i++) {
            const uint r = gr + 2u * i;
            const float m = Mrow[r];
            for (uint j = 0u; j < CS; j++) // a hidden key (-inf): -0.0, skipped below
                Ps[r * BC + KCOL(j)] = s[i * CS + j] == -INFINITY ? -0.0f : exp(s[i * CS + j] - m);
        }
        for (uint e = 4u * t; e < BC * D; e += 4u * FWG) {
            const uint j = kt + e / D;
            vstore4(j < ke_wg ? LD4(v, PV(v_off), vbase + j * v_sr + e % D) : (float4)(0.0f), 0, KV + e);
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        // Blocked sums: the tile's terms go to fresh partials (pl, tacc), folded into the running
        // l and acc once per tile. Summed key by key into the running totals, a long row's small
        // terms are lost against the large totals (NMSE 1e-7 over 1M keys); one fold per tile
        // loses BC times less. l and acc take the same scheme, so their errors stay alike (V = 1
        // gives exactly 1).
        float a[RS], pl[RS], tacc[RS * CP];
        for (uint i = 0u; i < RS; i++) {
            a[i] = Arow[gr + 2u * i];
            pl[i] = 0.0f;
        }
        for (uint kk = 0u; kk < RS * CP; kk++)
            tacc[kk] = 0.0f;
        // Unless every row sees every key of the tile, a key weighs -0.0 where a row does not
        // see it, and is selected away; a key the row sees whose weight underflowed to +0.0 is
        // multiplied, so NaN in its V reaches O as in the reference.
        for (uint c = 0u; c < BC; c++) {
            float pv_[RS], vv[CP];
            for (uint i = 0u; i < RS; i++)
                pv_[i] = Ps[(gr + 2u * i) * BC + c];
            for (uint j = 0u; j < CP; j++)
                vv[j] = KV[c * D + OCOL(j)];
            for (uint i = 0u; i < RS; i++) {
                pl[i] += pv_[i];
                if (full || as_uint(pv_[i]) != 0x80000000u) // hidden: skipped, never multiplied
                    for (uint j = 0u; j < CP; j++)
                        tacc[i * CP + j] = fma(pv_[i], vv[j], tacc[i * CP + j]);
            }
        }
        for (uint i = 0u; i < RS; i++) {
            l[i] = fma(l[i], a[i], pl[i]);
            for (uint j = 0u; j < CP; j++)
                acc[i * CP + j] = fma(acc[i * CP + j], a[i], tacc[i * CP + j]);
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    // The sink joins each row's denominator (not a split's: the merge folds it once).
    for (uint i = 0u; i < RS; i++) {
        const uint r = gr + 2u * i, hq = g * PV(G) + (first + r) % PV(G);
        float m = Mrow[r], li = l[i];
        const float a = split ? 1.0f : sink_fold(P, coef, hq, &m, &li);
        const float inv = split ? 1.0f : (li == 0.0f ? 0.0f : a / li);
        for (uint j = 0u; j < CP; j++)
            Qs[r * D + OCOL(j)] = acc[i * CP + j] * inv;
        if (gc == 0u) {
            Lrow[r] = li;
            Arow[r] = m;
        }
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint e = t; e < BR * (D / 2u); e += FWG) {
        const uint r = e / (D / 2u), p2 = e % (D / 2u), R = first + r;
        if (R >= GL)
            continue;
        const uint i = R / PV(G), h = g * PV(G) + R % PV(G), row = (b * PV(Hq) + h) * PV(Lq) + i;
        const float2 ov = (float2)(Qs[r * D + 2u * p2], Qs[r * D + 2u * p2 + 1u]);
        const float m = Arow[r], lr = Lrow[r];
        if (!split) {
            ST2(o, PV(o_off), b * SV(o_sb) + h * SV(o_sh) + i * SV(o_sr) + 2u * p2, ov);
            if (p2 == 0u && PV(want_lse))
                lse[PV(lse_off) + row] = lr == 0.0f ? -INFINITY : m + log(lr);
        } else {
            const uint prow = sp * (PV(B) * PV(Hq) * PV(Lq)) + row;
            part_o[prow * (D / 2u) + p2] = ov;
            if (p2 == 0u)
                part_ml[prow] = (float2)(m, lr);
        }
    }
}

#define FLASH_LOCALS                                                                               \
    __local float Qs[BR * D], KV[BC * D], Ps[BR * BC], Mrow[BR], Arow[BR], Lrow[BR];               \
    __local uint Flag[BR]

__kernel __attribute__((reqd_work_group_size(16, 1, 1))) void flash_attn(FLASH_ARGS)
{
    FLASH_LOCALS;
    flash_body(P, coef, q, k, v, o, lse, part_o, part_ml, mask, nvis, row_base, 0u, Qs, KV, Ps,
               Mrow, Arow, Lrow, Flag);
}

__kernel __attribute__((reqd_work_group_size(16, 1, 1))) void flash_attn_split(FLASH_ARGS)
{
    FLASH_LOCALS;
    flash_body(P, coef, q, k, v, o, lse, part_o, part_ml, mask, nvis, row_base, 1u, Qs, KV, Ps,
               Mrow, Arow, Lrow, Flag);
}

#endif

// Split-KV merge with the log-sum-exp rule, then the row's sink (once); one work-group of 64 per
// row.
__kernel __attribute__((reqd_work_group_size(64, 1, 1))) void split_merge(
    __constant uint *P, __global const float *coef, __global const float2 *part_o,
    __global const float2 *part_ml, __global io_t *o, __global float *lse)
{
    const uint rows = PV(B) * PV(Hq) * PV(Lq), row = get_group_id(0), t = get_local_id(0);
    float M = M_INIT;
    for (uint s = 0u; s < PV(nsplit); s++)
        M = fmax(M, part_ml[s * rows + row].x);
    float L = 0.0f;
    for (uint s = 0u; s < PV(nsplit); s++) {
        float2 ml = part_ml[s * rows + row];
        L += ml.y * exp(ml.x - M);
    }
    const uint i = row % PV(Lq), h = (row / PV(Lq)) % PV(Hq), b = row / (PV(Lq) * PV(Hq));
    const float Msplit = M, a = sink_fold(P, coef, h, &M, &L);
    const float inv = L == 0.0f ? 0.0f : a / L;
    const uint orow = b * SV(o_sb) + h * SV(o_sh) + i * SV(o_sr);
    for (uint p = t; p < D / 2u; p += 64u) {
        float2 acc = (float2)(0.0f);
        for (uint s = 0u; s < PV(nsplit); s++) {
            float2 ml = part_ml[s * rows + row];
            if (ml.y != 0.0f)
                acc += part_o[(s * rows + row) * (D / 2u) + p] * exp(ml.x - Msplit);
        }
        ST2(o, PV(o_off), orow + 2u * p, acc * inv);
    }
    if (t == 0u && PV(want_lse))
        lse[PV(lse_off) + row] = L == 0.0f ? -INFINITY : M + log(L);
}

// With a mask: each mask row's visible keys (the keys of its range whose entry is not -inf), n of
// the row factor (row_n), before the call's other kernels. One work-group of 64 per mask row
// (b, hm, i), hm a query head with FL_MASK_HEADS, else 0.
__kernel __attribute__((reqd_work_group_size(64, 1, 1))) void mask_count(
    __constant uint *P, __global const float *coef, __global const uint *mask,
    __global uint *nvis)
{
    __local uint red[64];
    const uint t = get_local_id(0), row = get_group_id(0);
    const uint Hm = (PV(flags) & FL_MASK_HEADS) ? PV(Hq) : 1u;
    const uint i = row % PV(Lq), hm = (row / PV(Lq)) % Hm, b = row / (PV(Lq) * Hm);
    const uint2 kr = kv_range(P, coef, b, i);
    const uint mrow = mask_row(P, coef, b, hm, i);
    uint n = 0u;
    for (uint j = kr.x + t; j < kr.y; j += 64u)
        n += mask_at(P, mask, mrow, j) != -INFINITY ? 1u : 0u;
    red[t] = n;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint s = 32u; s > 0u; s >>= 1) {
        if (t < s)
            red[t] += red[t + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (t == 0u)
        nvis[row] = red[0];
}

#ifndef LANES
// Unfused 1: the logits (f * scale * Q K^T, capped, plus the mask) for rows [i0, i0 + ni) of
// (batch, head) pairs from bh0, -inf for every key a row does not see. 16 x 16 work-items
// (flattened to 256), one logit each; a tile of keys outside every row's range is not read.
__kernel __attribute__((reqd_work_group_size(256, 1, 1))) void qk(
    __constant uint *P, __global const float *coef, __global const io_t *q,
    __global const io_t *k, __global const uint *mask, __global const uint *nvis,
    __global float *scores, uint bh0, uint i0, uint ni)
{
    __local float Qt[16 * 8], Kt[16 * 8];
    const uint t = get_local_id(0), ty = t / 16u, tx = t % 16u;
    const uint zz = get_group_id(2), bh = bh0 + zz, b = bh / PV(Hq), h = bh % PV(Hq), g = h / PV(G);
    const uint ib = i0 + get_group_id(1) * 16u, jb = get_group_id(0) * 16u, iend = i0 + ni;
    const uint qbase = b * SV(q_sb) + h * SV(q_sh), q_sr = SV(q_sr);
    const uint kbase = b * SV(k_sb) + g * SV(k_sh), k_sr = SV(k_sr);
    const uint2 kr0 = kv_range(P, coef, b, ib), kr1 = kv_range(P, coef, b, min(ib + 16u, iend) - 1u);
    const bool live = jb < kr1.y && jb + 16u > kr0.x; // the same for the whole work-group
    float s = 0.0f;
    for (uint d0 = 0u; live && d0 < D; d0 += 8u) {
        if (t < 128u) {
            uint ii = ib + t / 8u;
            Qt[t] = ii < iend ? LD(q, PV(q_off), qbase + ii * q_sr + d0 + t % 8u) : 0.0f;
        } else {
            uint u = t - 128u, jj = jb + u / 8u;
            Kt[u] = jj < PV(Lk) ? LD(k, PV(k_off), kbase + jj * k_sr + d0 + u % 8u) : 0.0f;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        for (uint dd = 0u; dd < 8u; dd++)
            s += Qt[ty * 8u + dd] * Kt[tx * 8u + dd];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const uint i = ib + ty, j = jb + tx;
    if (i < iend && j < PV(Lk)) {
        float z = -INFINITY;
        if (live) {
            const float bias = key_bias(P, mask, kv_range(P, coef, b, i),
                                        mask_row(P, coef, b, h, i), j);
            z = key_logit(P, s * row_factor(P, coef, nvis, b, h, i), bias);
        }
        scores[(zz * ni + (i - i0)) * PV(Lk) + j] = z;
    }
}

// Unfused 2: row softmax in place (hidden keys exactly 0), the sink in the denominator, and LSE.
// One work-group of 64 per row.
__kernel __attribute__((reqd_work_group_size(64, 1, 1))) void softmax_rows(
    __constant uint *P, __global const float *coef, __global float *scores, __global float *lse,
    uint bh0, uint i0, uint ni)
{
    __local float red[64];
    const uint t = get_local_id(0), x = get_group_id(0), y = get_group_id(1);
    const uint i = i0 + x, bh = bh0 + y, base = (y * ni + x) * PV(Lk);
    const uint2 kr = kv_range(P, coef, bh / PV(Hq), i);
    const uint n0 = kr.x, n = kr.y;
    float m = M_INIT;
    for (uint j = n0 + t; j < n; j += 64u)
        m = fmax(m, scores[base + j]);
    red[t] = m;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint s = 32u; s > 0u; s >>= 1) {
        if (t < s)
            red[t] = fmax(red[t], red[t + s]);
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    m = red[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    float l = 0.0f;
    for (uint j = n0 + t; j < n; j += 64u)
        l += exp(scores[base + j] - m); // hidden: exp(-inf) = 0
    red[t] = l;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint s = 32u; s > 0u; s >>= 1) {
        if (t < s)
            red[t] += red[t + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    l = red[0];
    sink_fold(P, coef, bh % PV(Hq), &m, &l);
    const float inv = l == 0.0f ? 0.0f : 1.0f / l;
    for (uint j = t; j < PV(Lk); j += 64u)
        scores[base + j] = j >= n0 && j < n ? exp(scores[base + j] - m) * inv : 0.0f;
    if (t == 0u && PV(want_lse))
        lse[PV(lse_off) + bh * PV(Lq) + i] = l == 0.0f ? -INFINITY : m + log(l);
}

// Unfused 3: O = P V, BR rows of one (batch, head) per work-group.
__kernel __attribute__((reqd_work_group_size(WG, 1, 1))) void pv(
    __constant uint *P, __global const float *coef, __global const float *probs,
    __global const io_t *v, __global io_t *o, __global const uint *mask, uint bh0, uint i0,
    uint ni)
{
    __local float Ps[BR * BC];
    __local float4 Vs[BC * D4];
    const uint t = get_local_id(0), r = t / TPR, tr = t % TPR;
    const uint y = get_group_id(1), bh = bh0 + y, b = bh / PV(Hq), h = bh % PV(Hq), g = h / PV(G);
    const uint ib = i0 + get_group_id(0) * BR, iend = i0 + ni, i = ib + r;
    const bool valid = i < iend;
    const uint2 kr = valid ? kv_range(P, coef, b, i) : (uint2)(0u);
    const uint kb_wg = kv_range(P, coef, b, ib).x, nwg = kv_end(P, coef, b, min(ib + BR, iend) - 1u);
    const uint pbase = (y * ni + (ib - i0)) * PV(Lk);
    const uint vbase = b * SV(v_sb) + g * SV(v_sh), v_sr = SV(v_sr);
    float2 acc[DP];
    for (uint kk = 0u; kk < DP; kk++)
        acc[kk] = (float2)(0.0f);
    for (uint kt = kb_wg; kt < nwg; kt += BC) {
        for (uint e = t; e < BR * BC; e += WG) {
            uint rr = e / BC, j = kt + e % BC;
            float pw = ib + rr < iend && j < PV(Lk) ? probs[pbase + rr * PV(Lk) + j] : 0.0f;
            // A key the mask hides: -0.0 here, never multiplied. A key the row sees whose weight
            // is 0 (underflow) stays +0.0 and is, so NaN in its V reaches O as in the reference.
            if ((PV(flags) & FL_MASK) && ib + rr < iend && j < PV(Lk) &&
                mask_at(P, mask, mask_row(P, coef, b, h, ib + rr), j) == -INFINITY)
                pw = -0.0f;
            Ps[e] = pw;
        }
        for (uint e = t; e < BC * D4; e += WG) {
            uint j = kt + e / D4;
            Vs[e] = j < PV(Lk) ? LD4(v, PV(v_off), vbase + j * v_sr + 4u * (e % D4)) : (float4)(0.0f);
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        // A blocked sum: the tile's terms from 0, then one add to the running total (key by key
        // into it, a long row's small terms were lost: NMSE 2e-6 over 1M keys of one sign).
        // The row's keys of the tile; one the mask hides is -0.0 in Ps and skipped (its V may
        // be NaN).
        const uint cmin = (uint)clamp((int)kr.x - (int)kt, 0, (int)BC);
        const uint cmax = (uint)clamp((int)kr.y - (int)kt, 0, (int)BC);
        float2 tacc[DP];
        for (uint kk = 0u; kk < DP; kk++)
            tacc[kk] = (float2)(0.0f);
        for (uint c = cmin; c < cmax; c++) {
            const float p = Ps[r * BC + c];
            if (as_uint(p) != 0x80000000u)
                for (uint kk = 0u; kk < DP; kk++)
                    tacc[kk] += p * kv_pair(Vs, c, tr + TPR * kk);
        }
        for (uint kk = 0u; kk < DP; kk++)
            acc[kk] += tacc[kk];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (valid)
        for (uint kk = 0u; kk < DP; kk++)
            ST2(o, PV(o_off), b * SV(o_sb) + h * SV(o_sh) + i * SV(o_sr) + 2u * (tr + TPR * kk),
                acc[kk]);
}
#else
// Fused flash attention for GPUs (flash_rowgroups), and its split-KV form. Needs no subgroup
// extension: the lanes of a row meet through a little local memory.
//   - a query row is held by LPR neighbouring work-items (lanes), each with DL = D / LPR of its
//     dimensions of the scaled query and of the output accumulator, in registers;
//   - a work-group is WG work-items, SLOTS = WG / LPR row slots. Slot s holds row s % BR, so with
//     SLOTS = BR (prefill) every slot is its own row, and with SLOTS > BR (decode: exactly the rows
//     there are) a row has several slots, its key groups, which take every KGr-th step of its
//     keys and are merged once at the end. Rows are packed as in the other kernels
//     (R = i * G + hh), so the G query heads of one KV head share every K and V read;
//   - per step of BC keys: each lane's partial dot products over its dimensions go to local
//     memory (double-buffered: one barrier a step), every lane of the row sums the LPR partials
//     in the same order (the same score in every lane), then the running max and sum once for
//     the step, and V in the lanes' dimensions. No barrier depends on the row: every work-item
//     runs the same number of steps, masking what its row does not see;
//   - the steps run over the work-group's keys only (from its first row's start to its last
//     row's end: a window costs its width, not the context); a step none of whose keys a row
//     sees (its range, the mask) reads no K or V for that row.
// Hidden keys (range edges, other rows' bounds, the mask's -inf) are selected away, never
// multiplied: NaN or Inf in a hidden key or value never reaches O. f16 storage is converted as it is loaded;
// logits, the factor, running max and sum stay fp32.
#define SLOTS (WG / LPR)
#define KGMIN (SLOTS / BR)            // key groups of every row (1 for prefill)
#define KGMAX ((SLOTS + BR - 1) / BR) // ... of row 0
#define DL (D / LPR)                  // dimensions a lane, even
#define XW (BC * LPR + 4)             // words a slot of the score exchange (4: float4-aligned, and
                                      // neighbouring slots in other local-memory banks)
#define XWORDS (2 * SLOTS * XW)       // two buffers, alternating by step
#define MWORDS (MR * (D + 4))         // key-group merge: MR rows' (max, sum, -, -, o) at a time
#define LWORDS (XWORDS > MWORDS ? XWORDS : MWORDS)

#if DL % 4 == 0
#define LDV(p, off, e) LD4(p, off, e)
#define VT float4
#define VW 4u
#define DOT(a, w_, s) fma(a[u], w_.x, fma(a[u + 1u], w_.y, fma(a[u + 2u], w_.z, fma(a[u + 3u], w_.w, s))))
#elif defined(IO_F16)
#define LDV(p, off, e) vload_half2(0, (p) + (off) + (e))
#define VT float2
#define VW 2u
#define DOT(a, w_, s) fma(a[u], w_.x, fma(a[u + 1u], w_.y, s))
#else
#define LDV(p, off, e) vload2(0, (p) + (off) + (e))
#define VT float2
#define VW 2u
#define DOT(a, w_, s) fma(a[u], w_.x, fma(a[u + 1u], w_.y, s))
#endif

inline void rowgroups_body(__constant uint *P, __global const float *coef, __global const io_t *q,
                           __global const io_t *k, __global const io_t *v, __global io_t *o,
                           __global float *lse, __global float2 *part_o, __global float2 *part_ml,
                           __global const uint *mask, __global const uint *nvis, uint row_base,
                           const uint split, __local float *X)
{
    const uint t = get_local_id(0), lane = t % LPR, slot = t / LPR, r = slot % BR, kgi = slot / BR;
    const uint kgr = (SLOTS - r + BR - 1u) / BR; // this row's key groups
    // y: batch item and split, z: KV head (drivers that hand out contiguous ranges of work-groups
    // then balance a padded batch's long and short sequences)
    const uint blk = get_group_id(0) + row_base, g = get_group_id(2);
    const uint b = get_group_id(1) / PV(nsplit), sp = get_group_id(1) % PV(nsplit);
    const uint GL = PV(G) * PV(Lq);
    const uint first = blk * BR, last = min(first + BR, GL) - 1u;
    const uint ks = sp * PV(split_len), ke_split = min(ks + PV(split_len), PV(Lk));
    const uint kb_wg = max(ks, kv_range(P, coef, b, first / PV(G)).x); // the first row's start
    const uint ke_wg = min(ke_split, kv_end(P, coef, b, last / PV(G))); // the last row's end
    const uint kstart = max(ks, kb_wg / BC * BC);
    const uint kbase = b * SV(k_sb) + g * SV(k_sh), k_sr = SV(k_sr);
    const uint vbase = b * SV(v_sb) + g * SV(v_sh), v_sr = SV(v_sr);
    const uint R = first + r, RR = R < GL ? R : last;
    const uint i = RR / PV(G), hq = g * PV(G) + RR % PV(G);
    const uint row = (b * PV(Hq) + hq) * PV(Lq) + i;
    const uint qrow = b * SV(q_sb) + hq * SV(q_sh) + i * SV(q_sr);
    const uint orow = b * SV(o_sb) + hq * SV(o_sh) + i * SV(o_sr);
    const uint2 kr_i = kv_range(P, coef, b, i);
    const uint kb_row = max(ks, kr_i.x), ke_row = R < GL ? min(ke_split, kr_i.y) : 0u;
    const uint2 kr = (uint2)(kb_row, ke_row);
    const uint mrow = mask_row(P, coef, b, hq, i);
    const float f = row_factor(P, coef, nvis, b, hq, i);
    float qv[DL], ov[DL];
    for (uint u = 0u; u < DL; u++) {
        qv[u] = LD(q, PV(q_off), qrow + lane * DL + u) * f;
        ov[u] = 0.0f;
    }
    float m_run = M_INIT, l_run = 0.0f;
    // Steps of BC keys from kstart; each key group takes every kgr-th, all run the same count.
    const uint nsteps = ke_wg > kstart ? (ke_wg - kstart + BC - 1u) / BC : 0u;
    const uint rounds = (nsteps + KGMIN - 1u) / KGMIN;
    for (uint n = 0u; n < rounds; n++) {
        const uint kt = kstart + (n * kgr + kgi) * BC;
        __local float *x = X + ((n & 1u) * SLOTS + slot) * XW;
        // The row's bias of each key of the step (its mask entry, 0; -inf: hidden); a step the
        // row sees none of is not read.
        float bias[BC];
        bool live = kt < ke_row && kt + BC > kb_row;
        if (live) {
            bool seen = false;
            for (uint c = 0u; c < BC; c++) {
                bias[c] = key_bias(P, mask, kr, mrow, kt + c);
                seen = seen || bias[c] != -INFINITY;
            }
            live = seen;
        }
        for (uint c = 0u; c < BC; c++) {
            float s = 0.0f;
            if (live && bias[c] != -INFINITY) { // only keys the row sees are read
                const uint e = kbase + (kt + c) * k_sr + lane * DL;
                for (uint u = 0u; u < DL; u += VW) {
                    const VT kx = LDV(k, PV(k_off), e + u);
                    s = DOT(qv, kx, s);
                }
            }
            x[c * LPR + lane] = s;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        if (!live) // a step this row does not see: nothing to add (a = 1, p = 0)
            continue;
        float sc[BC];
        float mt = m_run;
        for (uint c = 0u; c < BC; c++) {
            float4 w = vload4(0, x + c * LPR);
            for (uint j = 4u; j < LPR; j += 4u)
                w += vload4(0, x + c * LPR + j);
            sc[c] = key_logit(P, (w.x + w.y) + (w.z + w.w), bias[c]); // -inf: hidden
            mt = fmax(mt, sc[c]);
        }
        const float a = exp(m_run - mt);
        m_run = mt;
        // Blocked sums: the step's terms are summed from 0 and folded in once (see flash_body).
        float ps = 0.0f, tacc[DL];
        for (uint u = 0u; u < DL; u++)
            tacc[u] = 0.0f;
        for (uint c = 0u; c < BC; c++) {
            const bool vis = bias[c] != -INFINITY;
            if (!vis) // only values of keys the row sees are read
                continue;
            const float p = exp(sc[c] - mt);
            ps += p;
            const uint e = vbase + (kt + c) * v_sr + lane * DL;
            for (uint u = 0u; u < DL; u += VW) {
                const VT vx = LDV(v, PV(v_off), e + u);
                tacc[u] = fma(p, vx.x, tacc[u]);
                tacc[u + 1u] = fma(p, vx.y, tacc[u + 1u]);
#if VW == 4u
                tacc[u + 2u] = fma(p, vx.z, tacc[u + 2u]);
                tacc[u + 3u] = fma(p, vx.w, tacc[u + 3u]);
#endif
            }
        }
        l_run = fma(l_run, a, ps);
        for (uint u = 0u; u < DL; u++)
            ov[u] = fma(ov[u], a, tacc[u]);
    }
#if KGMAX > 1
    // Fold each row's key groups into its first, MR rows at a time, one group at a time: the
    // exchange's memory is reused, so local memory stays that of the exchange.
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint r0 = 0u; r0 < BR; r0 += MR) {
        const bool mine = r >= r0 && r < r0 + MR;
        __local float *mr = X + (mine ? r - r0 : 0u) * (D + 4u);
        for (uint j = 1u; j < KGMAX; j++) {
            if (mine && kgi == j) {
                if (lane == 0u) {
                    mr[0] = m_run;
                    mr[1] = l_run;
                }
                for (uint u = 0u; u < DL; u++)
                    mr[4u + lane * DL + u] = ov[u];
            }
            barrier(CLK_LOCAL_MEM_FENCE);
            if (mine && kgi == 0u && j < kgr) {
                const float mo = mr[0], lo = mr[1], mx = fmax(m_run, mo);
                const float w0 = exp(m_run - mx), w1 = exp(mo - mx);
                l_run = fma(l_run, w0, lo * w1);
                for (uint u = 0u; u < DL; u++)
                    ov[u] = fma(ov[u], w0, mr[4u + lane * DL + u] * w1);
                m_run = mx;
            }
            barrier(CLK_LOCAL_MEM_FENCE);
        }
    }
    if (kgi != 0u)
        return;
#endif
    if (R >= GL)
        return;
    if (!split) {
        const float a = sink_fold(P, coef, hq, &m_run, &l_run); // the sink: denominator only
        const float invl = l_run == 0.0f ? 0.0f : a / l_run;
        for (uint u = 0u; u < DL; u += 2u)
            ST2(o, PV(o_off), orow + lane * DL + u, (float2)(ov[u], ov[u + 1u]) * invl);
        if (PV(want_lse) && lane == 0u)
            lse[PV(lse_off) + row] = l_run == 0.0f ? -INFINITY : m_run + log(l_run);
    } else {
        const uint prow = sp * (PV(B) * PV(Hq) * PV(Lq)) + row;
        for (uint u = 0u; u < DL; u += 2u)
            part_o[prow * (D / 2u) + (lane * DL + u) / 2u] = (float2)(ov[u], ov[u + 1u]);
        if (lane == 0u)
            part_ml[prow] = (float2)(m_run, l_run);
    }
}

__kernel __attribute__((reqd_work_group_size(WG, 1, 1))) void flash_rowgroups(FLASH_ARGS)
{
    __local float4 X[LWORDS / 4];
    rowgroups_body(P, coef, q, k, v, o, lse, part_o, part_ml, mask, nvis, row_base, 0u,
                   (__local float *)X);
}

__kernel __attribute__((reqd_work_group_size(WG, 1, 1))) void flash_rowgroups_split(FLASH_ARGS)
{
    __local float4 X[LWORDS / 4];
    rowgroups_body(P, coef, q, k, v, o, lse, part_o, part_ml, mask, nvis, row_base, 1u,
                   (__local float *)X);
}
#endif
