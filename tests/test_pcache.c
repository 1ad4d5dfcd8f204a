/* The Vulkan pipeline cache file (src/vulkan/vk_pcache.c) on lavapipe:
 *   - the first device writes <dir>/vk-*.pcache, a new process and a new context load it;
 *   - damaged, edited and foreign files (truncated, a byte flipped in the driver's data, a wrong
 *     Vulkan header sealed with the directory's secret, a wrong magic, version or size field, an
 *     empty file, an empty directory in its place, random bytes) are ignored, never handed to the
 *     driver, and rewritten; a non-empty directory in its place is left alone;
 *   - the results stay correct (one attention against the float64 reference), under the
 *     validation layer with no validation errors;
 *   - driver data over the size cap is neither loaded nor written, and the file is removed;
 *   - the pipelines tool path (ssmax_attn_pipelines) marks the cache for writing too;
 *   - SSMAX_VK_PIPELINE_CACHE=0 and no cache directory write nothing;
 *   - processes writing the same file at once never leave a torn one.
 * Exit 77 without a Vulkan device, unless SSMAX_REQUIRE_DEVICE=1. */
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
#include <sys/wait.h>
#include <unistd.h>

#include <vulkan/vulkan.h>

#include <cmocka.h>

#include "cache_child.h"
#include "harness.h"
#include "src/internal.h"
#include "src/pipelines.h"
#include "ssmax/ssmax.h"


/* ---- one context on the Vulkan device, what its log says about the cache ---- */

struct logcap {
    int loaded, ignored, wrote, refused, nowrite, overcap;
};

static void log_cb(void *priv, enum ssmax_log_level lvl, const char *msg)
{
    struct logcap *lc = priv;
    (void)lvl;
    if (!strstr(msg, "pipeline cache"))
        return;
    printf("#   %s\n", msg);
    lc->loaded += strstr(msg, "pipeline cache: loaded ") != NULL;
    lc->ignored += strstr(msg, "pipeline cache: ignoring ") != NULL;
    lc->wrote += strstr(msg, "pipeline cache: wrote ") != NULL;
    lc->refused += strstr(msg, "the driver refused") != NULL;
    lc->nowrite += strstr(msg, "could not write") != NULL;
    lc->overcap += strstr(msg, "cap; removing") != NULL;
}

enum { RUN_ATTN = 1, RUN_DEBUG = 2, RUN_PIPELINES = 4 };

static void small_case(struct hcase *c)
{
    memset(c, 0, sizeof(*c));
    ssmax_attn_params_default(&c->p);
    c->p.q_heads = 2, c->p.kv_heads = 1, c->p.q_len = 7, c->p.kv_len = 33, c->p.head_dim = 64;
    c->p.causal = 1;
    c->seed = 5;
}

static int ignore_pipe(void *priv, const struct ssmax_pipe_info *pi)
{
    (void)priv, (void)pi;
    return 0;
}

/* Opens the Vulkan device with the cache in d (NULL: the default directory), runs what flags say
 * and closes it. 0, 77 when there is no Vulkan device to skip on, else 1 (messages on stderr). */
