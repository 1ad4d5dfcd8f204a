#include "harness.h"
#include "src/names.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define GUARD 4096

uint64_t h_rand(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull); // splitmix64
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double h_unit(uint64_t *s) { return (double)(h_rand(s) >> 11) * (1.0 / 9007199254740992.0); }

void h_fill(void *a, enum ssmax_dtype t, size_t n, double amp, uint64_t *seed)
{
    for (size_t i = 0; i < n; i++) {
        float x = (float)((2 * h_unit(seed) - 1) * amp);
        if (t == SSMAX_F16)
            ((uint16_t *)a)[i] = ssmax_f32_to_f16(x);
        else
            ((float *)a)[i] = x;
    }
}

struct htol h_tol_o(enum ssmax_dtype t, double max_ref)
{
    // fp32: SPEC's 1e-3 * max|ref|, plus a floor for an all-zero reference. fp16: SPEC sets only
    // the NMSE; the max-abs bar covers fp16 rounding of O (2^-11 relative) with margin, and its
    // floor outputs far below 1 whose fp16 spacing is coarse next to max|ref|.
    if (t == SSMAX_F16)
        return (struct htol){ 5e-4, 2e-2 * max_ref + 1e-3 };
    return (struct htol){ 1e-8, 1e-3 * max_ref + 1e-6 };
}

struct htol h_tol_lse(double max_ref)
{
    return (struct htol){ 1e-8, 1e-4 + 1e-5 * max_ref }; // fp32 rounding of logits in the thousands
}

struct htol h_tol_probs(double lse_max)
{
    // The logits' size sets P's fp32 error: rounding a logit x moves exp(x) by ~x * 6e-8.
    return (struct htol){ 1e-8, 1e-4 * (lse_max > 100 ? lse_max / 100 : 1) };
}

int h_require_devices(void)
{
    const char *r = getenv("SSMAX_REQUIRE_DEVICE");
    return r && *r == '1';
}

int h_find_device(ssmax_context *ctx, const char *spec)
{
    int idx = ssmax_device_find(ctx, spec);
    if (idx >= 0)
        return idx;
    if (h_require_devices() || !strcmp(spec, "cpu"))
        return -2;
    printf("# %s: no device, skipped\n", spec);
    return -1;
}

const char *h_mode_name(enum ssmax_mode m) { return ssmax_mode_name(m); }
const char *h_path_name(enum ssmax_path p) { return ssmax_path_name(p); }

const char *h_layout_name(int layout)
{
    static const char *const n[H_LAYOUTS] = { "dense", "blhd", "kv-cache", "kv-interleaved" };
    return layout >= 0 && layout < H_LAYOUTS ? n[layout] : "?";
}

void h_describe(const struct hcase *c, char *buf, size_t len)
{
    const struct ssmax_attn_params *p = &c->p;
    char ext[160] = "";
    size_t n = 0;
    if (p->window)
        n += (size_t)snprintf(ext + n, sizeof(ext) - n, " window=%u", p->window);
    if (p->softcap > 0)
        n += (size_t)snprintf(ext + n, sizeof(ext) - n, " softcap=%g", (double)p->softcap);
    if (c->sinks || p->sinks)
        n += (size_t)snprintf(ext + n, sizeof(ext) - n, " sinks");
    if (c->seq_lens || p->kv_lens || p->q_positions)
        n += (size_t)snprintf(ext + n, sizeof(ext) - n, " per-seq");
    if (c->mask)
        n += (size_t)snprintf(ext + n, sizeof(ext) - n, " mask=%d%s/%g", c->mask,
                              c->mask_f16 ? "h" : "", c->mask_hide);
    if (c->mask && c->mask_block)
        n += (size_t)snprintf(ext + n, sizeof(ext) - n, "/blocks%u%s", c->mask_block,
                              c->mask_bias ? "+bias" : "");
    if (c->nan_hidden)
        snprintf(ext + n, sizeof(ext) - n, " nan-hidden");
    snprintf(buf, len, "B%u Hq%u/%u Lq%u Lk%u D%u %s%s %s path=%s%s%s%s%s seed=%llu", p->batch,
             p->q_heads, p->kv_heads, p->q_len, p->kv_len, p->head_dim,
             p->dtype == SSMAX_F16 ? "f16" : "f32", p->causal ? " causal" : "",
             h_mode_name(p->mode), h_path_name(p->path), c->want_probs ? " probs" : "",
             c->layout ? " layout=" : "", c->layout ? h_layout_name(c->layout) : "", ext,
             (unsigned long long)c->seed);
}

/* The strides of a layout and the bytes each tensor's image takes (from its offset): Q, K, V, O.
 * v_in_k: V lives in K's image, v_at bytes after K's first element. */
struct hlay {
    struct ssmax_strides st;
    size_t img[4];
    int v_in_k;
    size_t v_at;
};

