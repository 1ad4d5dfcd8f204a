/*
 * Strict .npy reader and writer. The reader accepts only what it can represent exactly and what
 * NumPy itself would load: a header that is the Python literal dict {'descr': ..., 'fortran_order':
 * ..., 'shape': ...} with exactly those three keys (any order, each once), 'descr' '<f4' or '<f2',
 * fortran_order False, a shape tuple of non-negative integers, and a data section of exactly the
 * declared size. Everything else is rejected with a message naming the file and the problem.
 *
 * The output files of the CLI are written all or nothing (out_files_write, below).
 */
#include "npy.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FAIL(...) (snprintf(err, errlen, __VA_ARGS__), -1)

void npy_free(struct npy_array *a)
{
    if (a) {
        free(a->data);
        a->data = NULL;
    }
}

/* ---- the header: a Python literal dict ---- */

struct hscan {
    const char *p, *end;
};

/* Whitespace Python allows between the tokens of a dict display. */
/* npy_read_ints: integer dtypes instead of floating ones, for the call. */
static _Thread_local int want_ints;

static int is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f'; }

static void skip_ws(struct hscan *h)
{
    while (h->p < h->end && is_ws(*h->p))
        h->p++;
}

/* Up to 24 characters of s for a message, non-printable ones as '?'. */
static const char *snip(const char *s, size_t n, char *buf, size_t len)
{
    size_t k = 0, max = n < 24 ? n : 24;
    for (size_t i = 0; i < max && k + 4 < len; i++)
        buf[k++] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
    if (n > max && k + 4 < len)
        buf[k++] = '.', buf[k++] = '.', buf[k++] = '.';
    buf[k] = 0;
    return buf;
}

/* A Python string literal with no prefix and no escape sequence: 'x' or "x". 0 ok, -1 not a
 * string, -2 unterminated or holding a backslash or a line break. */
static int str_lit(struct hscan *h, const char **s, size_t *n)
{
    if (h->p >= h->end || (*h->p != '\'' && *h->p != '"'))
        return -1;
    char q = *h->p++;
    const char *b = h->p;
    while (h->p < h->end && *h->p != q) {
        if (*h->p == '\\' || *h->p == '\n' || *h->p == '\r')
            return -2;
        h->p++;
    }
    if (h->p >= h->end)
        return -2;
    *s = b;
    *n = (size_t)(h->p - b);
    h->p++;
    return 0;
}

static int parse_shape(const char *name, struct hscan *h, int major, struct npy_array *out,
                       char *err, size_t errlen)
{
    if (h->p >= h->end || *h->p != '(')
        return FAIL("%s: 'shape' is not a tuple", name);
    h->p++;
    uint64_t count = 1;
    int comma = 0;
    for (;;) {
        skip_ws(h);
        if (h->p >= h->end)
            return FAIL("%s: unterminated 'shape' tuple", name);
        char c = *h->p;
        if (c == ')') {
            if (out->ndim == 1 && !comma)
                return FAIL("%s: 'shape' (%llu) is a number, not a tuple (a 1-d shape is written "
                            "(%llu,))", name, (unsigned long long)out->shape[0],
                            (unsigned long long)out->shape[0]);
            h->p++;
            break;
        }
        if (out->ndim > 0 && !comma)
            return FAIL("%s: malformed 'shape' tuple (expected ',' or ')')", name);
        if (c == '-' || c == '+')
            return FAIL("%s: 'shape' holds something other than non-negative integers", name);
        if (c < '0' || c > '9')
            return FAIL("%s: malformed 'shape' tuple: '%c' where a non-negative integer belongs",
                        name, c >= 0x20 && c < 0x7f ? c : '?');
        if (c == '0' && h->p + 1 < h->end && h->p[1] >= '0' && h->p[1] <= '9')
            return FAIL("%s: 'shape' holds a number with a leading zero", name);
        uint64_t v = 0;
        while (h->p < h->end && *h->p >= '0' && *h->p <= '9') {
            if (v > (UINT64_MAX - 9) / 10)
                return FAIL("%s: a 'shape' dimension overflows 64 bits", name);
            v = v * 10 + (uint64_t)(*h->p++ - '0');
        }
        if (major <= 2 && h->p < h->end && *h->p == 'L')
            h->p++; // a Python 2 long, which NumPy reads in format 1.0 and 2.0 files
        if (h->p < h->end && ((*h->p >= 'a' && *h->p <= 'z') || (*h->p >= 'A' && *h->p <= 'Z') ||
                              *h->p == '_' || *h->p == '.'))
            return FAIL("%s: 'shape' holds something other than non-negative integers", name);
        if (out->ndim == NPY_MAX_DIMS)
            return FAIL("%s: more than %d dimensions", name, NPY_MAX_DIMS);
        out->shape[out->ndim++] = v;
        if (v && count > UINT64_MAX / v)
            return FAIL("%s: shape's element count overflows 64 bits", name);
        count *= v;
        skip_ws(h);
        comma = h->p < h->end && *h->p == ',';
        if (comma)
            h->p++;
    }
    out->count = count;
    return 0;
}

