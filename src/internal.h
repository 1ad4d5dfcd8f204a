/*
 * Internal state shared by the generic layer and the backends: the context, the open device, buffers
 * and the attention plan. Nothing here is public.
 */
#ifndef SSMAX_INTERNAL_H
#define SSMAX_INTERNAL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdint.h>

#include "ssmax/ssmax.h"
#include "../shaders/attn_iface.h"

#define SSMAX_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define SSMAX_MAX_HEAD_DIM 256   // GPU backends: head_dim a multiple of 8 in [8, 256]
#define SSMAX_MAX_REF_HEAD_DIM 1024

struct ssmax_backend_fns;

/* An open device. Each backend embeds this as the first member of its own device struct. */
struct ssmax_dev {
    struct ssmax_context *ctx;
    const struct ssmax_backend_fns *fns;
    struct ssmax_device_info info;
    struct ssmax_tiles tune[SSMAX_MAX_HEAD_DIM / 8 + 1]; // tuned, per head_dim / 8; rows 0: none
    /* 1 while ssmax_tune_store tries an entry: the tuned tiles win over SSMAX_*_TILES, and tiles
     * the device refuses are an error. 0: a refused tuned entry is logged and dropped. */
    int tune_strict;
    /* Why a compile_only device cannot run (the backend's open says; the generic layer's text when
     * it does not): the message of every call that would need memory or a queue. */
    char cannot_run[256];
};

/* A buffer. The public ssmax_buffer pointers are handles (handle.c); the API entries resolve them
 * to these, and everything inside the library holds the resolved objects. */
struct ssmax_buffer {
    size_t size;
    void *bk;     // backend object
    void *handle; // the handle that names it
    size_t base;  // where it starts in bk: an imported range of the application's buffer
    int imported; // the application's memory (ssmax_buffer_adopt): its size is exact
};

/* Checked handles (handle.c): what a handle names. */
enum handle_kind { HANDLE_BUFFER = 1, HANDLE_PLAN = 2 };
struct handle_slot;

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
    uint32_t serial;               // the context's number in its handles
    struct handle_slot *handles;   // live buffers and plans (handle.c)
    uint32_t nhandles, caphandles, free_handle;
    int failed; // sticky: device lost
    _Atomic uint64_t validation_errors;
    int fault_alloc_at, fault_alloc_n; // test hooks (ssmax_fault_set): allocation, lost device
    int fault_lost_at, fault_lost_n;
    uint64_t last_ns;
    struct ssmax_plan_info last_plan; // of the last successful ssmax_attn
};

struct attn_plan;

/* The tensors of a plan, for the backends' size checks: name, bytes, byte offset in its buffer
 * and element size (0: probs, which kernels never index). Outputs not asked for have 0 bytes. */
struct plan_tensor {
    const char *name;
    uint64_t bytes, off;
    uint32_t esz;
};
enum { PLAN_TENSORS = 7 };
void ssmax_plan_tensors(const struct attn_plan *pl, struct plan_tensor out[PLAN_TENSORS]);
/* What a device allows each tensor of a plan: at most max_bytes (limit names it, as "largest
 * allocation (CL_DEVICE_MAX_MEM_ALLOC_SIZE)"); with align, bindings start at the offset rounded
 * down to it (align_name) and cover the tensor within max_bytes, and tensors that are never bound
 * (probs) are not counted. With index_max, the kernels index at most index_max elements from a
 * binding's start: counted from the buffer's start, or with index_align from the offset rounded
 * down to it (index_align_name: the backend binds a sub-range there when the buffer's start is too
 * far). */
struct plan_fit {
    uint64_t max_bytes;
    const char *limit;
    uint64_t align;
    const char *align_name;
    uint64_t index_max;
    uint64_t index_align;
    const char *index_align_name;
};
/* The kernels a plan can name. */
enum attn_kernel {
    KERNEL_REFERENCE, // the cpu device: the float64 reference
    KERNEL_TILES,     // shared-memory tiles: BR query rows x BC keys a step (flash_attn, or qk,
                      // softmax_rows and pv on the unfused path with TPR invocations a row)
    KERNEL_ROWS,      // Vulkan flash_rows.comp: BR / subgroup size query rows per lane, BC keys a step
    KERNEL_LANES,     // GPUs: a row on lpr lanes, BR rows in each of kgroups key groups, BC keys
                      // a step; wg = kgroups * BR * lpr invocations (Vulkan flash_lanes.comp), or
                      // wg >= that, the extra slots more key groups (OpenCL flash_rowgroups)
};

