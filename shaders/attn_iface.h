/* The interface between the hosts and the kernels, in one place: binding indices, specialization
 * constants, and the parameter block (Vulkan push constants, the OpenCL parameter buffer).
 * Included by C (src/, through src/kernel_params.h), GLSL (shaders/attn_common.glsl) and OpenCL C
 * (cl/attn_common.clh): plain preprocessor only. */
#ifndef SSMAX_ATTN_IFACE_H
#define SSMAX_ATTN_IFACE_H

#define BIND_Q 0       /* Q  [B, Hq, Lq, D]   f32 or f16 (as packed uint pairs) */
#define BIND_K 1       /* K  [B, Hkv, Lk, D] */
#define BIND_V 2       /* V  [B, Hkv, Lk, D] */
#define BIND_O 3       /* O  [B, Hq, Lq, D] */
#define BIND_LSE 4     /* LSE [B, Hq, Lq] f32 (bound to a dummy when not wanted) */
#define BIND_COEF 5    /* the strides block (ATTN_STRIDES, uint words), then per-head factor
                          coefficients a_h, b_h (f32 pairs) */
#define BIND_SCR0 6    /* scratch: split-KV partial O, or the unfused scores/probabilities */
#define BIND_SCR1 7    /* scratch: split-KV partial (max, sum) */
#define BIND_MASK 8    /* the additive mask (FL_MASK), f32 or f16 (as packed uint pairs); else a dummy */
#define BIND_NVIS 9    /* with a mask: visible keys of each mask row, uint [B][Hm][Lq] (Hm = Hq with
                          FL_MASK_HEADS, else 1), then each mask row's summary (MASK_CHUNK below),
                          written by mask_count before the other kernels */
#define NUM_BINDINGS 10

#define SPEC_WG 0      /* workgroup size (local_size_x_id) */
#define SPEC_BR 1      /* query rows per workgroup */
#define SPEC_BC 2      /* keys per tile */
#define SPEC_D 3       /* head dim */
#define SPEC_TPR 4     /* invocations per query row (pv.comp) */
#define SPEC_SPLIT 5   /* 1: write split-KV partials instead of O */
#define SPEC_WIDE 6    /* 1: K and V read 4 words at a time (flash_rows.comp, flash_lanes.comp) */
#define SPEC_LPR 7     /* lanes per query row (flash_lanes.comp) */
#define SPEC_COUNT 8

/* The parameter block, X(type, name) a word, in order; type is uint or float. One call's values,
 * the same for every kernel of the call except the chunk fields:
 *   B Hq Hkv Lq Lk G  shape; G = Hq / Hkv query heads per KV head
 *   q_pos causal      position of query row 0; 1: row i sees keys [0, q_pos + i]
 *   x_floor pos_offset floor_scale lo   the row factor (SPEC.md section 3; coef holds a_h, b_h)
 *   *_off             the tensors' first elements in their bindings
 *   want_lse          1: write LSE
 *   row_base          fused: first row block of this dispatch; unfused: first (batch, head) pair
 *   split_len nsplit  split-KV: keys per split, splits
 *   chunk_i0 chunk_ni unfused: the chunk's query rows [chunk_i0, chunk_i0 + chunk_ni)
 *   flags             FL_* below (SPEC.md section 7)
 *   window            sliding window W (causal), 0: none
 *   softcap           C > 0: z = C * tanh(z / C) after the factor; 0: none
 *   mask_off          the mask's first element in BIND_MASK
 *
 * The coefficient words of BIND_COEF after the strides block (word w of coef[] below):
 *   [2h], [2h + 1]     a_h, b_h of the row factor (f32)
 *   [2 Hq + h]         sink logit of head h (f32; FL_SINKS)
 *   [3 Hq + b]         kv_len of batch item b (uint bits; FL_SEQ)
 *   [3 Hq + B + b]     position of row 0 of batch item b (uint bits; FL_SEQ) */