/* Parses the header dict h[0, hlen) into out (esize, ndim, shape, count). */
static int parse_header(const char *name, const char *hdr, size_t hlen, int major,
                        struct npy_array *out, char *err, size_t errlen)
{
    static const char *keys[3] = { "descr", "fortran_order", "shape" };
    struct hscan h = { hdr, hdr + hlen };
    int seen[3] = { 0, 0, 0 };
    char sb[40];
    for (size_t i = 0; i < hlen; i++)
        if (!hdr[i])
            return FAIL("%s: header contains a NUL byte", name);
    skip_ws(&h);
    if (h.p >= h.end || *h.p != '{')
        return FAIL("%s: header is not a dict", name);
    h.p++;
    for (;;) {
        skip_ws(&h);
        if (h.p >= h.end)
            return FAIL("%s: header dict has no closing '}'", name);
        if (*h.p == '}') {
            h.p++;
            break;
        }
        const char *k;
        size_t kn;
        int r = str_lit(&h, &k, &kn);
        if (r == -1)
            return FAIL("%s: header: expected a quoted key, found '%s'", name,
                        snip(h.p, (size_t)(h.end - h.p), sb, sizeof(sb)));
        if (r == -2)
            return FAIL("%s: header: a key is unterminated or holds an escape sequence", name);
        int w = -1;
        for (int i = 0; i < 3; i++)
            if (kn == strlen(keys[i]) && !memcmp(k, keys[i], kn))
                w = i;
        if (w < 0)
            return FAIL("%s: header has the key '%s'; a .npy header holds only 'descr', "
                        "'fortran_order' and 'shape'", name, snip(k, kn, sb, sizeof(sb)));
        if (seen[w]++)
            return FAIL("%s: header has the key '%s' twice", name, keys[w]);
        skip_ws(&h);
        if (h.p >= h.end || *h.p != ':')
            return FAIL("%s: header: expected ':' after '%s'", name, keys[w]);
        h.p++;
        skip_ws(&h);
        if (h.p >= h.end)
            return FAIL("%s: header: '%s' has no value", name, keys[w]);
        if (w == 0) {
            const char *d;
            size_t dl;
            r = str_lit(&h, &d, &dl);
            if (r == -1)
                return FAIL("%s: 'descr' is not a string (structured dtypes are not supported)",
                            name);
            if (r == -2)
                return FAIL("%s: 'descr' is unterminated or holds an escape sequence", name);
            if (want_ints && dl == 3 && !memcmp(d, "<i4", 3))
                out->esize = 4, out->is_int = 1;
            else if (want_ints && dl == 3 && !memcmp(d, "<i8", 3))
                out->esize = 8, out->is_int = 1;
            else if (want_ints)
                return FAIL("%s: dtype '%s' is not supported (use int32 '<i4' or int64 '<i8', "
                            "little endian)", name, snip(d, dl, sb, sizeof(sb)));
            else if (dl == 3 && !memcmp(d, "<f4", 3))
                out->esize = 4;
            else if (dl == 3 && !memcmp(d, "<f2", 3))
                out->esize = 2;
            else
                return FAIL("%s: dtype '%s' is not supported (use float32 '<f4' or float16 '<f2', "
                            "little endian)", name, snip(d, dl, sb, sizeof(sb)));
        } else if (w == 1) {
            const char *f = h.p;
            while (h.p < h.end && ((*h.p >= 'a' && *h.p <= 'z') || (*h.p >= 'A' && *h.p <= 'Z') ||
                                   (*h.p >= '0' && *h.p <= '9') || *h.p == '_'))
                h.p++;
            size_t fl = (size_t)(h.p - f);
            if (fl == 4 && !memcmp(f, "True", 4))
                return FAIL("%s: fortran_order is True; save C-order arrays "
                            "(np.ascontiguousarray)", name);
            if (fl != 5 || memcmp(f, "False", 5))
                return FAIL("%s: 'fortran_order' is neither True nor False ('%s')", name,
                            snip(f, fl ? fl : (size_t)(h.end - f), sb, sizeof(sb)));
        } else if (parse_shape(name, &h, major, out, err, errlen) < 0) {
            return -1;
        }
        skip_ws(&h);
        if (h.p < h.end && *h.p == ',') {
            h.p++;
            continue;
        }
        if (h.p < h.end && *h.p == '}') {
            h.p++;
            break;
        }
        return FAIL("%s: header: expected ',' or '}' after the value of '%s', found '%s'", name,
                    keys[w], snip(h.p, (size_t)(h.end - h.p), sb, sizeof(sb)));
    }
    skip_ws(&h);
    if (h.p < h.end)
        return FAIL("%s: header: unexpected text after the dict: '%s'", name,
                    snip(h.p, (size_t)(h.end - h.p), sb, sizeof(sb)));
    for (int i = 0; i < 3; i++)
        if (!seen[i])
            return FAIL("%s: header has no '%s'", name, keys[i]);
    return 0;
}

