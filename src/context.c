/*
 * Context lifetime, device enumeration and selection, errors, logging, host allocation hooks.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "backend.h"
#include "internal.h"

static _Thread_local char tl_err[2048];

static const struct ssmax_backend_fns *const all_backends[] = {
    &ssmax_backend_cpu,
#ifdef SSMAX_HAVE_VULKAN
    &ssmax_backend_vulkan,
#endif
#ifdef SSMAX_HAVE_OPENCL
    &ssmax_backend_opencl,
#endif
};

/* SSMAX_VERSION_STRING: config.h, from meson.build's project version. */
const char *ssmax_version(void) { return SSMAX_VERSION_STRING; }
unsigned ssmax_version_api(void) { return SSMAX_VERSION_API; }

size_t ssmax_struct_size(const char *name)
{
    static const struct {
        const char *name;
        size_t size;
    } sizes[] = {
        { "ssmax_attn_params", sizeof(struct ssmax_attn_params) },
        { "ssmax_attn_buffers", sizeof(struct ssmax_attn_buffers) },
        { "ssmax_attn_host", sizeof(struct ssmax_attn_host) },
        { "ssmax_exec_args", sizeof(struct ssmax_exec_args) },
        { "ssmax_device_info", sizeof(struct ssmax_device_info) },
        { "ssmax_strides", sizeof(struct ssmax_strides) },
        { "ssmax_compare", sizeof(struct ssmax_compare) },
        { "ssmax_plan_info", sizeof(struct ssmax_plan_info) },
        { "ssmax_context_params", sizeof(struct ssmax_context_params) },
        { "ssmax_tiles", sizeof(struct ssmax_tiles) },
        { "ssmax_allocator", sizeof(struct ssmax_allocator) },
    };
    if (!name)
        return 0;
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        if (!strcmp(name, sizes[i].name))
            return sizes[i].size;
    return 0;
}

const char *ssmax_strerror(int err)
{
    switch (err) {
    case SSMAX_OK: return "success";
    case SSMAX_ERR_INVALID_ARG: return "invalid argument";
    case SSMAX_ERR_UNSUPPORTED: return "unsupported";
    case SSMAX_ERR_NO_DEVICE: return "no such device";
    case SSMAX_ERR_OUT_OF_HOST_MEMORY: return "out of host memory";
    case SSMAX_ERR_OUT_OF_DEVICE_MEMORY: return "out of device memory";
    case SSMAX_ERR_LIMIT_EXCEEDED: return "device limit exceeded";
    case SSMAX_ERR_KERNEL_BUILD: return "kernel build failed";
    case SSMAX_ERR_DEVICE_LOST: return "device lost";
    case SSMAX_ERR_BACKEND: return "backend error";
    case SSMAX_ERR_CONTEXT_FAILED: return "context failed after device loss";
    default: return "unknown error";
    }
}

const char *ssmax_last_error(const ssmax_context *ctx) { return ctx ? ctx->err : tl_err; }

void ssmax_log(struct ssmax_context *ctx, enum ssmax_log_level lvl, const char *fmt, ...)
{
    if (!ctx || !ctx->params.log_cb || lvl > ctx->params.log_level || lvl == SSMAX_LOG_NONE)
        return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    ctx->params.log_cb(ctx->params.log_priv, lvl, msg);
}

int ssmax_set_error(struct ssmax_context *ctx, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tl_err, sizeof(tl_err), fmt, ap);
    va_end(ap);
    if (ctx) {
        memcpy(ctx->err, tl_err, sizeof(ctx->err));
        ssmax_log(ctx, SSMAX_LOG_ERR, "%s", ctx->err);
    }
    return code;
}

void ssmax_error_clear(struct ssmax_context *ctx)
{
    if (ctx)
        ctx->err[0] = 0;
    else
        tl_err[0] = 0;
}

void ssmax_fault_set(struct ssmax_context *ctx, int alloc_at, int lost_at)
{
    ctx->fault_alloc_at = alloc_at, ctx->fault_alloc_n = 0;
    ctx->fault_lost_at = lost_at, ctx->fault_lost_n = 0;
}

int ssmax_fault_alloc(struct ssmax_context *ctx)
{
    return ctx && ctx->fault_alloc_at > 0 && ++ctx->fault_alloc_n == ctx->fault_alloc_at;
}

