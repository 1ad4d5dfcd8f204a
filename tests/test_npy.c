/* .npy reader/writer: round trips and every malformed-file case names the file and the problem. */
#include <dirent.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "npy.h"

static size_t make(uint8_t *buf, const char *dict, size_t data_bytes, int version)
{
    size_t dl = strlen(dict), pre = version == 1 ? 10 : 12;
    size_t total = pre + dl + 1, pad = (64 - total % 64) % 64, hlen = dl + pad + 1;
    memcpy(buf, "\x93NUMPY", 6);
    buf[6] = (uint8_t)version;
    buf[7] = 0;
    buf[8] = hlen & 0xff;
    buf[9] = (hlen >> 8) & 0xff;
    if (version != 1)
        buf[10] = buf[11] = 0;
    memcpy(buf + pre, dict, dl);
    memset(buf + pre + dl, ' ', pad);
    buf[pre + dl + pad] = '\n';
    for (size_t i = 0; i < data_bytes; i++)
        buf[pre + hlen + i] = (uint8_t)i;
    return pre + hlen + data_bytes;
}

static void expect_fail(const uint8_t *buf, size_t len, const char *needle)
{
    struct npy_array a;
    char err[512];
    int r = npy_parse("x.npy", buf, len, &a, err, sizeof(err));
    if (r != -1 || !strstr(err, "x.npy") || !strstr(err, needle))
        fail_msg("expected failure with '%s', got %d '%s'", needle, r, err);
}

static void test_good(void **state)
{
    (void)state;
    uint8_t buf[512];
    struct npy_array a;
    char err[256];
    size_t n = make(buf, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 24, 1);
    assert_int_equal(npy_parse("x.npy", buf, n, &a, err, sizeof(err)), 0);
    assert_int_equal(a.esize, 4);
    assert_int_equal(a.ndim, 2);
    assert_int_equal(a.shape[1], 3);
    assert_int_equal(a.count, 6);
    npy_free(&a);
    n = make(buf, "{\"descr\": \"<f2\", \"fortran_order\": False, \"shape\": (5,)}", 10, 2);
    assert_int_equal(npy_parse("x.npy", buf, n, &a, err, sizeof(err)), 0);
    assert_int_equal(a.esize, 2);
    assert_int_equal(a.ndim, 1);
    npy_free(&a);
    n = make(buf, "{'descr': '<f4', 'fortran_order': False, 'shape': (), }", 4, 1);
    assert_int_equal(npy_parse("x.npy", buf, n, &a, err, sizeof(err)), 0);
    assert_int_equal(a.ndim, 0);
    assert_int_equal(a.count, 1);
    npy_free(&a);
}

static void test_malformed(void **state)
{
    (void)state;
    uint8_t buf[512];
    size_t n;
    expect_fail((const uint8_t *)"hello world", 11, "magic");
    expect_fail((const uint8_t *)"\x93NUMPY", 6, "magic");
    n = make(buf, "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }", 16, 1);
    expect_fail(buf, n, "'<f8' is not supported");
    n = make(buf, "{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", 8, 1);
    expect_fail(buf, n, "'>f4'");
    n = make(buf, "{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }", 8, 1);
    expect_fail(buf, n, "'<i4'");
    n = make(buf, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", 16, 1);
    expect_fail(buf, n, "fortran_order is True");
    n = make(buf, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }", 12, 1);
    expect_fail(buf, n, "truncated data");
    n = make(buf, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }", 20, 1);
    expect_fail(buf, n, "does not match the shape");
    n = make(buf, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, -2), }", 16, 1);
    expect_fail(buf, n, "non-negative integers");
    n = make(buf, "{'descr': '<f4', 'fortran_order': False, }", 16, 1);
    expect_fail(buf, n, "no 'shape'");
    n = make(buf, "{'fortran_order': False, 'shape': (4,), }", 16, 1);
    expect_fail(buf, n, "no 'descr'");
    n = make(buf, "{'descr': '<f4', 'shape': (4,), }", 16, 1);
    expect_fail(buf, n, "no 'fortran_order'");
    n = make(buf, "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 99999999999, "
                  "99999999999), }", 16, 1);
    expect_fail(buf, n, "overflows");
    n = make(buf, "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }", 16, 1);
    expect_fail(buf, 40, "truncated header");
    buf[6] = 9;
    expect_fail(buf, n, "version 9");
    // a key at the very end of the header, with no value (found by fuzz_npy)
    n = make(buf, "{'descr': '<f4', 'fortran_order': False, 'shape':", 0, 1);
    expect_fail(buf, n, "'shape' has no value");
    n = make(buf, "[1, 2, 3]", 0, 1);
    expect_fail(buf, n, "not a dict");
}