static int run_ctx(const char *d, int flags, struct logcap *lc)
{
    memset(lc, 0, sizeof(*lc));
    struct ssmax_context_params cp;
    ssmax_context_params_default(&cp);
    cp.backends = SSMAX_BACKEND_VULKAN_BIT | SSMAX_BACKEND_CPU_BIT;
    cp.cache_dir = d;
    cp.log_cb = log_cb;
    cp.log_priv = lc;
    cp.log_level = SSMAX_LOG_DEBUG;
    cp.debug = (flags & RUN_DEBUG) != 0;
    ssmax_context *ctx = NULL;
    if (ssmax_context_create(&cp, &ctx) < 0) {
        fprintf(stderr, "context: %s\n", ssmax_last_error(NULL));
        return 1;
    }
    int i = ssmax_device_find(ctx, "vulkan"), st = 0;
    if (i < 0) {
        ssmax_context_destroy(&ctx);
        return h_require_devices() ? 1 : 77;
    }
    if (ssmax_device_open(ctx, i) < 0) {
        fprintf(stderr, "open: %s\n", ssmax_last_error(ctx));
        st = 1;
    }
    struct hcase c;
    small_case(&c);
    struct hresult r;
    if (!st && (flags & RUN_ATTN) && (h_run(ctx, &c, &r) != 0 || !r.pass)) {
        fprintf(stderr, "attention failed: %s %s\n", r.why, ssmax_last_error(ctx));
        st = 1;
    }
    if (!st && (flags & RUN_PIPELINES) &&
        ssmax_attn_pipelines(ctx, &c.p, NULL, ignore_pipe, NULL) < 0) {
        fprintf(stderr, "pipelines: %s\n", ssmax_last_error(ctx));
        st = 1;
    }
    // Opening the CPU device closes the Vulkan one, which writes the cache, while the context
    // still counts validation errors.
    if (ssmax_device_open(ctx, ssmax_device_find(ctx, "cpu")) < 0) {
        fprintf(stderr, "cpu: %s\n", ssmax_last_error(ctx));
        st = 1;
    }
    uint64_t verr = ssmax_validation_errors(ctx);
    if (verr) {
        fprintf(stderr, "%llu validation errors\n", (unsigned long long)verr);
        st = 1;
    }
    ssmax_context_destroy(&ctx);
    return st;
}

/* run_ctx under the validation layer (debug = 1). */
static int run_checked(const char *d, int flags, struct logcap *lc)
{
    return run_ctx(d, flags | RUN_DEBUG, lc);
}

/* Runs this program as a child: "test_pcache run DIR" (one attention, then the exit status says
 * 10 + whether the cache was loaded). */
static int child_main(const char *d)
{
    struct logcap lc;
    int st = run_ctx(d, RUN_ATTN, &lc);
    return st ? st : 10 + (lc.loaded > 0);
}

/* ---- the file ---- */

struct pfile {
    char path[1200];
    char key[256]; // the file's name without ".pcache": the keyed hash's key
    unsigned char *data;
    size_t size;
};

enum { HEAD = 40 }; // "SSMAXVKP" | u32 version | u32 0 | u64 size | u64 fnv64 | u64 keyed hash

/* The one *.pcache entry of d (its path in p->path), 0; -1 when there is none. Temporary files
 * left behind fail the test. */
static int pfile_find(const char *d, struct pfile *p)
{
    memset(p, 0, sizeof(*p));
    DIR *dp = opendir(d);
    assert_non_null(dp);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(dp))) {
        size_t len = strlen(e->d_name);
        if (strstr(e->d_name, ".tmp"))
            fail_msg("%s/%s: a temporary file was left behind", d, e->d_name);
        if (len < 8 || strcmp(e->d_name + len - 7, ".pcache"))
            continue;
        snprintf(p->path, sizeof(p->path), "%s/%s", d, e->d_name);
        snprintf(p->key, sizeof(p->key), "%.*s", (int)(len - 7), e->d_name);
        n++;
    }
    closedir(dp);
    if (n > 1)
        fail_msg("%d pipeline cache files in %s (want 1)", n, d);
    return n ? 0 : -1;
}

static void secret_of(const char *d, uint64_t k[2])
{
    char kp[1200];
    snprintf(kp, sizeof(kp), "%s/cache.key", d);
    unsigned char *sec;
    size_t sn;
    assert_int_equal(read_all(kp, &sec, &sn), 0);
    assert_int_equal(sn, 16);
    memcpy(k, sec, 16);
    free(sec);
}