int ssmax_fault_lost(struct ssmax_context *ctx)
{
    return ctx && ctx->fault_lost_at > 0 && ++ctx->fault_lost_n == ctx->fault_lost_at;
}

/* The device list's struct: compile_only came out of reserved; the UUIDs did not fit in what was
 * left and grew it by 32 bytes, leaving 29 reserved. Its size changes only on purpose. */
struct device_info_layout {
    _Alignas(struct ssmax_device_info) char fields[offsetof(struct ssmax_device_info, compile_only)];
    uint8_t compile_only, has_uuids[2], uuids[32], reserved[29];
};
_Static_assert(sizeof(struct device_info_layout) == sizeof(struct ssmax_device_info),
               "struct ssmax_device_info changed size");
_Static_assert(sizeof(void *) != 8 || sizeof(struct ssmax_device_info) == 720,
               "struct ssmax_device_info changed size");

int ssmax_need_runnable(ssmax_context *ctx)
{
    int r = ssmax_need_device(ctx);
    if (r < 0 || !ctx->dev->info.compile_only)
        return r;
    const struct ssmax_device_info *d = &ctx->dev->info;
    return ssmax_set_error(ctx, SSMAX_ERR_UNSUPPORTED,
                           "device %s:%d (%s) compiles pipelines but cannot run them: %s",
                           ctx->dev->fns->name, d->index, d->name, ctx->dev->cannot_run);
}

int ssmax_need_device(ssmax_context *ctx)
{
    if (!ctx)
        return ssmax_set_error(NULL, SSMAX_ERR_INVALID_ARG, "ctx: must not be NULL");
    ssmax_error_clear(ctx);
    if (ctx->failed)
        return ssmax_set_error(ctx, SSMAX_ERR_CONTEXT_FAILED,
                               "ctx: the device was lost earlier; destroy and recreate the context");
    if (!ctx->dev)
        return ssmax_set_error(ctx, SSMAX_ERR_NO_DEVICE,
                               "ctx: no device is open (call ssmax_device_open first)");
    return SSMAX_OK;
}

void ssmax_mkdirs(const char *dir)
{
    char tmp[512];
    snprintf(tmp, sizeof(tmp), "%s", dir);
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            mkdir(tmp, 0755);
            *p = '/';
        }
    mkdir(tmp, 0755);
}

void ssmax_cache_dir(struct ssmax_context *ctx, char *out, size_t n)
{
    const char *c = ctx && ctx->params.cache_dir ? ctx->params.cache_dir : getenv("SSMAX_CACHE_DIR");
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    if (c && *c)
        snprintf(out, n, "%s", c);
    else if (xdg && *xdg)
        snprintf(out, n, "%s/ssmax", xdg);
    else if (home && *home)
        snprintf(out, n, "%s/.cache/ssmax", home);
    else if (n)
        out[0] = 0;
}

int ssmax_env_int(const char *name, int def)
{
    const char *v = getenv(name);
    if (!v || !*v)
        return def;
    char *end;
    long x = strtol(v, &end, 0);
    return *end ? def : (int)x;
}

static void *libc_malloc(void *priv, size_t size) { (void)priv; return malloc(size); }
static void libc_free(void *priv, void *p) { (void)priv; free(p); }

void *ssmax_malloc(struct ssmax_context *ctx, size_t size)
{
    if (!ctx)
        return malloc(size ? size : 1);
    return ctx->alloc.malloc(ctx->alloc.priv, size ? size : 1);
}

void *ssmax_calloc(struct ssmax_context *ctx, size_t n, size_t size)
{
    if (size && n > SIZE_MAX / size)
        return NULL;
    void *p = ssmax_malloc(ctx, n * size);
    if (p && n && size)
        memset(p, 0, n * size);
    return p;
}

void ssmax_free(struct ssmax_context *ctx, void *ptr)
{
    if (!ptr)
        return;
    if (!ctx)
        free(ptr);
    else
        ctx->alloc.free(ctx->alloc.priv, ptr);
}

void ssmax_context_params_default(struct ssmax_context_params *p)
{
    if (!p)
        return;
    memset(p, 0, sizeof(*p));
    p->log_level = SSMAX_LOG_WARN;
    p->debug = ssmax_env_int("SSMAX_VALIDATION", 0) ? 1 : 0;
}