static void layout_of(const struct ssmax_attn_params *p, int layout, struct hlay *l)
{
    memset(l, 0, sizeof(*l));
    const uint64_t es = p->dtype == SSMAX_F16 ? 2 : 4, R = p->head_dim * es;
    const uint64_t B = p->batch, Hq = p->q_heads, Hkv = p->kv_heads, Lq = p->q_len,
                   Lk = p->kv_len;
    uint64_t *q = l->st.q, *k = l->st.k, *v = l->st.v, *o = l->st.o;
#define SET3(a, x, y, z) (a[0] = (x), a[1] = (y), a[2] = (z))
    switch (layout) {
    case H_BLHD:
        SET3(q, Lq * Hq * R, R, Hq * R);
        SET3(k, Lk * Hkv * R, R, Hkv * R);
        SET3(v, Lk * Hkv * R, R, Hkv * R);
        SET3(o, Lq * Hq * R, R, Hq * R);
        break;
    case H_CACHE: {
        const uint64_t C = Lk + 5, QR = R + 16;
        SET3(q, Hq * Lq * QR, Lq * QR, QR);
        SET3(k, Hkv * C * R, C * R, 0); // 0: the row stride's default
        SET3(v, Hkv * C * R, C * R, R);
        SET3(o, Lq * Hq * R, R, Hq * R);
        break;
    }
    case H_KVI: {
        const uint64_t C = Lk + 3, KR = 2 * Hkv * R + 8;
        SET3(q, Lq * Hq * R, R, Hq * R);
        SET3(k, C * KR, R, KR);
        SET3(v, C * KR, R, KR);
        SET3(o, 0, 0, R + 8); // 0: packed over the padded rows
        l->v_in_k = 1;
        l->v_at = Hkv * R;
        break;
    }
    }
#undef SET3
    // images: the batch stride times B (every layout here has batch outermost)
    const uint64_t *ss[4] = { q, k, v, o };
    const uint64_t H[4] = { Hq, Hkv, Hkv, Hq }, L[4] = { Lq, Lk, Lk, Lq };
    for (int t = 0; t < 4; t++) {
        uint64_t row = ss[t][2] ? ss[t][2] : R, head = ss[t][1] ? ss[t][1] : row * L[t];
        uint64_t bat = ss[t][0] ? ss[t][0] : head * H[t];
        l->img[t] = (size_t)(B * bat);
    }
    if (l->v_in_k)
        l->img[1] = l->img[1] > l->v_at + l->img[2] ? l->img[1] : l->v_at + l->img[2];
}

/* Copies a dense [B, H, L, D] tensor into (to_img) or out of a strided image. */
static void restride(void *img, void *dense, const uint64_t st[3], uint32_t B, uint32_t H,
                     uint32_t L, size_t rowbytes, int to_img)
{
    for (uint32_t b = 0; b < B; b++)
        for (uint32_t h = 0; h < H; h++)
            for (uint32_t i = 0; i < L; i++) {
                uint8_t *x = (uint8_t *)img + b * st[0] + h * st[1] + i * st[2];
                uint8_t *y = (uint8_t *)dense + (((size_t)b * H + h) * L + i) * rowbytes;
                if (to_img)
                    memcpy(x, y, rowbytes);
                else
                    memcpy(y, x, rowbytes);
            }
}

/* The resolved strides of a layout (0 replaced as the library does). */
static void resolved(const struct ssmax_attn_params *p, const uint64_t g[3], uint32_t H,
                     uint32_t L, uint64_t out[3])
{
    const uint64_t R = p->head_dim * (uint64_t)(p->dtype == SSMAX_F16 ? 2 : 4);
    out[2] = g[2] ? g[2] : R;
    out[1] = g[1] ? g[1] : out[2] * L;
    out[0] = g[0] ? g[0] : out[1] * H;
}

struct hbufs {
    ssmax_buffer *q, *k, *v, *o, *lse, *probs, *mask;
};

static void free_bufs(ssmax_context *ctx, struct hbufs *b)
{
    ssmax_buffer_destroy(ctx, &b->q);
    ssmax_buffer_destroy(ctx, &b->k);
    ssmax_buffer_destroy(ctx, &b->v);
    ssmax_buffer_destroy(ctx, &b->o);
    ssmax_buffer_destroy(ctx, &b->lse);
    ssmax_buffer_destroy(ctx, &b->probs);
    ssmax_buffer_destroy(ctx, &b->mask);
}

/* Host inputs and per-head arrays for a case. */
struct hhost {
    void *q, *k, *v;
    float *s, *b, *sinks;
    void *mask;          // dense for its shape (mask_strides 0)
    uint32_t *kv_lens;   // the case's per-batch lengths (seq_lens)
    size_t nq, nkv, esz, nmask;
};

/* The mask's dense entry count for its shape. */
static size_t mask_count(const struct ssmax_attn_params *p, int shape)
{
    size_t n = (size_t)p->q_len * p->kv_len;
    if (shape == SSMAX_MASK_B1_LQ_LK)
        n *= p->batch;
    if (shape == SSMAX_MASK_BH_LQ_LK)
        n *= (size_t)p->batch * p->q_heads;
    return n;
}

/* 1 when key j is visible to row i of head h of batch item b (SPEC.md section 7.2). */
static int h_visible(const struct ssmax_attn_params *p, const struct hhost *h, uint32_t b,
                     uint32_t hq, uint32_t i, uint32_t j)
{
    const uint64_t kv = p->kv_lens ? p->kv_lens[b] : p->kv_len;
    uint64_t pos;
    if (p->q_positions)
        pos = (uint64_t)p->q_positions[b];
    else if (p->q_pos >= 0)
        pos = (uint64_t)p->q_pos;
    else
        pos = kv >= p->q_len ? kv - p->q_len : 0;
    pos += i;
    if (j >= kv || (p->causal && j > pos) || (p->window && j + p->window <= pos))
        return 0;
    if (p->mask) {
        size_t at = (size_t)i * p->kv_len + j;
        if (p->mask == SSMAX_MASK_B1_LQ_LK)
            at += (size_t)b * p->q_len * p->kv_len;
        else if (p->mask == SSMAX_MASK_BH_LQ_LK)
            at += ((size_t)b * p->q_heads + hq) * p->q_len * p->kv_len;
        float x = p->mask_dtype == SSMAX_F16 ? ssmax_f16_to_f32(((uint16_t *)h->mask)[at])
                                             : ((float *)h->mask)[at];
        if (x == -INFINITY)
            return 0;
    }
    return 1;
}

