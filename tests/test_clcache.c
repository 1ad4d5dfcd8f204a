/* The OpenCL program-binary cache against entries that would kill the driver. PoCL asserts or
 * crashes on a damaged binary, so each run happens in a child process (this program again, as
 * "test_clcache run DIR"): a bad entry may cost the run that meets it, never the ones after.
 *   - a binary damaged and its plain checksum recomputed is caught before the driver sees it;
 *   - a binary that passes every check (the keyed hash forged with the directory's secret) kills
 *     the first run, and the marker that run leaves makes the next one rebuild from source;
 *   - the same with a marker left by hand by a process that is gone.
 * Each time the entry is rewritten as a good one. Exit 77 without an OpenCL device, unless
 * SSMAX_REQUIRE_DEVICE=1. */
#include <dirent.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "cache_child.h"
#include "harness.h"
#include "src/internal.h"
#include "ssmax/ssmax.h"


/* ---- the child: one attention on OpenCL with the cache in dir ---- */

static void child_log(void *priv, enum ssmax_log_level lvl, const char *msg)
{
    (void)priv, (void)lvl;
    fprintf(stderr, "  child: %s\n", msg);
}

static int child_run(const char *d)
{
    struct ssmax_context_params cp;
    ssmax_context_params_default(&cp);
    cp.backends = SSMAX_BACKEND_OPENCL_BIT;
    cp.cache_dir = d;
    cp.log_cb = child_log;
    cp.log_level = SSMAX_LOG_INFO;
    ssmax_context *ctx = NULL;
    if (ssmax_context_create(&cp, &ctx) < 0)
        return 1;
    int i = ssmax_device_find(ctx, "opencl");
    if (i < 0) {
        ssmax_context_destroy(&ctx);
        return 77;
    }
    int st = ssmax_device_open(ctx, i) < 0;
    struct hcase c = { 0 };
    ssmax_attn_params_default(&c.p);
    c.p.q_heads = 2, c.p.kv_heads = 1, c.p.q_len = 7, c.p.kv_len = 33, c.p.head_dim = 64;
    c.p.causal = 1;
    c.seed = 5;
    struct hresult r;
    if (!st && (h_run(ctx, &c, &r) != 0 || !r.pass)) {
        fprintf(stderr, "  child: attention failed: %s %s\n", r.why, ssmax_last_error(ctx));
        st = 1;
    }
    ssmax_context_destroy(&ctx);
    return st;
}

/* ---- the cache files ---- */

struct entry {
    char path[1200];
    unsigned char *data;
    size_t size;
    size_t sum_off, mac_off, bin_off; // mac_off 0: the format has no keyed hash
    char key[1024];
};

/* Parses a cache file: "SSMAXCL?" | u32 klen | key | u64 size | u64 fnv64 | [u64 mac] | binary. */
static int entry_read(const char *path, struct entry *e)
{
    memset(e, 0, sizeof(*e));
    snprintf(e->path, sizeof(e->path), "%s", path);
    if (read_all(path, &e->data, &e->size) < 0 || e->size < 28 || memcmp(e->data, "SSMAXCL", 7))
        return -1;
    uint32_t klen;
    uint64_t bsize;
    memcpy(&klen, e->data + 8, 4);
    if (klen >= sizeof(e->key) || 12 + (size_t)klen + 16 > e->size)
        return -1;
    memcpy(e->key, e->data + 12, klen);
    memcpy(&bsize, e->data + 12 + klen, 8);
    e->sum_off = 12 + klen + 8;
    e->mac_off = e->data[7] == '1' ? 0 : e->sum_off + 8;
    e->bin_off = e->size - bsize;
    if (bsize >= e->size || e->bin_off < (e->mac_off ? e->mac_off + 8 : e->sum_off + 8))
        return -1;
    uint64_t sum;
    memcpy(&sum, e->data + e->sum_off, 8);
    return sum == ssmax_fnv64(e->data + e->bin_off, bsize, SSMAX_FNV64_INIT) ? 0 : -1;
}

