/*
 * Tuned tile sizes, one small text file per device in the cache directory:
 *   tune-<backend>-<fnv64 of name and driver version>.txt: a line "ssmax-tune 2", then one line a
 *   head dim, "D tiles BR BC TPR" (SSMAX_KERNEL_TILES) or "D rows RL BC" (SSMAX_KERNEL_ROWS).
 * Loaded when a device opens; written atomically by ssmax_tune_store (ssmax bench --tune), which
 * first runs the tiles on the device against the reference. A malformed line is ignored, never
 * trusted; a well-formed one the device cannot run (an older version's file, a hand edit, another
 * driver limit) is dropped by the backend's tile choice with a warning, never an error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend.h"
#include "internal.h"
#include "names.h"

static void tune_path(struct ssmax_dev *dev, char *out, size_t n)
{
    char dir[512];
    ssmax_cache_dir(dev->ctx, dir, sizeof(dir));
    if (!dir[0]) {
        out[0] = 0;
        return;
    }
    uint64_t h = ssmax_fnv64(dev->info.name, strlen(dev->info.name), SSMAX_FNV64_INIT);
    h = ssmax_fnv64(dev->info.driver_version, strlen(dev->info.driver_version), h);
    snprintf(out, n, "%s/tune-%s-%016llx.txt", dir, dev->fns->name, (unsigned long long)h);
}

/* The file's sanity bounds for an entry (the device's limits are the backend's to check). */
static int valid(uint32_t D, const struct ssmax_tiles *t)
{
    if (!(D >= 8 && D <= SSMAX_MAX_HEAD_DIM && D % 8 == 0))
        return 0;
    if (t->kernel == SSMAX_KERNEL_ROWS)
        return t->rows >= 1 && t->rows <= 4 && t->keys >= 1 && t->keys <= 16 && t->lanes == 0;
    return t->kernel == SSMAX_KERNEL_TILES && ssmax_tiles_ok(D, t->rows, t->keys, t->lanes) &&
           t->rows <= 256 && t->keys <= 256;
}

int ssmax_tiles_ok(uint32_t D, uint32_t br, uint32_t bc, uint32_t tpr)
{
    return br && bc && (tpr == 1 || tpr == 2 || tpr == 4) && D % (2 * tpr) == 0 &&
           br * tpr <= 1024 && br % 2 == 0 && bc % 8 == 0;
}

int ssmax_parse_tiles(const char *s, uint32_t D, struct ssmax_tiles *t)
{
    unsigned a, b, c = 1;
    char tail;
    int n;
    if (!strncmp(s, "rows,", 5)) { // rows,BC[,RL]
        n = sscanf(s + 5, "%u,%u%c", &b, &c, &tail);
        *t = (struct ssmax_tiles){ SSMAX_KERNEL_ROWS, c, b, 0 };
        return (n == 1 || n == 2) && valid(D, t) ? 0 : -1;
    }
    n = sscanf(s, "%u,%u,%u%c", &a, &b, &c, &tail);
    *t = (struct ssmax_tiles){ SSMAX_KERNEL_TILES, a, b, c };
    return n == 3 && ssmax_tiles_ok(D, a, b, c) ? 0 : -1;
}

int ssmax_tiles_asked(struct ssmax_dev *dev, const char *env, uint32_t D, int fused,
                      struct ssmax_tiles *t)
{
    // While ssmax_tune_store tries an entry, the entry is what runs, whatever the override says.
    const char *e = dev->tune_strict ? NULL : getenv(env);
    if (e && *e) {
        if (ssmax_parse_tiles(e, D, t) < 0)
            return ssmax_set_error(dev->ctx, SSMAX_ERR_INVALID_ARG,
                                   "%s: '%s' must be BR,BC,TPR with TPR in {1,2,4}, D %% (2*TPR) "
                                   "== 0, BR*TPR <= 1024, BR even and BC a multiple of 8, or "
                                   "rows,BC[,RL] with BC in [1, 16] and RL in [1, 4]", env, e);
        if (t->kernel == SSMAX_KERNEL_TILES || fused)
            return TILES_OVERRIDE;
        // the override names the fused rows kernel; the unfused kernels take the defaults
    }
    if (D % 8 || D > SSMAX_MAX_HEAD_DIM || !dev->tune[D / 8].rows)
        return TILES_DEFAULT;
    *t = dev->tune[D / 8];
    return t->kernel == SSMAX_KERNEL_TILES || fused ? TILES_TUNED : TILES_DEFAULT;
}