/* The additive mask of a case (hcase.mask*), dense for its shape. */
static void make_mask(const struct hcase *c, const struct ssmax_attn_params *p, struct hhost *h,
                      uint64_t *seed)
{
    const uint32_t Lq = p->q_len, Lk = p->kv_len;
    const size_t rows = h->nmask / Lk;
    for (size_t r = 0; r < rows; r++) {
        const uint32_t i = (uint32_t)(r % Lq);
        const double u = h_unit(seed);
        const int empty = !c->mask_block && u < 0.125, single = !c->mask_block && u >= 0.875;
        const uint32_t keep = single ? (uint32_t)(h_rand(seed) % Lk) : 0;
        for (uint32_t j = 0; j < Lk; j++) {
            float x;
            if (c->mask_block) {
                // One draw per block of mask_block rows x mask_block keys of this mask matrix.
                uint64_t bs = c->seed ^ ((r / Lq) * 0x9e3779b97f4a7c15ull) ^
                              ((uint64_t)(i / c->mask_block) << 32) ^ (j / c->mask_block);
                x = h_unit(&bs) < c->mask_hide                 ? -INFINITY
                    : c->mask_bias && h_unit(&bs) < 0.5 ? (float)(3 * h_unit(seed) - 2)
                                                         : 0.0f;
            } else if (empty || (single && j != keep)) {
                x = -INFINITY;
            } else {
                x = h_unit(seed) < c->mask_hide && !single ? -INFINITY
                                                           : (float)(3 * h_unit(seed) - 2);
            }
            if (c->mask_f16)
                ((uint16_t *)h->mask)[r * Lk + j] = ssmax_f32_to_f16(x);
            else
                ((float *)h->mask)[r * Lk + j] = x;
        }
    }
}

/* Element i of a host tensor of type dt becomes a quiet NaN. */
static void set_nan(void *a, enum ssmax_dtype dt, size_t i)
{
    if (dt == SSMAX_F16)
        ((uint16_t *)a)[i] = 0x7e00;
    else
        ((float *)a)[i] = NAN;
}
/* a * b * c * d, or 0 when it does not fit in size_t with room for 8-byte elements (every host
 * array the harness makes, float64 references included, is then addressable). */
static size_t count4(uint64_t a, uint64_t b, uint64_t c, uint64_t d)
{
    uint64_t r;
    if (__builtin_mul_overflow(a, b, &r) || __builtin_mul_overflow(r, c, &r) ||
        __builtin_mul_overflow(r, d, &r) || r > SIZE_MAX / 8)
        return 0;
    return (size_t)r;
}

/* The host arrays of a case: 0, SSMAX_ERR_LIMIT_EXCEEDED when its sizes overflow, or
 * SSMAX_ERR_OUT_OF_HOST_MEMORY. */
static int make_host(const struct hcase *c, struct ssmax_attn_params *p, struct hhost *h)
{
    memset(h, 0, sizeof(*h));
    *p = c->p;
    h->esz = p->dtype == SSMAX_F16 ? 2 : 4;
    h->nq = count4(p->batch, p->q_heads, p->q_len, p->head_dim);
    h->nkv = count4(p->batch, p->kv_heads, p->kv_len, p->head_dim);
    // the attention weights [B, Hq, Lq, Lk] too, when they are asked for
    if (!h->nq || !h->nkv || (c->want_probs && !count4(p->batch, p->q_heads, p->q_len, p->kv_len)))
        return SSMAX_ERR_LIMIT_EXCEEDED;
    h->q = malloc(h->nq * h->esz);
    h->k = malloc(h->nkv * h->esz);
    h->v = malloc(h->nkv * h->esz);
    h->s = malloc(sizeof(float) * p->q_heads);
    h->b = malloc(sizeof(float) * p->q_heads);
    if (!h->q || !h->k || !h->v || !h->s || !h->b)
        return SSMAX_ERR_OUT_OF_HOST_MEMORY;
    uint64_t seed = c->seed;
    double amp = c->amp > 0 ? c->amp : 1.0;
    h_fill(h->q, p->dtype, h->nq, amp, &seed);
    h_fill(h->k, p->dtype, h->nkv, amp, &seed);
    h_fill(h->v, p->dtype, h->nkv, 1.0, &seed);
    if (c->v_positive)
        for (size_t i = 0; i < h->nkv; i++) {
            if (p->dtype == SSMAX_F16) {
                uint16_t *x = (uint16_t *)h->v + i;
                *x = ssmax_f32_to_f16(ssmax_f16_to_f32(*x) + 1.0f);
            } else {
                ((float *)h->v)[i] += 1.0f;
            }
        }
    if (c->per_head) {
        for (uint32_t i = 0; i < p->q_heads; i++) {
            h->s[i] = (float)(0.1 + 0.5 * h_unit(&seed));
            h->b[i] = (float)(h_unit(&seed) - 0.5);
        }
        p->s = h->s;
        p->b = h->b;
    }
    if (c->nan_q_row > 0 && (uint32_t)c->nan_q_row <= p->q_len)
        set_nan(h->q, p->dtype, (size_t)(c->nan_q_row - 1) * p->head_dim);
    if (c->nan_k_key > 0 && (uint32_t)c->nan_k_key <= p->kv_len)
        set_nan(h->k, p->dtype, (size_t)(c->nan_k_key - 1) * p->head_dim);
    if (c->nan_v_key > 0 && (uint32_t)c->nan_v_key <= p->kv_len)
        set_nan(h->v, p->dtype, (size_t)(c->nan_v_key - 1) * p->head_dim);
    if (c->sinks) {
        if (!(h->sinks = malloc(sizeof(float) * p->q_heads)))
            return SSMAX_ERR_OUT_OF_HOST_MEMORY;
        for (uint32_t i = 0; i < p->q_heads; i++)
            h->sinks[i] = (float)(3 * h_unit(&seed) - 1);
        p->sinks = h->sinks;
    }
    if (c->seq_lens && !p->kv_lens) {
        if (!(h->kv_lens = malloc(sizeof(uint32_t) * p->batch)))
            return SSMAX_ERR_OUT_OF_HOST_MEMORY;
        for (uint32_t b = 0; b < p->batch; b++)
            h->kv_lens[b] = 1 + (uint32_t)(h_rand(&seed) % p->kv_len);
        if (p->causal && !p->q_positions && p->q_pos < 0)
            for (uint32_t b = 0; b < p->batch; b++) // causal rows must sit within kv_len
                if (h->kv_lens[b] < p->q_len)
                    h->kv_lens[b] = p->q_len;
        p->kv_lens = h->kv_lens;
    }
    if (c->mask) {
        p->mask = (enum ssmax_mask_shape)c->mask;
        p->mask_dtype = c->mask_f16 ? SSMAX_F16 : SSMAX_F32;
        h->nmask = mask_count(p, c->mask);
        if (!(h->mask = malloc(h->nmask * (c->mask_f16 ? 2 : 4))))
            return SSMAX_ERR_OUT_OF_HOST_MEMORY;
        make_mask(c, p, h, &seed);
        if (c->nan_mask) {
            if (c->mask_f16)
                ((uint16_t *)h->mask)[0] = 0x7e00;
            else
                ((float *)h->mask)[0] = NAN;
        }
    }
    if (c->nan_hidden && (uint64_t)p->batch * p->q_heads * p->q_len * p->kv_len <= (1ull << 27)) {
        // Keys no row of the batch item sees, in any head that reads them: NaN in K and V.
        const uint32_t G = p->q_heads / p->kv_heads;
        for (uint32_t b = 0; b < p->batch; b++)
            for (uint32_t g = 0; g < p->kv_heads; g++)
                for (uint32_t j = 0; j < p->kv_len; j++) {
                    int seen = 0;
                    for (uint32_t hq = g * G; hq < (g + 1) * G && !seen; hq++)
                        for (uint32_t i = 0; i < p->q_len && !seen; i++)
                            seen = h_visible(p, h, b, hq, i, j);
                    if (!seen)
                        for (uint32_t d = 0; d < p->head_dim; d++) {
                            size_t at = (((size_t)b * p->kv_heads + g) * p->kv_len + j) * p->head_dim + d;
                            set_nan(h->k, p->dtype, at);
                            set_nan(h->v, p->dtype, at);
                        }
                }
    }
    if (c->nan_v_hidden && p->causal) {
        int64_t qp = p->q_pos >= 0 ? p->q_pos : (int64_t)p->kv_len - p->q_len;
        uint32_t first = (uint32_t)(qp + p->q_len); // keys no row sees
        for (uint32_t bh = 0; bh < p->batch * p->kv_heads; bh++)
            for (uint32_t j = first; j < p->kv_len; j++)
                for (uint32_t d = 0; d < p->head_dim; d++)
                    set_nan(h->v, p->dtype, ((size_t)bh * p->kv_len + j) * p->head_dim + d);
    }
    return 0;
}