/* The attention plan, made once per call (plan.c, ssmax_plan_make) and read by everything after:
 * the supported-check, the backend's execution and the reports (ssmax_last_plan). Its first part
 * is the validated, normalised problem; the second the choices: path and splits (the generic
 * planner, then the backend's plan entry while it plans), kernel and tiles (the backend), scratch
 * and submissions (the generic layer again, from the tiles and the device's limits). Nothing
 * changes it after ssmax_plan_make returns: backends get it const. */
struct attn_plan {
    /* the problem */
    struct ssmax_attn_params p; // scale and q_pos resolved; s, b point into coef arrays below
    uint32_t group;            // q_heads / kv_heads
    uint32_t q_pos;            // absolute position of row 0
    /* Row factor times scale, for every mode: fac = max(lo, a[h] * ln(x) + b[h]) with x = n
     * (visible keys), or x = (q_pos + i + pos_offset) / floor_scale + 1 for FLOOR_LOG. */
    float *coef;               // the kernels' BIND_COEF: the strides block (struct
                               // attn_strides), then the coefficient words (attn_iface.h)
    uint64_t coef_bytes;       // ... its size
    void *own;                 // what this plan owns (ssmax_plan_free): coef and copies of p's
                               // arrays (s, b, sinks, kv_lens, q_positions), which p points to
    uint32_t flags;            // FL_* (attn_iface.h)
    uint64_t mask_bytes, mask_off; // the mask's strided extent and byte offset in its buffer
    uint32_t mask_esz;         // 4 or 2; 0 without a mask
    uint64_t mask_rows;        // with a mask: its rows, B x Hm x Lq
    uint64_t nvis_bytes;       // with a mask: the visible-key counts (and the summary, where
                               // the backend reads one: BIND_NVIS)
    uint32_t scratch_align;    // the backend's alignment of scratch regions in one buffer
    uint64_t app_scratch_bytes; // the application's scratch a recorded execution needs (the
                               // plan's; 0: the backend takes none), ssmax_scratch_layout
    float lo;
    uint32_t x_floor;          // 1: FLOOR_LOG argument
    int want_lse, want_probs;
    uint64_t q_bytes, k_bytes, v_bytes, o_bytes, lse_bytes, probs_bytes; // per tensor: the
                               // strided extent, from the first element to the last's end
    uint64_t strides[4][3];    // byte strides of Q, K, V, O (batch, head, row), defaults resolved
    struct ssmax_strides own_strides; // a plan object's copy of them (its p.strides points here)
    int kv_strides4;           // K's and V's element strides are multiples of 4 (wide reads)
    /* Byte offsets of the tensors in their buffers (0 when planned without buffers, as by
     * ssmax_attn_supported), so backends check the exact ranges their bindings will cover. */
    uint64_t q_off, k_off, v_off, o_off, lse_off, probs_off;
    uint32_t elem_size;
    uint64_t rows;             // batch * q_heads * q_len

