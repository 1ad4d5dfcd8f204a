/*
 * The OpenCL backend: the ICD loader is dlopen'ed (a machine without one lists no OpenCL devices),
 * every platform's devices are listed, and a device gets a context and an in-order profiling
 * queue. Kernels come from cl/attn.cl, embedded as text and built at first use with -D tile values
 * for each (dtype, head dim, tiles); built programs are cached on disk (see the cache section).
 */
#include <dlfcn.h>
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CL_TARGET_OPENCL_VERSION 120
#define CL_USE_DEPRECATED_OPENCL_1_2_APIS
#include <CL/cl.h>

#include "../backend.h"
#include "attn.cl.inc"

#define CL_FNS(X)                                                                                  \
    X(clGetPlatformIDs)                                                                            \
    X(clGetPlatformInfo)                                                                           \
    X(clGetDeviceIDs)                                                                              \
    X(clGetDeviceInfo)                                                                             \
    X(clCreateContext)                                                                             \
    X(clReleaseContext)                                                                            \
    X(clCreateCommandQueue)                                                                        \
    X(clReleaseCommandQueue)                                                                       \
    X(clCreateBuffer)                                                                              \
    X(clReleaseMemObject)                                                                          \
    X(clEnqueueWriteBuffer)                                                                        \
    X(clEnqueueReadBuffer)                                                                         \
    X(clEnqueueCopyBuffer)                                                                         \
    X(clCreateProgramWithSource)                                                                   \
    X(clCreateProgramWithBinary)                                                                   \
    X(clBuildProgram)                                                                              \
    X(clGetProgramBuildInfo)                                                                       \
    X(clGetProgramInfo)                                                                            \
    X(clReleaseProgram)                                                                            \
    X(clCreateKernel)                                                                              \
    X(clReleaseKernel)                                                                             \
    X(clSetKernelArg)                                                                              \
    X(clEnqueueNDRangeKernel)                                                                      \
    X(clFinish)                                                                                    \
    X(clFlush)                                                                                     \
    X(clGetEventProfilingInfo)                                                                     \
    X(clReleaseEvent)

struct cl_fns {
#define DECL(f) __typeof__(f) *f;
    CL_FNS(DECL)
};

struct cl_devrec {
    cl_platform_id plat;
    cl_device_id dev;
    char key[600]; // device, driver and platform versions: part of the binary-cache key
};

struct cl_inst {
    void *lib;
    struct cl_fns f;
    struct ssmax_device_info *infos;
    struct cl_devrec *recs;
    int ndev;
};

enum { K_FLASH, K_FLASH_SPLIT, K_MERGE, K_QK, K_SOFTMAX, K_PV, K_COUNT };
static const char *const kernel_names[K_COUNT] = { "flash_attn", "flash_attn_split", "split_merge",
                                                   "qk", "softmax_rows", "pv" };

struct cl_prog {
    char opts[160];
    cl_program prog;
    cl_kernel k[K_COUNT];
    uint32_t used;  // kernels launched in this process
    uint32_t saved; // kernels launched when the binary was last written
    char marker[800]; // loaded from the cache: the marker kept until every kernel ran (see there)
};

struct cl_dev {
    struct ssmax_dev base;
    struct cl_inst *ci;
    struct cl_devrec *rec;
    cl_context cx;
    cl_command_queue q;
    struct cl_prog *progs;
    int nprogs, cap_progs;
    cl_mem params, coef, scr0, scr1, dummy;
    size_t coef_size, scr0_size, scr1_size;
    char cache_dir[512];
    uint64_t mac_key[2]; // the cache directory's secret (see the cache section)
    int mac_state;       // 0: not read yet, 1: mac_key valid, -1: no secret (no caching)
};

static int cl_err(struct ssmax_context *ctx, cl_int e, const char *what)
{
    int code = SSMAX_ERR_BACKEND;
    if (e == CL_OUT_OF_HOST_MEMORY)
        code = SSMAX_ERR_OUT_OF_HOST_MEMORY;
    else if (e == CL_MEM_OBJECT_ALLOCATION_FAILURE || e == CL_OUT_OF_RESOURCES)
        code = SSMAX_ERR_OUT_OF_DEVICE_MEMORY;
    else if (e == CL_INVALID_BUFFER_SIZE)
        code = SSMAX_ERR_LIMIT_EXCEEDED;
    return ssmax_set_error(ctx, code, "opencl: %s failed: error %d", what, (int)e);
}

/* ---- listing ---- */

static void str_info(struct cl_inst *ci, cl_device_id d, cl_device_info what, char *out, size_t n)
{
    size_t need = 0;
    out[0] = 0;
    if (ci->f.clGetDeviceInfo(d, what, 0, NULL, &need) != CL_SUCCESS || !need)
        return;
    char *tmp = calloc(need + 1, 1); // the string may be longer than the field: truncate it
    if (tmp && ci->f.clGetDeviceInfo(d, what, need, tmp, NULL) == CL_SUCCESS)
        snprintf(out, n, "%s", tmp);
    free(tmp);
}

static uint64_t u64_info(struct cl_inst *ci, cl_device_id d, cl_device_info what, size_t sz)
{
    uint64_t v = 0;
    if (sz == 4) {
        cl_uint x = 0;
        ci->f.clGetDeviceInfo(d, what, 4, &x, NULL);
        v = x;
    } else {
        ci->f.clGetDeviceInfo(d, what, sz, &v, NULL);
    }
    return v;
}

static void fill_info(struct cl_inst *ci, int idx)
{
    struct ssmax_device_info *d = &ci->infos[idx];
    struct cl_devrec *rec = &ci->recs[idx];
    cl_device_id dev = rec->dev;
    memset(d, 0, sizeof(*d));
    d->backend = SSMAX_BACKEND_OPENCL;
    d->index = idx;
    str_info(ci, dev, CL_DEVICE_NAME, d->name, sizeof(d->name));
    str_info(ci, dev, CL_DEVICE_VENDOR, d->vendor, sizeof(d->vendor));
    str_info(ci, dev, CL_DEVICE_VERSION, d->api_version, sizeof(d->api_version));
    str_info(ci, dev, CL_DRIVER_VERSION, d->driver_version, sizeof(d->driver_version));
    cl_device_type t = 0;
    ci->f.clGetDeviceInfo(dev, CL_DEVICE_TYPE, sizeof(t), &t, NULL);
    cl_bool unified = CL_FALSE;
    ci->f.clGetDeviceInfo(dev, CL_DEVICE_HOST_UNIFIED_MEMORY, sizeof(unified), &unified, NULL);
    d->type = (t & CL_DEVICE_TYPE_CPU)   ? SSMAX_DEVICE_CPU
              : (t & CL_DEVICE_TYPE_GPU) ? (unified ? SSMAX_DEVICE_INTEGRATED_GPU
                                                    : SSMAX_DEVICE_DISCRETE_GPU)
                                         : SSMAX_DEVICE_OTHER;
    d->vendor_id = (uint32_t)u64_info(ci, dev, CL_DEVICE_VENDOR_ID, 4);
    d->compute_units = (uint32_t)u64_info(ci, dev, CL_DEVICE_MAX_COMPUTE_UNITS, 4);
    d->max_workgroup_size = (uint32_t)u64_info(ci, dev, CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof(size_t));
    d->shared_memory = u64_info(ci, dev, CL_DEVICE_LOCAL_MEM_SIZE, 8);
    d->max_alloc_size = d->max_buffer_size = u64_info(ci, dev, CL_DEVICE_MAX_MEM_ALLOC_SIZE, 8);
    d->global_memory = u64_info(ci, dev, CL_DEVICE_GLOBAL_MEM_SIZE, 8);
    size_t n = 0;
    ci->f.clGetDeviceInfo(dev, CL_DEVICE_EXTENSIONS, 0, NULL, &n);
    char *ext = calloc(n + 1, 1);
    if (ext && ci->f.clGetDeviceInfo(dev, CL_DEVICE_EXTENSIONS, n, ext, NULL) == CL_SUCCESS) {
        d->fp16_arith = strstr(ext, "cl_khr_fp16") != NULL;
        d->subgroups = strstr(ext, "cl_khr_subgroups") != NULL;
    }
    free(ext);
    d->fp16_storage = 1; // vload_half / vstore_half are core
    char pv[128] = "";
    ci->f.clGetPlatformInfo(rec->plat, CL_PLATFORM_VERSION, sizeof(pv), pv, NULL);
    pv[sizeof(pv) - 1] = 0;
    snprintf(rec->key, sizeof(rec->key), "%s|%s|%s|%s", d->name, d->api_version, d->driver_version,
             pv);
}

