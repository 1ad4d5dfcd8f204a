/*
 * Tuned tile sizes, one small text file per device in the cache directory:
 *   tune-<backend>-<fnv64 of name and driver version>.txt, lines "ssmax-tune 1" then "D BR BC TPR".
 * Loaded when a device opens; written atomically by ssmax_tune_store (ssmax bench --tune).
 * A malformed line is ignored, never trusted.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend.h"
#include "internal.h"

static void tune_path(struct ssmax_dev *dev, char *out, size_t n)
{
    char dir[512];
    ssmax_cache_dir(dev->ctx, dir, sizeof(dir));
    if (!dir[0]) {
        out[0] = 0;
        return;
    }
    uint64_t h = 0xcbf29ce484222325ull;
    const char *parts[2] = { dev->info.name, dev->info.driver_version };
    for (int k = 0; k < 2; k++)
        for (const unsigned char *s = (const unsigned char *)parts[k]; *s; s++)
            h = (h ^ *s) * 0x100000001b3ull;
    snprintf(out, n, "%s/tune-%s-%016llx.txt", dir, dev->fns->name, (unsigned long long)h);
}

static int valid(uint32_t D, uint32_t br, uint32_t bc, uint32_t tpr)
{
    if (!(D >= 8 && D <= SSMAX_MAX_HEAD_DIM && D % 8 == 0))
        return 0;
    if (tpr == 0) // Vulkan's rows kernel: br rows per subgroup lane, bc keys per step
        return br >= 1 && br <= 4 && bc >= 1 && bc <= 16;
    return (tpr == 1 || tpr == 2 || tpr == 4) && D % (2 * tpr) == 0 && br >= 2 && br <= 256 && br % 2 == 0 && bc >= 8 && bc <= 256 && bc % 8 == 0 &&
           br * tpr <= 1024;
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
    char path[700], tmp[760];
    tune_path(dev, path, sizeof(path));
    if (!path[0])
        return ssmax_set_error(ctx, SSMAX_ERR_UNSUPPORTED, "cache_dir: no cache directory (set "
                               "SSMAX_CACHE_DIR or HOME)");
    dev->tune[D / 8][0] = (uint16_t)br;
    dev->tune[D / 8][1] = (uint16_t)bc;
    dev->tune[D / 8][2] = (uint16_t)tpr;
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