/* The header is a Python literal dict with exactly the three keys: what NumPy itself rejects (or
 * would read differently) is rejected, with the problem named. A few Python spellings NumPy's
 * literal_eval would take and no writer produces (a key twice, +4, 0x4, escapes, comments) are
 * rejected too. */
static void test_strict_header(void **state)
{
    (void)state;
    static const struct {
        const char *dict, *needle;
    } bad[] = {
        // another key whose string holds a shape: NumPy rejects the extra key
        { "{'descr': '<f4', 'fortran_order': False, 'x': \"'shape': (4,)\", 'shape': (2,), }",
          "the key 'x'" },
        { "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'note': 'shape': (4,)}",
          "the key 'note'" },
        { "{'descr': '<f4', 'fortran_order': Falsehood, 'shape': (4,), }",
          "neither True nor False ('Falsehood')" },
        { "{'descr': '<f4', 'fortran_order': 0, 'shape': (4,), }", "neither True nor False" },
        { "{'descr': '<f4', 'fortran_order': false, 'shape': (4,), }", "neither True nor False" },
        { "{'descr': '<f4', 'fortran_order': 'False', 'shape': (4,), }", "neither True nor False" },
        { "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), 'shape': (4,), }", "twice" },
        { "{'descr': '<f2', 'descr': '<f4', 'fortran_order': False, 'shape': (4,), }", "twice" },
        { "{'descr': '<f4', 'fortran_order': False, 'shape': (4), }", "not a tuple" },
        { "{'descr': '<f4', 'fortran_order': False, 'shape': 4, }", "not a tuple" },
        { "{'descr': '<f4', 'fortran_order': False, 'shape': [4], }", "not a tuple" },
        { "{'descr': '<f4', 'fortran_order': False, 'shape': (,), }", "malformed 'shape'" },
        { "{'descr': '<f4', 'fortran_order': False, 'shape': (2,,2), }", "malformed 'shape'" },
        { "{'descr': '<f4', 'fortran_order': False, 'shape': (2 2), }", "malformed 'shape'" },
        { "{'descr': '<f4', 'fortran_order': False, 'shape': (02,), }", "leading zero" },
        { "{'descr': '<f4', 'fortran_order': False, 'shape': (+4,), }", "non-negative integers" },
        { "{'descr': '<f4', 'fortran_order': False, 'shape': (4.0,), }", "non-negative integers" },
        { "{'descr': '<f4', 'fortran_order': False, 'shape': (0x4,), }", "non-negative integers" },
        { "{'descr': '<f4', 'fortran_order': False, 'shape': (4,)", "expected ',' or '}'" },
        { "{'descr': '<f4', 'fortran_order': False, 'shape': (4,),", "no closing '}'" },
        { "{'descr': '<f4', 'fortran_order': False, 'shape': (4,)} x", "unexpected text" },
        { "{'descr': '<f4', 'fortran_order': False, 'shape': (4,)}}", "unexpected text" },
        { "{'descr': '<f4' 'fortran_order': False, 'shape': (4,)}", "expected ',' or '}'" },
        { "{'descr' '<f4', 'fortran_order': False, 'shape': (4,)}", "expected ':'" },
        { "{descr: '<f4', 'fortran_order': False, 'shape': (4,)}", "expected a quoted key" },
        { "{'descr': <f4, 'fortran_order': False, 'shape': (4,)}", "'descr' is not a string" },
        { "{'descr': '<f4\\x', 'fortran_order': False, 'shape': (4,)}", "escape sequence" },
        { "{'descr': '<f4', 'fortran_order': False, 'sh\\x61pe': (4,)}", "escape sequence" },
        { "{'descr': '<f4', 'fortran_order': False, 'shape': (4,),, }", "expected a quoted key" },
        { "{,}", "expected a quoted key" },
        { "{}", "no 'descr'" },
        { "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), } # comment", "unexpected text" },
    };
    uint8_t buf[512];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        size_t n = make(buf, bad[i].dict, 16, 1);
        expect_fail(buf, n, bad[i].needle);
    }
    // a Python 2 long suffix is read in format 1.0 and 2.0 (as NumPy does), not in 3.0
    size_t n = make(buf, "{'descr': '<f4', 'fortran_order': False, 'shape': (4L,), }", 16, 3);
    expect_fail(buf, n, "non-negative integers");
    // minor versions other than 0 are not formats NumPy knows
    n = make(buf, "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }", 16, 1);
    buf[7] = 1;
    expect_fail(buf, n, "version 1.1");
    // everything NumPy accepts that the writer or other writers produce
    static const struct {
        const char *dict;
        int ndim;
        uint64_t count;
        int version;
    } good[] = {
        { "{'shape': (2, 2), 'fortran_order': False, 'descr': '<f4'}", 2, 4, 1 },
        { "{\"descr\":\"<f4\",\"fortran_order\":False,\"shape\":(4,)}", 1, 4, 1 },
        { "\t{ 'descr' : '<f4' ,\n 'fortran_order' :\tFalse ,\r\n 'shape' : ( 2 , 2 , ) , }\f", 2,
          4, 1 },
        { "{'descr': '<f4', 'fortran_order': False, 'shape': (4L,), }", 1, 4, 1 },
        { "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2L, 2), }", 3, 4, 2 },
        { "{'descr': '<f4', 'fortran_order': False, 'shape': (4, 0), }", 2, 0, 1 },
        { "{'descr': '<f4', 'fortran_order': False, 'shape': (), }", 0, 1, 3 },
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        struct npy_array a;
        char err[512];
        n = make(buf, good[i].dict, good[i].count * 4, good[i].version);
        if (npy_parse("x.npy", buf, n, &a, err, sizeof(err)) != 0)
            fail_msg("'%s' rejected: %s", good[i].dict, err);
        assert_int_equal(a.ndim, good[i].ndim);
        assert_int_equal(a.count, good[i].count);
        npy_free(&a);
    }
}