/* ---- the process-wide driver ----
 * The ICD loader, its function pointers and the platform and device lists are loaded once per
 * process, under a mutex, and shared by every context; a context has only its own cl_context and
 * queue (cl_open). Two reasons. PoCL initialises its platform lazily and without a lock: contexts
 * created on several threads at once called clGetPlatformIDs / clGetDeviceInfo concurrently and
 * crashed inside PoCL or saw no device. And the state is kept until the process exits rather than
 * released with the last context, because releasing it is what hurts: unloading the loader (and
 * with it PoCL, whose worker threads and kernel-library cache outlive our objects) aborted in a
 * PoCL worker (pocl_release_dlhandle_cache), and a load / unload per context left about 300 bytes
 * of heap behind each time (test_drivers rss: flat once kept). Kept, the driver stays loaded
 * exactly as in an application linked against libOpenCL. */

static pthread_mutex_t cl_lock = PTHREAD_MUTEX_INITIALIZER;
static struct cl_inst *cl_shared; // valid once cl_loaded is set; never freed
static int cl_loaded;
static char cl_why[256]; // why there are no OpenCL devices, told to each new context

static void cl_inst_free(struct cl_inst *ci)
{
    free(ci->infos);
    free(ci->recs);
    if (ci->lib)
        dlclose(ci->lib);
    free(ci);
}

/* Loads the driver into *out (NULL, with cl_why set, when there is none). Returns an error only
 * for out of memory, which is not remembered: a later context tries again. */
static int cl_load(struct cl_inst **out)
{
    *out = NULL;
    const char *name = getenv("SSMAX_OPENCL_LOADER");
    void *lib = dlopen(name ? name : "libOpenCL.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        snprintf(cl_why, sizeof(cl_why), "opencl: ICD loader not found (%s): no OpenCL devices",
                 dlerror());
        return SSMAX_OK;
    }
    struct cl_inst *ci = calloc(1, sizeof(*ci));
    if (!ci) {
        dlclose(lib);
        return SSMAX_ERR_OUT_OF_HOST_MEMORY;
    }
    ci->lib = lib;
#define LOAD(fn)                                                                                   \
    {                                                                                              \
        void *s = dlsym(lib, #fn);                                                                 \
        if (!s) {                                                                                  \
            snprintf(cl_why, sizeof(cl_why), "opencl: the loader lacks %s", #fn);                  \
            cl_inst_free(ci);                                                                      \
            return SSMAX_OK;                                                                       \
        }                                                                                          \
        memcpy(&ci->f.fn, &s, sizeof(s));                                                          \
    }
    CL_FNS(LOAD)
    cl_uint np = 0;
    cl_int e = ci->f.clGetPlatformIDs(0, NULL, &np);
    if (e != CL_SUCCESS || !np) {
        snprintf(cl_why, sizeof(cl_why), "opencl: no platform (error %d): no OpenCL devices",
                 (int)e);
        *out = ci;
        return SSMAX_OK;
    }
    cl_platform_id plats[16];
    if (np > 16)
        np = 16;
    ci->f.clGetPlatformIDs(np, plats, NULL);
    int total = 0;
    cl_device_id devs[16][16];
    cl_uint nd[16];
    for (cl_uint p = 0; p < np; p++) {
        nd[p] = 0;
        if (ci->f.clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, 16, devs[p], &nd[p]) != CL_SUCCESS)
            nd[p] = 0;
        if (nd[p] > 16)
            nd[p] = 16;
        total += (int)nd[p];
    }
    ci->infos = calloc(total ? (size_t)total : 1, sizeof(*ci->infos));
    ci->recs = calloc(total ? (size_t)total : 1, sizeof(*ci->recs));
    if (!ci->infos || !ci->recs) {
        // The driver stays loaded (see above); only our lists are given back.
        ci->lib = NULL;
        cl_inst_free(ci);
        return SSMAX_ERR_OUT_OF_HOST_MEMORY;
    }
    for (cl_uint p = 0; p < np; p++)
        for (cl_uint k = 0; k < nd[p]; k++) {
            ci->recs[ci->ndev] = (struct cl_devrec){ .plat = plats[p], .dev = devs[p][k] };
            fill_info(ci, ci->ndev);
            ci->ndev++;
        }
    *out = ci;
    return SSMAX_OK;
}

static void cl_uninit(struct ssmax_context *ctx, void *bpriv)
{
    (void)ctx, (void)bpriv; // the driver is shared and kept until exit (see above)
}

static int cl_init(struct ssmax_context *ctx, void **bpriv)
{
    *bpriv = NULL;
    pthread_mutex_lock(&cl_lock);
    int r = SSMAX_OK;
    if (!cl_loaded) {
        r = cl_load(&cl_shared);
        cl_loaded = r == SSMAX_OK;
    }
    struct cl_inst *ci = cl_shared;
    pthread_mutex_unlock(&cl_lock);
    if (r < 0)
        return ssmax_set_error(ctx, r, "opencl: out of host memory");
    if ((!ci || !ci->ndev) && cl_why[0])
        ssmax_log(ctx, SSMAX_LOG_INFO, "%s", cl_why);
    *bpriv = ci;
    return SSMAX_OK;
}

static int cl_enumerate(void *bpriv, struct ssmax_device_info *out, int cap)
{
    struct cl_inst *ci = bpriv;
    int n = ci->ndev < cap ? ci->ndev : cap;
    if (out)
        memcpy(out, ci->infos, sizeof(*out) * (size_t)(n > 0 ? n : 0));
    return out ? n : ci->ndev;
}

/* ---- device ---- */

static void cl_close(struct ssmax_dev *base);

