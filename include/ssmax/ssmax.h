/*
 * ssmax: attention with Scalable-Softmax (SSMax) on Vulkan, OpenCL and the CPU.
 *
 * The whole public API. The function computed is specified in SPEC.md: for each batch item,
 * query head h and query row i,
 *
 *     S[i,j] = f(n_i, p_i, h) * scale * dot(Q[b,h,i,:], K[b,h/(Hq/Hkv),j,:])
 *     O[b,h,i,:] = sum_j softmax_j(S[i,:]) * V[b,h/(Hq/Hkv),j,:]      (visible keys only)
 *
 * where n_i is the number of keys row i sees and f is the scale mode (SSMax: s_h * ln(n)).
 *
 * Conventions
 * - Every fallible call returns SSMAX_OK (0) or a negative enum ssmax_result. The reason, naming the
 *   argument and the limit, is available from ssmax_last_error().
 * - Objects are created with ssmax_X_create(..., &out) and destroyed with ssmax_X_destroy(&obj), which
 *   accepts NULL and sets the handle to NULL.
 * - Params structs are copied during the call; pointers in them need only live for the call.
 * - A failed call leaves caller-visible buffers untouched.
 *
 * Thread-safety: distinct contexts are fully independent and may be used from different threads at
 * once. One context (and the buffers created from it) is externally synchronised: only one thread may
 * call into it at a time. Functions that take no context are thread-safe.
 */
#ifndef SSMAX_SSMAX_H
#define SSMAX_SSMAX_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(SSMAX_STATIC)
#define SSMAX_API
#elif defined(_WIN32)
#ifdef SSMAX_BUILDING
#define SSMAX_API __declspec(dllexport)
#else
#define SSMAX_API __declspec(dllimport)
#endif
#else
#define SSMAX_API __attribute__((visibility("default")))
#endif

/* Checked against meson.build's project version at configure time. */
#define SSMAX_VERSION_MAJOR 0
#define SSMAX_VERSION_MINOR 1
#define SSMAX_VERSION_PATCH 0
/** API version as 0x00MMmmpp. */
#define SSMAX_VERSION_API                                                                          \
    ((SSMAX_VERSION_MAJOR << 16) | (SSMAX_VERSION_MINOR << 8) | SSMAX_VERSION_PATCH)

/** Result codes: 0 on success, negative on failure, grouped by cause. */
enum ssmax_result {
    SSMAX_OK = 0,
    SSMAX_ERR_INVALID_ARG = -1,          ///< an argument is out of its documented range
    SSMAX_ERR_UNSUPPORTED = -2,          ///< valid, but this device/backend/path cannot do it
    SSMAX_ERR_NO_DEVICE = -3,            ///< no device matches the request (or none is open)
    SSMAX_ERR_OUT_OF_HOST_MEMORY = -4,   ///< host allocation failed
    SSMAX_ERR_OUT_OF_DEVICE_MEMORY = -5, ///< device allocation failed
    SSMAX_ERR_LIMIT_EXCEEDED = -6,       ///< the problem exceeds a device limit (buffer, dispatch)
    SSMAX_ERR_KERNEL_BUILD = -7,         ///< a kernel/pipeline failed to build (log in the message)
    SSMAX_ERR_DEVICE_LOST = -8,          ///< the device was lost; the context is failed for good
    SSMAX_ERR_BACKEND = -9,              ///< any other error reported by the driver
    SSMAX_ERR_CONTEXT_FAILED = -10,      ///< an earlier device loss made this context unusable
};

/** Backends. */
enum ssmax_backend {
    SSMAX_BACKEND_CPU = 0,    ///< the float64 reference, always available
    SSMAX_BACKEND_VULKAN = 1, ///< GLSL compute shaders (SPIR-V embedded at build time)
    SSMAX_BACKEND_OPENCL = 2, ///< OpenCL C kernels built at first use (binary cache on disk)
};
#define SSMAX_BACKEND_CPU_BIT (1u << SSMAX_BACKEND_CPU)
#define SSMAX_BACKEND_VULKAN_BIT (1u << SSMAX_BACKEND_VULKAN)
#define SSMAX_BACKEND_OPENCL_BIT (1u << SSMAX_BACKEND_OPENCL)

/** Storage type of Q, K, V and O. Arithmetic is always at least fp32. */
enum ssmax_dtype {
    SSMAX_F32 = 0,
    SSMAX_F16 = 1, ///< IEEE binary16, little endian
};

/** Length-dependent logit factor f (SPEC.md section 3). */
enum ssmax_mode {
    SSMAX_MODE_SOFTMAX = 0,    ///< f = 1
    SSMAX_MODE_SSMAX = 1,      ///< f = s_h * ln(n)
    SSMAX_MODE_SSMAX_BIAS = 2, ///< f = s_h * ln(n) + b_h
    SSMAX_MODE_LOGN = 3,       ///< f = max(1, ln(n) / ln(train_len))
    SSMAX_MODE_FLOOR_LOG = 4,  ///< f = 1 + beta * ln(floor((p + pos_offset) / floor_scale) + 1)
};

