// Loops: Mesa's llvmpipe (lavapipe, 22.x) caps the *total* loop iterations of one invocation at
// 65535 across all its loops, and breaks out silently past that. Loops here are kept "fat" (vec4
// loads, small explicit unrolls, never whole-tile unrolls, which make LLVM compile for minutes), and
// the host caps the key tiles one workgroup walks on that driver (src/vulkan/vk_plan.c,
// max_tiles_per_wg()).
//
// Shared by every attention shader: push constants, buffer access for f32 and f16 storage, and the
// per-row factor of SPEC.md section 3. f16 tensors are read as uint pairs and converted with
// unpackHalf2x16/packHalf2x16, so no 16-bit storage feature is needed; all arithmetic is fp32.
#extension GL_EXT_control_flow_attributes : require
#include "attn_iface.h"

#define FLT_MAX 3.402823466e+38
#define M_INIT (-FLT_MAX / 2.0) // running max start: never -inf, so m_old - m_new is never NaN
#define NEG_INF uintBitsToFloat(0xff800000u)
#define F16_MAX 65504.0

layout(constant_id = SPEC_WG) const uint WG = 64;
layout(local_size_x_id = SPEC_WG) in;

#define PC_MEMBER(t, n) t n;
layout(push_constant) uniform Push { ATTN_PARAMS(PC_MEMBER) } pc; // shaders/attn_iface.h

#ifdef IO_F16
#define TENSOR uint
#else
#define TENSOR float
#endif

layout(binding = BIND_Q, std430) readonly buffer BufQ { TENSOR q_data[]; };
layout(binding = BIND_K, std430) readonly buffer BufK { TENSOR k_data[]; };
layout(binding = BIND_V, std430) readonly buffer BufV { TENSOR v_data[]; };
layout(binding = BIND_O, std430) writeonly buffer BufO { TENSOR o_data[]; };
layout(binding = BIND_LSE, std430) writeonly buffer BufL { float lse_data[]; };
// The strides block (st.q_sb, ...), then the coefficients (shaders/attn_iface.h).
layout(binding = BIND_COEF, std430) readonly buffer BufC { ATTN_STRIDES(PC_MEMBER) float coef[]; } st;

#ifdef IO_F16
float ld_half(uint w, uint e) { return unpackHalf2x16(w)[e & 1u]; }
#define LOAD(arr, off, e) ld_half(arr[((off) + (e)) >> 1], (off) + (e))
#define LOAD2(arr, off, e) unpackHalf2x16(arr[((off) + (e)) >> 1])
#define LOAD4(arr, off, e)                                                                         \
    vec4(unpackHalf2x16(arr[((off) + (e)) >> 1]), unpackHalf2x16(arr[(((off) + (e)) >> 1) + 1u]))
void store_o2(uint e, vec2 v) // e even
{
    // Held to the half range (rounding may step past 65504), NaN kept: clamp's min and max
    // would turn it into a bound.
    o_data[(pc.o_off + e) >> 1] =
        packHalf2x16(mix(clamp(v, vec2(-F16_MAX), vec2(F16_MAX)), v, isnan(v)));
}
#else
#define LOAD(arr, off, e) arr[(off) + (e)]
#define LOAD2(arr, off, e) vec2(arr[(off) + (e)], arr[(off) + (e) + 1u])
#define LOAD4(arr, off, e)                                                                         \
    vec4(arr[(off) + (e)], arr[(off) + (e) + 1u], arr[(off) + (e) + 2u], arr[(off) + (e) + 3u])
void store_o2(uint e, vec2 v)
{
    o_data[pc.o_off + e] = v.x;
    o_data[pc.o_off + e + 1u] = v.y;
}
#endif

// The additive mask (FL_MASK) and its rows' visible-key counts (mask_count.comp writes them).
layout(binding = BIND_MASK, std430) readonly buffer BufM { uint mask_data[]; };
layout(binding = BIND_NVIS, std430) buffer BufN { uint nvis[]; };

// Per-batch key count and position of row 0 (FL_SEQ), else the call's.
uint seq_kv(uint b)
{
    return (pc.flags & FL_SEQ) != 0u ? floatBitsToUint(st.coef[3u * pc.Hq + b]) : pc.Lk;
}
uint seq_pos(uint b)
{
    return (pc.flags & FL_SEQ) != 0u ? floatBitsToUint(st.coef[3u * pc.Hq + pc.B + b]) : pc.q_pos;
}