static int cl_open(struct ssmax_context *ctx, void *bpriv, int idx, struct ssmax_dev **out)
{
    struct cl_inst *ci = bpriv;
    if (!ci || idx < 0 || idx >= ci->ndev)
        return ssmax_set_error(ctx, SSMAX_ERR_NO_DEVICE, "device: opencl:%d does not exist", idx);
    struct cl_dev *d = ssmax_calloc(ctx, 1, sizeof(*d));
    if (!d)
        return ssmax_set_error(ctx, SSMAX_ERR_OUT_OF_HOST_MEMORY, "opencl: out of host memory");
    d->base.ctx = ctx;
    d->ci = ci;
    d->rec = &ci->recs[idx];
    cl_int e;
    cl_context_properties props[] = { CL_CONTEXT_PLATFORM, (cl_context_properties)d->rec->plat, 0 };
    d->cx = ci->f.clCreateContext(props, 1, &d->rec->dev, NULL, NULL, &e);
    if (e == CL_SUCCESS)
        d->q = ci->f.clCreateCommandQueue(d->cx, d->rec->dev, CL_QUEUE_PROFILING_ENABLE, &e);
    if (e == CL_SUCCESS)
        d->dummy = ci->f.clCreateBuffer(d->cx, CL_MEM_READ_WRITE, 256, NULL, &e);
    if (e == CL_SUCCESS)
        d->params = ci->f.clCreateBuffer(d->cx, CL_MEM_READ_ONLY, 32 * 4, NULL, &e);
    if (e != CL_SUCCESS) {
        d->base.ctx = ctx;
        cl_close(&d->base);
        return cl_err(ctx, e, "context setup");
    }
    ssmax_cache_dir(ctx, d->cache_dir, sizeof(d->cache_dir));
    *out = &d->base;
    return SSMAX_OK;
}

static void cache_marker_drop(const char *mpath);

static void cl_close(struct ssmax_dev *base)
{
    struct cl_dev *d = (struct cl_dev *)base;
    struct cl_fns *f = &d->ci->f;
    if (d->q)
        f->clFinish(d->q);
    for (int i = 0; i < d->nprogs; i++) {
        for (int k = 0; k < K_COUNT; k++)
            if (d->progs[i].k[k])
                f->clReleaseKernel(d->progs[i].k[k]);
        f->clReleaseProgram(d->progs[i].prog);
        cache_marker_drop(d->progs[i].marker);
    }
    cl_mem mems[] = { d->params, d->coef, d->scr0, d->scr1, d->dummy };
    for (size_t i = 0; i < SSMAX_ARRAY_LEN(mems); i++)
        if (mems[i])
            f->clReleaseMemObject(mems[i]);
    if (d->q)
        f->clReleaseCommandQueue(d->q);
    if (d->cx)
        f->clReleaseContext(d->cx);
    ssmax_free(base->ctx, d->progs);
    ssmax_free(base->ctx, d);
}

static int cl_buf_create(struct ssmax_dev *base, size_t size, void **out)
{
    struct cl_dev *d = (struct cl_dev *)base;
    cl_int e = CL_MEM_OBJECT_ALLOCATION_FAILURE;
    cl_mem m = ssmax_fault_alloc(base->ctx)
                   ? NULL
                   : d->ci->f.clCreateBuffer(d->cx, CL_MEM_READ_WRITE, size, NULL, &e);
    if (e != CL_SUCCESS)
        return cl_err(base->ctx, e, "clCreateBuffer");
    *out = m;
    return SSMAX_OK;
}

static void cl_buf_destroy(struct ssmax_dev *base, void *b)
{
    ((struct cl_dev *)base)->ci->f.clReleaseMemObject(b);
}

static int cl_buf_write(struct ssmax_dev *base, void *b, size_t off, const void *src, size_t n)
{
    struct cl_dev *d = (struct cl_dev *)base;
    cl_int e = d->ci->f.clEnqueueWriteBuffer(d->q, b, CL_TRUE, off, n, src, 0, NULL, NULL);
    return e == CL_SUCCESS ? SSMAX_OK : cl_err(base->ctx, e, "clEnqueueWriteBuffer");
}

static int cl_buf_read(struct ssmax_dev *base, void *b, size_t off, void *dst, size_t n)
{
    struct cl_dev *d = (struct cl_dev *)base;
    cl_int e = d->ci->f.clEnqueueReadBuffer(d->q, b, CL_TRUE, off, n, dst, 0, NULL, NULL);
    return e == CL_SUCCESS ? SSMAX_OK : cl_err(base->ctx, e, "clEnqueueReadBuffer");
}

/* ---- program binary cache ----
 * One file per (device, driver, platform, source, options): <dir>/<fnv64 of the key>.clbin with
 *   "SSMAXCL2" | u32 key length | key | u64 binary size | u64 fnv64 of the binary |
 *   u64 keyed hash of the binary | binary.
 * The driver trusts a binary it is handed (PoCL asserts or crashes on a damaged one, in every
 * process that loads it), so nothing reaches it unchecked. The fnv64 catches a torn file; it is
 * no proof, as anyone can recompute it for a damaged binary. The keyed hash is SipHash-2-4 under a
 * key drawn from the cache directory's secret (<dir>/cache.key, 16 random bytes made by the first
 * writer) and the entry's key: only our writer, for this very key, makes a file that passes. A
 * file whose magic, key, size or either hash does not match, or whose binary the driver rejects,
 * is ignored and rewritten. Writes go to a unique temporary file renamed into place, so concurrent
 * processes never see a partial file. The binary is saved again after a kernel is first launched,
 * because drivers such as PoCL add the code they specialise at launch to the program binary.
 *
 * Defence in depth, for a binary that passes every check and still kills the driver: before a
 * cached binary is handed over, a marker <entry>.loading.<pid>.<n> (holding the process's start
 * time) is created, and it is removed once every kernel of the program has run, or when the device
 * is closed (a binary may build and still crash the driver at its first launch). A marker
 * whose process is gone (or whose pid now belongs to a process started at another time) means a
 * process died loading that entry: the entry is discarded and built from source, so one bad file
 * costs one crash, not every later run. */

/* The keyed hash of an entry (see ssmax_cache_mac). */
static uint64_t entry_mac(const struct cl_dev *d, const char *key, const void *bin, size_t n)
{
    return ssmax_cache_mac(d->mac_key, key, bin, n);
}

static int read_secret(const char *path, uint64_t k[2])
{
    unsigned char b[17];
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    size_t n = fread(b, 1, sizeof(b), f);
    fclose(f);
    if (n != 16)
        return -1;
    memcpy(k, b, 16);
    return 0;
}

/* Reads the cache directory's secret, making it when it is missing or damaged. Without one (no
 * randomness, a read-only directory without a secret) the cache is off for this device. */