int ssmax_tune_refused(struct ssmax_dev *dev, uint32_t D, const char *why)
{
    if (dev->tune_strict)
        return ssmax_set_error(dev->ctx, SSMAX_ERR_LIMIT_EXCEEDED, "head_dim %u: %s", D, why);
    ssmax_log(dev->ctx, SSMAX_LOG_WARN, "tuned tiles for head_dim %u ignored: %s (run ssmax "
              "bench --tune again)", D, why);
    memset(&dev->tune[D / 8], 0, sizeof(dev->tune[D / 8]));
    return 0;
}

void ssmax_tune_load(struct ssmax_dev *dev)
{
    memset(dev->tune, 0, sizeof(dev->tune));
    char path[700];
    tune_path(dev, path, sizeof(path));
    FILE *f = path[0] ? fopen(path, "r") : NULL;
    if (!f)
        return;
    char line[128];
    if (!fgets(line, sizeof(line), f) || strcmp(line, "ssmax-tune 2\n")) {
        fclose(f);
        return;
    }
    while (fgets(line, sizeof(line), f)) {
        unsigned D, a, b, c;
        struct ssmax_tiles t;
        if (sscanf(line, "%u tiles %u %u %u", &D, &a, &b, &c) == 4)
            t = (struct ssmax_tiles){ SSMAX_KERNEL_TILES, a, b, c };
        else if (sscanf(line, "%u rows %u %u", &D, &a, &b) == 3)
            t = (struct ssmax_tiles){ SSMAX_KERNEL_ROWS, a, b, 0 };
        else
            continue;
        if (valid(D, &t))
            dev->tune[D / 8] = t;
    }
    fclose(f);
    ssmax_log(dev->ctx, SSMAX_LOG_INFO, "tuned tiles loaded from %s", path);
}

/* "BR,BC,TPR" or "rows,BC,RL", as the overrides spell them. */
static const char *tiles_str(const struct ssmax_tiles *t, char *buf, size_t n)
{
    if (t->kernel == SSMAX_KERNEL_ROWS)
        snprintf(buf, n, "rows,%u,%u", t->keys, t->rows);
    else
        snprintf(buf, n, "%u,%u,%u", t->rows, t->keys, t->lanes);
    return buf;
}

/* Deterministic inputs in [-1, 1]. */
static void fill(float *a, size_t n, uint64_t *seed)
{
    for (size_t i = 0; i < n; i++) {
        *seed = *seed * 6364136223846793005ull + 1442695040888963407ull;
        a[i] = (float)((double)(*seed >> 11) * (2.0 / 9007199254740992.0) - 1.0);
    }
}

/* Runs a small attention with the device's current tune entry for head_dim D on the fused (causal,
 * partial tiles), split-KV and unfused paths and compares each with the reference (SPEC.md
 * section 6 limits). Every shape spans two row blocks and two key tiles plus a remainder. */