static int all_zero(const uint8_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (b[i])
            return 0;
    return 1;
}

int ssmax_context_create(const struct ssmax_context_params *p, ssmax_context **out)
{
    ssmax_error_clear(NULL);
    if (!out)
        return ssmax_set_error(NULL, SSMAX_ERR_INVALID_ARG, "out: must not be NULL");
    *out = NULL;
    struct ssmax_context_params def;
    if (!p) {
        ssmax_context_params_default(&def);
        p = &def;
    }
    if (p->backends & ~(SSMAX_BACKEND_CPU_BIT | SSMAX_BACKEND_VULKAN_BIT | SSMAX_BACKEND_OPENCL_BIT))
        return ssmax_set_error(NULL, SSMAX_ERR_INVALID_ARG,
                               "backends: 0x%x has bits outside SSMAX_BACKEND_*_BIT", p->backends);
    if (p->alloc && (!p->alloc->malloc || !p->alloc->free)) // realloc: optional, never called
        return ssmax_set_error(NULL, SSMAX_ERR_INVALID_ARG,
                               "alloc: malloc and free must both be set");
    if ((unsigned)p->log_level > SSMAX_LOG_DEBUG)
        return ssmax_set_error(NULL, SSMAX_ERR_INVALID_ARG, "log_level: %d is not in [0, 4]",
                               (int)p->log_level);
    if (!all_zero(p->reserved, sizeof(p->reserved)))
        return ssmax_set_error(NULL, SSMAX_ERR_INVALID_ARG, "reserved: must be zero");

    struct ssmax_allocator a = { libc_malloc, NULL, libc_free, NULL };
    if (p->alloc)
        a = *p->alloc;
    ssmax_context *ctx = a.malloc(a.priv, sizeof(*ctx));
    if (!ctx)
        return ssmax_set_error(NULL, SSMAX_ERR_OUT_OF_HOST_MEMORY, "context: out of host memory");
    memset(ctx, 0, sizeof(*ctx));
    ctx->params = *p;
    ctx->alloc = a;
    ctx->dev_index = -1;
    ssmax_handles_init(ctx);
    atomic_init(&ctx->validation_errors, 0);
    if (ssmax_env_int("SSMAX_VALIDATION", 0))
        ctx->params.debug = 1;

    uint32_t mask = p->backends ? p->backends : ~0u;
    if (ssmax_env_int("SSMAX_NO_GPU_BACKENDS", 0)) // CPU only (valgrind runs of the unit suites)
        mask &= SSMAX_BACKEND_CPU_BIT;
    int total = 0;
    for (size_t i = 0; i < SSMAX_ARRAY_LEN(all_backends); i++) {
        const struct ssmax_backend_fns *f = all_backends[i];
        if (!(mask & (1u << f->id)))
            continue;
        struct backend_slot *s = &ctx->slots[f->id];
        s->fns = f;
        int r = f->init(ctx, &s->priv);
        if (r < 0) {
            ssmax_context_destroy(&ctx);
            return r;
        }
        s->ndev = 0;
        if (s->priv)
            f->devices(s->priv, &s->ndev);
        total += s->ndev;
    }
    ctx->devs = ssmax_calloc(ctx, total ? (size_t)total : 1, sizeof(*ctx->devs));
    ctx->dev_slot = ssmax_calloc(ctx, total ? (size_t)total : 1, sizeof(int));
    if (!ctx->devs || !ctx->dev_slot) {
        ssmax_context_destroy(&ctx);
        return ssmax_set_error(NULL, SSMAX_ERR_OUT_OF_HOST_MEMORY, "context: out of host memory");
    }
    // List order: Vulkan, OpenCL, CPU (the CPU last, as the device of last resort).
    static const int order[] = { SSMAX_BACKEND_VULKAN, SSMAX_BACKEND_OPENCL, SSMAX_BACKEND_CPU };
    for (size_t o = 0; o < SSMAX_ARRAY_LEN(order); o++) {
        struct backend_slot *s = &ctx->slots[order[o]];
        if (!s->fns || !s->ndev)
            continue;
        int n = 0;
        const struct ssmax_device_info *list = s->fns->devices(s->priv, &n);
        n = n < s->ndev ? n : s->ndev;
        for (int k = 0; k < n; k++) {
            ctx->devs[ctx->ndevs + k] = list[k];
            ctx->devs[ctx->ndevs + k].index = k;
            ctx->dev_slot[ctx->ndevs + k] = order[o];
        }
        ctx->ndevs += n;
    }
    *out = ctx;
    return SSMAX_OK;
}