/* The preamble: 0 with the header's start and length, or -1. */
static int parse_preamble(const char *name, const uint8_t *buf, size_t len, int *major,
                          size_t *hstart, size_t *hlen, char *err, size_t errlen)
{
    if (len < 10 || memcmp(buf, "\x93NUMPY", 6))
        return FAIL("%s: not a .npy file (missing the \\x93NUMPY magic)", name);
    *major = buf[6];
    if ((*major != 1 && *major != 2 && *major != 3) || buf[7] != 0)
        return FAIL("%s: unsupported .npy format version %d.%d", name, buf[6], buf[7]);
    if (*major == 1) {
        *hlen = buf[8] | (size_t)buf[9] << 8;
        *hstart = 10;
    } else {
        if (len < 12)
            return FAIL("%s: truncated header", name);
        *hlen = buf[8] | (size_t)buf[9] << 8 | (size_t)buf[10] << 16 | (size_t)buf[11] << 24;
        *hstart = 12;
    }
    if (*hlen > len - *hstart)
        return FAIL("%s: truncated header (declares %zu bytes, file has %zu)", name, *hlen,
                    len - *hstart);
    return 0;
}

int npy_parse(const char *name, const uint8_t *buf, size_t len, struct npy_array *out, char *err,
              size_t errlen)
{
    memset(out, 0, sizeof(*out));
    int major;
    size_t hlen, hstart;
    if (parse_preamble(name, buf, len, &major, &hstart, &hlen, err, errlen) < 0 ||
        parse_header(name, (const char *)buf + hstart, hlen, major, out, err, errlen) < 0) {
        memset(out, 0, sizeof(*out));
        return -1;
    }
    uint64_t count = out->count;
    size_t dstart = hstart + hlen, have = len - dstart;
    if (count > (UINT64_MAX / 4) || count * (uint64_t)out->esize != have) {
        int esize = out->esize;
        memset(out, 0, sizeof(*out));
        if (count <= UINT64_MAX / 4 && count * (uint64_t)esize > have)
            return FAIL("%s: truncated data: shape needs %llu bytes, file has %zu", name,
                        (unsigned long long)(count * (uint64_t)esize), have);
        return FAIL("%s: data size %zu bytes does not match the shape (%llu elements of %d bytes)",
                    name, have, (unsigned long long)count, esize);
    }
    out->data = malloc(have ? have : 1);
    if (!out->data) {
        memset(out, 0, sizeof(*out));
        return FAIL("%s: out of memory for %zu bytes", name, have);
    }
    memcpy(out->data, buf + dstart, have);
    return 0;
}

