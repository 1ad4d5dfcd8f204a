/*
 * Internal state shared by the generic layer and the backends: the context, the open device, buffers
 * and the attention plan. Nothing here is public.
 */
#ifndef SSMAX_INTERNAL_H
#define SSMAX_INTERNAL_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>

#include "ssmax/ssmax.h"

#define SSMAX_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define SSMAX_MAX_HEAD_DIM 256   // GPU backends: head_dim a multiple of 8 in [8, 256]
#define SSMAX_MAX_REF_HEAD_DIM 1024

struct ssmax_backend_fns;

/* An open device. Each backend embeds this as the first member of its own device struct. */
struct ssmax_dev {
    struct ssmax_context *ctx;
    const struct ssmax_backend_fns *fns;
    struct ssmax_device_info info;
    uint16_t tune[SSMAX_MAX_HEAD_DIM / 8 + 1][3]; // tuned BR, BC, TPR per head_dim / 8; 0 = none
    /* 1 while ssmax_tune_store tries an entry: the tuned tiles win over SSMAX_*_TILES, and tiles
     * the device refuses are an error. 0: a refused tuned entry is logged and dropped. */
    int tune_strict;
};

struct ssmax_buffer {
    struct ssmax_buffer *prev, *next; // the context's list of live buffers
    size_t size;
    void *bk; // backend object
};

struct backend_slot {
    const struct ssmax_backend_fns *fns;
    void *priv;
    int ndev;
};

struct ssmax_context {
    struct ssmax_context_params params;
    struct ssmax_allocator alloc;
    char err[2048];
    struct backend_slot slots[3];
    struct ssmax_device_info *devs;
    int *dev_slot;
    int ndevs;
    struct ssmax_dev *dev; // open device, or NULL
    int dev_index;
    struct ssmax_buffer *buffers;
    int failed; // sticky: device lost
    _Atomic uint64_t validation_errors;
    int fault_alloc_at, fault_alloc_n; // test hooks: SSMAX_FAULT_DEVICE_ALLOC, _DEVICE_LOST
    int fault_lost_at, fault_lost_n;
    uint64_t last_ns;
    enum ssmax_path last_path;
    uint32_t last_splits;
};

/* The attention plan: the validated, normalised problem plus the path and tiling choices. Made once
 * per call by the generic layer (attn.c); backends never re-validate user input. */
struct attn_plan {
    struct ssmax_attn_params p; // scale and q_pos resolved; s, b point into coef arrays below
    uint32_t group;            // q_heads / kv_heads
    uint32_t q_pos;            // absolute position of row 0
    /* Row factor times scale, for every mode: fac = max(lo, a[h] * ln(x) + b[h]) with x = n
     * (visible keys), or x = (q_pos + i + pos_offset) / floor_scale + 1 for FLOOR_LOG. */
    float *coef;               // [2 * q_heads]: a0, b0, a1, b1, ...
    float lo;
    uint32_t x_floor;          // 1: FLOOR_LOG argument
    enum ssmax_path path;      // never AUTO
    uint32_t splits;           // >= 1; > 1 only for SSMAX_PATH_SPLIT_KV
    int want_lse, want_probs;
    uint64_t q_bytes, kv_bytes, o_bytes, lse_bytes, probs_bytes; // per tensor
    /* Byte offsets of the tensors in their buffers (0 when planned without buffers, as by
     * ssmax_attn_supported), so backends check the exact ranges their bindings will cover. */
    uint64_t q_off, k_off, v_off, o_off, lse_off, probs_off;
    uint32_t elem_size;
};

struct attn_bufs {
    void *q, *k, *v, *o, *lse, *probs; // backend buffer objects
    size_t q_off, k_off, v_off, o_off, lse_off, probs_off;
};

/* Rows visible to query row i (SPEC.md section 2). */
static inline uint32_t plan_visible(const struct attn_plan *pl, uint32_t i)
{
    if (!pl->p.causal)
        return pl->p.kv_len;
    uint64_t n = (uint64_t)pl->q_pos + i + 1;
    return n < pl->p.kv_len ? (uint32_t)n : pl->p.kv_len;
}

