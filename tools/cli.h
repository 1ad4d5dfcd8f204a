/* Shared bits of the ssmax command-line tool. */
#ifndef SSMAX_CLI_H
#define SSMAX_CLI_H

#include "ssmax/ssmax.h"

enum { EXIT_OK = 0, EXIT_BAD_INPUT = 2, EXIT_MISMATCH = 3, EXIT_DEVICE = 4 };

/* Maps a library error to the CLI's exit code. */
int cli_exit_code(int err);
/* Parses "softmax|ssmax|ssmax-bias|logn|floor-log"; -1 if unknown. */
int cli_parse_mode(const char *s);
/* Parses "auto|fused|split-kv|unfused"; -1 if unknown. */
int cli_parse_path(const char *s);
/* Strict unsigned/float parsing; 0 on success. */
int cli_parse_u32(const char *s, uint32_t *out);
int cli_parse_float(const char *s, float *out);
ssmax_context *cli_context(int *code);
int cmd_bench(int argc, char **argv);

#endif
