/*
 * Vulkan: the pipeline cache. Every pipeline of a device is made with one VkPipelineCache, seeded
 * when the device opens from a file in the cache directory (ssmax_cache_dir, beside the OpenCL
 * binaries) and written back when it closes, so a new process gets the driver's compiled code
 * instead of compiling the shaders again (on GPU drivers; see the README for what lavapipe keeps).
 *
 * One file per device and driver: <dir>/vk-<vendorID>-<deviceID>-<driverVersion>-<UUID>.pcache
 * (hex; UUID: pipelineCacheUUID), holding
 *   "SSMAXVKP" | u32 version (1) | u32 0 | u64 driver data size | u64 fnv64 of the data |
 *   u64 keyed hash of the data | driver data (vkGetPipelineCacheData: a
 *   VkPipelineCacheHeaderVersionOne, then the driver's own bytes).
 * Drivers do not all survive garbage handed to vkCreatePipelineCache, so nothing reaches the
 * driver unchecked: the magic, version and size (against the file's length, and at most
 * PCACHE_MAX), the fnv64 (a torn file), the keyed hash (SipHash under the cache directory's secret
 * and the file's key, ssmax_cache_mac: only our writer, for this very device and driver, makes a
 * file that passes), and the Vulkan header against the device (header size and version, vendor,
 * device, pipelineCacheUUID). A file that fails any check, or that the driver refuses, is ignored
 * (logged at INFO) and replaced when the device closes.
 *
 * The file is written when the device closes, if pipelines were made since it was loaded and the
 * driver's data differs from what was read, through a temporary file renamed into place: readers
 * and concurrent writers only ever see whole files, and the last writer wins. Driver data over
 * PCACHE_MAX is not written, and the file is removed so the next process starts afresh rather
 * than growing it further. No cache directory ("": no SSMAX_CACHE_DIR, XDG_CACHE_HOME or HOME),
 * no secret, or SSMAX_VK_PIPELINE_CACHE=0: the cache lives in memory only, for the device's life.
 */
#include <errno.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vk_internal.h"

#define PCACHE_MAGIC "SSMAXVKP"
#define PCACHE_VERSION 1u
#define PCACHE_MAX (32u << 20) // bytes of driver data: far more than every pipeline ssmax makes

/* The cap: PCACHE_MAX, or less for tests (ssmax_vk_pcache_cap_set; lavapipe's data is 32 bytes,
 * so only a lowered cap reaches the over-the-cap paths there). */
static _Atomic uint64_t test_cap;

void ssmax_vk_pcache_cap_set(uint64_t bytes)
{
    atomic_store(&test_cap, bytes);
}

static uint64_t pcache_cap(void)
{
    uint64_t c = atomic_load(&test_cap);
    return c > 0 && c < PCACHE_MAX ? c : PCACHE_MAX;
}

struct pcache_head {
    char magic[8];
    uint32_t version, zero;
    uint64_t size, sum, mac;
};
_Static_assert(sizeof(struct pcache_head) == 40, "pipeline cache file header layout");
_Static_assert(sizeof(VkPipelineCacheHeaderVersionOne) == 32, "Vulkan pipeline cache header");

/* NULL when data (n bytes from the driver or a file) starts with a Vulkan pipeline cache header
 * that belongs to this device, else what is wrong. */
static const char *vk_header_check(const struct vk_dev *d, const unsigned char *data, size_t n)
{
    const VkPhysicalDeviceProperties *pp = &d->ph->props;
    VkPipelineCacheHeaderVersionOne h;
    if (n < sizeof(h))
        return "shorter than a Vulkan pipeline cache header";
    memcpy(&h, data, sizeof(h));
    if (h.headerSize < 32 || h.headerSize > n)
        return "bad Vulkan header size";
    if (h.headerVersion != VK_PIPELINE_CACHE_HEADER_VERSION_ONE)
        return "unknown Vulkan header version";
    if (h.vendorID != pp->vendorID || h.deviceID != pp->deviceID)
        return "another vendor's or device's data";
    if (memcmp(h.pipelineCacheUUID, pp->pipelineCacheUUID, VK_UUID_SIZE))
        return "another pipelineCacheUUID";
    return NULL;
}

/* The driver data of the file at d->pcache_path (*n bytes, malloc'ed), or NULL: no file (*why
 * NULL) or a file that fails a check (*why says which). */