/** Which kernels compute the attention. */
enum ssmax_path {
    SSMAX_PATH_AUTO = 0,     ///< planner's choice from the shape and device
    SSMAX_PATH_FUSED = 1,    ///< one flash-style kernel, O(L*D) memory
    SSMAX_PATH_SPLIT_KV = 2, ///< fused, keys split over workgroups, then an LSE merge (decode)
    SSMAX_PATH_UNFUSED = 3,  ///< Q*K^T to a scores buffer, row softmax, P*V (needed for probs)
};

enum ssmax_device_type {
    SSMAX_DEVICE_OTHER = 0,
    SSMAX_DEVICE_INTEGRATED_GPU = 1,
    SSMAX_DEVICE_DISCRETE_GPU = 2,
    SSMAX_DEVICE_VIRTUAL_GPU = 3,
    SSMAX_DEVICE_CPU = 4, ///< a CPU: the reference, or a CPU driver (lavapipe, PoCL)
};

enum ssmax_log_level {
    SSMAX_LOG_NONE = 0,
    SSMAX_LOG_ERR = 1,
    SSMAX_LOG_WARN = 2,
    SSMAX_LOG_INFO = 3,
    SSMAX_LOG_DEBUG = 4,
};

/** One device as the library sees it. Plain data: copy freely. */
struct ssmax_device_info {
    enum ssmax_backend backend;
    int index;                    ///< index within its backend: the N of "vulkan:N"
    enum ssmax_device_type type;
    char name[256];
    char vendor[128];
    char api_version[64];         ///< "Vulkan 1.3.230", "OpenCL 3.0 PoCL ...", "C11 float64"
    char driver_version[128];
    uint32_t vendor_id, device_id; ///< PCI-style IDs where the API reports them, else 0
    uint32_t compute_units;       ///< CL_DEVICE_MAX_COMPUTE_UNITS; Vulkan CPU devices: online CPUs; 0 where unknown
    uint32_t subgroup_size;       ///< Vulkan subgroup size; 0 where the API has none
    uint32_t max_workgroup_size;  ///< invocations / work-items per workgroup
    uint64_t shared_memory;       ///< bytes of workgroup-shared (local) memory
    uint64_t max_buffer_size;     ///< largest buffer a kernel may address (binding range)
    uint64_t max_alloc_size;      ///< largest single allocation
    uint64_t global_memory;       ///< device memory size, 0 where unknown
    int fp16_arith;               ///< shaderFloat16 / cl_khr_fp16
    int fp16_storage;             ///< 16-bit storage buffers (Vulkan); OpenCL: vload_half, always
    int subgroups;                ///< subgroup arithmetic usable in compute
    /** 1: the device compiles pipelines but cannot run them: it has no memory the host can map or
     *  no queue that executes (RADV's null hardware under RADV_FORCE_FAMILY is one). "auto" never
     *  picks it; it opens, and ssmax_buffer_create, ssmax_attn, ssmax_attn_supported and
     *  ssmax_attn_plan_info on it give SSMAX_ERR_UNSUPPORTED naming the device and why. */
    uint8_t compile_only;
    /** 1: device_uuid holds the device's UUID, the same in every process and in every API that
     *  reports one (Vulkan: VkPhysicalDeviceIDProperties::deviceUUID; OpenCL: CL_DEVICE_UUID_KHR,
     *  on devices that list cl_khr_device_uuid). 0: unknown, device_uuid all zero: the cpu device,
     *  OpenCL devices without the extension, and drivers that report an all-zero UUID. "uuid:HEX"
     *  in ssmax_device_find names a device by it. */
    uint8_t has_device_uuid;
    uint8_t has_driver_uuid;      ///< 1: driver_uuid holds the driver's UUID (the same sources)
    uint8_t device_uuid[16];      ///< bytes in the API's order; printed as 8-4-4-4-12 hex digits
    uint8_t driver_uuid[16];      ///< VkPhysicalDeviceIDProperties::driverUUID, CL_DRIVER_UUID_KHR
    uint8_t reserved[29];         ///< zero
};

/** Host allocation hooks: malloc and free must be set. */
struct ssmax_allocator {
    void *(*malloc)(void *priv, size_t size);
    /** Optional (NULL allowed): the library never resizes a block. Kept so the struct's layout
     *  does not change. */
    void *(*realloc)(void *priv, void *ptr, size_t size);
    void (*free)(void *priv, void *ptr);
    void *priv;
};

