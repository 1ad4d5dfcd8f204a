/*
 * Tuned tile sizes, one small text file per device in the cache directory:
 *   tune-<backend>-<fnv64 of name and driver version>.txt, lines "ssmax-tune 1" then "D BR BC TPR".
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

static int valid(uint32_t D, uint32_t br, uint32_t bc, uint32_t tpr)
{
    if (!(D >= 8 && D <= SSMAX_MAX_HEAD_DIM && D % 8 == 0))
        return 0;
    if (tpr == 0) // Vulkan's rows kernel: br rows per subgroup lane, bc keys per step
        return br >= 1 && br <= 4 && bc >= 1 && bc <= 16;
    return ssmax_tiles_ok(D, br, bc, tpr) && br <= 256 && bc <= 256; // the file's sanity bounds
}

int ssmax_tiles_ok(uint32_t D, uint32_t br, uint32_t bc, uint32_t tpr)
{
    return br && bc && (tpr == 1 || tpr == 2 || tpr == 4) && D % (2 * tpr) == 0 &&
           br * tpr <= 1024 && br % 2 == 0 && bc % 8 == 0;
}

int ssmax_parse_tiles(const char *s, uint32_t D, uint32_t t[3])
{
    unsigned br, bc, tpr;
    char tail;
    if (sscanf(s, "%u,%u,%u%c", &br, &bc, &tpr, &tail) != 3 || !ssmax_tiles_ok(D, br, bc, tpr))
        return -1;
    t[0] = br, t[1] = bc, t[2] = tpr;
    return 0;
}

int ssmax_tune_refused(struct ssmax_dev *dev, uint32_t D, const char *why)
{
    if (dev->tune_strict)
        return ssmax_set_error(dev->ctx, SSMAX_ERR_LIMIT_EXCEEDED, "head_dim %u: %s", D, why);
    ssmax_log(dev->ctx, SSMAX_LOG_WARN, "tuned tiles for head_dim %u ignored: %s (run ssmax "
              "bench --tune again)", D, why);
    memset(dev->tune[D / 8], 0, sizeof(dev->tune[D / 8]));
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
    if (!fgets(line, sizeof(line), f) || strncmp(line, "ssmax-tune 1", 12)) {
        fclose(f);
        return;
    }
    while (fgets(line, sizeof(line), f)) {
        unsigned D, br, bc, tpr;
        if (sscanf(line, "%u %u %u %u", &D, &br, &bc, &tpr) == 4 && valid(D, br, bc, tpr)) {
            dev->tune[D / 8][0] = (uint16_t)br;
            dev->tune[D / 8][1] = (uint16_t)bc;
            dev->tune[D / 8][2] = (uint16_t)tpr;
        }
    }
    fclose(f);
    ssmax_log(dev->ctx, SSMAX_LOG_INFO, "tuned tiles loaded from %s", path);
}

int ssmax_tune_get(const struct ssmax_dev *dev, uint32_t D, uint32_t t[3])
{
    if (D % 8 || D > SSMAX_MAX_HEAD_DIM || !dev->tune[D / 8][0])
        return 0;
    for (int k = 0; k < 3; k++)
        t[k] = dev->tune[D / 8][k];
    return 1;
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
static int probe(ssmax_context *ctx, uint32_t D, uint32_t br, uint32_t bc, uint32_t tpr)
{
    struct ssmax_dev *dev = ctx->dev;
    struct ssmax_attn_params p;
    ssmax_attn_params_default(&p);
    uint32_t sg = dev->info.subgroup_size ? dev->info.subgroup_size : 1;
    p.q_heads = 2; // two query heads share the KV head: the packed (GQA) rows
    p.q_len = (tpr ? br : br * sg) + 3;
    p.kv_len = 2 * bc + 5 > p.q_len + 8 ? 2 * bc + 5 : p.q_len + 8; // causal: q_len <= kv_len
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
        if (!(c.nmse <= 1e-8) || !(c.max_abs <= 1e-3 * c.max_ref) || c.nonfinite_mismatch)
            r = ssmax_set_error(ctx, SSMAX_ERR_UNSUPPORTED,
                                "tiles: %u,%u,%u for head_dim %u give a wrong result on the %s "
                                "path (nmse %.2e, limit 1e-8; max_abs %.2e, limit %.2e): not "
                                "stored", br, bc, tpr, D, ssmax_path_name(paths[k]), c.nmse,
                                c.max_abs, 1e-3 * c.max_ref);
    }
    for (int i = 0; i < 4; i++)
        ssmax_buffer_destroy(ctx, &bufs[i]);
    ssmax_free(ctx, hq);
    ssmax_free(ctx, ref);
    return r;
}

int ssmax_tune_store(ssmax_context *ctx, uint32_t D, uint32_t br, uint32_t bc, uint32_t tpr)
{
    if (!ctx)
        return ssmax_set_error(NULL, SSMAX_ERR_INVALID_ARG, "ctx: must not be NULL");
    if (!ctx->dev)
        return ssmax_set_error(ctx, SSMAX_ERR_NO_DEVICE, "ctx: no device is open");
    if (!valid(D, br, bc, tpr))
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG,
                               "tiles: head_dim %u, br %u, bc %u, tpr %u: need head_dim a multiple "
                               "of 8 in [8, %d], and tpr in {1, 2, 4} with br even in [2, 256] and "
                               "bc a multiple of 8 in [8, 256], or tpr 0 with br in [1, 4] and bc "
                               "in [1, 16]", D, br, bc, tpr, SSMAX_MAX_HEAD_DIM);
    struct ssmax_dev *dev = ctx->dev;
    if (dev->fns->id == SSMAX_BACKEND_CPU)
        return ssmax_set_error(ctx, SSMAX_ERR_UNSUPPORTED,
                               "ctx: the cpu device has no tiles to tune (open a Vulkan or OpenCL "
                               "device)");
    if (dev->fns->id == SSMAX_BACKEND_OPENCL && tpr == 0)
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG,
                               "tpr: 0 selects Vulkan's rows kernel; OpenCL tiles need tpr 1, 2 "
                               "or 4");
    char path[700], tmp[760];
    tune_path(dev, path, sizeof(path));
    if (!path[0])
        return ssmax_set_error(ctx, SSMAX_ERR_UNSUPPORTED, "cache_dir: no cache directory (set "
                               "SSMAX_CACHE_DIR or HOME)");
    // Run the tiles before storing them: a stored entry is used by every later process on this
    // device and driver. The attention calls of the check leave what ssmax_last_path and
    // ssmax_last_device_time report as they were.
    uint16_t prev[3];
    memcpy(prev, dev->tune[D / 8], sizeof(prev));
    dev->tune[D / 8][0] = (uint16_t)br;
    dev->tune[D / 8][1] = (uint16_t)bc;
    dev->tune[D / 8][2] = (uint16_t)tpr;
    uint64_t last_ns = ctx->last_ns;
    enum ssmax_path last_path = ctx->last_path;
    uint32_t last_splits = ctx->last_splits;
    dev->tune_strict = 1;
    int r = probe(ctx, D, br, bc, tpr);
    dev->tune_strict = 0;
    ctx->last_ns = last_ns, ctx->last_path = last_path, ctx->last_splits = last_splits;
    if (r < 0) {
        memcpy(dev->tune[D / 8], prev, sizeof(prev));
        return r;
    }
    char dir[512];
    ssmax_cache_dir(ctx, dir, sizeof(dir));
    ssmax_mkdirs(dir);
    snprintf(tmp, sizeof(tmp), "%s.%ld.tmp", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f)
        return ssmax_set_error(ctx, SSMAX_ERR_BACKEND, "tune: cannot write %s", tmp);
    fprintf(f, "ssmax-tune 1\n# %s (%s)\n", dev->info.name, dev->info.driver_version);
    for (uint32_t k = 1; k <= SSMAX_MAX_HEAD_DIM / 8; k++)
        if (dev->tune[k][0])
            fprintf(f, "%u %u %u %u\n", k * 8, dev->tune[k][0], dev->tune[k][1], dev->tune[k][2]);
    int ok = fclose(f) == 0;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return ssmax_set_error(ctx, SSMAX_ERR_BACKEND, "tune: cannot write %s", path);
    }
    ssmax_log(ctx, SSMAX_LOG_INFO, "tuned tiles for head_dim %u stored in %s", D, path);
    return SSMAX_OK;
}