static int cache_secret(struct cl_dev *d)
{
    if (d->mac_state)
        return d->mac_state > 0;
    d->mac_state = -1;
    char path[600], tmp[640];
    snprintf(path, sizeof(path), "%s/cache.key", d->cache_dir);
    if (read_secret(path, d->mac_key) == 0)
        return d->mac_state = 1;
    unsigned char rnd[16];
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    ssize_t got = fd >= 0 ? read(fd, rnd, sizeof(rnd)) : -1;
    if (fd >= 0)
        close(fd);
    if (got != (ssize_t)sizeof(rnd)) {
        ssmax_log(d->base.ctx, SSMAX_LOG_INFO, "opencl: no randomness for the cache secret: "
                                               "binary cache off");
        return 0;
    }
    ssmax_mkdirs(d->cache_dir);
    static _Atomic unsigned seq;
    snprintf(tmp, sizeof(tmp), "%s.%ld.%u.tmp", path, (long)getpid(), atomic_fetch_add(&seq, 1));
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0) {
        int ok = write(fd, rnd, sizeof(rnd)) == (ssize_t)sizeof(rnd);
        ok = close(fd) == 0 && ok;
        // link() keeps a secret another process made first (entries written under it stay
        // good); only a damaged one is replaced, or any where the file system has no links.
        if (ok && link(tmp, path) != 0 && (errno != EEXIST || read_secret(path, d->mac_key) != 0))
            rename(tmp, path);
        unlink(tmp);
    }
    if (read_secret(path, d->mac_key) == 0)
        return d->mac_state = 1;
    ssmax_log(d->base.ctx, SSMAX_LOG_INFO, "opencl: cannot write %s: binary cache off", path);
    return 0;
}

static void cache_key(struct cl_dev *d, const char *opts, char *key, size_t n, char *path,
                      size_t pn)
{
    uint64_t src = ssmax_fnv64(attn_cl_source, sizeof(attn_cl_source), SSMAX_FNV64_INIT);
    snprintf(key, n, "%s|src %016llx|%s", d->rec->key, (unsigned long long)src, opts);
    uint64_t h = ssmax_fnv64(key, strlen(key), SSMAX_FNV64_INIT);
    snprintf(path, pn, "%s/%016llx.clbin", d->cache_dir, (unsigned long long)h);
}

static unsigned char *cache_load(struct cl_dev *d, const char *key, const char *path, size_t *size)
{
    if (!cache_secret(d))
        return NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    unsigned char *bin = NULL;
    char magic[8];
    uint32_t klen;
    uint64_t bsize, sum, mac;
    char kbuf[1024];
    if (fread(magic, 1, 8, f) != 8 || memcmp(magic, "SSMAXCL2", 8) || fread(&klen, 4, 1, f) != 1 ||
        klen != strlen(key) || klen >= sizeof(kbuf) || fread(kbuf, 1, klen, f) != klen ||
        memcmp(kbuf, key, klen) || fread(&bsize, 8, 1, f) != 1 || fread(&sum, 8, 1, f) != 1 ||
        fread(&mac, 8, 1, f) != 1 || bsize == 0 || bsize > (1ull << 30))
        goto bad;
    bin = malloc(bsize);
    if (!bin || fread(bin, 1, bsize, f) != bsize || fgetc(f) != EOF ||
        ssmax_fnv64(bin, bsize, SSMAX_FNV64_INIT) != sum || entry_mac(d, key, bin, bsize) != mac)
        goto bad;
    fclose(f);
    *size = bsize;
    return bin;
bad:
    ssmax_log(d->base.ctx, SSMAX_LOG_INFO, "opencl: ignoring stale or damaged cache file %s", path);
    free(bin);
    fclose(f);
    return NULL;
}

/* The start time of process pid (clock ticks after boot, /proc/<pid>/stat field 22), 0 if
 * unknown. */
static unsigned long long proc_start(long pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')'); // the command name may hold spaces and parentheses
    unsigned long long t = 0;
    for (int field = 2; p && *p && field < 22; field++)
        p = strchr(p + 1, ' ');
    if (p)
        t = strtoull(p + 1, NULL, 10);
    return t;
}

/* 1 when a marker left beside the entry at path says a process died loading it (the stale markers
 * are removed); 0 otherwise. */
static int cache_marker_dead(const char *dir, const char *path)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    char prefix[720];
    snprintf(prefix, sizeof(prefix), "%s.loading.", base);
    size_t plen = strlen(prefix);
    DIR *dp = opendir(dir);
    if (!dp)
        return 0;
    int dead = 0;
    struct dirent *e;
    while ((e = readdir(dp))) {
        if (strncmp(e->d_name, prefix, plen))
            continue;
        char *end;
        long pid = strtol(e->d_name + plen, &end, 10);
        char mpath[800];
        snprintf(mpath, sizeof(mpath), "%s/%s", dir, e->d_name);
        unsigned long long t = 0;
        FILE *f = fopen(mpath, "r");
        if (f) {
            if (fscanf(f, "%llu", &t) != 1)
                t = 0;
            fclose(f);
        }
        int alive = pid > 0 && *end == '.' && (kill((pid_t)pid, 0) == 0 || errno == EPERM);
        if (alive && t) {
            unsigned long long now = proc_start(pid);
            alive = !now || now == t; // a different start time: the pid was reused
        }
        if (!alive) {
            unlink(mpath);
            dead = 1;
        }
    }
    closedir(dp);
    return dead;
}

/* Creates the marker for path in mpath; "" when it could not be made (loading goes on: the marker
 * only guards later runs). */
static void cache_marker_make(const char *path, char *mpath, size_t n)
{
    static _Atomic unsigned seq;
    snprintf(mpath, n, "%s.loading.%ld.%u", path, (long)getpid(), atomic_fetch_add(&seq, 1));
    int fd = open(mpath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
        mpath[0] = 0;
        return;
    }
    char t[32];
    int len = snprintf(t, sizeof(t), "%llu\n", proc_start((long)getpid()));
    int ok = write(fd, t, (size_t)len) == len;
    ok = close(fd) == 0 && ok;
    if (!ok) {
        unlink(mpath);
        mpath[0] = 0;
    }
}

static void cache_marker_drop(const char *mpath)
{
    if (mpath[0])
        unlink(mpath);
}

static void cache_save(struct cl_dev *d, struct cl_prog *pg)
{
    if (!d->cache_dir[0])
        return;
    struct cl_fns *f = &d->ci->f;
    size_t bsize = 0;
    if (f->clGetProgramInfo(pg->prog, CL_PROGRAM_BINARY_SIZES, sizeof(bsize), &bsize, NULL) !=
            CL_SUCCESS ||
        !bsize)
        return;
    unsigned char *bin = malloc(bsize);
    if (!bin)
        return;
    if (f->clGetProgramInfo(pg->prog, CL_PROGRAM_BINARIES, sizeof(bin), &bin, NULL) != CL_SUCCESS) {
        free(bin);
        return;
    }
    char key[1024], path[700], tmp[760];
    cache_key(d, pg->opts, key, sizeof(key), path, sizeof(path));
    ssmax_mkdirs(d->cache_dir);
    if (!cache_secret(d)) {
        free(bin);
        return;
    }
    static _Atomic unsigned seq; // contexts on several threads may save the same entry at once
    snprintf(tmp, sizeof(tmp), "%s.%ld.%u.tmp", path, (long)getpid(), atomic_fetch_add(&seq, 1));
    FILE *fp = fopen(tmp, "wb");
    if (fp) {
        uint32_t klen = (uint32_t)strlen(key);
        uint64_t bs = bsize, sum = ssmax_fnv64(bin, bsize, SSMAX_FNV64_INIT);
        uint64_t mac = entry_mac(d, key, bin, bsize);
        int ok = fwrite("SSMAXCL2", 1, 8, fp) == 8 && fwrite(&klen, 4, 1, fp) == 1 &&
                 fwrite(key, 1, klen, fp) == klen && fwrite(&bs, 8, 1, fp) == 1 &&
                 fwrite(&sum, 8, 1, fp) == 1 && fwrite(&mac, 8, 1, fp) == 1 &&
                 fwrite(bin, 1, bsize, fp) == bsize;
        ok = fclose(fp) == 0 && ok;
        if (ok && rename(tmp, path) == 0)
            pg->saved = pg->used;
        else
            unlink(tmp);
    }
    if (!fp || pg->saved != pg->used)
        ssmax_log(d->base.ctx, SSMAX_LOG_INFO, "opencl: could not write the cache file %s: %s",
                  path, strerror(errno));
    free(bin);
}