static unsigned char *pcache_read(struct vk_dev *d, size_t *n, const char **why)
{
    *why = NULL;
    int fd = open(d->pcache_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno != ENOENT)
            *why = "cannot be opened";
        return NULL;
    }
    unsigned char *data = NULL;
    struct stat st;
    struct pcache_head h;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        *why = "not a regular file";
        goto out;
    }
    if ((uint64_t)st.st_size < sizeof(h) + sizeof(VkPipelineCacheHeaderVersionOne) ||
        read(fd, &h, sizeof(h)) != (ssize_t)sizeof(h)) {
        *why = "too short";
        goto out;
    }
    if (memcmp(h.magic, PCACHE_MAGIC, 8) || h.version != PCACHE_VERSION || h.zero) {
        *why = "not an ssmax pipeline cache file of this version";
        goto out;
    }
    // The size field is checked against the file before anything is allocated from it.
    if (h.size > pcache_cap()) {
        *why = "its size field is over the cap";
        goto out;
    }
    if (h.size != (uint64_t)st.st_size - sizeof(h)) {
        *why = "its size field does not match the file";
        goto out;
    }
    data = malloc(h.size);
    size_t got = 0;
    while (data && got < h.size) {
        ssize_t r = read(fd, data + got, h.size - got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    if (!data || got != h.size) {
        *why = data ? "shorter than its size field" : "out of host memory";
        goto out;
    }
    if (ssmax_fnv64(data, got, SSMAX_FNV64_INIT) != h.sum) {
        *why = "checksum mismatch (torn or damaged)";
        goto out;
    }
    if (ssmax_cache_mac(d->pcache_secret, d->pcache_key, data, got) != h.mac) {
        *why = "keyed hash mismatch (edited, or written for another device or directory)";
        goto out;
    }
    if ((*why = vk_header_check(d, data, got)))
        goto out;
    close(fd);
    *n = got;
    return data;
out:
    free(data);
    close(fd);
    return NULL;
}

/* Makes the owned cache, from initial data when given; VK_NULL_HANDLE on failure. */
static VkPipelineCache pcache_create(struct vk_dev *d, const void *data, size_t n)
{
    VkPipelineCacheCreateInfo ci = { .sType = VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO,
                                     .initialDataSize = data ? n : 0,
                                     .pInitialData = data };
    VkPipelineCache c = VK_NULL_HANDLE;
    VkResult r = d->vkCreatePipelineCache(d->dev, &ci, NULL, &c);
    if (r != VK_SUCCESS) {
        ssmax_log(d->base.ctx, SSMAX_LOG_INFO, "vulkan: pipeline cache: vkCreatePipelineCache "
                  "failed (VkResult %d)", (int)r);
        return VK_NULL_HANDLE;
    }
    return c;
}

/* The file's key and path for this device and driver, and the directory's secret: 0, or -1 when
 * the cache stays in memory (logged why). */
static int pcache_locate(struct vk_dev *d)
{
    struct ssmax_context *ctx = d->base.ctx;
    const VkPhysicalDeviceProperties *pp = &d->ph->props;
    char dir[512], uuid[2 * VK_UUID_SIZE + 1];
    if (!ssmax_env_int("SSMAX_VK_PIPELINE_CACHE", 1)) {
        ssmax_log(ctx, SSMAX_LOG_DEBUG, "vulkan: pipeline cache: in memory only "
                                        "(SSMAX_VK_PIPELINE_CACHE=0)");
        return -1;
    }
    ssmax_cache_dir(ctx, dir, sizeof(dir));
    if (!dir[0]) {
        ssmax_log(ctx, SSMAX_LOG_DEBUG, "vulkan: pipeline cache: in memory only (no cache "
                                        "directory: set SSMAX_CACHE_DIR or HOME)");
        return -1;
    }
    for (unsigned i = 0; i < VK_UUID_SIZE; i++)
        snprintf(uuid + 2 * i, 3, "%02x", pp->pipelineCacheUUID[i]);
    snprintf(d->pcache_key, sizeof(d->pcache_key), "vk-%04x-%04x-%08x-%s", pp->vendorID,
             pp->deviceID, pp->driverVersion, uuid);
    if (ssmax_cache_secret(ctx, dir, "vulkan: pipeline cache", d->pcache_secret) != 0)
        return -1;
    int len = snprintf(d->pcache_path, sizeof(d->pcache_path), "%s/%s.pcache", dir, d->pcache_key);
    if (len < 0 || (size_t)len >= sizeof(d->pcache_path)) {
        ssmax_log(ctx, SSMAX_LOG_INFO, "vulkan: pipeline cache: the cache directory's name is too "
                                       "long: in memory only");
        d->pcache_path[0] = 0;
        return -1;
    }
    return 0;
}

void vk_pcache_open(struct vk_dev *d, VkPipelineCache app)
{
    struct ssmax_context *ctx = d->base.ctx;
    d->pcache_path[0] = 0;
    d->pcache_dirty = d->pcache_replace = 0;
    d->pcache_loaded = 0;
    if (app != VK_NULL_HANDLE) { // the application's (device import): never written or destroyed
        d->pcache = app;
        d->pcache_owned = 0;
        return;
    }
    d->pcache_owned = 1;
    if (pcache_locate(d) != 0) {
        d->pcache = pcache_create(d, NULL, 0);
        return;
    }
    size_t n = 0;
    const char *why = NULL;
    unsigned char *data = pcache_read(d, &n, &why);
    if (why) {
        ssmax_log(ctx, SSMAX_LOG_INFO, "vulkan: pipeline cache: ignoring %s: %s; it will be "
                  "rewritten", d->pcache_path, why);
        d->pcache_replace = 1;
    }
    d->pcache = data ? pcache_create(d, data, n) : VK_NULL_HANDLE;
    if (data && d->pcache) {
        d->pcache_loaded = n;
        d->pcache_sum = ssmax_fnv64(data, n, SSMAX_FNV64_INIT);
        ssmax_log(ctx, SSMAX_LOG_INFO, "vulkan: pipeline cache: loaded %zu bytes from %s", n,
                  d->pcache_path);
    } else if (data) {
        ssmax_log(ctx, SSMAX_LOG_INFO, "vulkan: pipeline cache: the driver refused %s; it will be "
                  "rewritten", d->pcache_path);
        d->pcache_replace = 1;
    }
    free(data);
    if (!d->pcache)
        d->pcache = pcache_create(d, NULL, 0);
}

/* Writes the owned cache's data to its file (see the top of this file). */
static void pcache_save(struct vk_dev *d)
{
    struct ssmax_context *ctx = d->base.ctx;
    size_t n = 0;
    VkResult r = d->vkGetPipelineCacheData(d->dev, d->pcache, &n, NULL);
    if (r != VK_SUCCESS || !n)
        return;
    if (n > pcache_cap()) {
        ssmax_log(ctx, SSMAX_LOG_INFO, "vulkan: pipeline cache: %zu bytes is over the %llu-byte "
                  "cap; removing %s so the next process starts afresh", n,
                  (unsigned long long)pcache_cap(), d->pcache_path);
        unlink(d->pcache_path);
        return;
    }
    unsigned char *data = malloc(n);
    if (!data)
        return;
    const char *why = NULL;
    r = d->vkGetPipelineCacheData(d->dev, d->pcache, &n, data);
    if (r != VK_SUCCESS)
        why = "vkGetPipelineCacheData failed";
    else
        why = vk_header_check(d, data, n);
    uint64_t sum = why ? 0 : ssmax_fnv64(data, n, SSMAX_FNV64_INIT);
    if (why) {
        ssmax_log(ctx, SSMAX_LOG_INFO, "vulkan: pipeline cache: not saved: the driver's data: %s",
                  why);
    } else if (!d->pcache_replace && n == d->pcache_loaded && sum == d->pcache_sum) {
        ssmax_log(ctx, SSMAX_LOG_DEBUG, "vulkan: pipeline cache: %s unchanged", d->pcache_path);
    } else {
        struct pcache_head h = { .version = PCACHE_VERSION, .size = n, .sum = sum };
        memcpy(h.magic, PCACHE_MAGIC, 8);
        h.mac = ssmax_cache_mac(d->pcache_secret, d->pcache_key, data, n);
        const void *parts[] = { &h, data };
        const size_t sizes[] = { sizeof(h), n };
        if (ssmax_cache_write(d->pcache_path, parts, sizes, 2) == 0)
            ssmax_log(ctx, SSMAX_LOG_INFO, "vulkan: pipeline cache: wrote %zu bytes to %s", n,
                      d->pcache_path);
        else
            ssmax_log(ctx, SSMAX_LOG_INFO, "vulkan: pipeline cache: could not write %s: %s",
                      d->pcache_path, strerror(errno));
    }
    free(data);
}

void vk_pcache_close(struct vk_dev *d)
{
    if (d->pcache && d->pcache_owned) {
        if (d->pcache_path[0] && (d->pcache_dirty || d->pcache_replace))
            pcache_save(d);
        d->vkDestroyPipelineCache(d->dev, d->pcache, NULL);
    }
    d->pcache = VK_NULL_HANDLE; // an application's cache stays the application's
    d->pcache_owned = 0;
}