#define ATTN_PARAMS(X)                                                                             \
    X(uint, B) X(uint, Hq) X(uint, Hkv) X(uint, Lq) X(uint, Lk) X(uint, G)                         \
    X(uint, q_pos) X(uint, causal)                                                                 \
    X(uint, x_floor) X(uint, pos_offset) X(uint, floor_scale) X(float, lo)                         \
    X(uint, q_off) X(uint, k_off) X(uint, v_off) X(uint, o_off) X(uint, lse_off)                   \
    X(uint, want_lse) X(uint, row_base) X(uint, split_len) X(uint, nsplit)                         \
    X(uint, chunk_i0) X(uint, chunk_ni)                                                            \
    X(uint, flags) X(uint, window) X(float, softcap) X(uint, mask_off)

/* The strides block, X(type, name) a word, at the head of BIND_COEF (uploaded per call, like the
 * coefficients after it; push constants have no room for it): element strides of Q, K, V and O,
 * X_sb batch, X_sh head, X_sr row (SPEC.md section 7.1). A tensor's element d of row i of head h
 * of batch item b is X_off + b * X_sb + h * X_sh + i * X_sr + d. Strides of a dimension of size 1
 * are 0. Every index fits 32 bits (the planner's ssmax_plan_fit checks the strided extents). */
#define ATTN_STRIDES(X)                                                                            \
    X(uint, q_sb) X(uint, q_sh) X(uint, q_sr) X(uint, k_sb) X(uint, k_sh) X(uint, k_sr)            \
    X(uint, v_sb) X(uint, v_sh) X(uint, v_sr) X(uint, o_sb) X(uint, o_sh) X(uint, o_sr)            \
    X(uint, m_sb) X(uint, m_sh) X(uint, m_sr)
#define STRIDE_WORDS 15 /* words of ATTN_STRIDES: the coefficients start at this word */

/* flags: the inference extensions a call uses (SPEC.md section 7). */
#define FL_SEQ 1u        /* per-batch kv_len and q_pos in the coefficient words */
#define FL_SINKS 2u      /* a sink logit per query head in the coefficient words */
#define FL_MASK 4u       /* an additive mask in BIND_MASK (element strides m_sb, m_sh, m_sr; m_sh
                            and m_sb 0 where the shape broadcasts) and counts in BIND_NVIS */
#define FL_MASK_F16 8u   /* ... of IEEE halves */
#define FL_MASK_HEADS 16u /* ... one per query head: BIND_NVIS has Hq rows a batch item, else 1 */

/* The mask summary (Vulkan; the OpenCL kernels keep only the counts): after the B * Hm * Lq
 * counts in BIND_NVIS, MASK_WORDS(Lk) uint words per mask
 * row (in count order), a 2-bit code per chunk of MASK_CHUNK keys [64 c, 64 c + 64), chunk c at
 * bits 2 (c % 16) of word c / 16. Over the keys of the chunk in the row's range (kv_range):
 * bit 0 some entry is not -inf (the row sees a key), bit 1 some entry is not 0 (-inf, NaN or a
 * bias: the kernels must read the entries). Bit 0 clear: the row sees nothing of the chunk;
 * 1: the mask adds nothing to it; 3: its entries are read. Chunks outside the row's range have
 * code 0. */
#define MASK_CHUNK 64u
#define MASK_CODES 16u
#define MASK_WORDS(Lk) (((Lk) + MASK_CHUNK * MASK_CODES - 1u) / (MASK_CHUNK * MASK_CODES))

#ifndef VULKAN /* C and OpenCL C; GLSL (which defines VULKAN) has no enums */
/* Word indices into the strides block: SI_q_sb, ..., and SI_COUNT (== STRIDE_WORDS). */
#define ATTN_STRIDE_INDEX(t, n) SI_##n,
enum attn_stride_index { ATTN_STRIDES(ATTN_STRIDE_INDEX) SI_COUNT };
/* Word indices into the block: PI_B, PI_Hq, ..., and PARAM_WORDS (27, 108 bytes: within Vulkan's
 * 128-byte push-constant guarantee). */
#define ATTN_PARAM_INDEX(t, n) PI_##n,
enum attn_param_index { ATTN_PARAMS(ATTN_PARAM_INDEX) PARAM_WORDS };
#endif

#endif