static char scratch[64];

/* How many entries other than . and .. a folder has. */
static int count_files(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    if (d)
        closedir(d);
    return n;
}

static void put(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

static int holds(const char *path, const char *text)
{
    char b[256] = { 0 };
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;
    size_t n = fread(b, 1, sizeof(b) - 1, f);
    fclose(f);
    return n == strlen(text) && !memcmp(b, text, n);
}

static int write_text(FILE *fp, void *arg) { return fputs(arg, fp) < 0 ? -1 : 0; }
static int write_fails(FILE *fp, void *arg)
{
    (void)fp, (void)arg;
    errno = EIO;
    return -1;
}

static void path_in(char *out, size_t n, const char *name)
{
    if (strlen(scratch) + strlen(name) + 2 > n)
        fail_msg("path too long");
    strcpy(out, scratch);
    strcat(out, "/");
    strcat(out, name);
}

static int setup_dir(void **state)
{
    (void)state;
    snprintf(scratch, sizeof(scratch), "/tmp/ssmax_out_XXXXXX");
    return mkdtemp(scratch) ? 0 : -1;
}

static int teardown_dir(void **state)
{
    (void)state;
    DIR *d = opendir(scratch);
    struct dirent *e;
    char p[256];
    while (d && (e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            path_in(p, sizeof(p), e->d_name);
            unlink(p);
        }
    if (d)
        closedir(d);
    return rmdir(scratch);
}

/* All or nothing: a failing output (a writer error, /dev/full) leaves every regular target as it
 * was and no temporary file behind; success replaces them all. */
static void test_out_files(void **state)
{
    (void)state;
    char a[256], b[256], err[1024];
    path_in(a, sizeof(a), "a.txt");
    path_in(b, sizeof(b), "b.txt");
    put(a, "old a");
    struct out_file o[3];
    memset(o, 0, sizeof(o));
    o[0] = (struct out_file){ .opt = "--a", .path = a, .write = write_text, .arg = "new a" };
    o[1] = (struct out_file){ .opt = "--b", .path = b, .write = write_fails };
    assert_int_equal(out_files_check(o, 2, NULL, 0, err, sizeof(err)), 0);
    assert_int_equal(out_files_write(o, 2, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "--b"));
    assert_non_null(strstr(err, "b.txt"));
    assert_true(holds(a, "old a"));
    assert_int_equal(count_files(scratch), 1); // a.txt only: no temporary file, no b.txt
    // a special file that fails (after the regular temporary files are complete)
    o[1] = (struct out_file){ .opt = "--b", .path = "/dev/full", .write = write_text, .arg = "x" };
    assert_int_equal(out_files_check(o, 2, NULL, 0, err, sizeof(err)), 0);
    assert_int_equal(o[1].special, 1);
    assert_int_equal(out_files_write(o, 2, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "/dev/full"));
    assert_true(holds(a, "old a"));
    assert_int_equal(count_files(scratch), 1);
    // success, with /dev/null as a special output; the old file's mode is kept
    assert_int_equal(chmod(a, 0640), 0);
    o[1] = (struct out_file){ .opt = "--b", .path = "/dev/null", .write = write_text, .arg = "x" };
    o[2] = (struct out_file){ .opt = "--c", .path = b, .write = write_text, .arg = "new b" };
    assert_int_equal(out_files_check(o, 3, NULL, 0, err, sizeof(err)), 0);
    assert_int_equal(out_files_write(o, 3, err, sizeof(err)), 0);
    assert_true(holds(a, "new a"));
    assert_true(holds(b, "new b"));
    struct stat st;
    assert_int_equal(stat(a, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0640);
    assert_int_equal(count_files(scratch), 2);
    // through a symbolic link: the file it names is replaced, the link stays
    char l[256];
    path_in(l, sizeof(l), "link.txt");
    assert_int_equal(symlink("a.txt", l), 0);
    o[0] = (struct out_file){ .opt = "--a", .path = l, .write = write_text, .arg = "via link" };
    assert_int_equal(out_files_check(o, 1, NULL, 0, err, sizeof(err)), 0);
    assert_int_equal(out_files_write(o, 1, err, sizeof(err)), 0);
    assert_true(holds(a, "via link"));
    assert_int_equal(lstat(l, &st), 0);
    assert_true(S_ISLNK(st.st_mode));
    unlink(l);
}

/* An output that is an input or another output is refused, however it is spelled. */
static void test_out_same_file(void **state)
{
    (void)state;
    char a[256], h[256], l[256], dotted[300], err[1024];
    path_in(a, sizeof(a), "in.npy");
    path_in(h, sizeof(h), "hard.npy");
    path_in(l, sizeof(l), "sym.npy");
    snprintf(dotted, sizeof(dotted), "%s/./in.npy", scratch);
    put(a, "input");
    assert_int_equal(link(a, h), 0);
    assert_int_equal(symlink("in.npy", l), 0);
    struct in_file in[1] = { { "--q", a } };
    const char *same[] = { a, h, l, dotted };
    for (int i = 0; i < 4; i++) {
        struct out_file o = { .opt = "--out", .path = same[i], .write = write_text, .arg = "x" };
        assert_int_equal(out_files_check(&o, 1, in, 1, err, sizeof(err)), -1);
        assert_non_null(strstr(err, "--out"));
        assert_non_null(strstr(err, "--q"));
    }
    char n1[256], n2[300];
    path_in(n1, sizeof(n1), "new.npy");
    snprintf(n2, sizeof(n2), "%s/../%s/new.npy", scratch, strrchr(scratch, '/') + 1);
    struct out_file o[2] = { { .opt = "--out", .path = n1, .write = write_text, .arg = "x" },
                             { .opt = "--lse", .path = n2, .write = write_text, .arg = "y" } };
    assert_int_equal(out_files_check(o, 2, in, 1, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "--lse"));
    assert_non_null(strstr(err, "--out"));
    // a directory, and a missing folder
    struct out_file d = { .opt = "--out", .path = scratch, .write = write_text, .arg = "x" };
    assert_int_equal(out_files_check(&d, 1, NULL, 0, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "is a directory"));
    d.path = "/nonexistent/o.npy";
    assert_int_equal(out_files_check(&d, 1, NULL, 0, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "'/nonexistent' does not exist"));
    assert_int_equal(count_files(scratch), 3);
    unlink(h);
    unlink(l);
    unlink(a);
}

/* Inputs: a directory is named as such; a pipe is read to its end. */
static void test_read_kinds(void **state)
{
    (void)state;
    struct npy_array a;
    char err[512];
    assert_int_equal(npy_read(scratch, &a, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "is a directory"));
    assert_int_equal(npy_read("/dev/null", &a, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "not a .npy file"));
    uint8_t buf[512];
    size_t n = make(buf, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 24, 1);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    assert_int_equal(write(fds[1], buf, n), (ssize_t)n);
    close(fds[1]);
    char path[64];
    snprintf(path, sizeof(path), "/dev/fd/%d", fds[0]);
    assert_int_equal(npy_read(path, &a, err, sizeof(err)), 0);
    assert_int_equal(a.count, 6);
    npy_free(&a);
    close(fds[0]);
    // a pipe with one byte too many, and one that ends early
    assert_int_equal(pipe(fds), 0);
    assert_int_equal(write(fds[1], buf, n), (ssize_t)n);
    assert_int_equal(write(fds[1], "!", 1), 1);
    close(fds[1]);
    snprintf(path, sizeof(path), "/dev/fd/%d", fds[0]);
    assert_int_equal(npy_read(path, &a, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "does not match the shape"));
    close(fds[0]);
    assert_int_equal(pipe(fds), 0);
    assert_int_equal(write(fds[1], buf, n - 4), (ssize_t)(n - 4));
    close(fds[1]);
    snprintf(path, sizeof(path), "/dev/fd/%d", fds[0]);
    assert_int_equal(npy_read(path, &a, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "truncated data"));
    close(fds[0]);
}

static void test_roundtrip(void **state)
{
    (void)state;
    char path[] = "/tmp/ssmax_npy_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    float data[2 * 3 * 4 * 5];
    for (int i = 0; i < 120; i++)
        data[i] = (float)i * 0.25f - 3;
    uint64_t shape[4] = { 2, 3, 4, 5 };
    char err[256];
    assert_int_equal(npy_write(path, 4, 4, shape, data, err, sizeof(err)), 0);
    struct npy_array a;
    assert_int_equal(npy_read(path, &a, err, sizeof(err)), 0);
    assert_int_equal(a.ndim, 4);
    assert_memory_equal(a.shape, shape, sizeof(shape));
    assert_memory_equal(a.data, data, sizeof(data));
    npy_free(&a);
    uint16_t h[7] = { 1, 2, 3, 4, 5, 6, 7 };
    uint64_t s1[1] = { 7 };
    assert_int_equal(npy_write(path, 2, 1, s1, h, err, sizeof(err)), 0);
    assert_int_equal(npy_read(path, &a, err, sizeof(err)), 0);
    assert_int_equal(a.esize, 2);
    assert_memory_equal(a.data, h, sizeof(h));
    npy_free(&a);
    unlink(path);
    assert_int_equal(npy_read("/nonexistent/x.npy", &a, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "/nonexistent/x.npy"));
    // a write that fails leaves no file: a missing folder, a full device
    assert_int_equal(npy_write("/nonexistent/x.npy", 2, 1, s1, h, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "/nonexistent"));
    assert_int_equal(npy_write("/dev/full", 2, 1, s1, h, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "/dev/full"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_strict_header),
        cmocka_unit_test_setup_teardown(test_out_files, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_out_same_file, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_read_kinds, setup_dir, teardown_dir),
        cmocka_unit_test(test_roundtrip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
