/* NumPy .npy files (format 1.0-3.0): float32 and float16, C order, little endian; and the CLI's
 * output files, written all or nothing. */
#ifndef SSMAX_NPY_H
#define SSMAX_NPY_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define NPY_MAX_DIMS 8

struct npy_array {
    int esize;                       // 4: float32, 2: float16 (npy_read_ints: 4 int32, 8 int64)
    int is_int;                      // npy_read_ints only
    int ndim;
    uint64_t shape[NPY_MAX_DIMS];
    uint64_t count;                  // elements
    void *data;                      // count * esize bytes, malloc'd
};

/* Reads path (a regular file, or a pipe or device read to its end; not a directory); on failure
 * returns -1 and writes "PATH: problem" into err. */
int npy_read(const char *path, struct npy_array *out, char *err, size_t errlen);
/* Parses an in-memory file (name is used in messages). The header must be the Python literal dict
 * NumPy writes: exactly the keys 'descr', 'fortran_order' and 'shape', each once, in any order. */
int npy_parse(const char *name, const uint8_t *buf, size_t len, struct npy_array *out, char *err,
              size_t errlen);
/* Writes a float32/float16 array of the given shape to fp (header and data; no flush or close);
 * -1 on a write error (errno set). */
int npy_write_stream(FILE *fp, int esize, int ndim, const uint64_t *shape, const void *data);
/* Writes a float32/float16 array of the given shape to path, through a temporary file beside it
 * (out_files_write); -1 with a message on failure, and then path is untouched. */
int npy_write(const char *path, int esize, int ndim, const uint64_t *shape, const void *data,
              char *err, size_t errlen);
void npy_free(struct npy_array *a);
/* npy_read for integer arrays: int32 '<i4' or int64 '<i8' (is_int set), and no other dtype. */
int npy_read_ints(const char *path, struct npy_array *out, char *err, size_t errlen);

/* An array for out_npy_writer. */
struct npy_out {
    int esize, ndim;
    const uint64_t *shape;
    const void *data;
};
int out_npy_writer(FILE *fp, void *npy_out);

/*
 * Output files, all or nothing. out_files_check() resolves every output before any work is done:
 * symbolic links are followed to the file they name; a directory, a missing folder, and an output
 * that is the same file as an input or as another output are refused. out_files_write() then writes
 * each regular-file output (existing or new) to a temporary file in its target's folder (flushed,
 * fsync'd and closed, each step checked), then writes the outputs that are not regular files
 * (character devices such as /dev/null or /dev/full, pipes, /dev/stdout) in place, and only when
 * all of that succeeded renames the temporary files onto their targets. On any failure every
 * temporary file is removed and no regular target is touched.
 */
struct out_file {
    const char *opt, *path;          // the option and its value, for messages
    int (*write)(FILE *fp, void *arg); // writes the contents; -1 on error (errno or ferror set)
    void *arg;
    // filled by out_files_check:
    char target[4096];               // regular output: the resolved path renamed onto
    int special;                     // not a regular file: written in place
    int exists;
    uint64_t dev, ino;               // when it exists
    unsigned mode;                   // an existing regular target's permission bits
};
/* One input file, for the same-file check. */
struct in_file {
    const char *opt, *path;
};
/* 0, or -1 with "OPT: 'PATH': problem" in err. */
int out_files_check(struct out_file *o, int n, const struct in_file *in, int nin, char *err,
                    size_t errlen);
/* 0, or -1 with "OPT: 'PATH': problem" in err (see above). o must have passed out_files_check. */
int out_files_write(struct out_file *o, int n, char *err, size_t errlen);
/* 1 if one of the outputs is this process's standard output (messages then go to stderr). */
int out_files_have_stdout(const struct out_file *o, int n);

#endif