/** Context creation parameters. Initialise with ssmax_context_params_default(). */
struct ssmax_context_params {
    uint32_t backends;                  ///< SSMAX_BACKEND_*_BIT mask; 0 = all built in (default)
    void (*log_cb)(void *priv, enum ssmax_log_level level, const char *msg); ///< NULL = silent
    void *log_priv;
    enum ssmax_log_level log_level;     ///< default SSMAX_LOG_WARN
    const struct ssmax_allocator *alloc; ///< host allocation hooks; NULL = libc (default)
    /** 1: Vulkan instances get VK_LAYER_KHRONOS_validation (when installed) and a debug messenger
     *  that counts errors (ssmax_validation_errors); OpenCL programs build with warnings shown.
     *  Default 0, or 1 when the environment sets SSMAX_VALIDATION=1. */
    int debug;
    const char *cache_dir;              ///< GPU kernel caches; NULL = $SSMAX_CACHE_DIR or the user cache
    /** Multiply-adds one GPU submission may carry before an attention call is cut into several,
     *  so no single submission runs for seconds (driver watchdogs, TDR). Results are identical
     *  either way. 0 = SSMAX_DEFAULT_MAX_WORK (2^33, about 0.1 s at 150 GFLOP/s). */
    uint64_t max_work_per_submit;
    uint8_t reserved[32];               ///< must be zero
};
#define SSMAX_DEFAULT_MAX_WORK (1ull << 33)

/** Byte strides of Q, K, V and O (SPEC.md section 7.1), each { batch, head, row }: element d of
 *  row i of head h of batch item b of Q sits at q_off + b*q[0] + h*q[1] + i*q[2] + d*esz (esz: 4
 *  for SSMAX_F32, 2 for SSMAX_F16); the head_dim elements of a row are contiguous. 0 takes the
 *  dense value of that stride ([B, H, L, D] C order: row head_dim*esz, head L*row, batch H*head,
 *  with L = kv_len for K and V). kv_len keeps its meaning: the first kv_len rows of each K/V head
 *  are read, whatever the allocation holds past them.
 *
 *  Rules (ssmax_attn_validate; SSMAX_ERR_INVALID_ARG naming the field, e.g. "strides->k[2]"):
 *  - every stride a multiple of 4 bytes (rows start on 4-byte words: the GPU kernels read f16
 *    pairs as one word). Strides and offsets that are multiples of 4 elements also let some
 *    Vulkan kernels read 4 elements at a time (faster, same results);
 *  - a row stride at least head_dim*esz (rows of one head do not overlap);
 *  - O may not overlap itself: the (count, stride) pairs of O's batch, head and row dimensions
 *    with count > 1, in increasing stride order, must each step past everything the smaller ones
 *    span (stride >= (previous count - 1) * previous stride + previous span, starting from the
 *    row's head_dim*esz bytes). Inputs may overlap themselves and one another (K and V in one
 *    buffer); O and LSE may not overlap any input (checked on byte ranges: from the offset to the
 *    last element's end).
 *  The buffers must hold the strided extent: off + (B-1)*s[0] + (H-1)*s[1] + (L-1)*s[2] +
 *  head_dim*esz. GPU kernels index elements in 32 bits within a binding (the limits of
 *  ssmax_attn_supported apply to that extent).
 *
 *  [B, L, H, D] (most engines), f32, Q [B, Lq, Hq, D]:
 *      q = { Lq*Hq*D*4, D*4, Hq*D*4 }      (k, v alike with kv_len, kv_heads)
 *  A KV cache [B, Hkv, C, D] of capacity C >= kv_len rows:
 *      k = v = { Hkv*C*D*esz, C*D*esz, 0 }
 *  K and V interleaved in one buffer as [B, C, 2, Hkv, D]: k = v = { C*2*Hkv*D*esz, D*esz,
 *  2*Hkv*D*esz }, with v_off = k_off + Hkv*D*esz. */
struct ssmax_strides {
    uint64_t q[3], k[3], v[3], o[3]; ///< bytes: batch, head, row; 0 = the dense value
    uint8_t reserved[32];            ///< must be zero
};

/** The shape of an additive mask (SPEC.md section 7.3). Its rows hold kv_len entries. */
enum ssmax_mask_shape {
    SSMAX_MASK_NONE = 0,     ///< no mask (default)
    SSMAX_MASK_LQ_LK = 1,    ///< [q_len, kv_len], shared by every batch item and head
    SSMAX_MASK_B1_LQ_LK = 2, ///< [batch, 1, q_len, kv_len], shared by the heads of a batch item
    SSMAX_MASK_BH_LQ_LK = 3, ///< [batch, q_heads, q_len, kv_len]
};

/** One attention problem. Initialise with ssmax_attn_params_default(). Layouts are dense C order
 *  unless strides says otherwise: Q and O [batch, q_heads, q_len, head_dim]; K and V [batch,
 *  kv_heads, kv_len, head_dim]; LSE [batch, q_heads, q_len] float32 and probs [batch, q_heads,
 *  q_len, kv_len] float32 are always dense. */