/* Reads the entry of d and checks it as the loader does, so a test knows it holds a good file. */
static void pfile_good(const char *d, struct pfile *p)
{
    if (pfile_find(d, p) < 0)
        fail_msg("no pipeline cache file in %s", d);
    assert_int_equal(read_all(p->path, &p->data, &p->size), 0);
    if (p->size < HEAD + 32 || memcmp(p->data, "SSMAXVKP", 8))
        fail_msg("%s: not a pipeline cache file (%zu bytes)", p->path, p->size);
    uint32_t version;
    uint64_t size, sum, mac, k[2];
    memcpy(&version, p->data + 8, 4);
    memcpy(&size, p->data + 16, 8);
    memcpy(&sum, p->data + 24, 8);
    memcpy(&mac, p->data + 32, 8);
    assert_int_equal(version, 1);
    assert_int_equal(size, p->size - HEAD);
    assert_true(sum == ssmax_fnv64(p->data + HEAD, size, SSMAX_FNV64_INIT));
    secret_of(d, k);
    assert_true(mac == ssmax_cache_mac(k, p->key, p->data + HEAD, size));
    VkPipelineCacheHeaderVersionOne h;
    memcpy(&h, p->data + HEAD, sizeof(h));
    assert_true(h.headerSize >= 32 && h.headerSize <= size);
    assert_int_equal(h.headerVersion, VK_PIPELINE_CACHE_HEADER_VERSION_ONE);
}

static void pfile_write(const struct pfile *p)
{
    FILE *f = fopen(p->path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p->data, 1, p->size, f), p->size);
    assert_int_equal(fclose(f), 0);
}

/* Recomputes the fnv64, and with the secret the keyed hash under key (NULL: the file's own). */
static void pfile_seal(struct pfile *p, const char *key)
{
    uint64_t k[2], size = p->size - HEAD;
    uint64_t sum = ssmax_fnv64(p->data + HEAD, size, SSMAX_FNV64_INIT);
    memcpy(p->data + 24, &sum, 8);
    secret_of(dir, k);
    uint64_t mac = ssmax_cache_mac(k, key ? key : p->key, p->data + HEAD, size);
    memcpy(p->data + 32, &mac, 8);
}

/* ---- the tests ---- */

static unsigned char *good;
static size_t good_size;

/* A fresh cache directory, and the file a first device writes in it. */
static int setup(void **state)
{
    (void)state;
    return dir_make("pcache");
}

static int teardown(void **state)
{
    (void)state;
    free(good);
    good = NULL;
    return dir_remove();
}

/* The first device (validation on) writes the file; skips the test without a Vulkan device. */
static void first_run(void)
{
    struct logcap lc;
    int st = run_checked(dir, RUN_ATTN, &lc);
    if (st == 77)
        skip();
    assert_int_equal(st, 0);
    assert_int_equal(lc.loaded, 0);
    assert_int_equal(lc.wrote, 1);
    struct pfile p;
    pfile_good(dir, &p);
    good = p.data, good_size = p.size;
    printf("# %s: %zu bytes of driver data\n", p.path, good_size - HEAD);
}

static void test_written_then_loaded(void **state)
{
    (void)state;
    first_run();
    // A new process loads it (the child's exit status says so) and runs correctly.
    assert_int_equal(wait_child(spawn_child(dir)), 11);
    // A new context without the validation layer loads the same file; the same pipelines leave
    // the driver's data as it was, so nothing is written.
    struct logcap lc;
    assert_int_equal(run_ctx(dir, RUN_ATTN, &lc), 0);
    assert_int_equal(lc.loaded, 1);
    assert_int_equal(lc.ignored, 0);
    assert_int_equal(lc.wrote, 0);
    struct pfile p;
    pfile_good(dir, &p);
    assert_int_equal(p.size, good_size);
    assert_memory_equal(p.data, good, good_size);
    free(p.data);
}

/* Damage: what it does to the good file p (p->data and p->size, written by the caller unless
 * it makes something else in p->path itself and returns 1). */
typedef int (*damage_fn)(struct pfile *p);

static int d_truncated(struct pfile *p)
{
    p->size -= 1;
    return 0;
}

static int d_truncated_half(struct pfile *p)
{
    p->size = HEAD + (p->size - HEAD) / 2;
    return 0;
}

static int d_flipped_payload(struct pfile *p)
{
    p->data[p->size - 1] ^= 0x01;
    return 0;
}

static int d_edited_payload(struct pfile *p) // the fnv64 recomputed: only the keyed hash sees it
{
    p->data[HEAD + 20] ^= 0x40;
    uint64_t sum = ssmax_fnv64(p->data + HEAD, p->size - HEAD, SSMAX_FNV64_INIT);
    memcpy(p->data + 24, &sum, 8);
    return 0;
}