static void entry_write(const struct entry *e)
{
    FILE *f = fopen(e->path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(e->data, 1, e->size, f), e->size);
    assert_int_equal(fclose(f), 0);
}

/* Recomputes the plain checksum of e's binary, and the keyed hash too when forge is set (with the
 * directory's secret). */
static void entry_seal(struct entry *e, const char *d, int forge)
{
    unsigned char *bin = e->data + e->bin_off;
    size_t n = e->size - e->bin_off;
    uint64_t sum = ssmax_fnv64(bin, n, SSMAX_FNV64_INIT);
    memcpy(e->data + e->sum_off, &sum, 8);
    if (forge && e->mac_off) {
        char kp[1200];
        snprintf(kp, sizeof(kp), "%s/cache.key", d);
        unsigned char *sec = NULL;
        size_t sn = 0;
        assert_int_equal(read_all(kp, &sec, &sn), 0);
        assert_int_equal(sn, 16);
        uint64_t k[2];
        memcpy(k, sec, 16);
        free(sec);
        uint64_t mac = ssmax_cache_mac(k, e->key, bin, n); // the writer's own keyed hash
        memcpy(e->data + e->mac_off, &mac, 8);
    }
}

/* Damages the binary where PoCL reads its own header (it asserts there), then recomputes the
 * plain checksum, and the keyed hash too when forge is set (with the directory's secret). */
static void entry_damage(struct entry *e, const char *d, int forge)
{
    unsigned char *bin = e->data + e->bin_off;
    size_t n = e->size - e->bin_off;
    assert_true(n > 80);
    for (size_t i = 16; i < 80; i++)
        bin[i] ^= 0xff;
    entry_seal(e, d, forge);
    entry_write(e);
}

/* The cache files in directory in (at most cap), and the count of other files left by loads
 * (markers). */
static int entries(const char *in, struct entry *out, int cap, int *markers)
{
    DIR *dp = opendir(in);
    assert_non_null(dp);
    int n = 0;
    *markers = 0;
    struct dirent *d;
    while ((d = readdir(dp))) {
        size_t len = strlen(d->d_name);
        if (strstr(d->d_name, ".loading."))
            (*markers)++;
        if (len < 7 || strcmp(d->d_name + len - 6, ".clbin") || n >= cap)
            continue;
        char p[1200];
        snprintf(p, sizeof(p), "%s/%s", in, d->d_name);
        if (entry_read(p, &out[n]) < 0)
            fail_msg("%s: not a good cache file", p);
        n++;
    }
    closedir(dp);
    return n;
}

static void entries_free(struct entry *e, int n)
{
    for (int i = 0; i < n; i++)
        free(e[i].data);
}

/* ---- the tests ---- */

/* A fresh cache directory with good entries from a first run. */
static int setup(void **state)
{
    (void)state;
    if (dir_make("clcache") < 0)
        return -1;
    int st = run_child(dir);
    if (st == 77 && !h_require_devices())
        return 0; // each test skips
    return st == 0 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    return dir_remove();
}

#define MAXE 16

/* The entries, damaged by the caller, must be replaced by good ones (not the damaged bytes) and
 * no marker may be left. */
static void check_replaced(struct entry *bad, int nbad)
{
    struct entry now[MAXE];
    int markers;
    int n = entries(dir, now, MAXE, &markers);
    assert_int_equal(markers, 0);
    for (int i = 0; i < nbad; i++) {
        int found = 0;
        for (int k = 0; k < n; k++)
            if (!strcmp(now[k].path, bad[i].path)) {
                found = 1;
                if (now[k].size == bad[i].size && !memcmp(now[k].data, bad[i].data, bad[i].size))
                    fail_msg("%s: the damaged entry is still there", bad[i].path);
            }
        if (!found)
            fail_msg("%s: not rewritten", bad[i].path);
    }
    entries_free(now, n);
}

static int prepare(struct entry *e)
{
    int markers;
    int n = entries(dir, e, MAXE, &markers);
    if (!n) {
        if (h_require_devices())
            fail_msg("no OpenCL cache entry after a first run in %s", dir);
        skip();
    }
    return n;
}

