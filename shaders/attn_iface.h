/* Binding indices and push constants shared by every compute shader and the Vulkan host code
 * (src/vulkan/vk_backend.c). Plain #defines so both C and GLSL can include it. */
#ifndef SSMAX_ATTN_IFACE_H
#define SSMAX_ATTN_IFACE_H

#define BIND_Q 0       /* Q  [B, Hq, Lq, D]   f32 or f16 (as packed uint pairs) */
#define BIND_K 1       /* K  [B, Hkv, Lk, D] */
#define BIND_V 2       /* V  [B, Hkv, Lk, D] */
#define BIND_O 3       /* O  [B, Hq, Lq, D] */
#define BIND_LSE 4     /* LSE [B, Hq, Lq] f32 (bound to a dummy when not wanted) */
#define BIND_COEF 5    /* per-head factor coefficients a_h, b_h (f32 pairs) */
#define BIND_SCR0 6    /* scratch: split-KV partial O, or the unfused scores/probabilities */
#define BIND_SCR1 7    /* scratch: split-KV partial (max, sum) */
#define NUM_BINDINGS 8

#define SPEC_WG 0      /* workgroup size (local_size_x_id) */
#define SPEC_BR 1      /* query rows per workgroup */
#define SPEC_BC 2      /* keys per tile */
#define SPEC_D 3       /* head dim */
#define SPEC_TPR 4     /* invocations per query row */
#define SPEC_SPLIT 5   /* 1: write split-KV partials instead of O */

#define PUSH_WORDS 23  /* 92 bytes: within the 128-byte guarantee */

#endif
