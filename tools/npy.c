/*
 * Strict .npy reader and writer. The reader accepts only what it can represent exactly: '<f4' or
 * '<f2' (and '|f2'-free little-endian forms), fortran_order False, a shape tuple of non-negative
 * integers, and a data section of exactly the declared size. Everything else is rejected with a
 * message naming the file and the problem.
 */
#include "npy.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAIL(...) (snprintf(err, errlen, __VA_ARGS__), -1)

void npy_free(struct npy_array *a)
{
    if (a) {
        free(a->data);
        a->data = NULL;
    }
}

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    return p;
}

/* Finds 'key': in the header dict and returns a pointer just past the colon. */
static const char *find_key(const char *h, const char *end, const char *key)
{
    char pat[32];
    for (int q = 0; q < 2; q++) {
        snprintf(pat, sizeof(pat), q ? "\"%s\"" : "'%s'", key);
        size_t n = strlen(pat);
        for (const char *p = h; p + n <= end; p++)
            if (!memcmp(p, pat, n)) {
                const char *c = skip_ws(p + n, end);
                if (c < end && *c == ':') {
                    const char *v = skip_ws(c + 1, end);
                    return v < end ? v : NULL; // a key with nothing after it has no value
                }
            }
    }
    return NULL;
}

int npy_parse(const char *name, const uint8_t *buf, size_t len, struct npy_array *out, char *err,
              size_t errlen)
{
    memset(out, 0, sizeof(*out));
    if (len < 10 || memcmp(buf, "\x93NUMPY", 6))
        return FAIL("%s: not a .npy file (missing the \\x93NUMPY magic)", name);
    int major = buf[6];
    size_t hlen, hstart;
    if (major == 1) {
        hlen = buf[8] | (size_t)buf[9] << 8;
        hstart = 10;
    } else if (major == 2 || major == 3) {
        if (len < 12)
            return FAIL("%s: truncated header", name);
        hlen = buf[8] | (size_t)buf[9] << 8 | (size_t)buf[10] << 16 | (size_t)buf[11] << 24;
        hstart = 12;
    } else {
        return FAIL("%s: unsupported .npy format version %d.%d", name, major, buf[7]);
    }
    if (hlen > len - hstart)
        return FAIL("%s: truncated header (declares %zu bytes, file has %zu)", name, hlen,
                    len - hstart);
    const char *h = (const char *)buf + hstart, *end = h + hlen;
    for (const char *p = h; p < end; p++)
        if (!*p)
            return FAIL("%s: header contains a NUL byte", name);
    const char *hp = skip_ws(h, end);
    if (hp >= end || *hp != '{')
        return FAIL("%s: header is not a dict", name);

    const char *d = find_key(h, end, "descr");
    if (!d || (*d != '\'' && *d != '"'))
        return FAIL("%s: header has no 'descr' string", name);
    char quote = *d++;
    const char *dq = memchr(d, quote, (size_t)(end - d));
    if (!dq)
        return FAIL("%s: unterminated 'descr'", name);
    size_t dl = (size_t)(dq - d);
    if (dl == 3 && !memcmp(d, "<f4", 3))
        out->esize = 4;
    else if (dl == 3 && !memcmp(d, "<f2", 3))
        out->esize = 2;
    else
        return FAIL("%s: dtype '%.*s' is not supported (use float32 '<f4' or float16 '<f2', little "
                    "endian)", name, (int)(dl > 32 ? 32 : dl), d);

    const char *f = find_key(h, end, "fortran_order");
    if (!f)
        return FAIL("%s: header has no 'fortran_order'", name);
    if ((size_t)(end - f) >= 4 && !memcmp(f, "True", 4))
        return FAIL("%s: fortran_order is True; save C-order arrays (np.ascontiguousarray)", name);
    if ((size_t)(end - f) < 5 || memcmp(f, "False", 5))
        return FAIL("%s: 'fortran_order' is neither True nor False", name);

    const char *s = find_key(h, end, "shape");
    if (!s || *s != '(')
        return FAIL("%s: header has no 'shape' tuple", name);
    s++;
    uint64_t count = 1;
    for (;;) {
        s = skip_ws(s, end);
        if (s >= end)
            return FAIL("%s: unterminated 'shape' tuple", name);
        if (*s == ')')
            break;
        if (!isdigit((unsigned char)*s))
            return FAIL("%s: 'shape' holds something other than non-negative integers", name);
        uint64_t v = 0;
        while (s < end && isdigit((unsigned char)*s)) {
            if (v > (UINT64_MAX - 9) / 10)
                return FAIL("%s: a 'shape' dimension overflows 64 bits", name);
            v = v * 10 + (uint64_t)(*s++ - '0');
        }
        if (out->ndim == NPY_MAX_DIMS)
            return FAIL("%s: more than %d dimensions", name, NPY_MAX_DIMS);
        out->shape[out->ndim++] = v;
        if (v && count > UINT64_MAX / v)
            return FAIL("%s: shape's element count overflows 64 bits", name);
        count *= v;
        s = skip_ws(s, end);
        if (s < end && *s == ',')
            s++;
        else if (s < end && *s != ')')
            return FAIL("%s: malformed 'shape' tuple", name);
    }
    size_t dstart = hstart + hlen, have = len - dstart;
    if (count > (UINT64_MAX / 4) || count * (uint64_t)out->esize != have) {
        if (count <= UINT64_MAX / 4 && count * (uint64_t)out->esize > have)
            return FAIL("%s: truncated data: shape needs %llu bytes, file has %zu", name,
                        (unsigned long long)(count * (uint64_t)out->esize), have);
        return FAIL("%s: data size %zu bytes does not match the shape (%llu elements of %d bytes)",
                    name, have, (unsigned long long)count, out->esize);
    }
    out->count = count;
    out->data = malloc(have ? have : 1);
    if (!out->data)
        return FAIL("%s: out of memory for %zu bytes", name, have);
    memcpy(out->data, buf + dstart, have);
    return 0;
}