static int build(struct cl_dev *d, cl_program prog, const char *opts, int from_binary)
{
    struct cl_fns *f = &d->ci->f;
    cl_int e = f->clBuildProgram(prog, 1, &d->rec->dev, opts, NULL, NULL);
    if (e == CL_SUCCESS || from_binary)
        return e == CL_SUCCESS ? SSMAX_OK : SSMAX_ERR_KERNEL_BUILD;
    size_t n = 0;
    f->clGetProgramBuildInfo(prog, d->rec->dev, CL_PROGRAM_BUILD_LOG, 0, NULL, &n);
    char *log = calloc(n + 1, 1);
    if (log)
        f->clGetProgramBuildInfo(prog, d->rec->dev, CL_PROGRAM_BUILD_LOG, n, log, NULL);
    int r = ssmax_set_error(d->base.ctx, SSMAX_ERR_KERNEL_BUILD,
                            "opencl: building attn.cl with '%s' failed (error %d):\n%.1500s", opts,
                            (int)e, log ? log : "");
    free(log);
    return r;
}

/* Every kernel of the program, or none (CL_SUCCESS, or the error with *bad the kernel it hit). */
static cl_int make_kernels(struct cl_dev *d, struct cl_prog *pg, int *bad)
{
    struct cl_fns *f = &d->ci->f;
    cl_int e = CL_SUCCESS;
    for (int k = 0; k < K_COUNT; k++) {
        pg->k[k] = f->clCreateKernel(pg->prog, kernel_names[k], &e);
        if (e != CL_SUCCESS) {
            for (int j = 0; j < k; j++)
                f->clReleaseKernel(pg->k[j]);
            memset(pg->k, 0, sizeof(pg->k));
            *bad = k;
            return e;
        }
    }
    return CL_SUCCESS;
}

static int get_program(struct cl_dev *d, const char *opts, struct cl_prog **out)
{
    for (int i = 0; i < d->nprogs; i++)
        if (!strcmp(d->progs[i].opts, opts)) {
            *out = &d->progs[i];
            return SSMAX_OK;
        }
    struct ssmax_context *ctx = d->base.ctx;
    struct cl_fns *f = &d->ci->f;
    if (d->nprogs == d->cap_progs) {
        int cap = d->cap_progs ? 2 * d->cap_progs : 8;
        struct cl_prog *np = ssmax_calloc(ctx, (size_t)cap, sizeof(*np));
        if (!np)
            return ssmax_set_error(ctx, SSMAX_ERR_OUT_OF_HOST_MEMORY, "opencl: out of host memory");
        if (d->progs)
            memcpy(np, d->progs, sizeof(*np) * (size_t)d->nprogs);
        ssmax_free(ctx, d->progs);
        d->progs = np;
        d->cap_progs = cap;
    }
    struct cl_prog *pg = &d->progs[d->nprogs];
    memset(pg, 0, sizeof(*pg));
    snprintf(pg->opts, sizeof(pg->opts), "%s", opts);
    char key[1024], path[700];
    cache_key(d, opts, key, sizeof(key), path, sizeof(path));
    size_t bsize = 0;
    if (d->cache_dir[0] && cache_marker_dead(d->cache_dir, path)) {
        ssmax_log(ctx, SSMAX_LOG_WARN, "opencl: a process died loading the cached binary %s; "
                                       "discarding it and building from source", path);
        unlink(path);
    }
    unsigned char *bin = d->cache_dir[0] ? cache_load(d, key, path, &bsize) : NULL;
    cl_int e = CL_SUCCESS, st = CL_SUCCESS;
    char mpath[800] = ""; // the marker while a cached binary is in the driver's hands
    if (bin) {
        cache_marker_make(path, mpath, sizeof(mpath));
        const unsigned char *bp = bin;
        pg->prog = f->clCreateProgramWithBinary(d->cx, 1, &d->rec->dev, &bsize, &bp, &st, &e);
        free(bin);
        int bad = 0; // a binary that builds but lacks a kernel is rebuilt from source too
        if (e != CL_SUCCESS || st != CL_SUCCESS || build(d, pg->prog, opts, 1) < 0 ||
            make_kernels(d, pg, &bad) != CL_SUCCESS) {
            ssmax_log(ctx, SSMAX_LOG_INFO, "opencl: cached binary %s rejected; rebuilding", path);
            if (pg->prog)
                f->clReleaseProgram(pg->prog);
            pg->prog = NULL;
        } else {
            ssmax_log(ctx, SSMAX_LOG_DEBUG, "opencl: program loaded from %s", path);
            pg->saved = ~0u; // nothing to write until a kernel is launched for the first time
        }
    }
    if (!pg->prog) {
        const char *src = attn_cl_source;
        cache_marker_drop(mpath); // the cached binary is out of the driver's hands
        mpath[0] = 0;
        pg->prog = f->clCreateProgramWithSource(d->cx, 1, &src, NULL, &e);
        if (e != CL_SUCCESS)
            return cl_err(ctx, e, "clCreateProgramWithSource");
        int r = build(d, pg->prog, opts, 0), bad = 0;
        if (r < 0) {
            f->clReleaseProgram(pg->prog);
            return r;
        }
        if ((e = make_kernels(d, pg, &bad)) != CL_SUCCESS) {
            f->clReleaseProgram(pg->prog);
            return ssmax_set_error(ctx, SSMAX_ERR_KERNEL_BUILD,
                                   "opencl: kernel %s missing from the program (error %d)",
                                   kernel_names[bad], (int)e);
        }
    }
    snprintf(pg->marker, sizeof(pg->marker), "%s", mpath);
    d->nprogs++;
    *out = pg;
    return SSMAX_OK;
}

/* ---- attention ---- */

struct cl_tiles {
    uint32_t br, bc, tpr;
};

static uint64_t local_bytes(const struct cl_tiles *t, uint32_t D)
{
    return 4ull * (t->br * D + t->bc * D + t->br * t->bc) + 16ull * t->br;
}

