/*
 * OpenCL: the ICD loader is dlopen'ed (a machine without one lists no OpenCL devices), and every
 * platform's devices are listed, once per process.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cl_internal.h"

/* ---- listing ---- */

#ifndef CL_DEVICE_UUID_KHR // cl_khr_device_uuid, in headers from 2020 on
#define CL_UUID_SIZE_KHR 16
#define CL_DEVICE_UUID_KHR 0x106A
#define CL_DRIVER_UUID_KHR 0x106B
#endif

/* Whether the space-separated list has the extension name (a whole word). */
static int has_ext(const char *list, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = list; (p = strstr(p, name)) != NULL; p += n)
        if ((p == list || p[-1] == ' ') && (p[n] == ' ' || p[n] == 0))
            return 1;
    return 0;
}

/* A cl_khr_device_uuid UUID into out; 1 when the driver gave one that is not all zero. */
static uint8_t uuid_info(struct cl_inst *ci, cl_device_id d, cl_device_info what, uint8_t out[16])
{
    cl_uchar u[CL_UUID_SIZE_KHR] = { 0 };
    if (ci->f.clGetDeviceInfo(d, what, sizeof(u), u, NULL) != CL_SUCCESS)
        return 0;
    uint8_t any = 0;
    for (int i = 0; i < 16; i++)
        any |= u[i];
    if (any)
        memcpy(out, u, 16);
    return any != 0;
}

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
    // In bits; the largest OpenCL type (long16, 128 bytes) where the driver says nothing.
    rec->base_align = u64_info(ci, dev, CL_DEVICE_MEM_BASE_ADDR_ALIGN, 4) / 8;
    if (!rec->base_align)
        rec->base_align = 128;
    size_t n = 0;
    ci->f.clGetDeviceInfo(dev, CL_DEVICE_EXTENSIONS, 0, NULL, &n);
    char *ext = calloc(n + 1, 1);
    if (ext && ci->f.clGetDeviceInfo(dev, CL_DEVICE_EXTENSIONS, n, ext, NULL) == CL_SUCCESS) {
        d->fp16_arith = strstr(ext, "cl_khr_fp16") != NULL;
        d->subgroups = strstr(ext, "cl_khr_subgroups") != NULL;
        if (has_ext(ext, "cl_khr_device_uuid")) {
            d->has_device_uuid = uuid_info(ci, dev, CL_DEVICE_UUID_KHR, d->device_uuid);
            d->has_driver_uuid = uuid_info(ci, dev, CL_DRIVER_UUID_KHR, d->driver_uuid);
        }
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

void cl_uninit(struct ssmax_context *ctx, void *bpriv)
{
    (void)ctx, (void)bpriv; // the driver is shared and kept until exit (see above)
}

int cl_init(struct ssmax_context *ctx, void **bpriv)
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

const struct ssmax_device_info *cl_devices(void *bpriv, int *count)
{
    const struct cl_inst *ci = bpriv;
    *count = ci->ndev;
    return ci->infos;
}