/* How many bytes of a file starting with buf[0, len) settle whether it is a valid .npy: the whole
 * declared file and one byte more (to see trailing data), or len when it is already invalid. */
static uint64_t bytes_wanted(const uint8_t *buf, size_t len)
{
    char e[8];
    if (len < 12)
        return 12;
    if (memcmp(buf, "\x93NUMPY", 6) || buf[6] < 1 || buf[6] > 3 || buf[7] != 0)
        return len;
    int major = buf[6];
    size_t hstart = major == 1 ? 10 : 12;
    size_t hlen = major == 1 ? (buf[8] | (size_t)buf[9] << 8)
                             : (buf[8] | (size_t)buf[9] << 8 | (size_t)buf[10] << 16 |
                                (size_t)buf[11] << 24);
    if (len < hstart + hlen)
        return hstart + hlen;
    struct npy_array a;
    memset(&a, 0, sizeof(a));
    if (parse_header("", (const char *)buf + hstart, hlen, major, &a, e, sizeof(e)) < 0)
        return len;
    uint64_t d = a.count > UINT64_MAX / 8 ? UINT64_MAX / 2 : a.count * (uint64_t)a.esize;
    return hstart + hlen + d + 1;
}

/* Reads a pipe or device until it is clear whether the bytes make a valid .npy (a header that
 * declares terabytes costs only what the writer really sends). */
static int read_stream(const char *path, int fd, uint8_t **bufp, size_t *lenp, char *err,
                       size_t errlen)
{
    size_t cap = 4096, len = 0;
    uint8_t *buf = malloc(cap);
    if (!buf)
        return FAIL("%s: out of memory", path);
    for (;;) {
        uint64_t want = bytes_wanted(buf, len);
        if (len >= want)
            break;
        if (len == cap) {
            size_t nc = cap * 2;
            uint8_t *nb = nc > cap ? realloc(buf, nc) : NULL;
            if (!nb) {
                free(buf);
                return FAIL("%s: out of memory after reading %zu bytes", path, len);
            }
            buf = nb, cap = nc;
        }
        size_t chunk = cap - len;
        if (want - len < chunk)
            chunk = (size_t)(want - len);
        ssize_t n = read(fd, buf + len, chunk);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            free(buf);
            return FAIL("%s: read error: %s", path, strerror(errno));
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    *bufp = buf;
    *lenp = len;
    return 0;
}

int npy_read_ints(const char *path, struct npy_array *out, char *err, size_t errlen)
{
    want_ints = 1;
    int r = npy_read(path, out, err, errlen);
    want_ints = 0;
    return r;
}

int npy_read(const char *path, struct npy_array *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    int fd = open(path, O_RDONLY | O_NOCTTY | O_CLOEXEC);
    if (fd < 0)
        return FAIL("%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int e = errno;
        close(fd);
        return FAIL("%s: cannot stat: %s", path, strerror(e));
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        return FAIL("%s: is a directory, not a .npy file", path);
    }
    uint8_t *buf = NULL;
    size_t len = 0;
    if (S_ISREG(st.st_mode)) {
        if ((uint64_t)st.st_size > SIZE_MAX - 1) {
            close(fd);
            return FAIL("%s: too large (%lld bytes)", path, (long long)st.st_size);
        }
        len = (size_t)st.st_size;
        buf = malloc(len ? len : 1);
        if (!buf) {
            close(fd);
            return FAIL("%s: out of memory for %zu bytes", path, len);
        }
        size_t got = 0;
        while (got < len) {
            ssize_t n = read(fd, buf + got, len - got);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                int e = n < 0 ? errno : 0;
                free(buf);
                close(fd);
                return e ? FAIL("%s: read error: %s", path, strerror(e))
                         : FAIL("%s: the file shrank while it was read", path);
            }
            got += (size_t)n;
        }
    } else if (read_stream(path, fd, &buf, &len, err, errlen) < 0) {
        close(fd);
        return -1;
    }
    close(fd);
    int r = npy_parse(path, buf, len, out, err, errlen);
    free(buf);
    return r;
}