int npy_read(const char *path, struct npy_array *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return FAIL("%s: cannot open: %s", path, strerror(errno));
    if (fseek(fp, 0, SEEK_END) != 0) {
        fclose(fp);
        return FAIL("%s: cannot seek (not a regular file?)", path);
    }
    long n = ftell(fp);
    if (n < 0) {
        fclose(fp);
        return FAIL("%s: cannot determine the size", path);
    }
    rewind(fp);
    uint8_t *buf = malloc((size_t)n ? (size_t)n : 1);
    if (!buf) {
        fclose(fp);
        return FAIL("%s: out of memory for %ld bytes", path, n);
    }
    size_t got = fread(buf, 1, (size_t)n, fp);
    fclose(fp);
    if (got != (size_t)n) {
        free(buf);
        return FAIL("%s: read error", path);
    }
    int r = npy_parse(path, buf, (size_t)n, out, err, errlen);
    free(buf);
    return r;
}

int npy_write(const char *path, int esize, int ndim, const uint64_t *shape, const void *data,
              char *err, size_t errlen)
{
    char dict[512];
    int k = snprintf(dict, sizeof(dict), "{'descr': '%s', 'fortran_order': False, 'shape': (",
                     esize == 2 ? "<f2" : "<f4");
    uint64_t count = 1;
    for (int i = 0; i < ndim; i++) {
        k += snprintf(dict + k, sizeof(dict) - (size_t)k, "%llu%s", (unsigned long long)shape[i],
                      ndim == 1 || i + 1 < ndim ? ", " : "");
        count *= shape[i];
    }
    if (ndim == 1)
        k -= 1; // "(5,)" not "(5, )"
    k += snprintf(dict + k, sizeof(dict) - (size_t)k, "), }");
    size_t total = 10 + (size_t)k + 1, pad = (64 - total % 64) % 64;
    size_t hlen = (size_t)k + pad + 1;
    FILE *fp = fopen(path, "wb");
    if (!fp)
        return FAIL("%s: cannot create: %s", path, strerror(errno));
    uint8_t pre[10] = { 0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (uint8_t)(hlen & 0xff),
                        (uint8_t)(hlen >> 8) };
    int ok = fwrite(pre, 1, 10, fp) == 10 && fwrite(dict, 1, (size_t)k, fp) == (size_t)k;
    for (size_t i = 0; ok && i < pad; i++)
        ok = fputc(' ', fp) != EOF;
    ok = ok && fputc('\n', fp) != EOF;
    ok = ok && fwrite(data, (size_t)esize, (size_t)count, fp) == count;
    ok = (fclose(fp) == 0) && ok;
    if (!ok)
        return FAIL("%s: write error: %s", path, strerror(errno));
    return 0;
}