static int probe(ssmax_context *ctx, uint32_t D, const struct ssmax_tiles *t)
{
    struct ssmax_dev *dev = ctx->dev;
    struct ssmax_attn_params p;
    ssmax_attn_params_default(&p);
    uint32_t sg = dev->info.subgroup_size ? dev->info.subgroup_size : 1;
    p.q_heads = 2; // two query heads share the KV head: the packed (GQA) rows
    p.q_len = (t->kernel == SSMAX_KERNEL_ROWS ? t->rows * sg : t->rows) + 3;
    p.kv_len = 2 * t->keys + 5 > p.q_len + 8 ? 2 * t->keys + 5 : p.q_len + 8; // causal: q_len <= kv_len
    p.head_dim = D;
    size_t nq = (size_t)p.q_heads * p.q_len * D, nk = (size_t)p.kv_len * D;
    float *hq = ssmax_malloc(ctx, (nq * 2 + nk * 2) * sizeof(float));
    double *ref = ssmax_malloc(ctx, nq * sizeof(double));
    ssmax_buffer *bufs[4] = { NULL, NULL, NULL, NULL }; // q, k, v, o
    int r = hq && ref ? SSMAX_OK : ssmax_set_error(ctx, SSMAX_ERR_OUT_OF_HOST_MEMORY,
                                                     "tune: out of host memory");
    float *hk = hq ? hq + nq : NULL, *hv = hk ? hk + nk : NULL, *ho = hv ? hv + nk : NULL;
    float *src[3] = { hq, hk, hv };
    const size_t len[4] = { nq, nk, nk, nq };
    uint64_t seed = 0x5eed0000u + D;
    for (int i = 0; i < 3 && r == SSMAX_OK; i++)
        fill(src[i], len[i], &seed);
    for (int i = 0; i < 4 && r == SSMAX_OK; i++) {
        r = ssmax_buffer_create(ctx, len[i] * 4, &bufs[i]);
        if (r == SSMAX_OK && i < 3)
            r = ssmax_buffer_write(ctx, bufs[i], 0, src[i], len[i] * 4);
    }
    static const enum ssmax_path paths[] = { SSMAX_PATH_FUSED, SSMAX_PATH_SPLIT_KV,
                                             SSMAX_PATH_UNFUSED };
    for (int k = 0; k < 3 && r == SSMAX_OK; k++) {
        p.path = paths[k];
        p.causal = p.path == SSMAX_PATH_FUSED;
        p.kv_splits = p.path == SSMAX_PATH_SPLIT_KV ? 2 : 0;
        struct ssmax_attn_host io = { hq, hk, hv, NULL, NULL, NULL, ref, NULL };
        struct ssmax_attn_buffers b = { 0 };
        b.q = bufs[0], b.k = bufs[1], b.v = bufs[2], b.o = bufs[3];
        if ((r = ssmax_attn_ref(&p, &io)) < 0) {
            char msg[512]; // ssmax_set_error writes the buffer ssmax_last_error(NULL) returns
            snprintf(msg, sizeof(msg), "%s", ssmax_last_error(NULL));
            r = ssmax_set_error(ctx, r, "tune: reference: %s", msg);
            break;
        }
        if ((r = ssmax_attn(ctx, &p, &b)) < 0 ||
            (r = ssmax_buffer_read(ctx, bufs[3], 0, ho, nq * 4)) < 0)
            break;
        struct ssmax_compare c;
        ssmax_compare_f32(ref, ho, nq, 0, &c);
        char ts[48];
        if (!(c.nmse <= 1e-8) || !(c.max_abs <= 1e-3 * c.max_ref) || c.nonfinite_mismatch)
            r = ssmax_set_error(ctx, SSMAX_ERR_UNSUPPORTED,
                                "tiles: %s for head_dim %u give a wrong result on the %s path "
                                "(nmse %.2e, limit 1e-8; max_abs %.2e, limit %.2e): not stored",
                                tiles_str(t, ts, sizeof(ts)), D, ssmax_path_name(paths[k]), c.nmse,
                                c.max_abs, 1e-3 * c.max_ref);
    }
    for (int i = 0; i < 4; i++)
        ssmax_buffer_destroy(ctx, &bufs[i]);
    ssmax_free(ctx, hq);
    ssmax_free(ctx, ref);
    return r;
}