struct ssmax_attn_params {
    enum ssmax_dtype dtype;     ///< storage type of Q, K, V, O (default SSMAX_F32)
    uint32_t batch;             ///< >= 1
    uint32_t q_heads;           ///< >= 1, a multiple of kv_heads
    uint32_t kv_heads;          ///< >= 1
    uint32_t q_len;             ///< >= 1
    uint32_t kv_len;            ///< >= 1
    uint32_t head_dim;          ///< a multiple of 8 in [8, 256] (CPU: any in [1, 1024])
    float scale;                ///< softmax scale c; 0 = 1/sqrt(head_dim) (default). Finite, >= 0
    enum ssmax_mode mode;       ///< default SSMAX_MODE_SSMAX
    const float *s;             ///< per-query-head s [q_heads] (SSMAX, SSMAX_BIAS); NULL = s_all
    const float *b;             ///< per-query-head b [q_heads] (SSMAX_BIAS); NULL = b_all
    float s_all;                ///< s for every head when s is NULL (default 0.43). Finite, >= 0
    float b_all;                ///< b for every head when b is NULL (default 0). Finite
    uint32_t train_len;         ///< LOGN training length L, >= 2 (default 8192)
    float floor_beta;           ///< FLOOR_LOG beta, finite (default 0.1)
    uint32_t floor_scale;       ///< FLOOR_LOG F, >= 1 (default 8192)
    uint32_t pos_offset;        ///< FLOOR_LOG o (default 1; Mistral uses 0)
    int causal;                 ///< 1: row i sees keys 0..q_pos+i (default 0)
    int64_t q_pos;              ///< absolute position of row 0; < 0 = default kv_len - q_len
                                ///< (non-causal: 0 when q_len > kv_len). Causal: q_pos+q_len <= kv_len.
                                ///< Positions are 32-bit: q_pos + q_len <= 2^32-1, and for FLOOR_LOG
                                ///< q_pos + q_len + pos_offset <= 2^32-1
    enum ssmax_path path;       ///< default SSMAX_PATH_AUTO
    uint32_t kv_splits;         ///< split-KV pieces; 0 = planner's choice (default)
    const struct ssmax_strides *strides; ///< byte strides of Q, K, V, O; NULL: dense (default)

    /* Inference extensions (SPEC.md sections 7.2 to 7.4), all off by default. A key j is visible
     * to row i of batch item b, at position p = q_pos[b] + i, when j < kv_len[b], j <= p
     * (causal), j > p - window (window), and the mask entry is not -inf; n, the count every
     * scale mode uses, is the number of visible keys. Keys that are not visible are never read. */
    /** [batch] keys of each batch item, each in [1, kv_len]; NULL: kv_len for every item. A
     *  padded batch in one call: item b reads the first kv_lens[b] rows of its K and V heads. */
    const uint32_t *kv_lens;
    /** [batch] position of query row 0 of each batch item, each >= 0 under the rules of q_pos
     *  (checked against kv_len, the tensors' length); NULL: q_pos for every item, and when q_pos
     *  is < 0 (the default) kv_lens[b] - q_len for item b (0 when that is negative). */
    const int64_t *q_positions;
    uint32_t window;            ///< sliding window W >= 1, causal only: a row at position p sees
                                ///< keys j > p - W (n = min(p + 1, W) without a mask); 0: none
    float softcap;              ///< C > 0: z = C * tanh(z / C) after the factor and before the
                                ///< mask (Gemma-style); 0: none (default). 0, or finite >= FLT_MIN
    const float *sinks;         ///< [q_heads] sink logit of each query head: in the softmax's
                                ///< denominator only (not a key, not in n, no V); finite and
                                ///< >= -FLT_MAX/2; NULL: none
    enum ssmax_mask_shape mask; ///< the additive mask's shape; its data: bufs->mask (io->mask)
    enum ssmax_dtype mask_dtype; ///< SSMAX_F32 or SSMAX_F16 (IEEE half, -inf allowed)
    /** The mask's byte strides { batch, head, row }: entry j of row i of head h of batch item b
     *  sits at mask_off + b*m[0] + h*m[1] + i*m[2] + j*esz. 0 takes the dense value for the shape
     *  (row kv_len*esz, head q_len*row, batch heads*head); a dimension the shape broadcasts
     *  (batch and head of SSMAX_MASK_LQ_LK, head of SSMAX_MASK_B1_LQ_LK) must be 0. Each a
     *  multiple of the entry size. An entry of -inf hides the key (and takes it out of n); a
     *  finite one is added to the logit; NaN on a visible key makes the row NaN. */
    uint64_t mask_strides[3];
    uint8_t reserved[32];       ///< must be zero
};

typedef struct ssmax_context ssmax_context; ///< Thread-safety: externally synchronised
typedef struct ssmax_buffer ssmax_buffer;   ///< belongs to one context; same rule

/** Device buffers for one ssmax_attn call. Offsets are in bytes. lse and probs are optional. */
struct ssmax_attn_buffers {
    ssmax_buffer *q, *k, *v, *o;
    ssmax_buffer *lse;   ///< NULL: no LSE output
    ssmax_buffer *probs; ///< NULL: no attention weights (requires the unfused path when set)
    size_t q_off, k_off, v_off, o_off, lse_off, probs_off;
    ssmax_buffer *mask;  ///< the additive mask (params mask not SSMAX_MASK_NONE), else NULL;
                         ///< an imported buffer must hold the mask's extent rounded up to 4 bytes
    size_t mask_off;     ///< a multiple of 4 bytes
    /** The application's scratch for a recorded execution (ssmax_vulkan_plan_record), which then
     *  allocates nothing: ssmax_plan_info.scratch_bytes from scratch_off, a multiple of
     *  ssmax_plan_info.scratch_align, overlapping no tensor of the call. ssmax writes and reads it
     *  inside the recorded commands (parameters, partial results, mask counts): the application
     *  may reuse it between executions (a barrier from the compute stage first) but not while
     *  one runs. NULL: the plan's own. Other entry points refuse it. */
    ssmax_buffer *scratch;
    size_t scratch_off;
    uint8_t reserved[32 - sizeof(void *) - sizeof(size_t)]; ///< must be zero
};