/* Vulkan header fields changed and the file sealed with the secret: only the header check sees
 * them. VkPipelineCacheHeaderVersionOne: size, version, vendorID, deviceID, UUID at 16. */
static int forge_word(struct pfile *p, size_t off, uint32_t v)
{
    memcpy(p->data + HEAD + off, &v, 4);
    pfile_seal(p, NULL);
    return 0;
}

static int d_uuid(struct pfile *p)
{
    p->data[HEAD + 16 + 5] ^= 0x10;
    pfile_seal(p, NULL);
    return 0;
}

static int d_header_size(struct pfile *p) { return forge_word(p, 0, 16); }
static int d_header_version(struct pfile *p) { return forge_word(p, 4, 2); }
static int d_vendor(struct pfile *p)
{
    uint32_t v;
    memcpy(&v, p->data + HEAD + 8, 4);
    return forge_word(p, 8, v ^ 0x1000);
}
static int d_device(struct pfile *p)
{
    uint32_t v;
    memcpy(&v, p->data + HEAD + 12, 4);
    return forge_word(p, 12, v + 1);
}

static int d_foreign_key(struct pfile *p) // another device's file under this one's name
{
    pfile_seal(p, "vk-1002-73bf-00800000-00000000000000000000000000000000");
    return 0;
}

static int d_magic(struct pfile *p)
{
    p->data[3] = 'Q';
    return 0;
}

static int d_version(struct pfile *p)
{
    p->data[8] = 2;
    return 0;
}

static int d_huge_length(struct pfile *p)
{
    uint64_t big = 1ull << 62;
    memcpy(p->data + 16, &big, 8);
    return 0;
}

static int d_cap_length(struct pfile *p) // a file as long as its size field, over the cap
{
    uint64_t big = (32u << 20) + 8;
    unsigned char *n = calloc(HEAD + big, 1);
    assert_non_null(n);
    memcpy(n, p->data, p->size);
    memcpy(n + 16, &big, 8);
    free(p->data);
    p->data = n, p->size = HEAD + big;
    return 0;
}

static int d_empty(struct pfile *p)
{
    p->size = 0;
    return 0;
}

static int d_random(struct pfile *p)
{
    uint64_t s = 99;
    unsigned char *n = malloc(4096);
    assert_non_null(n);
    for (int i = 0; i < 4096; i++)
        n[i] = (unsigned char)h_rand(&s);
    free(p->data);
    p->data = n, p->size = 4096;
    return 0;
}

static int d_directory(struct pfile *p)
{
    assert_int_equal(unlink(p->path), 0);
    assert_int_equal(mkdir(p->path, 0755), 0);
    return 1;
}

static const struct {
    const char *name;
    damage_fn fn;
} damages[] = {
    { "truncated by a byte", d_truncated },
    { "truncated to half", d_truncated_half },
    { "a byte flipped in the driver's data", d_flipped_payload },
    { "the driver's data edited, fnv64 recomputed", d_edited_payload },
    { "another pipelineCacheUUID, sealed", d_uuid },
    { "Vulkan header size 16, sealed", d_header_size },
    { "Vulkan header version 2, sealed", d_header_version },
    { "another vendorID, sealed", d_vendor },
    { "another deviceID, sealed", d_device },
    { "sealed under another device's key", d_foreign_key },
    { "wrong magic", d_magic },
    { "wrong version", d_version },
    { "huge size field", d_huge_length },
    { "over the size cap", d_cap_length },
    { "empty", d_empty },
    { "random bytes", d_random },
    { "an empty directory in its place", d_directory },
};