/* The tuned entry for D (ssmax bench --tune) in *t: 1 when there is one the device runs, 0 when
 * there is none. An entry the device refuses, or a tpr 0 one (Vulkan's rows kernel), from a file
 * of an older version or edited by hand, is dropped with a warning, so every later call takes the
 * defaults instead of failing; while ssmax_tune_store tries the entry (tune_strict) it is the
 * error. Tuned tiles run as stored: their BC is not shrunk to fit. */
static int tuned_tiles(struct cl_dev *d, uint32_t D, struct cl_tiles *t)
{
    uint32_t tu[3];
    if (!ssmax_tune_get(&d->base, D, tu))
        return 0;
    *t = (struct cl_tiles){ tu[0], tu[1], tu[2] };
    const uint64_t lm = d->base.info.shared_memory, wgmax = d->base.info.max_workgroup_size;
    char why[320];
    if (!tu[2]) {
        snprintf(why, sizeof(why), "tiles rows,%u,%u name Vulkan's rows kernel", tu[1], tu[0]);
    } else if (local_bytes(t, D) <= lm && t->br * t->tpr <= wgmax) {
        return 1;
    } else {
        snprintf(why, sizeof(why), "tiles %u,%u,%u need %llu bytes of local memory and %u "
                 "work-items; the device has %llu and %llu", t->br, t->bc, t->tpr,
                 (unsigned long long)local_bytes(t, D), t->br * t->tpr, (unsigned long long)lm,
                 (unsigned long long)wgmax);
    }
    return ssmax_tune_refused(&d->base, D, why);
}

static int choose_tiles(struct cl_dev *d, uint32_t D, uint64_t rows, struct cl_tiles *t)
{
    // While ssmax_tune_store tries an entry, the entry is what runs, whatever the override says.
    const char *env = d->base.tune_strict ? NULL : getenv("SSMAX_CL_TILES");
    int tuned = 0;
    if (env && *env) {
        uint32_t e[3];
        if (ssmax_parse_tiles(env, D, e) < 0)
            return ssmax_set_error(d->base.ctx, SSMAX_ERR_INVALID_ARG,
                                   "SSMAX_CL_TILES: '%s' must be BR,BC,TPR with TPR in {1,2,4}, "
                                   "D %% (2*TPR) == 0, BR*TPR <= 1024, BR even and BC a multiple "
                                   "of 8", env);
        *t = (struct cl_tiles){ e[0], e[1], e[2] };
    } else if ((tuned = tuned_tiles(d, D, t)) != 0) { // ssmax bench --tune
        if (tuned < 0)
            return tuned;
    } else {
        // Fused: BR rows x BC keys over 16 work-items in register blocks (cl/attn.cl); the unfused
        // P V kernel uses BR rows x TPR work-items. CPU runtimes (PoCL: 1 MiB of local memory)
        // take large blocks: B1 H8 L1024 D64 on PoCL, 32,48: 125 ms; 64,64: 68 ms; D128 16,32:
        // 247 ms, 64,64: 116 ms. Devices with GPU-sized local memory keep small blocks.
        int big = d->base.info.shared_memory >= (256u << 10);
        if (D <= 64)
            *t = big ? (struct cl_tiles){ 64, 64, 4 } : (struct cl_tiles){ 16, 32, 4 };
        else if (D <= 128)
            *t = big ? (struct cl_tiles){ 64, 64, 4 } : (struct cl_tiles){ 8, 32, 4 };
        else
            *t = big ? (struct cl_tiles){ 32, 64, 4 } : (struct cl_tiles){ 4, 16, 4 };
        if (rows < t->br) { // decode: no empty rows
            t->br = rows < 2 ? 2 : (uint32_t)(rows + 1) / 2 * 2;
            if (D <= 64 && t->br <= 8)
                t->bc = 64;
        }
    }
    uint64_t lm = d->base.info.shared_memory, need = local_bytes(t, D);
    uint64_t wgmax = d->base.info.max_workgroup_size;
    while (!tuned && need > lm && t->bc >= 16) {
        t->bc = t->bc / 2 / 8 * 8;
        need = local_bytes(t, D);
    }
    if (need > lm || t->br * t->tpr > wgmax || wgmax < 256)
        return ssmax_set_error(d->base.ctx, SSMAX_ERR_LIMIT_EXCEEDED,
                               "head_dim: tiles %u,%u,%u need %llu bytes of local memory and %u "
                               "work-items (256 for qk); the device has %llu and %llu",
                               t->br, t->bc, t->tpr, (unsigned long long)need, t->br * t->tpr,
                               (unsigned long long)lm, (unsigned long long)wgmax);
    return SSMAX_OK;
}

static int cl_attn_supported(struct ssmax_dev *base, const struct attn_plan *pl)
{
    struct cl_dev *d = (struct cl_dev *)base;
    const struct ssmax_attn_params *p = &pl->p;
    if (p->head_dim % 8 || p->head_dim < 8 || p->head_dim > SSMAX_MAX_HEAD_DIM)
        return ssmax_set_error(base->ctx, SSMAX_ERR_UNSUPPORTED,
                               "head_dim: %u is not a multiple of 8 in [8, %d] (the OpenCL "
                               "kernels' range; the cpu device takes any)",
                               p->head_dim, SSMAX_MAX_HEAD_DIM);
    struct cl_tiles t;
    int r = choose_tiles(d, p->head_dim, (uint64_t)pl->group * p->q_len, &t);
    if (r < 0)
        return r;
    uint64_t rows = (uint64_t)p->batch * p->q_heads * p->q_len, lim = base->info.max_alloc_size;
    // Each tensor is one cl_mem, so it must fit the device's largest allocation; the kernels index
    // elements from the start of their buffer in 32 bits (probs is only copied, by byte offsets).
    struct plan_tensor ts[PLAN_TENSORS];
    ssmax_plan_tensors(pl, ts);
    for (size_t i = 0; i < PLAN_TENSORS; i++) {
        if (ts[i].bytes > lim)
            return ssmax_set_error(base->ctx, SSMAX_ERR_LIMIT_EXCEEDED,
                                   "%s: %llu bytes exceed the device's largest allocation %llu "
                                   "(CL_DEVICE_MAX_MEM_ALLOC_SIZE); split the batch or the heads",
                                   ts[i].name, (unsigned long long)ts[i].bytes,
                                   (unsigned long long)lim);
        if (ts[i].esz && (ts[i].off + ts[i].bytes) / ts[i].esz > UINT32_MAX)
            return ssmax_set_error(base->ctx, SSMAX_ERR_LIMIT_EXCEEDED,
                                   "%s: %llu elements from the start of its buffer exceed 2^32 - 1 "
                                   "(the OpenCL kernels index in 32 bits)",
                                   ts[i].name,
                                   (unsigned long long)((ts[i].off + ts[i].bytes) / ts[i].esz));
    }
    const uint64_t scratch = (uint64_t)pl->splits * rows * p->head_dim; // split-kv partial O
    if (pl->path == SSMAX_PATH_SPLIT_KV && (scratch * 4 > lim || scratch > UINT32_MAX))
        return ssmax_set_error(base->ctx, SSMAX_ERR_LIMIT_EXCEEDED,
                               "kv_splits: %u splits of %llu rows need %llu bytes of scratch, over "
                               "the device's largest allocation %llu or 2^32 - 1 elements",
                               pl->splits, (unsigned long long)rows,
                               (unsigned long long)scratch * 4, (unsigned long long)lim);
    if (pl->path == SSMAX_PATH_UNFUSED && (uint64_t)p->kv_len * 4 * 16 > lim)
        return ssmax_set_error(base->ctx, SSMAX_ERR_LIMIT_EXCEEDED,
                               "kv_len: %u keys are too many for the unfused path's scores",
                               p->kv_len);
    return SSMAX_OK;
}