static void close_device(ssmax_context *ctx)
{
    ssmax_plans_drop(ctx);
    ssmax_handles_drop(ctx, HANDLE_BUFFER, ssmax_buffer_release);
    if (ctx->dev) {
        ctx->dev->fns->close(ctx->dev);
        ssmax_free(ctx, ctx->dev);
    }
    ctx->dev = NULL;
    ctx->dev_index = -1;
}

void ssmax_context_destroy(ssmax_context **pctx)
{
    if (!pctx || !*pctx)
        return;
    ssmax_context *ctx = *pctx;
    close_device(ctx);
    for (int i = 0; i < 3; i++)
        if (ctx->slots[i].fns && ctx->slots[i].priv)
            ctx->slots[i].fns->uninit(ctx, ctx->slots[i].priv);
    ssmax_free(ctx, ctx->devs);
    ssmax_free(ctx, ctx->dev_slot);
    ssmax_handles_release(ctx);
    struct ssmax_allocator a = ctx->alloc;
    a.free(a.priv, ctx);
    *pctx = NULL;
}

int ssmax_device_count(ssmax_context *ctx)
{
    if (!ctx)
        return ssmax_set_error(NULL, SSMAX_ERR_INVALID_ARG, "ctx: must not be NULL");
    ssmax_error_clear(ctx);
    return ctx->ndevs;
}

int ssmax_device_get_info(ssmax_context *ctx, int index, struct ssmax_device_info *out)
{
    if (!ctx || !out)
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG, "%s: must not be NULL",
                               !ctx ? "ctx" : "out");
    ssmax_error_clear(ctx);
    if (index < 0 || index >= ctx->ndevs)
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG, "index: %d is not in [0, %d)", index,
                               ctx->ndevs);
    *out = ctx->devs[index];
    return SSMAX_OK;
}

/* Higher is better for "auto": real GPUs first, then Vulkan, OpenCL, the reference. */
static int auto_score(const struct ssmax_device_info *d)
{
    if (d->compile_only) // never chosen: it cannot run anything
        return -1;
    int s = 0;
    switch (d->type) {
    case SSMAX_DEVICE_DISCRETE_GPU: s = 400; break;
    case SSMAX_DEVICE_INTEGRATED_GPU: s = 300; break;
    case SSMAX_DEVICE_VIRTUAL_GPU: s = 200; break;
    default: s = 100; break;
    }
    if (d->backend == SSMAX_BACKEND_VULKAN)
        s += 20;
    else if (d->backend == SSMAX_BACKEND_OPENCL)
        s += 10;
    else
        s = 0; // the reference only when nothing else exists
    return s;
}

static void uuid_format(const uint8_t u[16], char out[37])
{
    static const char hex[] = "0123456789abcdef";
    char *p = out;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *p++ = '-';
        *p++ = hex[u[i] >> 4];
        *p++ = hex[u[i] & 15];
    }
    *p = 0;
}

/* "uuid:HEX": 32 hex digits, either case, dashes ignored; the first device listed with that
 * device UUID. */