/** Host arrays for the reference. q, k, v, o use params->dtype and params->strides (byte strides
 *  from these pointers); the others are optional and dense ([B, Hq, Lq, D] for o_f64). */
struct ssmax_attn_host {
    const void *q, *k, *v;
    void *o;        ///< may be NULL when o_f64 is set
    float *lse;     ///< optional [batch, q_heads, q_len]
    float *probs;   ///< optional [batch, q_heads, q_len, kv_len]
    double *o_f64;  ///< optional: the output before rounding to the storage type
    double *lse_f64; ///< optional
    const void *mask; ///< the additive mask when params mask is set (params mask_dtype and
                      ///< mask_strides, in bytes from this pointer); else NULL
};

/** Result of comparing an output with the reference (SPEC.md section 6). */
struct ssmax_compare {
    size_t count;            ///< elements compared
    double nmse;             ///< sum (got-ref)^2 / sum ref^2 (ref all zero: sum (got-ref)^2)
    double max_abs;          ///< max |got - ref| over finite pairs
    double max_ref;          ///< max |ref|
    size_t nonfinite_mismatch; ///< positions where exactly one side is NaN/Inf, or Infs differ
    size_t first_bad[8];     ///< first indices over the tolerance or nonfinite-mismatched
    double first_ref[8], first_got[8];
    int n_first_bad;
};

/* ---- version, errors, logging ---- */

/** "0.1.0". Thread-safe. */
SSMAX_API const char *ssmax_version(void);
/** SSMAX_VERSION_API of the library actually loaded. */
SSMAX_API unsigned ssmax_version_api(void);
/** sizeof of a public struct as the library was compiled: name is the struct's tag without
 *  "struct " ("ssmax_attn_params", "ssmax_attn_buffers", "ssmax_attn_host", "ssmax_exec_args",
 *  "ssmax_device_info", "ssmax_strides", "ssmax_compare", "ssmax_plan_info",
 *  "ssmax_context_params", "ssmax_tiles", "ssmax_allocator"). 0 for NULL or any other name.
 *  Bindings that mirror the structs (the Python package, ctypes or cffi) compare these with their
 *  own sizes, together with ssmax_version_api(), when they load the library, so a header and a
 *  library that disagree fail loudly instead of passing fields at the wrong offsets. Thread-safe. */
SSMAX_API size_t ssmax_struct_size(const char *name);
/** Static string for a result code ("invalid argument", ...); never NULL. */
SSMAX_API const char *ssmax_strerror(int err);
/** Message of the most recent call on ctx when it failed, naming the argument and the limit; ""
 *  when that call succeeded (every call that returns a status clears it first).
 *  Calls that return no status (ssmax_*_destroy, ssmax_buffer_size) leave it as it was when they
 *  succeed and set it when they refuse a handle.
 *  ctx NULL: the same for the context-free calls (ssmax_attn_ref, ssmax_attn_validate,
 *  ssmax_context_create, ...) on this thread, which also holds the message of a failed call that
 *  had a context. The string stays valid until the next call on the same context or thread. */
SSMAX_API const char *ssmax_last_error(const ssmax_context *ctx);

/* ---- context and devices ---- */

SSMAX_API void ssmax_context_params_default(struct ssmax_context_params *p);
/** Creates a context and enumerates the devices of every enabled backend. A missing Vulkan or
 *  OpenCL loader or driver is not an error: that backend lists no devices (see the log).
 *  @return SSMAX_OK, SSMAX_ERR_INVALID_ARG, SSMAX_ERR_OUT_OF_HOST_MEMORY. */
SSMAX_API int ssmax_context_create(const struct ssmax_context_params *p, ssmax_context **out);
/** Destroys the context, its open device and all buffers still alive. NULL-safe. */
SSMAX_API void ssmax_context_destroy(ssmax_context **ctx);

/** Number of devices over all backends (>= 1: the CPU is always there), or a negative error. */
SSMAX_API int ssmax_device_count(ssmax_context *ctx);
/** Fills *out for device number index (0 <= index < count), in the order listed. */
SSMAX_API int ssmax_device_get_info(ssmax_context *ctx, int index, struct ssmax_device_info *out);
/** Which device "spec" names: "auto", "cpu", "vulkan", "vulkan:N", "opencl", "opencl:N" or
 *  "uuid:HEX". NULL: $SSMAX_DEVICE, else "auto". "auto" picks a real GPU first (discrete, then
 *  integrated), then Vulkan, then OpenCL, then the CPU, never a compile_only device; so does
 *  "vulkan" or "opencl" without an index. "uuid:HEX" names the device whose device_uuid is HEX:
 *  32 hex digits in either case, dashes ignored (the 8-4-4-4-12 form `ssmax devices` prints, or
 *  none); where two devices report the same UUID (one GPU through Vulkan and through OpenCL), the
 *  first listed. A malformed HEX is SSMAX_ERR_INVALID_ARG, a UUID no device has
 *  SSMAX_ERR_NO_DEVICE, each message naming the spec. Returns the device's list index, or a
 *  negative error. */
