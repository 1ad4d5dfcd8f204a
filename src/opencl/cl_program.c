/*
 * OpenCL programs: cl/attn.cl, embedded as text, built at first use with -D tile values for each
 * (dtype, head dim, tiles), and the built binaries cached on disk (below).
 */
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "attn.cl.inc"
#include "cl_internal.h"

const char *const cl_kernel_names[K_COUNT] = { "flash_attn", "flash_attn_split", "split_merge",
                                               "qk", "softmax_rows", "pv", "flash_rowgroups",
                                               "flash_rowgroups_split", "mask_count" };

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

/* The cache directory's secret (ssmax_cache_secret), read or made once per device. Without one
 * (no randomness, a read-only directory without a secret) the cache is off for this device. */
static int cache_secret(struct cl_dev *d)
{
    if (d->mac_state)
        return d->mac_state > 0;
    int r = ssmax_cache_secret(d->base.ctx, d->cache_dir, "opencl", d->mac_key);
    d->mac_state = r == 0 ? 1 : -1;
    return r == 0;
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
    char key[1024], path[700];
    cache_key(d, pg->opts, key, sizeof(key), path, sizeof(path));
    ssmax_mkdirs(d->cache_dir);
    if (!cache_secret(d)) {
        free(bin);
        return;
    }
    uint32_t klen = (uint32_t)strlen(key);
    uint64_t bs = bsize, sum = ssmax_fnv64(bin, bsize, SSMAX_FNV64_INIT);
    uint64_t mac = entry_mac(d, key, bin, bsize);
    const void *parts[] = { "SSMAXCL2", &klen, key, &bs, &sum, &mac, bin };
    const size_t sizes[] = { 8, 4, klen, 8, 8, 8, bsize };
    if (ssmax_cache_write(path, parts, sizes, 7) == 0)
        pg->saved = pg->used;
    else
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

/* Every kernel of the program (pg->kmask), or none (CL_SUCCESS, or the error with *bad the kernel
 * it hit). */
static cl_int make_kernels(struct cl_dev *d, struct cl_prog *pg, int *bad)
{
    struct cl_fns *f = &d->ci->f;
    cl_int e = CL_SUCCESS;
    for (int k = 0; k < K_COUNT; k++) {
        if (!(pg->kmask & (1u << k)))
            continue;
        pg->k[k] = f->clCreateKernel(pg->prog, cl_kernel_names[k], &e);
        if (e != CL_SUCCESS) {
            for (int j = 0; j < k; j++)
                if (pg->k[j])
                    f->clReleaseKernel(pg->k[j]);
            memset(pg->k, 0, sizeof(pg->k));
            *bad = k;
            return e;
        }
    }
    return CL_SUCCESS;
}

int cl_program_get(struct cl_dev *d, const char *opts, struct cl_prog **out)
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
    pg->kmask = strstr(opts, "-DLANES=1") ? K_ROWG_SET : K_TILES_SET;
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
                                   cl_kernel_names[bad], (int)e);
        }
    }
    snprintf(pg->marker, sizeof(pg->marker), "%s", mpath);
    d->nprogs++;
    ssmax_log(ctx, SSMAX_LOG_DEBUG, "opencl: program built (%s)", opts);
    *out = pg;
    return SSMAX_OK;
}


void cl_program_ran(struct cl_dev *d, struct cl_prog *pg, uint32_t launched)
{
    if ((pg->used | launched) != pg->used || pg->saved == ~0u) {
        pg->used |= launched;
        if (pg->saved != pg->used)
            cache_save(d, pg);
    }
    if (pg->marker[0] && pg->used == pg->kmask) { // every kernel of the binary ran
        cache_marker_drop(pg->marker);
        pg->marker[0] = 0;
    }
}

void cl_programs_settle(struct cl_dev *d)
{
    for (int i = 0; i < d->nprogs; i++)
        if (d->progs[i].pending) {
            cl_program_ran(d, &d->progs[i], d->progs[i].pending);
            d->progs[i].pending = 0;
        }
}

void cl_programs_release(struct cl_dev *d)
{
    for (int i = 0; i < d->nprogs; i++) {
        for (int k = 0; k < K_COUNT; k++)
            if (d->progs[i].k[k])
                d->ci->f.clReleaseKernel(d->progs[i].k[k]);
        d->ci->f.clReleaseProgram(d->progs[i].prog);
        cache_marker_drop(d->progs[i].marker);
    }
    ssmax_free(d->base.ctx, d->progs);
    d->progs = NULL;
    d->nprogs = d->cap_progs = 0;
}