static int find_uuid(ssmax_context *ctx, const char *spec)
{
    uint8_t want[16] = { 0 };
    int digits = 0;
    for (const char *c = spec + 5; *c; c++) {
        if (*c == '-')
            continue;
        int v = *c >= '0' && *c <= '9'   ? *c - '0'
                : *c >= 'a' && *c <= 'f' ? *c - 'a' + 10
                : *c >= 'A' && *c <= 'F' ? *c - 'A' + 10
                                         : -1;
        if (v < 0)
            return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG,
                                   "device: '%.80s': '%c' is not a hex digit; expected uuid: and "
                                   "32 hex digits, dashes allowed (uuid:xxxxxxxx-xxxx-xxxx-xxxx-"
                                   "xxxxxxxxxxxx)", spec, *c);
        if (digits < 32)
            want[digits / 2] |= (uint8_t)(v << (digits % 2 ? 0 : 4));
        digits++;
    }
    if (digits != 32)
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG,
                               "device: '%.80s': %d hex digits; expected uuid: and 32 hex digits, "
                               "dashes allowed (uuid:xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)",
                               spec, digits);
    for (int i = 0; i < ctx->ndevs; i++)
        if (ctx->devs[i].has_device_uuid && !memcmp(ctx->devs[i].device_uuid, want, 16))
            return i;
    char text[37];
    uuid_format(want, text);
    return ssmax_set_error(ctx, SSMAX_ERR_NO_DEVICE,
                           "device: '%.80s': no device here has UUID %s (ssmax devices lists them)",
                           spec, text);
}

int ssmax_device_find(ssmax_context *ctx, const char *spec)
{
    if (!ctx)
        return ssmax_set_error(NULL, SSMAX_ERR_INVALID_ARG, "ctx: must not be NULL");
    ssmax_error_clear(ctx);
    if (!spec || !*spec)
        spec = getenv("SSMAX_DEVICE");
    if (!spec || !*spec)
        spec = "auto";
    if (!strcasecmp(spec, "auto")) {
        int best = -1, bs = -1;
        for (int i = 0; i < ctx->ndevs; i++) {
            int s = auto_score(&ctx->devs[i]);
            if (s > bs) {
                bs = s;
                best = i;
            }
        }
        if (best < 0)
            return ssmax_set_error(ctx, SSMAX_ERR_NO_DEVICE, "device: no device available");
        return best;
    }
    if (!strncasecmp(spec, "uuid:", 5))
        return find_uuid(ctx, spec);
    static const struct {
        const char *name;
        enum ssmax_backend id;
    } names[] = { { "cpu", SSMAX_BACKEND_CPU },
                  { "vulkan", SSMAX_BACKEND_VULKAN },
                  { "opencl", SSMAX_BACKEND_OPENCL } };
    for (size_t k = 0; k < SSMAX_ARRAY_LEN(names); k++) {
        size_t len = strlen(names[k].name);
        if (strncasecmp(spec, names[k].name, len) || (spec[len] && spec[len] != ':'))
            continue;
        long want = -1;
        if (spec[len] == ':') {
            char *end;
            const char *num = spec + len + 1;
            want = strtol(num, &end, 10);
            if (*num < '0' || *num > '9' || *end || want > 1000000) // digits only: no sign
                return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG,
                                       "device: '%s': the index after ':' must be a number >= 0",
                                       spec);
        }
        int count = 0, best = -1, bs = -1;
        for (int i = 0; i < ctx->ndevs; i++) {
            if (ctx->devs[i].backend != names[k].id)
                continue;
            count++;
            if (want >= 0 && ctx->devs[i].index == want)
                return i;
            int s = auto_score(&ctx->devs[i]);
            if (want < 0 && s > bs) {
                bs = s;
                best = i;
            }
        }
        if (best >= 0)
            return best;
        if (count && want < 0)
            return ssmax_set_error(ctx, SSMAX_ERR_NO_DEVICE,
                                   "device: '%s': every %s device here compiles pipelines but "
                                   "cannot run them; name one as %s:N", spec, names[k].name,
                                   names[k].name);
        if (!ctx->slots[names[k].id].fns)
            return ssmax_set_error(ctx, SSMAX_ERR_NO_DEVICE,
                                   "device: '%s': the %s backend is not built in or not enabled",
                                   spec, names[k].name);
        if (!count)
            return ssmax_set_error(ctx, SSMAX_ERR_NO_DEVICE,
                                   "device: '%s': no %s device found (loader or driver missing? "
                                   "see the log at SSMAX_LOG_INFO)",
                                   spec, names[k].name);
        return ssmax_set_error(ctx, SSMAX_ERR_NO_DEVICE, "device: '%s': index %ld not in [0, %d)",
                               spec, want, count);
    }
    return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG,
                           "device: '%s' is not one of auto, cpu, vulkan[:N], opencl[:N], "
                           "uuid:HEX", spec);
}

static int open_index(ssmax_context *ctx, int index, ssmax_adopt_fn open, const void *arg);

