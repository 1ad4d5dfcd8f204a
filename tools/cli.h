/* Shared bits of the ssmax command-line tool. */
#ifndef SSMAX_CLI_H
#define SSMAX_CLI_H

#include <stdio.h>

#include "ssmax/ssmax.h"

enum { EXIT_OK = 0, EXIT_BAD_INPUT = 2, EXIT_MISMATCH = 3, EXIT_DEVICE = 4 };

/* Maps a library error to the CLI's exit code. */
int cli_exit_code(int err);
/* Parses a mode or path name (src/names.h); -1 if unknown. */
int cli_parse_mode(const char *s);
int cli_parse_path(const char *s);
/* The mode (paths 0) or path (1) names joined by sep, the last by last ("a, b or c"), into out. */
const char *cli_names(int paths, const char *sep, const char *last, char *out, size_t n);
/* Writes a help text, with {MODES} and {PATHS} spelled out ("softmax|ssmax|..."). */
void cli_usage(FILE *f, const char *text);
/* Strict unsigned/float parsing; 0 on success. Integers are decimal digits only (no sign, space
 * or prefix), within range. */
int cli_parse_u64(const char *s, uint64_t *out);
int cli_parse_u32(const char *s, uint32_t *out);
int cli_parse_float(const char *s, float *out);
ssmax_context *cli_context(int *code);
/* The index of the device spec names (NULL: $SSMAX_DEVICE or auto), or -1 after printing
 * "CMD: message": a spec that names no device on this machine is bad input (exit 2). */
int cli_find_device(ssmax_context *ctx, const char *cmd, const char *spec);
/* s as a JSON string, escaped. */
void cli_json_str(FILE *f, const char *s);

/* `ssmax run` options, parsed without touching any file or device (fuzzed on its own). */
struct run_opts {
    const char *q, *k, *v, *out, *lse, *probs, *device, *s, *b;
    const char *mask, *sinks, *kv_lens, *q_pos_file; // SPEC.md section 7 (files, or a number)
    int check, quiet, verbose;
    int blhd; // --layout blhd: Q, K, V and O files are [B, L, H, D]
    struct ssmax_attn_params p;
};
/* 0 ok, 1 --help, -1 bad arguments (message written to err when not NULL). */
int run_parse_args(int argc, char **argv, struct run_opts *o, FILE *err);
int cmd_bench(int argc, char **argv);
int cmd_pipelines(int argc, char **argv);
int cmd_fading(int argc, char **argv);
/* A device that compiles but cannot run (info.compile_only) given to a command that runs work:
 * prints "CMD: vulkan:N (NAME) compiles pipelines but cannot run them: WHY" and returns 1 (the
 * command then exits EXIT_DEVICE); 0 for any other device. Opens the device to learn why. */
int cli_refuse_compile_only(ssmax_context *ctx, const char *cmd, int idx);
/* The devices a command that runs work takes for spec into devs (room for every device), their
 * count into *nd: "all" is every device that can run (with_cpu 0: the GPU-API ones only), else
 * the one device spec names, which must be able to run. 0, or the exit code after printing why
 * (EXIT_BAD_INPUT: no such device; EXIT_DEVICE: it compiles but cannot run). */
int cli_run_devices(ssmax_context *ctx, const char *cmd, const char *spec, int with_cpu,
                    int *devs, int *nd);

#endif