int ssmax_tune_store(ssmax_context *ctx, uint32_t D, const struct ssmax_tiles *t)
{
    if (!ctx)
        return ssmax_set_error(NULL, SSMAX_ERR_INVALID_ARG, "ctx: must not be NULL");
    ssmax_error_clear(ctx);
    if (!ctx->dev)
        return ssmax_set_error(ctx, SSMAX_ERR_NO_DEVICE, "ctx: no device is open");
    if (!t)
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG, "tiles: must not be NULL");
    if (!valid(D, t))
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG,
                               "tiles: head_dim %u, kernel %d, rows %u, keys %u, lanes %u: need "
                               "head_dim a multiple of 8 in [8, %d], and for SSMAX_KERNEL_TILES "
                               "lanes in {1, 2, 4} dividing head_dim / 2, rows even in [2, 256] "
                               "with rows * lanes <= 1024, keys a multiple of 8 in [8, 256]; for "
                               "SSMAX_KERNEL_ROWS rows in [1, 4], keys in [1, 16], lanes 0",
                               D, (int)t->kernel, t->rows, t->keys, t->lanes, SSMAX_MAX_HEAD_DIM);
    struct ssmax_dev *dev = ctx->dev;
    if (dev->fns->id == SSMAX_BACKEND_CPU)
        return ssmax_set_error(ctx, SSMAX_ERR_UNSUPPORTED,
                               "ctx: the cpu device has no tiles to tune (open a Vulkan or OpenCL "
                               "device)");
    if (t->kernel == SSMAX_KERNEL_ROWS && !dev->fns->rows_kernel)
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG,
                               "tiles: kernel SSMAX_KERNEL_ROWS: the %s backend has no rows "
                               "kernel; use SSMAX_KERNEL_TILES", dev->fns->name);
    char path[700], tmp[760];
    tune_path(dev, path, sizeof(path));
    if (!path[0])
        return ssmax_set_error(ctx, SSMAX_ERR_UNSUPPORTED, "cache_dir: no cache directory (set "
                               "SSMAX_CACHE_DIR or HOME)");
    // Run the tiles before storing them: a stored entry is used by every later process on this
    // device and driver. The attention calls of the check leave what ssmax_last_plan and
    // ssmax_last_device_time report as they were.
    const struct ssmax_tiles prev = dev->tune[D / 8];
    dev->tune[D / 8] = *t;
    uint64_t last_ns = ctx->last_ns;
    struct ssmax_plan_info last_plan = ctx->last_plan;
    dev->tune_strict = 1;
    int r = probe(ctx, D, t);
    dev->tune_strict = 0;
    ctx->last_ns = last_ns, ctx->last_plan = last_plan;
    if (r < 0) {
        dev->tune[D / 8] = prev;
        return r;
    }
    char dir[512];
    ssmax_cache_dir(ctx, dir, sizeof(dir));
    ssmax_mkdirs(dir);
    snprintf(tmp, sizeof(tmp), "%s.%ld.tmp", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f)
        return ssmax_set_error(ctx, SSMAX_ERR_BACKEND, "tune: cannot write %s", tmp);
    fprintf(f, "ssmax-tune 2\n# %s (%s)\n", dev->info.name, dev->info.driver_version);
    for (uint32_t k = 1; k <= SSMAX_MAX_HEAD_DIM / 8; k++) {
        const struct ssmax_tiles *e = &dev->tune[k];
        if (e->kernel == SSMAX_KERNEL_ROWS && e->rows)
            fprintf(f, "%u rows %u %u\n", k * 8, e->rows, e->keys);
        else if (e->rows)
            fprintf(f, "%u tiles %u %u %u\n", k * 8, e->rows, e->keys, e->lanes);
    }
    int ok = fclose(f) == 0;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return ssmax_set_error(ctx, SSMAX_ERR_BACKEND, "tune: cannot write %s", path);
    }
    ssmax_log(ctx, SSMAX_LOG_INFO, "tuned tiles for head_dim %u stored in %s", D, path);
    return SSMAX_OK;
}