/* errors and logging (context.c); ctx may be NULL */
int ssmax_set_error(struct ssmax_context *ctx, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Empties ssmax_last_error(ctx) (ctx NULL: this thread's slot): every public call starts so, and
 * a call that succeeds leaves it empty. */
void ssmax_error_clear(struct ssmax_context *ctx);
void ssmax_log(struct ssmax_context *ctx, enum ssmax_log_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void *ssmax_malloc(struct ssmax_context *ctx, size_t size);
void *ssmax_calloc(struct ssmax_context *ctx, size_t n, size_t size);
void ssmax_free(struct ssmax_context *ctx, void *ptr);

/* The tensors of a plan, for the backends' size checks: name, bytes, byte offset in its buffer
 * and element size (0: probs, which kernels never index). Outputs not asked for have 0 bytes. */
struct plan_tensor {
    const char *name;
    uint64_t bytes, off;
    uint32_t esz;
};
enum { PLAN_TENSORS = 6 };
void ssmax_plan_tensors(const struct attn_plan *pl, struct plan_tensor out[PLAN_TENSORS]);

/* attention planning (attn.c) */
int ssmax_plan_make(struct ssmax_context *ctx, const struct ssmax_attn_params *p,
                    const struct ssmax_attn_buffers *b, struct attn_plan *out);
void ssmax_plan_free(struct ssmax_context *ctx, struct attn_plan *pl);
int ssmax_validate_params(const struct ssmax_attn_params *p, char *msg, size_t len);

/* half floats (half.c) */
float ssmax_half_to_float(uint16_t h);
uint16_t ssmax_float_to_half(float f);

/* CPU reference core (cpu/reference.c) */
int ssmax_ref_compute(const struct ssmax_attn_params *p, const struct ssmax_attn_host *io, char *msg,
                      size_t len);

/* Fault injection (test hooks, read from the environment when the context is created):
 * SSMAX_FAULT_DEVICE_ALLOC=N fails the Nth device allocation, SSMAX_FAULT_DEVICE_LOST=N reports
 * the Nth submission as a lost device. Each returns 1 exactly once. */
int ssmax_fault_alloc(struct ssmax_context *ctx);
int ssmax_fault_lost(struct ssmax_context *ctx);

/* SSMAX_OK when ctx has an open, working device, else the error (message set). */
int ssmax_need_device(struct ssmax_context *ctx);
/* mkdir -p, best effort. */
void ssmax_mkdirs(const char *dir);
/* Cache directory (params, $SSMAX_CACHE_DIR, $XDG_CACHE_HOME/ssmax, ~/.cache/ssmax); "" if none. */
void ssmax_cache_dir(struct ssmax_context *ctx, char *out, size_t n);
/* Tuned tiles (tune.c): loaded when a device opens; the lookup gives 0 when none is stored. */
void ssmax_tune_load(struct ssmax_dev *dev);
int ssmax_tune_get(const struct ssmax_dev *dev, uint32_t head_dim, uint32_t t[3]);
/* A stored entry the device refuses (why says how): an error while ssmax_tune_store checks it
 * (tune_strict), else dropped with a warning and 0, so the defaults run. */
int ssmax_tune_refused(struct ssmax_dev *dev, uint32_t D, const char *why);
/* The shared-memory tiles kernels' rules, the same on both GPU backends: BR rows x BC keys, TPR
 * invocations per row in the unfused P V kernel (1, 2 or 4, dividing D / 2), BR even, BC a
 * multiple of 8, BR * TPR <= 1024. Device limits are the backend's to check. */
int ssmax_tiles_ok(uint32_t D, uint32_t br, uint32_t bc, uint32_t tpr);
/* Parses an SSMAX_*_TILES override "BR,BC,TPR" into t and checks it with ssmax_tiles_ok: 0, or -1
 * when malformed or refused. */
int ssmax_parse_tiles(const char *s, uint32_t D, uint32_t t[3]);
/* 64-bit FNV-1a of p[0..n), continuing from h (SSMAX_FNV64_INIT to start): file names and torn-file
 * checks, never security. */
#define SSMAX_FNV64_INIT 0xcbf29ce484222325ull
uint64_t ssmax_fnv64(const void *p, size_t n, uint64_t h);
/* SipHash-2-4 of data under the 128-bit key k (hash.c). */
uint64_t ssmax_siphash24(const uint64_t k[2], const void *data, size_t n);
/* The OpenCL cache's keyed hash of a binary: SipHash under a key derived from the directory's
 * secret and the entry's key string (hash.c). */
uint64_t ssmax_cache_mac(const uint64_t secret[2], const char *key, const void *bin, size_t n);

/* Environment knobs */
int ssmax_env_int(const char *name, int def);

#endif
