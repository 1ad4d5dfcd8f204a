/* libFuzzer target: the attention-description validator on arbitrary parameter bytes; small
 * valid problems also run through the float64 reference, which must not fail or read out of
 * bounds. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ssmax/ssmax.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct ssmax_attn_params p;
    ssmax_attn_params_default(&p);
    size_t n = size < sizeof(p) ? size : sizeof(p);
    memcpy(&p, data, n);
    float sb[64];
    for (int i = 0; i < 64; i++)
        sb[i] = (float)(i % 7) * 0.1f;
    // pointers cannot come from the fuzzer: NULL or a 64-entry array, and NULL or strides made of
    // the bytes after the flags
    p.s = (size > n && (data[n] & 1) && p.q_heads <= 64) ? sb : NULL;
    p.b = (size > n && (data[n] & 2) && p.q_heads <= 64) ? sb : NULL;
    struct ssmax_strides st;
    memset(&st, 0, sizeof(st));
    if (size > n + 1 && (data[n] & 4))
        memcpy(&st, data + n + 1, size - n - 1 < sizeof(st) ? size - n - 1 : sizeof(st));
    p.strides = size > n && (data[n] & 4) ? &st : NULL;
    // SPEC.md section 7: sinks, per-batch lengths and positions from the flag byte (values that
    // validation must judge, out of range ones included); the mask's data is made below.
    const uint8_t fl = size > n ? data[n] : 0;
    uint32_t kvl[64];
    int64_t qps[64];
    for (int i = 0; i < 64; i++) {
        kvl[i] = (uint32_t)((i * 7u + fl) % ((uint64_t)p.kv_len + 1));
        qps[i] = (int64_t)((i * 5u + fl) % ((uint64_t)p.kv_len + 2)) - 1;
    }
    p.sinks = (fl & 8) && p.q_heads <= 64 ? sb : NULL;
    p.kv_lens = (fl & 16) && p.batch <= 64 ? kvl : NULL;
    p.q_positions = (fl & 32) && p.batch <= 64 ? qps : NULL;
    char msg[512];
    if (ssmax_attn_validate(&p, msg, sizeof(msg)) != SSMAX_OK)
        return 0;
    double work = (double)p.batch * p.q_heads * p.q_len * p.kv_len * p.head_dim;
    double elems = (double)p.batch * (p.q_heads * (double)p.q_len + p.kv_heads * (double)p.kv_len) *
                   p.head_dim;
    if (work > 2e5 || elems > 2e5)
        return 0;
    size_t es = p.dtype == SSMAX_F16 ? 2 : 4;
    // Bytes each tensor spans: dense, or its strided extent (a stride of 0 is the dense one).
    const uint32_t cnt[4][3] = { { p.batch, p.q_heads, p.q_len }, { p.batch, p.kv_heads, p.kv_len },
                                 { p.batch, p.kv_heads, p.kv_len }, { p.batch, p.q_heads, p.q_len } };
    const uint64_t *gs[4] = { st.q, st.k, st.v, st.o };
    double ext[4];
    for (int t = 0; t < 4; t++) {
        double row = (double)p.head_dim * es, sr = row, sh, sbt;
        if (p.strides && gs[t][2])
            sr = (double)gs[t][2];
        sh = p.strides && gs[t][1] ? (double)gs[t][1] : sr * cnt[t][2];
        sbt = p.strides && gs[t][0] ? (double)gs[t][0] : sh * cnt[t][1];
        ext[t] = (cnt[t][0] - 1) * sbt + (cnt[t][1] - 1) * sh + (cnt[t][2] - 1) * sr + row;
        if (ext[t] > 8e6)
            return 0;
    }
    size_t nq = (size_t)ext[0], nk = (size_t)(ext[1] > ext[2] ? ext[1] : ext[2]);
    size_t no = (size_t)ext[3];
    // The mask's extent: its strides, 0 taking the dense value for its shape.
    double mext = 0;
    if (p.mask) {
        const double mes = p.mask_dtype == SSMAX_F16 ? 2 : 4, heads = p.mask == 3 ? p.q_heads : 1;
        double r = p.mask_strides[2] ? (double)p.mask_strides[2] : p.kv_len * mes;
        double h = p.mask == 3 ? (p.mask_strides[1] ? (double)p.mask_strides[1] : r * p.q_len) : 0;
        double b = p.mask == 1 ? 0 : p.mask_strides[0] ? (double)p.mask_strides[0]
                                     : p.mask == 3 ? h * heads : r * p.q_len;
        mext = p.kv_len * mes + (p.q_len - 1) * r + (heads - 1) * h + (p.batch - 1) * b;
        if (mext > 8e6)
            return 0;
    }
    void *q = calloc(nq, 1), *k = calloc(nk, 1), *o = calloc(no, 1);
    uint8_t *m = p.mask ? calloc((size_t)mext, 1) : NULL;
    for (size_t i = 3; m && i < (size_t)mext; i += 7) // some -inf entries (f32 and f16 bytes)
        m[i] = p.mask_dtype == SSMAX_F16 ? (i % 2 ? 0xfc : 0) : 0xff;
    float *lse = calloc((size_t)p.batch * p.q_heads * p.q_len, sizeof(float));
    struct ssmax_attn_host io = { q, k, k, o, lse, NULL, NULL, NULL, m };
    if (q && k && o && lse && (m || !p.mask) && ssmax_attn_ref(&p, &io) != SSMAX_OK)
        abort(); // validated parameters must run
    free(q), free(k), free(o), free(lse), free(m);
    return 0;
}