    /* the choices */
    enum ssmax_path path;      // never AUTO
    uint32_t splits;           // >= 1; > 1 only for SSMAX_PATH_SPLIT_KV
    enum attn_kernel kernel;
    const char *kernel_name;   // for reports: "flash_attn", "flash_rows", "qk+softmax+pv", ...
    uint32_t br, bc, tpr;      // tiles (see enum attn_kernel)
    uint32_t lpr, kgroups, wg; // KERNEL_LANES: lanes per row, key groups, workgroup size
    uint64_t lanes_shared;     // KERNEL_LANES: the kernel's shared (local) memory in bytes
    uint32_t subgroup;         // the subgroup size the fused kernel asks for; 0: the driver's
    uint32_t bk_kernel;        // the backend's own kernel id (Vulkan: enum vk_shader_id)
    uint32_t bk_flags;         // the backend's kernel options (Vulkan: wide reads; OpenCL: layout)
    /* Set by the backend's plan entry for the generic checks and arithmetic below. */
    struct plan_fit fit;       // what the device allows each tensor (max_bytes 0: no limit);
                               // checked when the buffers are known (each execution)
    uint64_t scratch_max;      // bytes one scratch buffer may hold on the device
    uint32_t max_groups_x;     // workgroups one dispatch may have along x
    /* Scratch and submissions (plan_work in plan.c). */
    uint32_t split_len, nsplit; // split-KV: keys per split and splits that hold keys (<= splits)
    uint64_t scr0_bytes, scr1_bytes; // split-KV partial O and (max, sum); unfused scores
    uint32_t blocks;           // fused and split-KV: row blocks of BR packed rows per KV head
    uint32_t blocks_per_sub;   // ... and how many go in one submission
    uint32_t bh_per, i_count;  // unfused: (batch, head) pairs and query rows per chunk
    uint32_t nchunks;          // unfused: chunks in all, in order bh-major
    uint32_t chunks_per_sub;   // ... and how many go in one submission
    uint32_t submissions;      // device submissions of the call (max_work_per_submit)
    char why[600];             // the reason for each choice, "; " between them
};

/* The kernels' parameter block (shaders/attn_iface.h): Vulkan's push constants and OpenCL's
 * parameter buffer, the same words. */
#define ATTN_C_uint uint32_t
#define ATTN_C_float float
#define ATTN_PARAM_MEMBER(t, n) ATTN_C_##t n;
struct attn_block {
    ATTN_PARAMS(ATTN_PARAM_MEMBER)
};
_Static_assert(sizeof(struct attn_block) == PARAM_WORDS * 4, "parameter block layout");
/* The strides block at the head of BIND_COEF (shaders/attn_iface.h), element strides. */
struct attn_strides {
    ATTN_STRIDES(ATTN_PARAM_MEMBER)
};
_Static_assert(sizeof(struct attn_strides) == STRIDE_WORDS * 4 && SI_COUNT == STRIDE_WORDS,
               "strides block layout");
_Static_assert(sizeof(void *) != 8 || sizeof(struct ssmax_attn_params) == 208,
               "struct ssmax_attn_params layout");
/* The block of a plan, with the tensors' first elements in their bindings (q, k, v, o, lse,
 * mask). */
void ssmax_plan_block(const struct attn_plan *pl, const uint32_t elem_off[6],
                      struct attn_block *out);

