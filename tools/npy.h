/* NumPy .npy files (format 1.0-3.0): float32 and float16, C order, little endian. */
#ifndef SSMAX_NPY_H
#define SSMAX_NPY_H

#include <stddef.h>
#include <stdint.h>

#define NPY_MAX_DIMS 8

struct npy_array {
    int esize;                       // 4: float32, 2: float16
    int ndim;
    uint64_t shape[NPY_MAX_DIMS];
    uint64_t count;                  // elements
    void *data;                      // count * esize bytes, malloc'd
};

/* Reads path; on failure returns -1 and writes "PATH: problem" into err. */
int npy_read(const char *path, struct npy_array *out, char *err, size_t errlen);
/* Parses an in-memory file (name is used in messages). */
int npy_parse(const char *name, const uint8_t *buf, size_t len, struct npy_array *out, char *err,
              size_t errlen);
/* Writes a float32/float16 array of the given shape; -1 with a message on failure. */
int npy_write(const char *path, int esize, int ndim, const uint64_t *shape, const void *data,
              char *err, size_t errlen);
void npy_free(struct npy_array *a);

#endif