static void test_damaged(void **state)
{
    (void)state;
    first_run();
    for (size_t i = 0; i < SSMAX_ARRAY_LEN(damages); i++) {
        printf("# damage: %s\n", damages[i].name);
        struct pfile p;
        assert_int_equal(pfile_find(dir, &p), 0);
        p.data = malloc(good_size);
        assert_non_null(p.data);
        memcpy(p.data, good, good_size);
        p.size = good_size;
        pfile_write(&p); // the good file again, then the damage
        int made = damages[i].fn(&p);
        if (!made)
            pfile_write(&p);
        struct logcap lc;
        assert_int_equal(run_checked(dir, RUN_ATTN, &lc), 0); // correct, no validation errors
        if (lc.ignored != 1 || lc.loaded || lc.refused || lc.wrote != 1)
            fail_msg("%s: ignored %d, loaded %d, refused %d, wrote %d (want 1, 0, 0, 1)",
                     damages[i].name, lc.ignored, lc.loaded, lc.refused, lc.wrote);
        struct pfile now;
        pfile_good(dir, &now); // rewritten whole (and a regular file again)
        if (!made && now.size == p.size && !memcmp(now.data, p.data, p.size))
            fail_msg("%s: the damaged file is still there", damages[i].name);
        free(now.data);
        free(p.data);
        assert_int_equal(run_ctx(dir, 0, &lc), 0); // and loaded by the next device
        assert_int_equal(lc.loaded, 1);
        assert_int_equal(lc.ignored, 0);
    }
}

/* A directory with something in it where the file belongs: left alone (ignored, not written),
 * and the device still runs correctly. */
static void test_busy_directory(void **state)
{
    (void)state;
    first_run();
    struct pfile p;
    assert_int_equal(pfile_find(dir, &p), 0);
    assert_int_equal(unlink(p.path), 0);
    assert_int_equal(mkdir(p.path, 0755), 0);
    char inner[1300];
    snprintf(inner, sizeof(inner), "%s/keep", p.path);
    FILE *f = fopen(inner, "w");
    assert_non_null(f);
    fclose(f);
    struct logcap lc;
    assert_int_equal(run_checked(dir, RUN_ATTN, &lc), 0);
    assert_int_equal(lc.ignored, 1);
    assert_int_equal(lc.loaded, 0);
    assert_int_equal(lc.nowrite, 1);
    struct stat st;
    assert_int_equal(stat(inner, &st), 0);
}

/* Driver data over the cap (lowered by the test hook ssmax_vk_pcache_cap_set, as lavapipe's is 32
 * bytes): the file is not loaded, not written, and removed so the next process starts afresh. */
static void test_over_cap(void **state)
{
    (void)state;
    first_run();
    struct logcap lc;
    ssmax_vk_pcache_cap_set(16);
    int st = run_checked(dir, RUN_ATTN, &lc);
    ssmax_vk_pcache_cap_set(0);
    assert_int_equal(st, 0);
    assert_int_equal(lc.ignored, 1);
    assert_int_equal(lc.loaded + lc.wrote, 0);
    assert_int_equal(lc.overcap, 1);
    struct pfile p;
    assert_int_equal(pfile_find(dir, &p), -1);
    assert_int_equal(run_ctx(dir, RUN_ATTN, &lc), 0); // and the next device writes it anew
    assert_int_equal(lc.wrote, 1);
    pfile_good(dir, &p);
    free(p.data);
}

/* Pipelines made only through the statistics path (`ssmax pipelines`) are cached and saved too. */
static void test_pipelines_path(void **state)
{
    (void)state;
    struct logcap lc;
    int st = run_checked(dir, RUN_PIPELINES, &lc);
    if (st == 77)
        skip();
    assert_int_equal(st, 0);
    assert_int_equal(lc.wrote, 1);
    struct pfile p;
    pfile_good(dir, &p);
    free(p.data);
}

/* SSMAX_VK_PIPELINE_CACHE=0, and no cache directory at all: nothing read or written, correct
 * results. */
