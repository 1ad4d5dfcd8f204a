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
    // pointers cannot come from the fuzzer: NULL or a 64-entry array
    p.s = (size > n && (data[n] & 1) && p.q_heads <= 64) ? sb : NULL;
    p.b = (size > n && (data[n] & 2) && p.q_heads <= 64) ? sb : NULL;
    char msg[512];
    if (ssmax_attn_validate(&p, msg, sizeof(msg)) != SSMAX_OK)
        return 0;
    double work = (double)p.batch * p.q_heads * p.q_len * p.kv_len * p.head_dim;
    double elems = (double)p.batch * (p.q_heads * (double)p.q_len + p.kv_heads * (double)p.kv_len) *
                   p.head_dim;
    if (work > 2e5 || elems > 2e5)
        return 0;
    size_t es = p.dtype == SSMAX_F16 ? 2 : 4;
    size_t nq = (size_t)p.batch * p.q_heads * p.q_len * p.head_dim;
    size_t nk = (size_t)p.batch * p.kv_heads * p.kv_len * p.head_dim;
    void *q = calloc(nq, es), *k = calloc(nk, es), *o = calloc(nq, es);
    float *lse = calloc((size_t)p.batch * p.q_heads * p.q_len, sizeof(float));
    struct ssmax_attn_host io = { q, k, k, o, lse, NULL, NULL, NULL };
    if (q && k && o && lse && ssmax_attn_ref(&p, &io) != SSMAX_OK)
        abort(); // validated parameters must run
    free(q), free(k), free(o), free(lse);
    return 0;
}