/* Appends a reason to pl->why. */
void ssmax_plan_why(struct attn_plan *pl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

struct attn_bufs {
    void *q, *k, *v, *o, *lse, *probs; // backend buffer objects
    size_t q_off, k_off, v_off, o_off, lse_off, probs_off;
    void *mask;                        // NULL without a mask
    size_t mask_off;
    void *scratch;                     // the application's scratch (recorded), else NULL
    size_t scratch_off;
};


/* The regions of an application's scratch (bufs->scratch) for a plan's recorded executions: the
 * coefficients, scratch 0, scratch 1 and the mask counts, at off[0..3] from its start, each at
 * a multiple of pl->scratch_align; *total: the bytes in all. */
void ssmax_scratch_layout(const struct attn_plan *pl, uint64_t off[4], uint64_t *total);

/* Checked handles (handle.c). init gives the context its serial; release frees the table. new
 * makes a handle for obj in *out; get resolves h (an argument called arg) to its object, or sets
 * SSMAX_ERR_INVALID_ARG saying whether h is of another context, destroyed or not a handle of this
 * kind, and returns NULL; free kills h (slot reused with a new generation); drop frees every
 * live handle of a kind, calling fn on each object after. */
void ssmax_handles_init(struct ssmax_context *ctx);
void ssmax_handles_release(struct ssmax_context *ctx);
int ssmax_handle_new(struct ssmax_context *ctx, enum handle_kind kind, void *obj, void **out);
void *ssmax_handle_get(struct ssmax_context *ctx, const void *h, enum handle_kind kind,
                       const char *arg);
void ssmax_handle_free(struct ssmax_context *ctx, const void *h);
void ssmax_handles_drop(struct ssmax_context *ctx, enum handle_kind kind,
                        void (*fn)(struct ssmax_context *ctx, void *obj));

/* Buffers (buffer.c): resolve turns a handle (NULL stays NULL) into the object, or NULL with the
 * error set; release frees an object whose handle is already dead. */
ssmax_buffer *ssmax_buffer_resolve(struct ssmax_context *ctx, const ssmax_buffer *h, const char *arg);
void ssmax_buffer_release(struct ssmax_context *ctx, void *obj);
/* A buffer over the backend object bk (which the backend's buf_destroy gives back when the buffer
 * goes) from byte base, size bytes: the application's memory, imported. */
int ssmax_buffer_adopt(struct ssmax_context *ctx, void *bk, size_t base, size_t size,
                       ssmax_buffer **out);
/* The buffers of b resolved into *out (objects in place of handles): SSMAX_OK, or the error of
 * the first handle that does not resolve (attn.c). */
int ssmax_attn_buffers_resolve(struct ssmax_context *ctx, const struct ssmax_attn_buffers *b,
                               struct ssmax_attn_buffers *out);

/* Opens device local_index of backend as ssmax_device_open does (closing the open one), but
 * through open(arg): a device over what the application made (its context, queue, device). */
typedef int (*ssmax_adopt_fn)(struct ssmax_context *ctx, void *bpriv, int local_index,
                              struct ssmax_dev *dev, const void *arg);
int ssmax_device_adopt(struct ssmax_context *ctx, enum ssmax_backend backend, int local_index,
                       ssmax_adopt_fn open, const void *arg);

/* One execution of plan h, recorded or enqueued by rec instead of run and waited for: resolves
 * h and the buffers, derives the execution's plan (ssmax_plan_exec) and calls rec with the plan's
 * own base plan, its backend state (*state, NULL until rec makes it; freed by the backend's
 * plan_state_free with the plan), the execution's plan and buffers (attn.c). */
struct attn_bufs;
typedef int (*ssmax_record_fn)(struct ssmax_dev *dev, const struct attn_plan *base, void **state,
                               const struct attn_plan *pl, const struct attn_bufs *ab, void *arg);
int ssmax_plan_record(struct ssmax_context *ctx, void *h, const struct ssmax_attn_buffers *b,
                      const struct ssmax_exec_args *args, ssmax_record_fn rec, void *arg);

/* Frees every plan of the context (attn.c): their device is closing. */
void ssmax_plans_drop(struct ssmax_context *ctx);

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

/* SSMAX_ERR_LIMIT_EXCEEDED naming the first tensor that breaks f, the limit and the values. */
int ssmax_plan_fit(struct ssmax_context *ctx, const struct attn_plan *pl,
                   const struct plan_fit *f);

/* Validation (validate.c): the parameters, each field named in the message. */
int ssmax_validate_params(const struct ssmax_attn_params *p, char *msg, size_t len);
/* Byte strides of Q, K, V, O (in that order; batch, head, row) with the defaults resolved (0: the
 * value that packs the dimension over the ones inside it), and each tensor's strided extent in
 * bytes. Only for parameters that passed ssmax_validate_params (no overflow then). */
/* Position of row 0 of batch item b (q_positions, q_pos, or the default from kv_lens[b]). */
uint64_t ssmax_seq_pos(const struct ssmax_attn_params *p, uint32_t b);
/* The mask's byte strides (dense defaults for its shape; 0 where it broadcasts) and extent; 0
 * when they overflow (validate.c). */
int ssmax_mask_layout(const struct ssmax_attn_params *p, uint64_t s[3], uint64_t *extent);
void ssmax_resolve_strides(const struct ssmax_attn_params *p, uint64_t s[4][3],
                           uint64_t extent[4]);
/* The plan (plan.c), on ctx's open device; b NULL plans without buffers (offsets 0, no LSE or
 * weights). Free with ssmax_plan_free, also after a failure. */
int ssmax_plan_make(struct ssmax_context *ctx, const struct ssmax_attn_params *p,
                    const struct ssmax_attn_buffers *b, struct attn_plan *out);
void ssmax_plan_free(struct ssmax_context *ctx, struct attn_plan *pl);
/* ssmax_plan_make without buffers, for the outputs want_lse and want_probs (a plan object). */
int ssmax_plan_make_for(struct ssmax_context *ctx, const struct ssmax_attn_params *p,
                        const struct ssmax_attn_buffers *b, int want_lse, int want_probs,
                        struct attn_plan *pl);
/* One execution of plan base with args a (kv_len 0 resolved to the plan's; at most the plan's,
 * q_pos < 0: the default for kv_len, per-batch arrays or NULL) and the buffers b (resolved). *pl
 * is base with the execution's values, buffers checked, and scratch and submissions worked out
 * again: the path, kernel and tiles stay. pl shares base's coefficients unless the execution has
 * per-batch arrays (then it owns a copy): ssmax_plan_free it, also after a failure (it frees only
 * what pl owns). */
int ssmax_plan_exec(struct ssmax_context *ctx, const struct attn_plan *base,
                    const struct ssmax_attn_buffers *b, const struct ssmax_exec_args *a,
                    struct attn_plan *pl);
/* Shared memory of the tiles kernels at BR x BC and head dim D, in bytes. */
uint64_t ssmax_tiles_shared_bytes(uint32_t D, uint32_t br, uint32_t bc);
/* Decode: fewer packed rows per KV head than pl->br; shrinks BR (and at D <= 64 widens BC) so
 * no workgroup computes empty rows. For the backends' default tiles. */
void ssmax_tiles_for_decode(struct attn_plan *pl);

/* half floats (half.c) */
float ssmax_half_to_float(uint16_t h);
uint16_t ssmax_float_to_half(float f);

/* CPU reference core (cpu/reference.c) */
int ssmax_ref_compute(const struct ssmax_attn_params *p, const struct ssmax_attn_host *io, char *msg,
                      size_t len);

/* Fault injection, for tests only: ssmax_fault_set(ctx, a, l) makes the a-th device allocation
 * from then on fail and the l-th submission report a lost device (0: none). Only code that links
 * the internal core (tests/test_faults.c) can call it: the shared library does not export it, and
 * no environment variable turns it on, so applications never see an injected fault. The backends
 * ask ssmax_fault_alloc and ssmax_fault_lost, each 1 exactly once. */
void ssmax_fault_set(struct ssmax_context *ctx, int alloc_at, int lost_at);
/* Test hook: lowers the Vulkan pipeline cache's cap on driver data to bytes (0: the default), for
 * the whole process (vulkan/vk_pcache.c). */
void ssmax_vk_pcache_cap_set(uint64_t bytes);
/* Test hook: lowers the elements the OpenCL kernels index from a binding's start to elements (0:
 * the default, 2^32 - 1), for plans made after it in the whole process (opencl/cl_plan.c), so
 * tensors past it in their cl_mem take the sub-buffer binding with small buffers. */
void ssmax_cl_index_limit_set(uint64_t elements);
/* Test hook: the sub-buffers the OpenCL backend made to bind tensors, in the whole process
 * (opencl/cl_attn.c). */
uint64_t ssmax_cl_sub_buffers_made(void);
int ssmax_fault_alloc(struct ssmax_context *ctx);
int ssmax_fault_lost(struct ssmax_context *ctx);

/* Closes ctx's open device (as ssmax_device_open does) and opens one of backend fns that is in
 * no device list (an imported device): open fills the zeroed dev (dev->ctx set), info included,
 * and releases what it made on failure. The device's index is -1. */
int ssmax_device_install(struct ssmax_context *ctx, const struct ssmax_backend_fns *fns,
                         int (*open)(struct ssmax_context *ctx, void *priv, struct ssmax_dev *dev),
                         void *priv);

/* SSMAX_OK when ctx has an open, working device, else the error (message set). */
int ssmax_need_device(struct ssmax_context *ctx);
/* ssmax_need_device, and the device can run work: a compile_only device gives
 * SSMAX_ERR_UNSUPPORTED naming it and why (buffers, attention and the plan calls). */
int ssmax_need_runnable(struct ssmax_context *ctx);
/* Workgroup-shared memory in bytes of the plan's kernel in a role: the fused kernel (tiles,
 * rows or lanes), the split-KV merge (none), and the unfused kernels qk, softmax and pv. The same
 * on both GPU backends (shaders/, cl/attn.cl). */
enum attn_role { ROLE_FUSED, ROLE_MERGE, ROLE_QK, ROLE_SOFTMAX, ROLE_PV, ROLE_MASK };
uint64_t ssmax_role_shared_bytes(const struct attn_plan *pl, enum attn_role role);
/* mkdir -p, best effort. */
void ssmax_mkdirs(const char *dir);
/* Cache directory (params, $SSMAX_CACHE_DIR, $XDG_CACHE_HOME/ssmax, ~/.cache/ssmax); "" if none. */
void ssmax_cache_dir(struct ssmax_context *ctx, char *out, size_t n);
/* Tuned tiles (tune.c): loaded when a device opens. */
void ssmax_tune_load(struct ssmax_dev *dev);
/* A stored entry the device refuses (why says how): an error while ssmax_tune_store checks it
 * (tune_strict), else dropped with a warning and 0, so the defaults run. */
int ssmax_tune_refused(struct ssmax_dev *dev, uint32_t D, const char *why);
/* The shared-memory tiles kernels' rules, the same on both GPU backends: BR rows x BC keys, TPR
 * invocations per row in the unfused P V kernel (1, 2 or 4, dividing D / 2), BR even, BC a
 * multiple of 8, BR * TPR <= 1024. Device limits are the backend's to check. */
int ssmax_tiles_ok(uint32_t D, uint32_t br, uint32_t bc, uint32_t tpr);
/* Parses a tiles override, "BR,BC,TPR" or "rows,BC[,RL]", into t and checks it against the rules
 * above: 0, or -1 when malformed or refused. */
int ssmax_parse_tiles(const char *s, uint32_t D, struct ssmax_tiles *t);
/* The tiles asked for ahead of the backend's defaults, in *t: the override in environment
 * variable env (except while ssmax_tune_store tries an entry), else the device's tuned entry.
 * fused 0 asks for the unfused kernels' tiles, which a rows-kernel choice does not name. Returns
 * where *t came from, or an error naming env for a malformed override. Device limits are the
 * caller's to check: a refused override is an error, a refused tuned entry goes to
 * ssmax_tune_refused. */
enum { TILES_DEFAULT, TILES_OVERRIDE, TILES_TUNED };
int ssmax_tiles_asked(struct ssmax_dev *dev, const char *env, uint32_t D, int fused,
                      struct ssmax_tiles *t);
/* 64-bit FNV-1a of p[0..n), continuing from h (SSMAX_FNV64_INIT to start): file names and torn-file
 * checks, never security. */
#define SSMAX_FNV64_INIT 0xcbf29ce484222325ull
uint64_t ssmax_fnv64(const void *p, size_t n, uint64_t h);
/* SipHash-2-4 of data under the 128-bit key k (hash.c). */
uint64_t ssmax_siphash24(const uint64_t k[2], const void *data, size_t n);
/* The OpenCL cache's keyed hash of a binary: SipHash under a key derived from the directory's
 * secret and the entry's key string (hash.c). */
uint64_t ssmax_cache_mac(const uint64_t secret[2], const char *key, const void *bin, size_t n);
/* The on-disk caches' files (cache.c). The cache directory's secret, <dir>/cache.key (16 random
 * bytes made by the first writer, kept by every later one), into k: 0, or -1 when there is none
 * and none can be made (logged at INFO as "<what>: ...": the caller's cache is off). */
int ssmax_cache_secret(struct ssmax_context *ctx, const char *dir, const char *what, uint64_t k[2]);
/* Writes the n parts, one after another, to path whole or not at all: a temporary file unique to
 * this process and call, renamed into place (an empty directory in the way is removed first).
 * 0, or -1 with errno set and nothing left behind. */
int ssmax_cache_write(const char *path, const void *const *parts, const size_t *sizes, int n);

/* Environment knobs */
int ssmax_env_int(const char *name, int def);

#endif