int ssmax_device_open(ssmax_context *ctx, int index)
{
    if (!ctx)
        return ssmax_set_error(NULL, SSMAX_ERR_INVALID_ARG, "ctx: must not be NULL");
    ssmax_error_clear(ctx);
    if (index < 0) {
        index = ssmax_device_find(ctx, "auto");
        if (index < 0)
            return index;
    }
    if (index >= ctx->ndevs)
        return ssmax_set_error(ctx, SSMAX_ERR_NO_DEVICE, "index: %d is not in [0, %d)", index,
                               ctx->ndevs);
    return open_index(ctx, index, NULL, NULL);
}

int ssmax_device_adopt(ssmax_context *ctx, enum ssmax_backend backend, int local_index,
                       ssmax_adopt_fn open, const void *arg)
{
    for (int i = 0; i < ctx->ndevs; i++)
        if (ctx->dev_slot[i] == (int)backend && ctx->devs[i].index == local_index)
            return open_index(ctx, i, open, arg);
    return ssmax_set_error(ctx, SSMAX_ERR_NO_DEVICE, "device: not one this context lists");
}

/* Opens device index of the list: with the backend's open entry, or with open(arg) for a device
 * the application made (its own context, queue or device). */
static int open_index(ssmax_context *ctx, int index, ssmax_adopt_fn open, const void *arg)
{
    close_device(ctx);
    ctx->failed = 0;
    struct backend_slot *s = &ctx->slots[ctx->dev_slot[index]];
    struct ssmax_dev *dev = ssmax_calloc(ctx, 1, s->fns->dev_size);
    if (!dev)
        return ssmax_set_error(ctx, SSMAX_ERR_OUT_OF_HOST_MEMORY, "device: out of host memory");
    dev->ctx = ctx;
    int r = open ? open(ctx, s->priv, ctx->devs[index].index, dev, arg)
                 : s->fns->open(ctx, s->priv, ctx->devs[index].index, dev);
    if (r < 0) {
        ssmax_free(ctx, dev);
        return r;
    }
    dev->fns = s->fns;
    dev->info = ctx->devs[index];
    if (dev->info.compile_only && !dev->cannot_run[0])
        snprintf(dev->cannot_run, sizeof(dev->cannot_run),
                 "the driver offers no memory or queue to run work on");
    ctx->dev = dev;
    ctx->dev_index = index;
    ssmax_tune_load(dev);
    ssmax_log(ctx, SSMAX_LOG_INFO, "opened %s device %d: %s", s->fns->name, dev->info.index,
              dev->info.name);
    return SSMAX_OK;
}

int ssmax_device_install(ssmax_context *ctx, const struct ssmax_backend_fns *fns,
                         int (*open)(ssmax_context *ctx, void *priv, struct ssmax_dev *dev),
                         void *priv)
{
    close_device(ctx);
    ctx->failed = 0;
    struct ssmax_dev *dev = ssmax_calloc(ctx, 1, fns->dev_size);
    if (!dev)
        return ssmax_set_error(ctx, SSMAX_ERR_OUT_OF_HOST_MEMORY, "device: out of host memory");
    dev->ctx = ctx;
    int r = open(ctx, priv, dev);
    if (r < 0) {
        ssmax_free(ctx, dev);
        return r;
    }
    dev->fns = fns;
    dev->info.index = -1;
    ctx->dev = dev;
    ctx->dev_index = -1;
    ssmax_tune_load(dev);
    ssmax_log(ctx, SSMAX_LOG_INFO, "opened imported %s device: %s", fns->name, dev->info.name);
    return SSMAX_OK;
}

int ssmax_device_current(ssmax_context *ctx, struct ssmax_device_info *out)
{
    if (!ctx || !out)
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG, "%s: must not be NULL",
                               !ctx ? "ctx" : "out");
    ssmax_error_clear(ctx);
    if (!ctx->dev)
        return ssmax_set_error(ctx, SSMAX_ERR_NO_DEVICE, "device: none is open");
    *out = ctx->dev->info;
    return SSMAX_OK;
}

uint64_t ssmax_validation_errors(const ssmax_context *ctx)
{
    return ctx ? atomic_load(&((ssmax_context *)ctx)->validation_errors) : 0;
}