static int ensure(struct cl_dev *d, cl_mem *m, size_t *have, size_t need)
{
    if (*m && *have >= need)
        return SSMAX_OK;
    if (*m)
        d->ci->f.clReleaseMemObject(*m);
    *m = NULL;
    *have = 0;
    cl_int e = CL_MEM_OBJECT_ALLOCATION_FAILURE;
    size_t n = need < 4096 ? 4096 : need;
    *m = ssmax_fault_alloc(d->base.ctx)
             ? NULL
             : d->ci->f.clCreateBuffer(d->cx, CL_MEM_READ_WRITE, n, NULL, &e);
    if (e != CL_SUCCESS) {
        *m = NULL;
        return cl_err(d->base.ctx, e, "clCreateBuffer (scratch)");
    }
    *have = n;
    return SSMAX_OK;
}

static int set_args(struct cl_dev *d, cl_kernel k, int n, const size_t *sizes, const void **vals)
{
    for (int i = 0; i < n; i++) {
        cl_int e = d->ci->f.clSetKernelArg(k, (cl_uint)i, sizes[i], vals[i]);
        if (e != CL_SUCCESS)
            return cl_err(d->base.ctx, e, "clSetKernelArg");
    }
    return SSMAX_OK;
}

/* Register blocks of the fused kernel as contiguous runs (CPU devices: vector loads and FMAs;
 * PoCL, B1 H8 D64: L1024 66.6 -> 58.5 ms, decode kv 16384 23.8 -> 11.5 ms) or interleaved over
 * the work-items (GPUs: neighbouring work-items read neighbouring local-memory words).
 * SSMAX_CL_LAYOUT=chunked|interleaved overrides. */
static int chunked(const struct cl_dev *d)
{
    const char *e = getenv("SSMAX_CL_LAYOUT");
    if (e && !strcmp(e, "chunked"))
        return 1;
    if (e && !strcmp(e, "interleaved"))
        return 0;
    return d->base.info.type == SSMAX_DEVICE_CPU;
}