int npy_write_stream(FILE *fp, int esize, int ndim, const uint64_t *shape, const void *data)
{
    char dict[512];
    int k = snprintf(dict, sizeof(dict), "{'descr': '%s', 'fortran_order': False, 'shape': (",
                     esize == 2 ? "<f2" : "<f4");
    uint64_t count = 1;
    for (int i = 0; i < ndim && i < NPY_MAX_DIMS; i++) {
        k += snprintf(dict + k, sizeof(dict) - (size_t)k, "%llu%s", (unsigned long long)shape[i],
                      ndim == 1 || i + 1 < ndim ? ", " : "");
        count *= shape[i];
    }
    if (ndim == 1)
        k -= 1; // "(5,)" not "(5, )"
    k += snprintf(dict + k, sizeof(dict) - (size_t)k, "), }");
    size_t total = 10 + (size_t)k + 1, pad = (64 - total % 64) % 64;
    size_t hlen = (size_t)k + pad + 1;
    uint8_t pre[10] = { 0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (uint8_t)(hlen & 0xff),
                        (uint8_t)(hlen >> 8) };
    int ok = fwrite(pre, 1, 10, fp) == 10 && fwrite(dict, 1, (size_t)k, fp) == (size_t)k;
    for (size_t i = 0; ok && i < pad; i++)
        ok = fputc(' ', fp) != EOF;
    ok = ok && fputc('\n', fp) != EOF;
    ok = ok && (!count || fwrite(data, (size_t)esize, (size_t)count, fp) == count);
    return ok ? 0 : -1;
}

int out_npy_writer(FILE *fp, void *arg)
{
    const struct npy_out *a = arg;
    return npy_write_stream(fp, a->esize, a->ndim, a->shape, a->data);
}

int npy_write(const char *path, int esize, int ndim, const uint64_t *shape, const void *data,
              char *err, size_t errlen)
{
    struct npy_out a = { esize, ndim, shape, data };
    struct out_file o;
    memset(&o, 0, sizeof(o));
    o.path = path;
    o.write = out_npy_writer;
    o.arg = &a;
    if (out_files_check(&o, 1, NULL, 0, err, errlen) < 0)
        return -1;
    return out_files_write(&o, 1, err, errlen);
}

/* ---- output files, all or nothing ---- */