// Keys [x, y) that row i of batch item b may see before the mask (SPEC.md section 7.2):
// j < kv_len[b], j <= p when causal, j > p - W with a window; x == y when there are none.
uvec2 kv_range(uint b, uint i)
{
    const uint p = seq_pos(b) + i;
    uint hi = seq_kv(b);
    if (pc.causal != 0u)
        hi = min(hi, p + 1u);
    const uint lo = pc.window != 0u && p + 1u > pc.window ? p + 1u - pc.window : 0u;
    return uvec2(min(lo, hi), hi);
}
// The end of that range (a row's keys are [kv_range.x, kv_end)).
uint kv_end(uint b, uint i)
{
    return kv_range(b, i).y;
}

// The mask row of (b, h, i): its first element in mask_data (m_sb, m_sh are 0 where the mask
// broadcasts), and entry j of it (-inf: hidden).
uint mask_row(uint b, uint h, uint i)
{
    return pc.mask_off + b * st.m_sb + h * st.m_sh + i * st.m_sr;
}
float mask_at(uint row, uint j)
{
    const uint e = row + j;
    return (pc.flags & FL_MASK_F16) != 0u ? unpackHalf2x16(mask_data[e >> 1])[e & 1u]
                                          : uintBitsToFloat(mask_data[e]);
}
// Index of (b, h, i) in nvis.
uint nvis_index(uint b, uint h, uint i)
{
    const bool heads = (pc.flags & FL_MASK_HEADS) != 0u;
    return ((heads ? b * pc.Hq + h : b)) * pc.Lq + i;
}

// The first summary word of (b, h, i) in nvis (shaders/attn_iface.h, MASK_CHUNK): chunk c's code
// (bit 0 clear: no key of it seen; 1: the mask adds nothing; 3: read the entries) sits at bits
// 2 (c % 16) of word c / 16 from there.
uint mask_summary(uint b, uint h, uint i)
{
    const uint hm = (pc.flags & FL_MASK_HEADS) != 0u ? pc.Hq : 1u;
    return pc.B * hm * pc.Lq + nvis_index(b, h, i) * MASK_WORDS(pc.Lk);
}

// n: the keys row i of head h of batch item b sees (SPEC.md section 7.2).
uint row_n(uint b, uint h, uint i)
{
    if ((pc.flags & FL_MASK) != 0u)
        return nvis[nvis_index(b, h, i)];
    const uvec2 r = kv_range(b, i);
    return r.y - r.x;
}

// f(n, p, h) * scale for query head h, row i of batch item b: max(lo, a_h * ln(x) + b_h), with
// x = n (at least 1: an empty row's factor is never used), or x = floor((p + o) / F) + 1 for
// FLOOR_LOG. The host folds the mode and scale into a_h, b_h, lo.
float row_factor(uint b, uint h, uint i)
{
    uint x = pc.x_floor != 0u ? (seq_pos(b) + i + pc.pos_offset) / pc.floor_scale + 1u
                              : max(row_n(b, h, i), 1u);
    return max(pc.lo, st.coef[2u * h] * log(float(x)) + st.coef[2u * h + 1u]);
}

// Soft-capping (SPEC.md section 7.3): C * tanh(z / C) for C > 0. tanh's argument is held to
// [-15, 15], where tanh is +-1 in fp32, so no driver's tanh sees an overflowing exp; NaN stays
// NaN (the comparison is false for it).
float softcap(float z)
{
    if (pc.softcap <= 0.0)
        return z;
    float t = z / pc.softcap;
    t = abs(t) > 15.0 ? sign(t) * 15.0 : t;
    return pc.softcap * tanh(t);
}

// A row's sink (SPEC.md section 7.4) folded into its running max m and sum l at the end: the
// sink joins the denominator only. Returns the factor the row's accumulated O takes.
float sink_fold(uint h, inout float m, inout float l)
{
    if ((pc.flags & FL_SINKS) == 0u)
        return 1.0;
    const float s = st.coef[2u * pc.Hq + h], mn = max(m, s), a = exp(m - mn);
    l = l * a + exp(s - mn);
    m = mn;
    return a;
}