/* Damaged, plain checksum fixed up: caught by the keyed hash, rebuilt, rewritten. */
static void test_damaged(void **state)
{
    (void)state;
    struct entry e[MAXE];
    int n = prepare(e);
    for (int i = 0; i < n; i++)
        entry_damage(&e[i], dir, 0);
    int st = run_child(dir);
    if (st)
        fail_msg("the run after damaging %d cache entries failed (status %d)", n, st);
    check_replaced(e, n);
    assert_int_equal(run_child(dir), 0);
    entries_free(e, n);
}

/* Passes every check and kills the driver: the run that meets it may die, the next must not. */
static void test_crash_marker(void **state)
{
    (void)state;
    struct entry e[MAXE];
    int n = prepare(e);
    for (int i = 0; i < n; i++)
        entry_damage(&e[i], dir, 1);
    int first = run_child(dir);
    printf("# the run that met the forged entries: status %d\n", first);
    int st = run_child(dir);
    if (st)
        fail_msg("the run after a crash on a forged entry failed too (status %d)", st);
    check_replaced(e, n);
    entries_free(e, n);
}

/* A binary can load and build and still kill the driver at its first launch (PoCL 3.1, another
 * program's binary sealed under this key: a segmentation fault in clEnqueueNDRangeKernel on every
 * run, as the marker was gone once the kernels were made). The marker now stays while a program
 * loaded from the cache has kernels that have not run, and goes when the device is closed. */
static void test_marker_until_run(void **state)
{
    (void)state;
    struct entry e[MAXE];
    int n = prepare(e), markers;
    entries_free(e, n);
    struct ssmax_context_params cp;
    ssmax_context_params_default(&cp);
    cp.backends = SSMAX_BACKEND_OPENCL_BIT;
    cp.cache_dir = dir;
    ssmax_context *ctx = NULL;
    assert_int_equal(ssmax_context_create(&cp, &ctx), SSMAX_OK);
    assert_int_equal(ssmax_device_open(ctx, ssmax_device_find(ctx, "opencl")), SSMAX_OK);
    struct hcase c = { 0 };
    ssmax_attn_params_default(&c.p);
    c.p.q_heads = 2, c.p.kv_heads = 1, c.p.q_len = 7, c.p.kv_len = 33, c.p.head_dim = 64;
    c.p.causal = 1;
    c.seed = 5;
    struct hresult r;
    assert_int_equal(h_run(ctx, &c, &r), 0); // the child's shape: its cached program, fused
    n = entries(dir, e, MAXE, &markers);
    entries_free(e, n);
    if (markers != 1)
        fail_msg("%d markers while a cached program has kernels yet to run (want 1)", markers);
    ssmax_context_destroy(&ctx);
    n = entries(dir, e, MAXE, &markers);
    entries_free(e, n);
    if (markers != 0)
        fail_msg("%d markers left after the context was destroyed", markers);
}

/* A marker left by a process that is gone, beside an entry that passes every check. */
static void test_dead_marker(void **state)
{
    (void)state;
    struct entry e[MAXE];
    int n = prepare(e);
    pid_t dead = fork(); // a pid that surely belongs to no process once reaped
    if (dead == 0)
        _exit(0);
    assert_true(dead > 0);
    waitpid(dead, NULL, 0);
    for (int i = 0; i < n; i++) {
        entry_damage(&e[i], dir, 1);
        char mp[1300];
        snprintf(mp, sizeof(mp), "%.1200s.loading.%ld.0", e[i].path, (long)dead);
        FILE *f = fopen(mp, "w");
        assert_non_null(f);
        fprintf(f, "12345\n");
        fclose(f);
    }
    int st = run_child(dir);
    if (st)
        fail_msg("the run after a dead loader's marker failed (status %d)", st);
    check_replaced(e, n);
    entries_free(e, n);
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "run"))
        return child_run(argv[2]);
    if (self_find() < 0)
        return 77;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_damaged, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crash_marker, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dead_marker, setup, teardown),
        cmocka_unit_test_setup_teardown(test_marker_until_run, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
