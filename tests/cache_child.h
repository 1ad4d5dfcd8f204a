/* What the cache tests (test_pcache.c, test_clcache.c) share: each runs copies of itself ("run
 * DIR") as child processes on a temporary cache directory, and reads the files they leave. Include
 * after cmocka.h; the including file defines its child's work and calls self_find from main. */
#ifndef SSMAX_TESTS_CACHE_CHILD_H
#define SSMAX_TESTS_CACHE_CHILD_H

#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char self[4096]; // this test binary
static char dir[1024];  // the test's cache directory

/* This binary's path into self: 0, or -1 when /proc cannot tell it. */
static int self_find(void)
{
    ssize_t len = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (len <= 0)
        return -1;
    self[len] = 0;
    return 0;
}

/* A child running "self run d", without core files (some tests crash their children). */
static pid_t spawn_child(const char *d)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        struct rlimit no_core = { 0, 0 };
        setrlimit(RLIMIT_CORE, &no_core);
        execl(self, self, "run", d, (char *)NULL);
        _exit(127);
    }
    assert_true(pid > 0);
    return pid;
}

/* Its exit status, or 128 + the signal that killed it. */
static int wait_child(pid_t pid)
{
    int ws = 0;
    assert_int_equal(waitpid(pid, &ws, 0), pid);
    return WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + (WIFSIGNALED(ws) ? WTERMSIG(ws) : 0);
}

static inline int run_child(const char *d)
{
    return wait_child(spawn_child(d));
}

/* A whole file into *data (malloc'ed, *size bytes, maybe 0): 0, or -1 when it cannot be read. */
static int read_all(const char *path, unsigned char **data, size_t *size)
{
    *data = NULL, *size = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    *data = malloc(n > 0 ? (size_t)n : 1);
    int ok = n >= 0 && *data && (n == 0 || fread(*data, 1, (size_t)n, f) == (size_t)n);
    *size = ok ? (size_t)n : 0;
    fclose(f);
    return ok ? 0 : -1;
}

/* dir: a new directory NAME-XXXXXX under $SSMAX_CACHE_DIR (or /tmp); 0, or -1. */
static int dir_make(const char *name)
{
    const char *base = getenv("SSMAX_CACHE_DIR");
    snprintf(dir, sizeof(dir), "%s/%s-XXXXXX", base && *base ? base : "/tmp", name);
    mkdir(base && *base ? base : "/tmp", 0755);
    return mkdtemp(dir) ? 0 : -1;
}

static int dir_remove(void)
{
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

#endif