static int ofail(const struct out_file *o, char *err, size_t errlen, const char *fmt, ...)
{
    int k = o->opt ? snprintf(err, errlen, "%s: '%s': ", o->opt, o->path)
                   : snprintf(err, errlen, "%s: ", o->path);
    if (k >= 0 && (size_t)k < errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err + k, errlen - (size_t)k, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static int in_proc(const char *p) { return !strcmp(p, "/proc") || !strncmp(p, "/proc/", 6); }

/* Resolves o->path as open() would, following symbolic links to the file they name: a regular
 * file (existing or not) gets its absolute path in o->target; anything else that exists, and
 * whatever lies under /proc (/dev/stdout, /dev/fd/N), is written in place. */
static int resolve_out(struct out_file *o, char *err, size_t errlen)
{
    char cur[4096];
    o->special = o->exists = 0;
    o->target[0] = 0;
    if (!o->path || !*o->path)
        return ofail(o, err, errlen, "an empty path");
    if (strlen(o->path) >= sizeof(cur))
        return ofail(o, err, errlen, "the path is too long");
    strcpy(cur, o->path);
    for (int hop = 0; hop < 40; hop++) {
        size_t n = strlen(cur);
        if (cur[n - 1] == '/')
            return ofail(o, err, errlen, "names a directory");
        char dir[4096];
        const char *base;
        char *slash = strrchr(cur, '/');
        if (!slash) {
            strcpy(dir, ".");
            base = cur;
        } else if (slash == cur) {
            strcpy(dir, "/");
            base = cur + 1;
        } else {
            memcpy(dir, cur, (size_t)(slash - cur));
            dir[slash - cur] = 0;
            base = slash + 1;
        }
        char *rd = realpath(dir, NULL);
        if (!rd)
            return ofail(o, err, errlen, "the folder '%s' %s", dir,
                         errno == ENOENT    ? "does not exist"
                         : errno == ENOTDIR ? "is not a folder"
                                            : strerror(errno));
        if (in_proc(rd)) {
            free(rd);
            struct stat st;
            o->special = 1;
            if (stat(o->path, &st) == 0) {
                o->exists = 1;
                o->dev = (uint64_t)st.st_dev;
                o->ino = (uint64_t)st.st_ino;
                if (S_ISDIR(st.st_mode))
                    return ofail(o, err, errlen, "is a directory");
            }
            return 0;
        }
        char full[4096];
        int fl = snprintf(full, sizeof(full), "%s/%s", strcmp(rd, "/") ? rd : "", base);
        free(rd);
        if (fl < 0 || (size_t)fl >= sizeof(full))
            return ofail(o, err, errlen, "the path is too long");
        struct stat st;
        if (lstat(full, &st) < 0) {
            if (errno != ENOENT)
                return ofail(o, err, errlen, "%s", strerror(errno));
            strcpy(o->target, full); // a new file
            return 0;
        }
        if (S_ISLNK(st.st_mode)) {
            char link[4096];
            ssize_t l = readlink(full, link, sizeof(link) - 1);
            if (l <= 0)
                return ofail(o, err, errlen, "cannot read the symbolic link '%s': %s", full,
                             l < 0 ? strerror(errno) : "empty");
            link[l] = 0;
            if (link[0] == '/') {
                strcpy(cur, link);
            } else {
                *strrchr(full, '/') = 0; // the link's folder
                if ((size_t)snprintf(cur, sizeof(cur), "%s/%s", full, link) >= sizeof(cur))
                    return ofail(o, err, errlen, "the path is too long");
            }
            continue;
        }
        if (S_ISDIR(st.st_mode))
            return ofail(o, err, errlen, "is a directory");
        o->exists = 1;
        o->dev = (uint64_t)st.st_dev;
        o->ino = (uint64_t)st.st_ino;
        if (S_ISREG(st.st_mode)) {
            strcpy(o->target, full);
            o->mode = (unsigned)(st.st_mode & 07777);
        } else {
            o->special = 1;
        }
        return 0;
    }
    return ofail(o, err, errlen, "too many levels of symbolic links");
}

static int is_dev_null(uint64_t dev, uint64_t ino)
{
    struct stat st;
    return stat("/dev/null", &st) == 0 && (uint64_t)st.st_dev == dev && (uint64_t)st.st_ino == ino;
}

int out_files_check(struct out_file *o, int n, const struct in_file *in, int nin, char *err,
                    size_t errlen)
{
    for (int i = 0; i < n; i++) {
        if (resolve_out(&o[i], err, errlen) < 0)
            return -1;
        if (o[i].special) {
            // Devices, pipes and /proc paths are written in place, not replaced: each must still
            // be neither an input (/dev/fd/3 opened on one) nor another output (/dev/stdout
            // twice would join two files), /dev/null aside.
            if (!o[i].exists || is_dev_null(o[i].dev, o[i].ino))
                continue;
            for (int j = 0; j < nin; j++) {
                struct stat st;
                if (in[j].path && stat(in[j].path, &st) == 0 &&
                    (uint64_t)st.st_dev == o[i].dev && (uint64_t)st.st_ino == o[i].ino)
                    return ofail(&o[i], err, errlen, "is the same file as the input %s '%s'; "
                                 "refusing to write into an input", in[j].opt, in[j].path);
            }
            for (int j = 0; j < i; j++)
                if (o[j].exists && o[i].dev == o[j].dev && o[i].ino == o[j].ino)
                    return ofail(&o[i], err, errlen, "is the same file as the output %s '%s'",
                                 o[j].opt ? o[j].opt : "", o[j].path);
            continue;
        }
        // What `>` could not overwrite is not replaced either, and the temporary file needs the
        // folder (checked here so that nothing runs for an output that cannot be written).
        if (o[i].exists && access(o[i].target, W_OK) != 0)
            return ofail(&o[i], err, errlen, "cannot write: %s", strerror(errno));
        char dir[4096];
        const char *slash = strrchr(o[i].target, '/');
        snprintf(dir, sizeof(dir), "%.*s", slash == o[i].target ? 1 : (int)(slash - o[i].target),
                 o[i].target);
        if (access(dir, W_OK | X_OK) != 0)
            return ofail(&o[i], err, errlen, "cannot write in the folder '%s': %s", dir,
                         strerror(errno));
        for (int j = 0; j < nin; j++) {
            struct stat st;
            if (!in[j].path || stat(in[j].path, &st) < 0 || !S_ISREG(st.st_mode))
                continue;
            char *rp = realpath(in[j].path, NULL);
            int same = (o[i].exists && (uint64_t)st.st_dev == o[i].dev &&
                        (uint64_t)st.st_ino == o[i].ino) ||
                       (rp && !strcmp(rp, o[i].target));
            free(rp);
            if (same)
                return ofail(&o[i], err, errlen, "is the same file as the input %s '%s'; "
                             "refusing to overwrite an input", in[j].opt, in[j].path);
        }
        for (int j = 0; j < i; j++) {
            if (o[j].special && !(o[j].exists && o[i].exists && o[i].dev == o[j].dev &&
                                  o[i].ino == o[j].ino))
                continue;
            if ((o[i].exists && o[j].exists && o[i].dev == o[j].dev && o[i].ino == o[j].ino) ||
                !strcmp(o[i].target, o[j].target))
                return ofail(&o[i], err, errlen, "is the same file as the output %s '%s'",
                             o[j].opt ? o[j].opt : "", o[j].path);
        }
    }
    return 0;
}

int out_files_have_stdout(const struct out_file *o, int n)
{
    struct stat st, null;
    if (fstat(1, &st) < 0)
        return 0;
    if (stat("/dev/null", &null) == 0 && st.st_dev == null.st_dev && st.st_ino == null.st_ino)
        return 0; // both discarded: nothing to keep apart
    for (int i = 0; i < n; i++)
        if (o[i].exists && o[i].dev == (uint64_t)st.st_dev && o[i].ino == (uint64_t)st.st_ino)
            return 1;
    return 0;
}

/* The temporary files of the write in progress, removed if a signal ends the process. */
static char (*volatile tmp_names)[4096];
static volatile sig_atomic_t *volatile tmp_made;
static volatile sig_atomic_t tmp_count;

static void on_signal(int sig)
{
    for (int i = 0; i < tmp_count; i++)
        if (tmp_made[i])
            unlink(tmp_names[i]);
    signal(sig, SIG_DFL);
    raise(sig);
}

/* Ended by these, the process first removes its temporary files; SIGPIPE and SIGXFSZ are ignored
 * while it writes, so a closed pipe or a file size limit is a write error like a full disk. */
static const int caught[] = { SIGINT, SIGTERM, SIGHUP, SIGPIPE, SIGXFSZ };
#define NCAUGHT ((int)(sizeof(caught) / sizeof(caught[0])))

/* Writes o's contents to fp, then flushes, optionally fsyncs, and closes it, checking each. */
static int write_one(const struct out_file *o, FILE *fp, int sync, char *err, size_t errlen)
{
    errno = 0;
    int ok = o->write(fp, o->arg) == 0 && !ferror(fp);
    int e = errno;
    if (ok && fflush(fp) != 0)
        ok = 0, e = errno;
    if (ok && sync && fsync(fileno(fp)) != 0 && errno != EINVAL && errno != ENOTSUP)
        ok = 0, e = errno;
    if (fclose(fp) != 0 && ok)
        ok = 0, e = errno;
    if (!ok)
        return ofail(o, err, errlen, "write error: %s", e ? strerror(e) : "an I/O error");
    return 0;
}

/* mkstemp beside the target: "DIR/.NAME.XXXXXX", or "DIR/.ssmax.XXXXXX" for a long NAME. */
static int make_temp(const struct out_file *o, char *tmp, size_t len)
{
    const char *slash = strrchr(o->target, '/');
    int dl = (int)(slash - o->target);
    int fd = -1;
    errno = ENAMETOOLONG;
    if (strlen(slash + 1) + 8 <= NAME_MAX &&
        (size_t)snprintf(tmp, len, "%.*s/.%s.XXXXXX", dl, o->target, slash + 1) < len)
        fd = mkstemp(tmp);
    if (fd < 0 && errno == ENAMETOOLONG &&
        (size_t)snprintf(tmp, len, "%.*s/.ssmax.XXXXXX", dl, o->target) < len)
        fd = mkstemp(tmp);
    return fd;
}

int out_files_write(struct out_file *o, int n, char *err, size_t errlen)
{
    char(*tmp)[4096] = calloc((size_t)(n > 0 ? n : 1), sizeof(*tmp));
    volatile sig_atomic_t *made = calloc((size_t)(n > 0 ? n : 1), sizeof(*made));
    if (!tmp || !made) {
        free(tmp);
        free((void *)made);
        return FAIL("out of host memory");
    }
    struct sigaction sa, old[NCAUGHT];
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigset_t block, prev;
    sigemptyset(&block);
    for (int i = 0; i < NCAUGHT; i++)
        sigaddset(&block, caught[i]);
    tmp_names = tmp;
    tmp_made = made;
    tmp_count = n;
    for (int i = 0; i < NCAUGHT; i++) {
        sigaction(caught[i], NULL, &old[i]);
        if (caught[i] == SIGPIPE || caught[i] == SIGXFSZ) {
            struct sigaction ign = sa;
            ign.sa_handler = SIG_IGN;
            sigaction(caught[i], &ign, NULL);
        } else if (old[i].sa_handler != SIG_IGN) { // a signal ignored from the start stays so
            sigaction(caught[i], &sa, NULL);
        }
    }
    mode_t um = umask(0);
    umask(um);
    int rc = -1;
    // 1. every regular-file output into a temporary file beside its target
    for (int i = 0; i < n; i++) {
        if (o[i].special)
            continue;
        sigprocmask(SIG_BLOCK, &block, &prev);
        int fd = make_temp(&o[i], tmp[i], sizeof(tmp[i]));
        made[i] = fd >= 0;
        int e = errno;
        sigprocmask(SIG_SETMASK, &prev, NULL);
        if (fd < 0) {
            const char *slash = strrchr(o[i].target, '/');
            ofail(&o[i], err, errlen, "cannot create a temporary file in '%.*s': %s",
                  slash == o[i].target ? 1 : (int)(slash - o[i].target), o[i].target,
                  strerror(e));
            goto fail;
        }
        (void)fchmod(fd, o[i].exists ? (mode_t)o[i].mode : (mode_t)(0666 & ~um));
        FILE *fp = fdopen(fd, "wb");
        if (!fp) {
            close(fd);
            ofail(&o[i], err, errlen, "%s", strerror(errno));
            goto fail;
        }
        if (write_one(&o[i], fp, 1, err, errlen) < 0)
            goto fail;
    }
    // 2. outputs that are not regular files, in place, once every regular one is complete
    for (int i = 0; i < n; i++) {
        if (!o[i].special)
            continue;
        int fd = open(o[i].path, O_WRONLY | O_APPEND | O_NOCTTY | O_CLOEXEC);
        FILE *fp = fd >= 0 ? fdopen(fd, "ab") : NULL;
        if (!fp) {
            ofail(&o[i], err, errlen, "cannot open: %s", strerror(errno));
            if (fd >= 0)
                close(fd);
            goto fail;
        }
        if (write_one(&o[i], fp, 0, err, errlen) < 0)
            goto fail;
    }
    // 3. all written: the temporary files take the targets' places
    for (int i = 0; i < n; i++) {
        if (o[i].special)
            continue;
        if (rename(tmp[i], o[i].target) < 0) {
            ofail(&o[i], err, errlen, "cannot rename '%s' onto it: %s", tmp[i], strerror(errno));
            goto fail;
        }
        made[i] = 0;
        char dir[4096];
        const char *slash = strrchr(o[i].target, '/');
        snprintf(dir, sizeof(dir), "%.*s", slash == o[i].target ? 1 : (int)(slash - o[i].target),
                 o[i].target);
        int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            (void)fsync(dfd); // the rename itself on disk; best effort
            close(dfd);
        }
    }
    rc = 0;
fail:
    sigprocmask(SIG_BLOCK, &block, &prev);
    for (int i = 0; i < n; i++)
        if (made[i])
            unlink(tmp[i]);
    tmp_count = 0;
    for (int i = 0; i < NCAUGHT; i++)
        sigaction(caught[i], &old[i], NULL);
    sigprocmask(SIG_SETMASK, &prev, NULL);
    free(tmp);
    free((void *)made);
    return rc;
}