static void free_host(struct hhost *h)
{
    free(h->q);
    free(h->k);
    free(h->v);
    free(h->s);
    free(h->b);
    free(h->sinks);
    free(h->mask);
    free(h->kv_lens);
}

/* The inputs as they go to the device: the dense host arrays, or a layout's images. */
struct himg {
    const void *q, *k, *v; // v NULL: V is in K's buffer, v_at bytes after K
    size_t nq, nk, nv, no, v_at;
};

static int upload(ssmax_context *ctx, const struct ssmax_attn_params *p, const struct himg *h,
                  const struct hhost *hh, const struct hcase *c, struct hbufs *b,
                  struct ssmax_attn_buffers *ab, uint8_t *guard_pat)
{
    memset(ab, 0, sizeof(*ab));
    size_t no = h->no, nl = (size_t)p->batch * p->q_heads * p->q_len * 4;
    size_t np = nl * p->kv_len;
    int r;
    const size_t io = c->in_off;
    if ((r = ssmax_buffer_create(ctx, io + h->nq, &b->q)) < 0 ||
        (r = ssmax_buffer_create(ctx, io + h->nk, &b->k)) < 0 ||
        (h->v && (r = ssmax_buffer_create(ctx, io + h->nv, &b->v)) < 0) ||
        (r = ssmax_buffer_create(ctx, no + 2 * GUARD, &b->o)) < 0 ||
        (c->want_lse && (r = ssmax_buffer_create(ctx, nl + 2 * GUARD, &b->lse)) < 0) ||
        (c->want_probs && (r = ssmax_buffer_create(ctx, np + 2 * GUARD, &b->probs)) < 0))
        return r;
    if ((r = ssmax_buffer_write(ctx, b->q, io, h->q, h->nq)) < 0 ||
        (r = ssmax_buffer_write(ctx, b->k, io, h->k, h->nk)) < 0 ||
        (h->v && (r = ssmax_buffer_write(ctx, b->v, io, h->v, h->nv)) < 0))
        return r;
    // Outputs start as a NaN-payload sentinel, with guard bands on both sides.
    ssmax_buffer *outs[3] = { b->o, b->lse, b->probs };
    for (int i = 0; i < 3; i++) {
        if (!outs[i])
            continue;
        size_t n = ssmax_buffer_size(ctx, outs[i]);
        uint8_t *fill = malloc(n);
        if (!fill)
            return SSMAX_ERR_OUT_OF_HOST_MEMORY;
        for (size_t j = 0; j < n; j++)
            fill[j] = guard_pat[j % 4];
        r = ssmax_buffer_write(ctx, outs[i], 0, fill, n);
        free(fill);
        if (r < 0)
            return r;
    }
    ab->q = b->q, ab->k = b->k, ab->v = h->v ? b->v : b->k, ab->o = b->o, ab->lse = b->lse;
    ab->probs = b->probs;
    ab->o_off = ab->lse_off = ab->probs_off = GUARD;
    ab->q_off = ab->k_off = io;
    ab->v_off = io + (h->v ? 0 : h->v_at);
    if (hh->mask) {
        const size_t nm = hh->nmask * (c->mask_f16 ? 2 : 4);
        if ((r = ssmax_buffer_create(ctx, io + nm, &b->mask)) < 0 ||
            (r = ssmax_buffer_write(ctx, b->mask, io, hh->mask, nm)) < 0)
            return r;
        ab->mask = b->mask;
        ab->mask_off = io;
    }
    return SSMAX_OK;
}

