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
    o_data[(pc.o_off + e) >> 1] = packHalf2x16(clamp(v, vec2(-F16_MAX), vec2(F16_MAX)));
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

// Keys visible to query row i (SPEC.md section 2): n = q_pos + i + 1 when causal, else Lk.
uint kv_end(uint i)
{
    return pc.causal != 0u ? min(pc.q_pos + i + 1u, pc.Lk) : pc.Lk;
}

// f(n, p, h) * scale for query head h, row i: max(lo, a_h * ln(x) + b_h), with x = n, or
// x = floor((p + o) / F) + 1 for FLOOR_LOG. The host folds the mode and scale into a_h, b_h, lo.
float row_factor(uint h, uint i)
{
    uint x = pc.x_floor != 0u ? (pc.q_pos + i + pc.pos_offset) / pc.floor_scale + 1u : kv_end(i);
    return max(pc.lo, st.coef[2u * h] * log(float(x)) + st.coef[2u * h + 1u]);
}