SSMAX_API int ssmax_device_find(ssmax_context *ctx, const char *spec);
/** Opens a device by list index (index < 0: "auto"); closes the one open before, with its buffers.
 *  @return SSMAX_OK, SSMAX_ERR_NO_DEVICE, SSMAX_ERR_BACKEND, ... */
SSMAX_API int ssmax_device_open(ssmax_context *ctx, int index);
/** Info of the open device. SSMAX_ERR_NO_DEVICE when none is open. */
SSMAX_API int ssmax_device_current(ssmax_context *ctx, struct ssmax_device_info *out);
/** Errors the context's debug layer reported since creation: with debug set, the Vulkan
 *  validation layer's errors (counted by our messenger); 0 for every other backend and without
 *  debug. */
SSMAX_API uint64_t ssmax_validation_errors(const ssmax_context *ctx);

/** The fused path's kernels a tile choice can name. */
enum ssmax_kernel {
    SSMAX_KERNEL_TILES = 0, ///< shared-memory tiles: rows x keys per workgroup (every GPU backend)
    SSMAX_KERNEL_ROWS = 1,  ///< query rows in subgroup lanes, no shared memory (Vulkan, with
                            ///< subgroup shuffles and head_dim a multiple of the subgroup size)
};

/** Tile sizes for one head_dim (ssmax_tune_store). */
struct ssmax_tiles {
    enum ssmax_kernel kernel;
    /** TILES: query rows per workgroup, even, in [2, 256]. ROWS: query rows per subgroup lane,
     *  in [1, 4]. */
    uint32_t rows;
    /** TILES: keys per tile, a multiple of 8 in [8, 256]. ROWS: keys per step, in [1, 16]. */
    uint32_t keys;
    /** TILES: invocations per row of the unfused P V kernel (1, 2 or 4, dividing head_dim / 2).
     *  ROWS: 0 (the unfused kernels then take the device's defaults). */
    uint32_t lanes;
};

/** Stores tiles for head_dim on the open device in the cache directory (the context's cache_dir,
 *  $SSMAX_CACHE_DIR, $XDG_CACHE_HOME/ssmax or ~/.cache/ssmax). Devices opened later with the same
 *  name and driver use them unless the backend's tile override is set (README, "Tuning").
 *  The cpu device has no tiles (SSMAX_ERR_UNSUPPORTED); a kernel the backend lacks is
 *  SSMAX_ERR_INVALID_ARG. Before storing, runs a small attention with these tiles (fused,
 *  split-KV and unfused paths; overrides do not apply) and compares it with the reference: tiles
 *  the device cannot run give SSMAX_ERR_LIMIT_EXCEEDED naming the tiles and the limit, a wrong
 *  result SSMAX_ERR_UNSUPPORTED, and nothing is stored. A stored entry the device refuses (a file
 *  from an older version, or edited by hand) is ignored with a warning (SSMAX_LOG_WARN), once per
 *  opened device, and the defaults run. `ssmax bench --tune` searches and stores them. */
SSMAX_API int ssmax_tune_store(ssmax_context *ctx, uint32_t head_dim,
                               const struct ssmax_tiles *tiles);

/* ---- buffers (on the open device) ---- */

/* Handles. An ssmax_buffer pointer is a checked handle, not an address: it names one buffer of one
 * context. Given to a call of another context, after ssmax_buffer_destroy, or after the device it
 * was made on was closed (ssmax_device_open of another device, ssmax_context_destroy), it gives
 * SSMAX_ERR_INVALID_ARG with a message saying which, never a crash; a new buffer never takes an
 * old handle's value while the context lives (generations of 2^23 per slot). The same holds for
 * plans. Handles of a destroyed context are recognised as such as long as fewer than 2^20
 * contexts were made since. */

/** Allocates size bytes (>= 1) on the open device. Contents are undefined until written. */
SSMAX_API int ssmax_buffer_create(ssmax_context *ctx, size_t size, ssmax_buffer **out);
/** Frees the buffer and sets *buf = NULL. NULL-safe. A handle that is not a live buffer of ctx
 *  is left as it is, with the reason in ssmax_last_error(ctx). */
SSMAX_API void ssmax_buffer_destroy(ssmax_context *ctx, ssmax_buffer **buf);
/** Size in bytes; 0 for NULL, and for a handle that is not a live buffer of ctx (the reason in
 *  ssmax_last_error(ctx)). */
SSMAX_API size_t ssmax_buffer_size(ssmax_context *ctx, const ssmax_buffer *buf);
/** Copies size bytes from host src into dst at byte offset off; blocks until done. */
SSMAX_API int ssmax_buffer_write(ssmax_context *ctx, ssmax_buffer *dst, size_t off, const void *src,
                                 size_t size);