static int guard_intact(ssmax_context *ctx, ssmax_buffer *b, const uint8_t *pat)
{
    if (!b)
        return 1;
    uint8_t g[GUARD];
    size_t n = ssmax_buffer_size(ctx, b);
    for (int side = 0; side < 2; side++) {
        if (ssmax_buffer_read(ctx, b, side ? n - GUARD : 0, g, GUARD) < 0)
            return 0;
        for (size_t j = 0; j < GUARD; j++)
            if (g[j] != pat[j % 4])
                return 0;
    }
    return 1;
}

/* The reference on a sample of query rows: each sampled row is its own one-row problem at its own
 * absolute position, which is exactly the same function. The device's rows are gathered alongside,
 * so oref/ogot (and lref/lgot) end up as [B, Hq, S, D] and [B, Hq, S]. */
static int sample_reference(const struct ssmax_attn_params *p, const struct hhost *h, uint32_t S,
                            double *oref, double *lref, void *ogot, float *lgot)
{
    const size_t D = p->head_dim, esz = h->esz, BH = (size_t)p->batch * p->q_heads;
    int64_t qp0 = p->q_pos >= 0 ? p->q_pos : (p->kv_len >= p->q_len ? (int64_t)p->kv_len - p->q_len : 0);
    // Per-batch positions of row 0 (each item's default from kv_lens), and the mask's strides:
    // a one-row problem reads its row of the full mask.
    int64_t *qpb = malloc(sizeof(int64_t) * p->batch * 2), *qpi = qpb ? qpb + p->batch : NULL;
    if (qpb)
        for (uint32_t b = 0; b < p->batch; b++) {
            const uint64_t kv = p->kv_lens ? p->kv_lens[b] : p->kv_len;
            qpb[b] = p->q_positions ? p->q_positions[b]
                     : p->q_pos >= 0 ? p->q_pos : (kv >= p->q_len ? (int64_t)(kv - p->q_len) : 0);
        }
    const size_t mesz = p->mask_dtype == SSMAX_F16 ? 2 : 4;
    const uint64_t mrow = (uint64_t)p->kv_len * mesz;
    uint8_t *qs = malloc(BH * D * esz);
    double *os = malloc(sizeof(double) * BH * D), *ls = malloc(sizeof(double) * BH);
    uint8_t *gather = malloc(BH * S * D * esz);
    float *lg = malloc(sizeof(float) * BH * S);
    int st = SSMAX_ERR_OUT_OF_HOST_MEMORY;
    if (!qs || !os || !ls || !gather || !lg || !qpb)
        goto out;
    for (uint32_t k = 0; k < S; k++) {
        uint32_t i = S == 1 ? 0 : (uint32_t)((uint64_t)k * (p->q_len - 1) / (S - 1));
        for (size_t bh = 0; bh < BH; bh++) {
            memcpy(qs + bh * D * esz, (uint8_t *)h->q + ((bh * p->q_len + i) * D) * esz, D * esz);
            memcpy(gather + ((bh * S + k) * D) * esz, (uint8_t *)ogot + ((bh * p->q_len + i) * D) * esz,
                   D * esz);
            lg[bh * S + k] = lgot[bh * p->q_len + i];
        }
        struct ssmax_attn_params one = *p;
        one.q_len = 1;
        one.q_pos = qp0 + i;
        for (uint32_t b = 0; b < p->batch; b++)
            qpi[b] = qpb[b] + i;
        if (p->kv_lens || p->q_positions)
            one.q_positions = qpi;
        const void *mk = h->mask;
        if (p->mask) {
            one.mask_strides[2] = mrow; // one row; the others as the full mask's
            one.mask_strides[1] = p->mask == SSMAX_MASK_BH_LQ_LK ? mrow * p->q_len : 0;
            one.mask_strides[0] = p->mask == SSMAX_MASK_LQ_LK ? 0
                                  : mrow * p->q_len * (p->mask == SSMAX_MASK_BH_LQ_LK ? p->q_heads : 1);
            mk = (const uint8_t *)h->mask + (size_t)i * mrow;
        }
        struct ssmax_attn_host io = { qs, h->k, h->v, NULL, NULL, NULL, os, ls, mk };
        if ((st = ssmax_attn_ref(&one, &io)) < 0)
            goto out;
        for (size_t bh = 0; bh < BH; bh++) {
            memcpy(oref + (bh * S + k) * D, os + bh * D, sizeof(double) * D);
            lref[bh * S + k] = ls[bh];
        }
    }
    memcpy(ogot, gather, BH * S * D * esz);
    memcpy(lgot, lg, sizeof(float) * BH * S);
    st = SSMAX_OK;
out:
    free(qs), free(os), free(ls), free(gather), free(lg), free(qpb);
    return st;
}

/* The reference reads strided tensors too: on the layout's images (NaN everywhere but the
 * elements) it must give bit for bit the dense reference's O (float64 and storage type) and LSE.
 * 0, 1 (r->why says where), or a negative error. */
