/*
 * The on-disk caches' shared file handling (the OpenCL program binaries, the Vulkan pipeline
 * cache): the cache directory's secret, which keys their integrity hashes, and writes that put a
 * file in place whole or not at all.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

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

int ssmax_cache_secret(struct ssmax_context *ctx, const char *dir, const char *what, uint64_t k[2])
{
    char path[600], tmp[640];
    snprintf(path, sizeof(path), "%s/cache.key", dir);
    if (read_secret(path, k) == 0)
        return 0;
    unsigned char rnd[16];
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    ssize_t got = fd >= 0 ? read(fd, rnd, sizeof(rnd)) : -1;
    if (fd >= 0)
        close(fd);
    if (got != (ssize_t)sizeof(rnd)) {
        ssmax_log(ctx, SSMAX_LOG_INFO, "%s: no randomness for the cache secret: cache off", what);
        return -1;
    }
    ssmax_mkdirs(dir);
    static _Atomic unsigned seq;
    snprintf(tmp, sizeof(tmp), "%s.%ld.%u.tmp", path, (long)getpid(), atomic_fetch_add(&seq, 1));
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0) {
        int ok = write(fd, rnd, sizeof(rnd)) == (ssize_t)sizeof(rnd);
        ok = close(fd) == 0 && ok;
        // link() keeps a secret another process made first (entries written under it stay
        // good); only a damaged one is replaced, or any where the file system has no links.
        if (ok && link(tmp, path) != 0 && (errno != EEXIST || read_secret(path, k) != 0))
            rename(tmp, path);
        unlink(tmp);
    }
    if (read_secret(path, k) == 0)
        return 0;
    ssmax_log(ctx, SSMAX_LOG_INFO, "%s: cannot write %s: cache off", what, path);
    return -1;
}

int ssmax_cache_write(const char *path, const void *const *parts, const size_t *sizes, int n)
{
    // Contexts on several threads, and processes, may save the same file at once: each writes
    // its own temporary file, and rename() swaps whole files.
    static _Atomic unsigned seq;
    char tmp[1100];
    if (snprintf(tmp, sizeof(tmp), "%s.%ld.%u.tmp", path, (long)getpid(),
                 atomic_fetch_add(&seq, 1)) >= (int)sizeof(tmp)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    FILE *fp = fopen(tmp, "wb");
    if (!fp)
        return -1;
    errno = 0;
    int ok = 1;
    for (int i = 0; i < n && ok; i++)
        ok = fwrite(parts[i], 1, sizes[i], fp) == sizes[i];
    ok = fclose(fp) == 0 && ok;
    int err = ok ? 0 : errno ? errno : EIO;
    if (ok && rename(tmp, path) != 0) {
        err = errno;
        // An empty directory where the file belongs (nothing of ours makes one) is removed;
        // anything else in the way stays, and the file is not written.
        struct stat st;
        ok = (err == EISDIR || err == ENOTEMPTY || err == EEXIST) && lstat(path, &st) == 0 &&
             S_ISDIR(st.st_mode) && rmdir(path) == 0 && rename(tmp, path) == 0;
    }
    if (!ok) {
        unlink(tmp);
        errno = err;
        return -1;
    }
    return 0;
}
