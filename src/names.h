/*
 * The names of the attention modes and paths, in one table each: the library's messages, the test
 * harness and the CLI's parser and output all spell them from here. Header-only (and free of the
 * library's internals) so the tools can include it without reaching into the core.
 */
#ifndef SSMAX_NAMES_H
#define SSMAX_NAMES_H

#include <string.h>

#include "ssmax/ssmax.h"

/* Indexed by enum ssmax_mode and enum ssmax_path. Function-local so a file that uses one table
 * does not warn about the other. */
#define SSMAX_MODE_NAMES { "softmax", "ssmax", "ssmax-bias", "logn", "floor-log" }
#define SSMAX_PATH_NAMES { "auto", "fused", "split-kv", "unfused" }

static inline const char *ssmax_mode_name(enum ssmax_mode m)
{
    static const char *const n[] = SSMAX_MODE_NAMES;
    return (unsigned)m < sizeof(n) / sizeof(n[0]) ? n[m] : "?";
}

static inline const char *ssmax_path_name(enum ssmax_path p)
{
    static const char *const n[] = SSMAX_PATH_NAMES;
    return (unsigned)p < sizeof(n) / sizeof(n[0]) ? n[p] : "?";
}

/* The enum value s names, or -1. */
static inline int ssmax_mode_parse(const char *s)
{
    static const char *const n[] = SSMAX_MODE_NAMES;
    for (int i = 0; i < (int)(sizeof(n) / sizeof(n[0])); i++)
        if (!strcmp(s, n[i]))
            return i;
    return -1;
}

static inline int ssmax_path_parse(const char *s)
{
    static const char *const n[] = SSMAX_PATH_NAMES;
    for (int i = 0; i < (int)(sizeof(n) / sizeof(n[0])); i++)
        if (!strcmp(s, n[i]))
            return i;
    return -1;
}

#endif