static int check_strided_ref(const struct ssmax_attn_params *p, const struct hhost *h,
                             const struct himg *im, uint64_t rs[4][3], const double *oref,
                             const double *lref, struct hresult *r)
{
    const size_t n = h->nq, rows = (size_t)p->batch * p->q_heads * p->q_len;
    const size_t rowb = p->head_dim * h->esz;
    double *o64 = malloc(sizeof(double) * n), *l64 = malloc(sizeof(double) * rows);
    uint8_t *os = calloc(im->no, 1), *od = malloc(n * h->esz), *og = malloc(n * h->esz);
    int st = SSMAX_ERR_OUT_OF_HOST_MEMORY;
    if (!o64 || !l64 || !os || !od || !og)
        goto out;
    struct ssmax_attn_params pd = *p;
    pd.strides = NULL;
    struct ssmax_attn_host dio = { h->q, h->k, h->v, od, NULL, NULL, NULL, NULL, h->mask };
    if ((st = ssmax_attn_ref(&pd, &dio)) < 0)
        goto out;
    const void *v = im->v ? im->v : (const uint8_t *)im->k + im->v_at;
    struct ssmax_attn_host sio = { im->q, im->k, v, os, NULL, NULL, o64, l64, h->mask };
    if ((st = ssmax_attn_ref(p, &sio)) < 0)
        goto out;
    restride(os, og, rs[3], p->batch, p->q_heads, p->q_len, rowb, 0);
    st = 1;
    if (memcmp(o64, oref, sizeof(double) * n) || memcmp(l64, lref, sizeof(double) * rows))
        snprintf(r->why, sizeof(r->why), "reference: strided O/LSE differ from the dense ones");
    else if (memcmp(og, od, n * h->esz))
        snprintf(r->why, sizeof(r->why), "reference: strided O (storage type) differs from dense");
    else
        st = 0;
out:
    free(o64), free(l64), free(os), free(od), free(og);
    return st;
}