/** Copies size bytes at byte offset off of src to host dst; blocks until done. */
SSMAX_API int ssmax_buffer_read(ssmax_context *ctx, ssmax_buffer *src, size_t off, void *dst,
                                size_t size);

/* ---- attention ---- */

SSMAX_API void ssmax_attn_params_default(struct ssmax_attn_params *p);
/** Checks p without a device: every field within its documented range, sizes without overflow.
 *  On failure the message (ssmax_last_error(NULL), and errbuf when given) names the field and limit. */
SSMAX_API int ssmax_attn_validate(const struct ssmax_attn_params *p, char *errbuf, size_t errlen);
/** ssmax_attn_validate plus what the open device can run (head_dim, buffer range, dispatch limits).
 *  Returns SSMAX_OK, SSMAX_ERR_INVALID_ARG, SSMAX_ERR_UNSUPPORTED or SSMAX_ERR_LIMIT_EXCEEDED. */
SSMAX_API int ssmax_attn_supported(ssmax_context *ctx, const struct ssmax_attn_params *p);
/** Computes attention on the open device and waits for it. Buffers must be large enough for the
 *  shapes at their offsets. On failure nothing is written to o, lse or probs. An output may not
 *  share a byte with an input or another output (SSMAX_ERR_INVALID_ARG naming both); inputs may.
 *  NaN in a row's Q, or in a key or value the row sees, makes that row's O and LSE NaN and no other
 *  row's; keys a row cannot see (causal mask) never reach it, whatever they hold.
 *  Logits are fp32 on every device, the reference included: a logit above FLT_MAX makes its row NaN;
 *  one below -FLT_MAX/2 gives its key weight 0 (a row with no weight left: O = 0, LSE = -inf).
 *  Devices agree with the reference while max(1, f*scale) * sum_d |q_d * k_d| <= FLT_MAX for every
 *  visible key; past that, with the logit itself finite, a GPU path may return NaN for the row.
 *  @return SSMAX_OK or a negative error; SSMAX_ERR_DEVICE_LOST fails the context for good. */
SSMAX_API int ssmax_attn(ssmax_context *ctx, const struct ssmax_attn_params *p,
                         const struct ssmax_attn_buffers *bufs);
/** Device time of the last successful ssmax_attn in nanoseconds (timestamp queries / profiling
 *  events; the CPU backend reports wall time). */
SSMAX_API int ssmax_last_device_time(ssmax_context *ctx, uint64_t *device_ns);
/** Which path and split count the last successful ssmax_attn used. */
SSMAX_API int ssmax_last_path(ssmax_context *ctx, enum ssmax_path *path, uint32_t *kv_splits);

/** An attention call's plan: what runs and why. Each call makes its plan once (validation, path,
 *  kernel, tiles, scratch, submissions) and runs exactly that. */
struct ssmax_plan_info {
    enum ssmax_path path;     ///< what runs, never SSMAX_PATH_AUTO
    uint32_t kv_splits;       ///< key splits, >= 1 (> 1 only on SSMAX_PATH_SPLIT_KV)
    char kernel[32];          ///< the kernel, e.g. "flash_attn", "flash_rows", "qk+softmax+pv"
    uint32_t tile_rows;       ///< query rows a workgroup (or subgroup, for flash_rows) takes
    uint32_t tile_keys;       ///< keys a tile (a step)
    uint32_t submissions;     ///< device submissions the call is cut into (max_work_per_submit)
    uint64_t scratch_bytes;   ///< device scratch the call uses; for a plan, what an
                              ///< application's scratch (ssmax_attn_buffers.scratch) must hold
    char why[600];            ///< the reason for each choice, "; " between them
    uint32_t scratch_align;   ///< the application's scratch offset must be a multiple of this
                              ///< (0: the device takes no application scratch)
    uint8_t reserved[28];
};
/** The plan ssmax_attn would make for p on the open device, without running it; bufs may be NULL
 *  (no LSE or weights, offsets 0). Fails exactly where ssmax_attn_supported (bufs NULL) or
 *  ssmax_attn would, before running; *out is written only on success. */
SSMAX_API int ssmax_attn_plan_info(ssmax_context *ctx, const struct ssmax_attn_params *p,
                                   const struct ssmax_attn_buffers *bufs,
                                   struct ssmax_plan_info *out);
/** The plan of the last successful ssmax_attn (zeroed before the first). */
SSMAX_API int ssmax_last_plan(ssmax_context *ctx, struct ssmax_plan_info *out);

/* ---- plans: plan once, execute many times ---- */

typedef struct ssmax_plan ssmax_plan; ///< a checked handle of its context, like ssmax_buffer

/** Outputs a plan's executions write besides O. */
enum ssmax_plan_flags {
    SSMAX_PLAN_LSE = 1,   ///< executions may write LSE (bufs->lse; NULL skips it)
    SSMAX_PLAN_PROBS = 2, ///< executions write the attention weights (bufs->probs, required;
                          ///< path unfused or auto)
};