static void test_off(void **state)
{
    (void)state;
    struct logcap lc;
    setenv("SSMAX_VK_PIPELINE_CACHE", "0", 1);
    int st = run_checked(dir, RUN_ATTN, &lc);
    unsetenv("SSMAX_VK_PIPELINE_CACHE");
    if (st == 77)
        skip();
    assert_int_equal(st, 0);
    assert_int_equal(lc.loaded + lc.wrote + lc.ignored, 0);
    struct pfile p;
    assert_int_equal(pfile_find(dir, &p), -1);

    const char *names[] = { "SSMAX_CACHE_DIR", "XDG_CACHE_HOME", "HOME" };
    char *saved[3];
    for (int i = 0; i < 3; i++) {
        const char *v = getenv(names[i]);
        saved[i] = v ? strdup(v) : NULL;
        unsetenv(names[i]);
    }
    st = run_checked(NULL, RUN_ATTN, &lc);
    for (int i = 0; i < 3; i++) {
        if (saved[i])
            setenv(names[i], saved[i], 1);
        free(saved[i]);
    }
    assert_int_equal(st, 0);
    assert_int_equal(lc.loaded + lc.wrote + lc.ignored, 0);
}

/* Writers racing on one file: every read sees one writer's whole file. Four processes write
 * distinct 1 MiB contents to the same path through ssmax_cache_write while this one reads. */
static void test_concurrent_writes(void **state)
{
    (void)state;
    char path[1200];
    snprintf(path, sizeof(path), "%s/race.bin", dir);
    enum { WRITERS = 4, ROUNDS = 40, WORDS = 1 << 18 };
    pid_t pids[WRITERS];
    fflush(NULL);
    for (int w = 0; w < WRITERS; w++) {
        pids[w] = fork();
        if (pids[w] == 0) {
            uint32_t *buf = malloc(WORDS * 4);
            if (!buf)
                _exit(1);
            for (int r = 0; r < ROUNDS; r++) {
                for (uint32_t i = 0; i < WORDS; i++)
                    buf[i] = (uint32_t)(w * 1000 + r) ^ (i * 2654435761u);
                const void *parts[] = { buf, buf + WORDS / 2 };
                const size_t sizes[] = { WORDS * 2, WORDS * 2 };
                if (ssmax_cache_write(path, parts, sizes, 2) != 0)
                    _exit(2);
            }
            _exit(0);
        }
        assert_true(pids[w] > 0);
    }
    int reads = 0, done = 0;
    while (done < WRITERS) {
        unsigned char *d;
        size_t n;
        if (read_all(path, &d, &n) == 0) {
            if (n != WORDS * 4)
                fail_msg("a read saw %zu bytes (want %d)", n, WORDS * 4);
            uint32_t first, seed, x;
            memcpy(&first, d, 4);
            seed = first; // i = 0: the writer's tag
            for (uint32_t i = 0; i < WORDS; i++) {
                memcpy(&x, d + 4 * (size_t)i, 4);
                if (x != (seed ^ (i * 2654435761u)))
                    fail_msg("a torn file: word %u of %d is another writer's", i, WORDS);
            }
            reads++;
        }
        free(d);
        done = 0;
        for (int w = 0; w < WRITERS; w++) {
            if (pids[w] > 0 && waitpid(pids[w], NULL, WNOHANG) == pids[w])
                pids[w] = -1;
            done += pids[w] < 0;
        }
    }
    printf("# %d whole reads while %d writers wrote %d files each\n", reads, WRITERS, ROUNDS);
    assert_true(reads > 0);
    struct pfile p;
    assert_int_equal(pfile_find(dir, &p), -1); // and no temporary file left (pfile_find checks)

    // The same through the library: devices in three processes write the first file at once.
    pid_t c[3];
    for (int i = 0; i < 3; i++)
        c[i] = spawn_child(dir);
    for (int i = 0; i < 3; i++) {
        int st = wait_child(c[i]);
        if (st == 77)
            skip();
        assert_true(st == 10 || st == 11); // 11: it started after another had written the file
    }
    pfile_good(dir, &p);
    free(p.data);
    assert_int_equal(wait_child(spawn_child(dir)), 11);
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "run"))
        return child_main(argv[2]);
    if (self_find() < 0)
        return 77;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_written_then_loaded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_damaged, setup, teardown),
        cmocka_unit_test_setup_teardown(test_busy_directory, setup, teardown),
        cmocka_unit_test_setup_teardown(test_over_cap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pipelines_path, setup, teardown),
        cmocka_unit_test_setup_teardown(test_off, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_writes, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