static int cl_attn(struct ssmax_dev *base, struct attn_plan *pl, const struct attn_bufs *ab,
                   uint64_t *device_ns)
{
    struct cl_dev *d = (struct cl_dev *)base;
    struct ssmax_context *ctx = base->ctx;
    struct cl_fns *f = &d->ci->f;
    const struct ssmax_attn_params *p = &pl->p;
    const uint32_t D = p->head_dim, esz = pl->elem_size;
    const uint64_t rows = (uint64_t)p->batch * p->q_heads * p->q_len;
    struct cl_tiles t;
    int r = choose_tiles(d, D, (uint64_t)pl->group * p->q_len, &t);
    if (r < 0)
        return r;
    char opts[160];
    snprintf(opts, sizeof(opts), "-cl-std=CL1.2 -DD=%uu -DBR=%uu -DBC=%uu -DTPR=%uu -DWG=%uu%s%s", D,
             t.br, t.bc, t.tpr, t.br * t.tpr, p->dtype == SSMAX_F16 ? " -DIO_F16=1" : "",
             chunked(d) ? " -DCHUNKED=1" : "");
    struct cl_prog *pg = NULL;
    if ((r = get_program(d, opts, &pg)) < 0)
        return r;

    // Scratch before anything is enqueued: a failure leaves the outputs untouched.
    uint32_t nsplit = 1, split_len = p->kv_len, bh_per = 1, i_count = p->q_len;
    if (pl->path == SSMAX_PATH_SPLIT_KV) {
        split_len = (p->kv_len + pl->splits - 1) / pl->splits;
        nsplit = (p->kv_len + split_len - 1) / split_len;
        if ((r = ensure(d, &d->scr0, &d->scr0_size, nsplit * rows * D * 4)) < 0 ||
            (r = ensure(d, &d->scr1, &d->scr1_size, nsplit * rows * 8)) < 0)
            return r;
    } else if (pl->path == SSMAX_PATH_UNFUSED) {
        uint64_t limit = base->info.max_alloc_size < (256ull << 20) ? base->info.max_alloc_size
                                                                    : (256ull << 20);
        uint64_t per_bh = (uint64_t)p->q_len * p->kv_len * 4;
        if (per_bh <= limit) {
            uint64_t n = limit / per_bh;
            bh_per = (uint32_t)(n < (uint64_t)p->batch * p->q_heads ? n : p->batch * p->q_heads);
        } else {
            i_count = (uint32_t)(limit / ((uint64_t)p->kv_len * 4));
        }
        if ((r = ensure(d, &d->scr0, &d->scr0_size, (uint64_t)bh_per * i_count * p->kv_len * 4)) < 0)
            return r;
    }
    if ((r = ensure(d, &d->coef, &d->coef_size, 2ull * p->q_heads * 4)) < 0)
        return r;
    // Element offsets: whole buffers are bound, tensors start at off / element size.
    uint32_t P[32] = {
        p->batch, p->q_heads, p->kv_heads, p->q_len, p->kv_len, pl->group, pl->q_pos,
        (uint32_t)p->causal, pl->x_floor, p->pos_offset, p->floor_scale ? p->floor_scale : 1, 0,
        (uint32_t)(ab->q_off / esz), (uint32_t)(ab->k_off / esz), (uint32_t)(ab->v_off / esz),
        (uint32_t)(ab->o_off / esz), (uint32_t)(ab->lse_off / 4), (uint32_t)pl->want_lse, 0,
        split_len, nsplit,
    };
    memcpy(&P[11], &pl->lo, 4);
    cl_int e = f->clEnqueueWriteBuffer(d->q, d->params, CL_TRUE, 0, sizeof(P), P, 0, NULL, NULL);
    if (e == CL_SUCCESS)
        e = f->clEnqueueWriteBuffer(d->q, d->coef, CL_TRUE, 0, 2ull * p->q_heads * 4, pl->coef, 0,
                                    NULL, NULL);
    if (e != CL_SUCCESS)
        return cl_err(ctx, e, "clEnqueueWriteBuffer (parameters)");

    cl_mem q = ab->q, k = ab->k, v = ab->v, o = ab->o, lse = ab->lse ? ab->lse : d->dummy;
    cl_mem s0 = d->scr0 ? d->scr0 : d->dummy, s1 = d->scr1 ? d->scr1 : d->dummy;
    cl_event first = NULL, last = NULL;
    uint32_t launched = 0;
#define ENQ(kid, dims, gsz, lsz)                                                                   \
    do {                                                                                           \
        cl_event ev;                                                                               \
        e = f->clEnqueueNDRangeKernel(d->q, pg->k[kid], dims, NULL, gsz, lsz, 0, NULL, &ev);       \
        if (e != CL_SUCCESS)                                                                       \
            goto fail;                                                                             \
        launched |= 1u << (kid);                                                                   \
        if (!first)                                                                                \
            first = ev;                                                                            \
        else {                                                                                     \
            if (last)                                                                              \
                f->clReleaseEvent(last);                                                           \
            last = ev;                                                                             \
        }                                                                                          \
    } while (0)
    const size_t ms = sizeof(cl_mem), us = sizeof(cl_uint);
    if (pl->path != SSMAX_PATH_UNFUSED) {
        int kid = pl->path == SSMAX_PATH_SPLIT_KV ? K_FLASH_SPLIT : K_FLASH;
        cl_uint zero = 0;
        const size_t sz[] = { ms, ms, ms, ms, ms, ms, ms, ms, ms, us };
        const void *va[] = { &d->params, &d->coef, &q, &k, &v, &o, &lse, &s0, &s1, &zero };
        if ((r = set_args(d, pg->k[kid], 10, sz, va)) < 0)
            return r;
        size_t blocks = ((size_t)pl->group * p->q_len + t.br - 1) / t.br;
        // Cut the launch so one kernel carries at most max_work_per_submit multiply-adds
        // (watchdogs); each piece is flushed to the device. Results do not change.
        const uint64_t cap = ctx->params.max_work_per_submit ? ctx->params.max_work_per_submit
                                                              : SSMAX_DEFAULT_MAX_WORK;
        uint64_t per_block = 2ull * t.br * p->kv_len * D * p->kv_heads * p->batch;
        size_t chunk = cap / per_block ? (size_t)(cap / per_block) : 1;
        for (size_t x0 = 0; x0 < blocks; x0 += chunk) {
            cl_uint rb = (cl_uint)x0;
            e = f->clSetKernelArg(pg->k[kid], 9, us, &rb);
            if (e != CL_SUCCESS)
                goto fail;
            size_t nblk = blocks - x0 < chunk ? blocks - x0 : chunk;
            size_t g[3] = { nblk * 16, p->kv_heads, (size_t)p->batch * nsplit };
            size_t l[3] = { 16, 1, 1 };
            ENQ(kid, 3, g, l);
            if (x0 + chunk < blocks)
                f->clFlush(d->q);
        }
        if (pl->path == SSMAX_PATH_SPLIT_KV) {
            const size_t sz2[] = { ms, ms, ms, ms, ms };
            const void *va2[] = { &d->params, &s0, &s1, &o, &lse };
            if ((r = set_args(d, pg->k[K_MERGE], 5, sz2, va2)) < 0)
                goto fail_r;
            size_t g2 = (size_t)rows * 64, l2 = 64;
            ENQ(K_MERGE, 1, &g2, &l2);
        }
    } else {
        const uint32_t nbh = p->batch * p->q_heads;
        for (uint32_t bh0 = 0; bh0 < nbh; bh0 += bh_per) {
            cl_uint nb = nbh - bh0 < bh_per ? nbh - bh0 : bh_per;
            for (cl_uint i0 = 0; i0 < p->q_len; i0 += i_count) {
                cl_uint ni = p->q_len - i0 < i_count ? p->q_len - i0 : i_count;
                const size_t s1z[] = { ms, ms, ms, ms, ms, us, us, us };
                const void *v1[] = { &d->params, &d->coef, &q, &k, &s0, &bh0, &i0, &ni };
                const size_t s2z[] = { ms, ms, ms, us, us, us };
                const void *v2[] = { &d->params, &s0, &lse, &bh0, &i0, &ni };
                const size_t s3z[] = { ms, ms, ms, ms, us, us, us };
                const void *v3[] = { &d->params, &s0, &v, &o, &bh0, &i0, &ni };
                if ((r = set_args(d, pg->k[K_QK], 8, s1z, v1)) < 0 ||
                    (r = set_args(d, pg->k[K_SOFTMAX], 6, s2z, v2)) < 0 ||
                    (r = set_args(d, pg->k[K_PV], 7, s3z, v3)) < 0)
                    goto fail_r;
                size_t gq[3] = { (size_t)((p->kv_len + 15) / 16) * 256, (ni + 15) / 16, nb };
                size_t lq[3] = { 256, 1, 1 };
                ENQ(K_QK, 3, gq, lq);
                size_t gs[2] = { (size_t)ni * 64, nb }, ls[2] = { 64, 1 };
                ENQ(K_SOFTMAX, 2, gs, ls);
                size_t gp[2] = { (size_t)((ni + t.br - 1) / t.br) * t.br * t.tpr, nb };
                size_t lp[2] = { t.br * t.tpr, 1 };
                ENQ(K_PV, 2, gp, lp);
                if (ab->probs) {
                    uint64_t row0 = (uint64_t)bh0 * p->q_len + i0;
                    e = f->clEnqueueCopyBuffer(d->q, s0, ab->probs, 0,
                                               ab->probs_off + row0 * p->kv_len * 4,
                                               (size_t)nb * ni * p->kv_len * 4, 0, NULL, NULL);
                    if (e != CL_SUCCESS)
                        goto fail;
                }
            }
        }
    }
    e = f->clFinish(d->q);
    if (e == CL_SUCCESS && ssmax_fault_lost(ctx)) {
        r = ssmax_set_error(ctx, SSMAX_ERR_DEVICE_LOST, "opencl: device lost (injected)");
        goto fail_r;
    }
    if (e != CL_SUCCESS)
        goto fail;
    cl_ulong t0 = 0, t1 = 0;
    f->clGetEventProfilingInfo(first, CL_PROFILING_COMMAND_START, sizeof(t0), &t0, NULL);
    f->clGetEventProfilingInfo(last ? last : first, CL_PROFILING_COMMAND_END, sizeof(t1), &t1,
                               NULL);
    *device_ns = t1 > t0 ? t1 - t0 : 0;
    if (first)
        f->clReleaseEvent(first);
    if (last)
        f->clReleaseEvent(last);
    if ((pg->used | launched) != pg->used || pg->saved == ~0u) {
        pg->used |= launched;
        if (pg->saved != pg->used)
            cache_save(d, pg);
    }
    if (pg->marker[0] && pg->used == (1u << K_COUNT) - 1) { // every kernel of the binary ran
        cache_marker_drop(pg->marker);
        pg->marker[0] = 0;
    }
    return SSMAX_OK;
fail:
    r = cl_err(ctx, e, "kernel launch");
fail_r:
    f->clFinish(d->q);
    if (first)
        f->clReleaseEvent(first);
    if (last)
        f->clReleaseEvent(last);
    return r;
}

const struct ssmax_backend_fns ssmax_backend_opencl = {
    .name = "opencl",
    .id = SSMAX_BACKEND_OPENCL,
    .init = cl_init,
    .uninit = cl_uninit,
    .enumerate = cl_enumerate,
    .open = cl_open,
    .close = cl_close,
    .buf_create = cl_buf_create,
    .buf_destroy = cl_buf_destroy,
    .buf_write = cl_buf_write,
    .buf_read = cl_buf_read,
    .attn_supported = cl_attn_supported,
    .attn = cl_attn,
};