int h_run(ssmax_context *ctx, const struct hcase *c, struct hresult *r)
{
    memset(r, 0, sizeof(*r));
    struct ssmax_attn_params p;
    struct hhost h;
    struct hbufs b = { 0 };
    struct ssmax_attn_buffers ab;
    static uint8_t pat[4] = { 0x5a, 0xa5, 0xc3, 0x7f }; // a NaN payload in either dtype
    double *oref = NULL, *lref = NULL, *pref = NULL;
    float *ogot = NULL, *lgot = NULL, *pgot = NULL, *pref32 = NULL;
    void *imgs[3] = { NULL, NULL, NULL };
    uint8_t *oimg = NULL;
    int ret = 0;
    if ((ret = make_host(c, &p, &h)) < 0) {
        snprintf(r->why, sizeof(r->why), ret == SSMAX_ERR_LIMIT_EXCEEDED
                 ? "host: the tensors' sizes overflow the address space" : "host: out of memory");
        r->status = ret;
        goto done;
    }
    struct hlay lay;
    struct himg im = { h.q, h.k, h.v, h.nq * h.esz, h.nkv * h.esz, h.nkv * h.esz, h.nq * h.esz, 0 };
    uint64_t rs[4][3]; // resolved strides of the layout
    const uint32_t Hs[4] = { p.q_heads, p.kv_heads, p.kv_heads, p.q_heads };
    const uint32_t Ls[4] = { p.q_len, p.kv_len, p.kv_len, p.q_len };
    if (c->layout) {
        layout_of(&p, c->layout, &lay);
        p.strides = &lay.st;
        const uint64_t *g[4] = { lay.st.q, lay.st.k, lay.st.v, lay.st.o };
        for (int t = 0; t < 4; t++)
            resolved(&p, g[t], Hs[t], Ls[t], rs[t]);
        for (int t = 0; t < 3; t++) {
            if (t == 2 && lay.v_in_k)
                break;
            imgs[t] = malloc(lay.img[t] + 8);
            if (!imgs[t]) {
                snprintf(r->why, sizeof(r->why), "host: out of memory");
                ret = r->status = SSMAX_ERR_OUT_OF_HOST_MEMORY;
                goto done;
            }
            for (size_t i = 0; i < lay.img[t] / h.esz; i++)
                set_nan(imgs[t], p.dtype, i);
        }
        void *dense[3] = { h.q, h.k, h.v };
        for (int t = 0; t < 3; t++)
            restride(t == 2 && lay.v_in_k ? (uint8_t *)imgs[1] + lay.v_at : imgs[t], dense[t],
                     rs[t], p.batch, Hs[t], Ls[t], p.head_dim * h.esz, 1);
        im = (struct himg){ imgs[0], imgs[1], lay.v_in_k ? NULL : imgs[2], lay.img[0], lay.img[1],
                            lay.img[2], lay.img[3], lay.v_at };
    }
    int st = upload(ctx, &p, &im, &h, c, &b, &ab, pat);
    if (st == 0 && c->use_plan) {
        ssmax_plan *plan = NULL;
        struct ssmax_exec_args args;
        ssmax_exec_args_default(&args);
        args.q_pos = p.q_pos;
        args.kv_lens = p.kv_lens;
        args.q_positions = p.q_positions;
        st = ssmax_plan_create(ctx, &p, (ab.lse ? SSMAX_PLAN_LSE : 0) |
                                        (ab.probs ? SSMAX_PLAN_PROBS : 0), &plan);
        if (st == 0)
            st = ssmax_plan_execute(ctx, plan, &ab, &args);
        ssmax_plan_destroy(ctx, &plan);
    } else if (st == 0) {
        st = ssmax_attn(ctx, &p, &ab);
    }
    r->status = st;
    if (st < 0) {
        snprintf(r->why, sizeof(r->why), "%s: %s", ssmax_strerror(st), ssmax_last_error(ctx));
        ret = st;
        goto done;
    }
    ssmax_last_path(ctx, &r->path, &r->splits);
    ssmax_last_device_time(ctx, &r->device_ns);
    size_t nrow = (size_t)p.batch * p.q_heads * p.q_len, np = nrow * p.kv_len;
    oref = malloc(sizeof(double) * h.nq);
    lref = malloc(sizeof(double) * nrow);
    ogot = malloc(h.nq * h.esz);
    lgot = malloc(sizeof(float) * nrow);
    if (c->want_probs) {
        pref = malloc(sizeof(double) * np);
        pref32 = malloc(sizeof(float) * np);
        pgot = malloc(sizeof(float) * np);
    }
    if (!oref || !lref || !ogot || !lgot || (c->want_probs && (!pref || !pref32 || !pgot))) {
        snprintf(r->why, sizeof(r->why), "host: out of memory");
        ret = SSMAX_ERR_OUT_OF_HOST_MEMORY;
        goto done;
    }
    if (c->layout && !(oimg = malloc(im.no))) {
        snprintf(r->why, sizeof(r->why), "host: out of memory");
        ret = SSMAX_ERR_OUT_OF_HOST_MEMORY;
        goto done;
    }
    if ((st = ssmax_buffer_read(ctx, b.o, GUARD, c->layout ? oimg : (void *)ogot, im.no)) < 0 ||
        (c->want_lse && (st = ssmax_buffer_read(ctx, b.lse, GUARD, lgot, nrow * 4)) < 0) ||
        (c->want_probs && (st = ssmax_buffer_read(ctx, b.probs, GUARD, pgot, np * 4)) < 0)) {
        snprintf(r->why, sizeof(r->why), "%s: %s", ssmax_strerror(st), ssmax_last_error(ctx));
        ret = st;
        goto done;
    }
    if (c->layout) {
        // O's elements to dense; every other byte of its image still holds the guard pattern
        restride(oimg, ogot, rs[3], p.batch, p.q_heads, p.q_len, p.head_dim * h.esz, 0);
        int gaps_ok = 1;
        uint8_t *mark = calloc(im.no, 1), *ones = malloc(h.nq * h.esz);
        if (mark && ones) {
            memset(ones, 1, h.nq * h.esz);
            restride(mark, ones, rs[3], p.batch, p.q_heads, p.q_len, p.head_dim * h.esz, 1);
            for (size_t i = 0; i < im.no; i++)
                if (!mark[i] && oimg[i] != pat[(GUARD + i) % 4])
                    gaps_ok = 0;
        }
        free(mark), free(ones);
        if (!gaps_ok) {
            snprintf(r->why, sizeof(r->why), "O: a byte of its buffer between its rows was written");
            ret = 1;
            goto done;
        }
    }
    if (c->sample_rows && c->sample_rows < p.q_len && !c->want_probs) {
        struct ssmax_attn_params pd = p;
        pd.strides = NULL; // the dense host arrays
        st = sample_reference(&pd, &h, c->sample_rows, oref, lref, ogot, lgot);
        h.nq = (size_t)p.batch * p.q_heads * c->sample_rows * p.head_dim;
        nrow = (size_t)p.batch * p.q_heads * c->sample_rows;
    } else {
        struct ssmax_attn_params pd = p;
        pd.strides = NULL; // the dense host arrays
        struct ssmax_attn_host io = { h.q, h.k, h.v, NULL, NULL, c->want_probs ? pref32 : NULL,
                                      oref, lref, h.mask };
        st = ssmax_attn_ref(&pd, &io);
        if (st == 0 && c->layout)
            st = check_strided_ref(&p, &h, &im, rs, oref, lref, r);
    }
    if (st == 1) { // the strided reference disagrees with the dense one (r->why says how)
        ret = 1;
        goto done;
    }
    if (st < 0) {
        snprintf(r->why, sizeof(r->why), "reference: %s", ssmax_last_error(NULL));
        ret = st;
        goto done;
    }
    if (p.dtype == SSMAX_F16)
        ssmax_compare_f16(oref, (const uint16_t *)ogot, h.nq, 0, &r->o);
    else
        ssmax_compare_f32(oref, ogot, h.nq, 0, &r->o);
    struct htol tol = h_tol_o(p.dtype, r->o.max_ref);
    double atol = tol.max_abs;
    r->nmse_limit = tol.nmse;
    if (p.dtype == SSMAX_F16)
        ssmax_compare_f16(oref, (const uint16_t *)ogot, h.nq, atol, &r->o);
    else
        ssmax_compare_f32(oref, ogot, h.nq, atol, &r->o);
    r->pass = r->o.nmse <= r->nmse_limit && r->o.max_abs <= atol && !r->o.nonfinite_mismatch;
    if (!r->pass)
        snprintf(r->why, sizeof(r->why), "O: nmse %.3g (limit %.1g), max_abs %.3g (limit %.3g), "
                 "nonfinite mismatches %zu", r->o.nmse, r->nmse_limit, r->o.max_abs, atol,
                 r->o.nonfinite_mismatch);
    if (c->want_lse) {
        ssmax_compare_f32(lref, lgot, nrow, 0, &r->lse); // for max_ref
        struct htol lt = h_tol_lse(r->lse.max_ref);
        ssmax_compare_f32(lref, lgot, nrow, lt.max_abs, &r->lse);
        if (r->lse.nmse > lt.nmse || r->lse.nonfinite_mismatch || r->lse.n_first_bad) {
            if (r->pass)
                snprintf(r->why, sizeof(r->why), "LSE: nmse %.3g, nonfinite mismatches %zu, "
                         "first bad [%zu] expected %g got %g", r->lse.nmse,
                         r->lse.nonfinite_mismatch, r->lse.n_first_bad ? r->lse.first_bad[0] : 0,
                         r->lse.n_first_bad ? r->lse.first_ref[0] : 0,
                         r->lse.n_first_bad ? r->lse.first_got[0] : 0);
            r->pass = 0;
        }
    }
    if (c->want_probs) {
        for (size_t i = 0; i < np; i++)
            pref[i] = pref32[i];
        double lmax = c->want_lse ? r->lse.max_ref : 0;
        ssmax_compare_f32(pref, pgot, np, h_tol_probs(lmax).max_abs, &r->probs);
        if (r->probs.nonfinite_mismatch || r->probs.n_first_bad) {
            if (r->pass)
                snprintf(r->why, sizeof(r->why), "probs: max_abs %.3g, first bad [%zu] expected "
                         "%g got %g", r->probs.max_abs,
                         r->probs.n_first_bad ? r->probs.first_bad[0] : 0,
                         r->probs.n_first_bad ? r->probs.first_ref[0] : 0,
                         r->probs.n_first_bad ? r->probs.first_got[0] : 0);
            r->pass = 0;
        }
    }
    r->guard_ok = guard_intact(ctx, b.o, pat) && guard_intact(ctx, b.lse, pat) &&
                  guard_intact(ctx, b.probs, pat);
    if (!r->guard_ok) {
        if (r->pass)
            snprintf(r->why, sizeof(r->why), "guard band around an output was overwritten");
        r->pass = 0;
    }
    if (!r->pass && r->o.n_first_bad) {
        size_t l = strlen(r->why);
        snprintf(r->why + l, sizeof(r->why) - l, "; first bad O[%zu] expected %.9g got %.9g",
                 r->o.first_bad[0], r->o.first_ref[0], r->o.first_got[0]);
    }
    ret = r->pass ? 0 : 1;
done:
    free_bufs(ctx, &b);
    free_host(&h);
    free(oref), free(lref), free(ogot), free(lgot), free(pref), free(pref32), free(pgot);
    free(imgs[0]), free(imgs[1]), free(imgs[2]), free(oimg);
    return ret;
}