/** What changes from one execution to the next (a decode step). Initialise with
 *  ssmax_exec_args_default(). */
struct ssmax_exec_args {
    /** Keys this execution attends over: the first kv_len rows of each K and V head, in
     *  [1, the plan's kv_len]; 0 = the plan's kv_len. The plan's kv_len is the capacity: the
     *  size K and V are laid out for, and the upper bound every choice was made for. */
    uint32_t kv_len;
    /** Position of query row 0, as ssmax_attn_params.q_pos; < 0 = kv_len - q_len (0 when that
     *  is negative). Causal: q_pos + q_len <= the plan's kv_len; a row past kv_len - 1 sees the
     *  kv_len keys there are (SPEC.md section 7.2). */
    int64_t q_pos;
    /** [batch] keys of each batch item this execution reads, as ssmax_attn_params.kv_lens, each
     *  in [1, kv_len] (this execution's); NULL: kv_len for every item. */
    const uint32_t *kv_lens;
    /** [batch] position of query row 0 of each batch item, as ssmax_attn_params.q_positions;
     *  NULL: q_pos for every item (< 0: each item's kv_lens[b] - q_len). */
    const int64_t *q_positions;
    uint8_t reserved[32]; ///< must be zero
};
SSMAX_API void ssmax_exec_args_default(struct ssmax_exec_args *a);

/** Makes a plan for p on the open device: validates p, chooses path, kernel, tiles and splits,
 *  builds the pipelines (Vulkan) or program (OpenCL) it runs and allocates its scratch, so that
 *  no execution compiles or allocates. p->q_pos, p->kv_lens and p->q_positions are not used
 *  (executions give theirs, struct ssmax_exec_args); p's pointers need only live for the call. flags: SSMAX_PLAN_*. The plan belongs to the
 *  open device: closing it (ssmax_device_open, ssmax_context_destroy) destroys the plan.
 *  @return SSMAX_OK, SSMAX_ERR_INVALID_ARG, SSMAX_ERR_UNSUPPORTED, SSMAX_ERR_LIMIT_EXCEEDED,
 *  SSMAX_ERR_KERNEL_BUILD, ...; *out is NULL on failure. */
SSMAX_API int ssmax_plan_create(ssmax_context *ctx, const struct ssmax_attn_params *p,
                                uint32_t flags, ssmax_plan **out);
/** Runs the plan on bufs and waits for it, with args (NULL: the defaults). The same contract as
 *  ssmax_attn: on failure nothing is written to the outputs. K and V hold the plan's kv_len rows
 *  per head; the first args->kv_len of them are read. Updates ssmax_last_plan,
 *  ssmax_last_path and ssmax_last_device_time. */
SSMAX_API int ssmax_plan_execute(ssmax_context *ctx, ssmax_plan *plan,
                                 const struct ssmax_attn_buffers *bufs,
                                 const struct ssmax_exec_args *args);
/** What the plan runs and why (scratch_bytes: at the plan's kv_len, the most any execution uses). */
SSMAX_API int ssmax_plan_get_info(ssmax_context *ctx, const ssmax_plan *plan,
                                  struct ssmax_plan_info *out);
/** Frees the plan and sets *plan = NULL. NULL-safe; a handle that is not a live plan of ctx is
 *  left as it is, with the reason in ssmax_last_error(ctx). */
SSMAX_API void ssmax_plan_destroy(ssmax_context *ctx, ssmax_plan **plan);

/** The float64 reference on host arrays (the judge of every backend). Thread-safe.
 *  @return SSMAX_OK, SSMAX_ERR_INVALID_ARG, SSMAX_ERR_OUT_OF_HOST_MEMORY. */
SSMAX_API int ssmax_attn_ref(const struct ssmax_attn_params *p, const struct ssmax_attn_host *io);

/* ---- numerics helpers ---- */

/** Compares got (float32) with ref (float64) elementwise; atol is the per-element tolerance used
 *  to pick first_bad (<= 0: only non-finite mismatches count). Thread-safe. */
SSMAX_API void ssmax_compare_f32(const double *ref, const float *got, size_t n, double atol,
                                 struct ssmax_compare *out);
/** Same for IEEE half input. */
SSMAX_API void ssmax_compare_f16(const double *ref, const uint16_t *got, size_t n, double atol,
                                 struct ssmax_compare *out);
/** float <-> IEEE half (round to nearest even; overflow gives +-Inf, NaN stays NaN). */
SSMAX_API uint16_t ssmax_f32_to_f16(float x);
SSMAX_API float ssmax_f16_to_f32(uint16_t h);
/** The factor f of SPEC.md section 3 for query head h, visible-key count n and position p; NaN
 *  when p is NULL, or when h is not below p->q_heads and per-head s or b arrays are given. */
SSMAX_API double ssmax_row_factor(const struct ssmax_attn_params *p, uint32_t h, uint64_t n,
                                  uint64_t pos);

#ifdef __cplusplus
}
#endif
#endif /* SSMAX_SSMAX_H */
