/* libFuzzer target: `ssmax run` argument parsing and device-spec strings. The input is split at
 * NUL bytes into argv. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "ssmax/ssmax.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static ssmax_context *ctx;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!ctx) {
        struct ssmax_context_params cp;
        ssmax_context_params_default(&cp);
        cp.backends = SSMAX_BACKEND_CPU_BIT;
        if (ssmax_context_create(&cp, &ctx) < 0)
            abort();
    }
    char *buf = malloc(size + 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    buf[size] = 0;
    char *argv[64];
    int argc = 0;
    for (size_t i = 0; i <= size && argc < 64;) {
        argv[argc++] = buf + i;
        i += strlen(buf + i) + 1;
    }
    struct run_opts o;
    if (run_parse_args(argc, argv, &o, NULL) == 0) {
        char msg[256];
        ssmax_attn_validate(&o.p, msg, sizeof(msg));
    }
    for (int i = 0; i < argc; i++)
        ssmax_device_find(ctx, argv[i]);
    free(buf);
    return 0;
}