double h_visible_pairs(const struct hcase *c)
{
    struct ssmax_attn_params p;
    struct hhost h;
    double t = 0;
    if (make_host(c, &p, &h) < 0) {
        free_host(&h);
        return -1;
    }
    const uint32_t G = p.q_heads / p.kv_heads;
    for (uint32_t b = 0; b < p.batch; b++)
        for (uint32_t hq = 0; hq < p.q_heads; hq++) {
            if (!p.mask && hq % G) // heads differ only by the mask
                continue;
            for (uint32_t i = 0; i < p.q_len; i++) {
                uint64_t n = 0;
                if (!p.mask) { // the range alone: its length (as h_visible's rules)
                    const uint64_t kv = p.kv_lens ? p.kv_lens[b] : p.kv_len;
                    uint64_t pos = p.q_positions ? (uint64_t)p.q_positions[b]
                                   : p.q_pos >= 0 ? (uint64_t)p.q_pos
                                   : kv >= p.q_len ? kv - p.q_len : 0;
                    pos += i;
                    uint64_t hi = p.causal && pos + 1 < kv ? pos + 1 : kv;
                    uint64_t lo = p.window && pos + 1 > p.window ? pos + 1 - p.window : 0;
                    n = hi > lo ? hi - lo : 0;
                } else {
                    for (uint32_t j = 0; j < p.kv_len; j++)
                        n += (uint64_t)h_visible(&p, &h, b, hq, i, j);
                }
                t += (double)n * (p.mask ? 1 : G);
            }
        }
    free_host(&h);
    return t;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int h_time(ssmax_context *ctx, const struct hcase *c, int warmup, int iters, struct htiming *t,
           char *why, size_t whylen)
{
    struct ssmax_attn_params p;
    struct hhost h;
    struct hbufs b = { 0 };
    struct ssmax_attn_buffers ab;
    static uint8_t pat[4] = { 0, 0, 0, 0 };
    memset(t, 0, sizeof(*t));
    memset(&h, 0, sizeof(h));
    double *dev = malloc(sizeof(double) * (size_t)(iters > 0 ? iters : 1));
    double *wall = malloc(sizeof(double) * (size_t)(iters > 0 ? iters : 1));
    double *host = malloc(sizeof(double) * (size_t)(iters > 0 ? iters : 1));
    ssmax_plan *plan = NULL;
    int st = SSMAX_ERR_OUT_OF_HOST_MEMORY;
    if (!dev || !wall || !host || (st = make_host(c, &p, &h)) < 0) {
        if (st >= 0)
            st = SSMAX_ERR_OUT_OF_HOST_MEMORY;
        snprintf(why, whylen, st == SSMAX_ERR_LIMIT_EXCEEDED
                 ? "host: the tensors' sizes overflow the address space" : "host: out of memory");
        goto done;
    }
    struct himg im = { h.q, h.k, h.v, h.nq * h.esz, h.nkv * h.esz, h.nkv * h.esz, h.nq * h.esz, 0 };
    st = upload(ctx, &p, &im, &h, c, &b, &ab, pat);
    struct ssmax_exec_args args;
    ssmax_exec_args_default(&args);
    args.q_pos = p.q_pos;
    args.kv_lens = p.kv_lens;
    args.q_positions = p.q_positions;
    if (st == 0 && c->use_plan)
        st = ssmax_plan_create(ctx, &p, (ab.lse ? SSMAX_PLAN_LSE : 0) |
                                        (ab.probs ? SSMAX_PLAN_PROBS : 0), &plan);
    for (int i = 0; st == 0 && i < warmup + iters; i++) {
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        st = plan ? ssmax_plan_execute(ctx, plan, &ab, &args) : ssmax_attn(ctx, &p, &ab);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (st == 0 && i >= warmup) {
            uint64_t ns = 0;
            ssmax_last_device_time(ctx, &ns);
            dev[i - warmup] = ns / 1e6;
            wall[i - warmup] = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
            host[i - warmup] = wall[i - warmup] - dev[i - warmup];
        }
    }
    if (st < 0) {
        snprintf(why, whylen, "%s: %s", ssmax_strerror(st), ssmax_last_error(ctx));
    } else if (iters > 0) {
        qsort(dev, (size_t)iters, sizeof(double), cmp_d);
        qsort(wall, (size_t)iters, sizeof(double), cmp_d);
        qsort(host, (size_t)iters, sizeof(double), cmp_d);
        t->host_ms_median =
            iters % 2 ? host[iters / 2] : 0.5 * (host[iters / 2 - 1] + host[iters / 2]);
        t->iters = iters;
        t->ms_min = dev[0];
        t->ms_max = dev[iters - 1];
        t->ms_median = iters % 2 ? dev[iters / 2] : 0.5 * (dev[iters / 2 - 1] + dev[iters / 2]);
        t->wall_ms_median =
            iters % 2 ? wall[iters / 2] : 0.5 * (wall[iters / 2 - 1] + wall[iters / 2]);
    }
done:
    ssmax_plan_destroy(ctx, &plan);
    free_bufs(ctx, &b);
    free_host(&h);
    free(dev);
    free(wall);
    free(host);
    return st;
}
