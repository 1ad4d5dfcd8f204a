/*
 * ssmax: the command-line tool (DESIGN.md CLI contract). Uses only the public API.
 *   ssmax devices [--json]
 *   ssmax run --q Q.npy --k K.npy --v V.npy --out O.npy [options]
 *   ssmax verify [--device all|SPEC]
 *   ssmax bench [...]
 *   ssmax pipelines [--device SPEC] [--json FILE] [--spirv DIR]
 *   ssmax fading [...]
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "harness.h"
#include "npy.h"
#include "ssmax/ssmax.h"

static const char *usage_main =
    "usage: ssmax <command> [options]\n"
    "\n"
    "Attention with Scalable-Softmax (SSMax) on Vulkan, OpenCL and the CPU.\n"
    "\n"
    "commands:\n"
    "  devices [--json]        list every Vulkan, OpenCL and CPU device with its limits\n"
    "  run --q Q.npy --k K.npy --v V.npy --out O.npy [options]\n"
    "                          compute attention on .npy files (ssmax run --help)\n"
    "  verify [--device all|SPEC]\n"
    "                          self-test against the float64 reference on each device\n"
    "  bench [options]         verify, then time attention (ssmax bench --help)\n"
    "  pipelines [--device SPEC] [--json FILE] [--spirv DIR]\n"
    "                          build every pipeline the planner can choose on a device and print\n"
    "                          the driver's statistics (ssmax pipelines --help)\n"
    "  fading [options]        attention fading (the SSMax paper's Figure 1) measured on each\n"
    "                          device beside its closed form (ssmax fading --help)\n"
    "  --version               print the library version\n"
    "\n"
    "Environment: SSMAX_DEVICE (default device), SSMAX_VALIDATION=1 (Vulkan validation layer),\n"
    "SSMAX_CACHE_DIR (OpenCL binaries, Vulkan pipeline cache). Exit codes: 0 ok, 2 bad input,\n"
    "3 check mismatch, 4 device failure.\n";

static const char *usage_run =
    "usage: ssmax run --q Q.npy --k K.npy --v V.npy --out O.npy [options]\n"
    "\n"
    "  Q: .npy float32 or float16, C order [B,Hq,Lq,D]; K, V: [B,Hkv,Lk,D], same dtype as Q.\n"
    "  O is written with Q's dtype and shape.\n"
    "  --layout bhld|blhd            blhd: Q, K, V and O are [B,L,H,D] (most engines' layout),\n"
    "                                passed to the device strided as they are (default bhld)\n"
    "\n"
    "  --device auto|cpu|vulkan[:N]|opencl[:N]|uuid:HEX\n"
    "                                default $SSMAX_DEVICE or auto (a real GPU first, then vulkan,\n"
    "                                opencl, cpu); uuid: the device UUID `ssmax devices` prints,\n"
    "                                32 hex digits, dashes allowed\n"
    "  --mode {MODES}   default ssmax\n"
    "  --s X|S.npy                   SSMax s: one scalar or float32 [Hq] (default 0.43)\n"
    "  --b X|B.npy                   ssmax-bias b: one scalar or float32 [Hq] (default 0)\n"
    "  --train-len L                 logn training length (default 8192)\n"
    "  --beta X --floor F --pos-offset O   floor-log (defaults 0.1, 8192, 1)\n"
    "  --causal                      row i sees keys 0..q_pos+i\n"
    "  --q-pos P|P.npy               absolute position of query row 0 (default Lk-Lq); or int32\n"
    "                                or int64 [B], one per batch item (SPEC.md section 7.2)\n"
    "  --kv-lens L.npy               int32 [B]: keys of each batch item, each in [1, Lk] (a\n"
    "                                padded batch; keys past an item's length are never read)\n"
    "  --window W                    sliding window (with --causal): row at p sees keys > p-W\n"
    "  --softcap C                   soft-capping: logit z becomes C*tanh(z/C), after the factor\n"
    "  --sinks X|S.npy               sink logit per query head (one scalar or float32 [Hq]): in\n"
    "                                the softmax's denominator only\n"
    "  --mask M.npy                  additive mask, float32 or float16, [Lq,Lk], [B,1,Lq,Lk] or\n"
    "                                [B,Hq,Lq,Lk]; -inf hides a key (and takes it out of n)\n"
    "  --scale C                     softmax scale (default 1/sqrt(D))\n"
    "  --path {PATHS}   (default auto)\n"
    "  --splits N                    split-KV pieces (default: planner's choice)\n"
    "  --lse LSE.npy                 write float32 [B,Hq,Lq] log-sum-exp (natural log)\n"
    "  --probs P.npy                 write float32 [B,Hq,Lq,Lk] attention weights (unfused path)\n"
    "  --check                       compare with the CPU float64 reference, print NMSE,\n"
    "                                exit 3 on mismatch (SPEC.md section 6 tolerances)\n"
    "  --quiet                       print nothing on success\n"
    "  -v, --verbose                 also print the plan: kernel, tiles, submissions, scratch,\n"
    "                                and the reason for each choice\n"
    "\n"
    "  The outputs are written all or nothing: temporary files beside the targets, renamed into\n"
    "  place once every output is written; none may be an input or another output.\n"
    "\n"
    "Exit codes: 0 ok, 2 bad input (options, input files, a device spec naming no device, an\n"
    "output that cannot be written), 3 check mismatch, 4 device failure.\n";

static const char *usage_devices =
    "usage: ssmax devices [--json]\n"
    "List every Vulkan, OpenCL and CPU device with its limits and its device and driver UUIDs\n"
    "(JSON: \"device_uuid\", \"driver_uuid\": 8-4-4-4-12 hex strings, or null where the device\n"
    "reports none); --device uuid:HEX names a device by its UUID. A device marked \"compile\n"
    "only\" (JSON: \"compile_only\": true) builds pipelines but cannot run them (RADV's null\n"
    "hardware under RADV_FORCE_FAMILY is one): `ssmax pipelines --device` takes it, run, verify\n"
    "and bench refuse it (exit 4), and auto never picks it.\n";

static const char *usage_verify =
    "usage: ssmax verify [--device all|SPEC] [--seed N]\n"
    "Runs a seeded set of attention problems (all modes, f32/f16, causal, GQA, odd sizes, every\n"
    "path) on each device (all: each that can run; a device that only compiles is refused when\n"
    "named) and compares with the float64 reference. Exit 0 if all pass, 2 for a bad option or a\n"
    "device spec naming no device, 3 if any mismatches, 4 if a device fails.\n";

int cli_exit_code(int err)
{
    switch (err) {
    case SSMAX_OK: return EXIT_OK;
    case SSMAX_ERR_INVALID_ARG:
    case SSMAX_ERR_UNSUPPORTED:
    case SSMAX_ERR_LIMIT_EXCEEDED: return EXIT_BAD_INPUT;
    default: return EXIT_DEVICE;
    }
}

static void log_to_stderr(void *priv, enum ssmax_log_level lvl, const char *msg)
{
    (void)priv;
    static const char *n[] = { "", "error", "warning", "info", "debug" };
    fprintf(stderr, "ssmax %s: %s\n", n[lvl], msg);
}

ssmax_context *cli_context(int *code)
{
    struct ssmax_context_params cp;
    ssmax_context_params_default(&cp);
    cp.log_cb = log_to_stderr;
    const char *lv = getenv("SSMAX_LOG");
    cp.log_level = lv ? (enum ssmax_log_level)atoi(lv) : SSMAX_LOG_NONE;
    if ((unsigned)cp.log_level > SSMAX_LOG_DEBUG)
        cp.log_level = SSMAX_LOG_DEBUG;
    ssmax_context *ctx = NULL;
    int r = ssmax_context_create(&cp, &ctx);
    if (r < 0) {
        fprintf(stderr, "ssmax: cannot create a context: %s\n", ssmax_last_error(NULL));
        *code = cli_exit_code(r);
        return NULL;
    }
    return ctx;
}

static const char *type_name(enum ssmax_device_type t)
{
    static const char *n[] = { "other", "integrated-gpu", "discrete-gpu", "virtual-gpu", "cpu" };
    return (unsigned)t < 5 ? n[t] : "?";
}

static const char *backend_name(enum ssmax_backend b)
{
    return b == SSMAX_BACKEND_VULKAN ? "vulkan" : b == SSMAX_BACKEND_OPENCL ? "opencl" : "cpu";
}

int cli_refuse_compile_only(ssmax_context *ctx, const char *cmd, int idx)
{
    struct ssmax_device_info d;
    if (ssmax_device_get_info(ctx, idx, &d) < 0 || !d.compile_only)
        return 0;
    // The library names the device and why: any call that needs to run says so.
    struct ssmax_attn_params p;
    ssmax_attn_params_default(&p);
    p.batch = p.q_heads = p.kv_heads = p.q_len = p.kv_len = 1;
    p.head_dim = 8;
    if (ssmax_device_open(ctx, idx) < 0 || ssmax_attn_supported(ctx, &p) < 0)
        fprintf(stderr, "%s: %s\n", cmd, ssmax_last_error(ctx));
    else
        fprintf(stderr, "%s: %s:%d (%s) compiles pipelines but cannot run them\n", cmd,
                backend_name(d.backend), d.index, d.name);
    return 1;
}

int cli_find_device(ssmax_context *ctx, const char *cmd, const char *spec)
{
    int idx = ssmax_device_find(ctx, spec);
    if (idx < 0)
        fprintf(stderr, "%s: %s\n", cmd, ssmax_last_error(ctx));
    return idx < 0 ? -1 : idx;
}

int cli_run_devices(ssmax_context *ctx, const char *cmd, const char *spec, int with_cpu,
                    int *devs, int *nd)
{
    *nd = 0;
    if (spec && !strcmp(spec, "all")) {
        for (int i = 0, n = ssmax_device_count(ctx); i < n; i++) {
            struct ssmax_device_info d;
            ssmax_device_get_info(ctx, i, &d);
            if ((with_cpu || d.backend != SSMAX_BACKEND_CPU) && !d.compile_only)
                devs[(*nd)++] = i;
        }
        return 0;
    }
    int i = cli_find_device(ctx, cmd, spec);
    if (i < 0)
        return EXIT_BAD_INPUT;
    if (cli_refuse_compile_only(ctx, cmd, i))
        return EXIT_DEVICE;
    devs[(*nd)++] = i;
    return 0;
}

void cli_json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            fprintf(f, "\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            fprintf(f, "\\u%04x", *s);
        else
            fputc(*s, f);
    }
    fputc('"', f);
}

/* A UUID in the 8-4-4-4-12 form, or "none" when the device reports none. */
static const char *uuid_text(const uint8_t u[16], int known, char out[37])
{
    if (!known)
        return "none";
    char *p = out;
    for (int i = 0; i < 16; i++)
        p += sprintf(p, "%s%02x", i == 4 || i == 6 || i == 8 || i == 10 ? "-" : "", u[i]);
    return out;
}

/* ", "KEY": "UUID"", or null when the device reports none (hex digits and dashes: no escapes). */
static void json_uuid(const char *key, const char *text, int known)
{
    if (known)
        printf(", \"%s\": \"%s\"", key, text);
    else
        printf(", \"%s\": null", key);
}

static int cmd_devices(int argc, char **argv)
{
    int json = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            json = 1;
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            cli_usage(stdout, usage_devices);
            return 0;
        } else {
            fprintf(stderr, "ssmax devices: unknown option '%s'\n", argv[i]);
            cli_usage(stderr, usage_devices);
            return EXIT_BAD_INPUT;
        }
    }
    int code = 0;
    ssmax_context *ctx = cli_context(&code);
    if (!ctx)
        return code;
    int n = ssmax_device_count(ctx), best = ssmax_device_find(ctx, "auto");
    if (json)
        printf("[\n");
    for (int i = 0; i < n; i++) {
        struct ssmax_device_info d;
        ssmax_device_get_info(ctx, i, &d);
        char spec[32], dev_buf[37], drv_buf[37];
        snprintf(spec, sizeof(spec), d.backend == SSMAX_BACKEND_CPU ? "%s" : "%s:%d",
                 backend_name(d.backend), d.index);
        const char *dev_uuid = uuid_text(d.device_uuid, d.has_device_uuid, dev_buf);
        const char *drv_uuid = uuid_text(d.driver_uuid, d.has_driver_uuid, drv_buf);
        if (json) {
            printf("  {\"spec\": ");
            cli_json_str(stdout, spec);
            printf(", \"backend\": \"%s\", \"index\": %d, \"name\": ", backend_name(d.backend),
                   d.index);
            cli_json_str(stdout, d.name);
            printf(", \"vendor\": ");
            cli_json_str(stdout, d.vendor);
            printf(", \"type\": \"%s\", \"api_version\": ", type_name(d.type));
            cli_json_str(stdout, d.api_version);
            printf(", \"driver_version\": ");
            cli_json_str(stdout, d.driver_version);
            json_uuid("device_uuid", dev_uuid, d.has_device_uuid);
            json_uuid("driver_uuid", drv_uuid, d.has_driver_uuid);
            printf(", \"vendor_id\": %u, \"device_id\": %u, \"compute_units\": %u, "
                   "\"subgroup_size\": %u, \"max_workgroup_size\": %u, \"shared_memory\": %llu, "
                   "\"max_buffer_size\": %llu, \"max_alloc_size\": %llu, \"global_memory\": %llu, "
                   "\"fp16_arith\": %s, \"fp16_storage\": %s, \"subgroups\": %s, "
                   "\"compile_only\": %s, \"auto\": %s}%s\n",
                   d.vendor_id, d.device_id, d.compute_units, d.subgroup_size, d.max_workgroup_size,
                   (unsigned long long)d.shared_memory, (unsigned long long)d.max_buffer_size,
                   (unsigned long long)d.max_alloc_size, (unsigned long long)d.global_memory,
                   d.fp16_arith ? "true" : "false", d.fp16_storage ? "true" : "false",
                   d.subgroups ? "true" : "false", d.compile_only ? "true" : "false",
                   i == best ? "true" : "false",
                   i + 1 < n ? "," : "");
        } else {
            printf("%s%-10s %s%s\n", i == best ? "* " : "  ", spec, d.name,
                   d.compile_only ? "  [compile only: builds pipelines, cannot run them]" : "");
            printf("    vendor %s (0x%04x), type %s, %s, driver %s\n", d.vendor, d.vendor_id,
                   type_name(d.type), d.api_version, d.driver_version);
            printf("    device UUID %s, driver UUID %s\n", dev_uuid, drv_uuid);
            printf("    compute units %u, subgroup %u, workgroup <= %u, shared memory %llu KiB\n",
                   d.compute_units, d.subgroup_size, d.max_workgroup_size,
                   (unsigned long long)d.shared_memory / 1024);
            printf("    max buffer %llu MiB, max alloc %llu MiB, fp16 arith %s, fp16 storage %s, "
                   "subgroups %s\n",
                   (unsigned long long)(d.max_buffer_size >> 20),
                   (unsigned long long)(d.max_alloc_size >> 20), d.fp16_arith ? "yes" : "no",
                   d.fp16_storage ? "yes" : "no", d.subgroups ? "yes" : "no");
        }
    }
    if (json)
        printf("]\n");
    else
        printf("(* = the device \"auto\" picks)\n");
    ssmax_context_destroy(&ctx);
    return 0;
}

/* --s / --b: one number, or a float32 .npy of shape [Hq], [1] or (). */
static int load_per_head(const char *opt, const char *arg, uint32_t hq, float *scalar,
                         float **arr)
{
    if (cli_parse_float(arg, scalar) == 0)
        return 0;
    struct npy_array a;
    char err[512];
    if (npy_read(arg, &a, err, sizeof(err)) < 0) {
        fprintf(stderr, "ssmax run: %s: '%s' is neither a number nor a readable .npy file: %s\n",
                opt, arg, err);
        return -1;
    }
    if (a.esize != 4) {
        fprintf(stderr, "ssmax run: %s: %s must be float32\n", opt, arg);
        npy_free(&a);
        return -1;
    }
    if (a.count == 1) {
        *scalar = ((float *)a.data)[0];
        npy_free(&a);
        return 0;
    }
    if (a.ndim != 1 || a.count != hq) {
        fprintf(stderr, "ssmax run: %s: %s must have shape [%u] (one value per query head)\n", opt,
                arg, hq);
        npy_free(&a);
        return -1;
    }
    *arr = a.data;
    return 0;
}

static int check_dims(const char *name, const struct npy_array *a)
{
    if (a->ndim != 4) {
        fprintf(stderr, "ssmax run: %s: expected 4 dimensions [B,H,L,D], got %d\n", name, a->ndim);
        return -1;
    }
    for (int i = 0; i < 4; i++)
        if (a->shape[i] == 0 || a->shape[i] > UINT32_MAX) {
            fprintf(stderr, "ssmax run: %s: dimension %d is %llu; must be in [1, 2^32)\n", name, i,
                    (unsigned long long)a->shape[i]);
            return -1;
        }
    return 0;
}

static int report_cmp(FILE *msg, const char *what, const struct ssmax_compare *c,
                      double nmse_lim, double abs_lim, int quiet)
{
    int ok = c->nmse <= nmse_lim && c->max_abs <= abs_lim && !c->nonfinite_mismatch;
    if (!quiet || !ok)
        fprintf(msg, "check %s: nmse %.3e (limit %.0e), max_abs %.3e (limit %.3e), non-finite "
               "mismatches %zu: %s\n",
               what, c->nmse, nmse_lim, c->max_abs, abs_lim, c->nonfinite_mismatch,
               ok ? "PASS" : "MISMATCH");
    for (int i = 0; !ok && i < c->n_first_bad; i++)
        fprintf(msg, "  [%zu] expected %.9g got %.9g\n", c->first_bad[i], c->first_ref[i],
                c->first_got[i]);
    return ok;
}

/* SPEC.md section 7 options of `ssmax run`: --sinks, --kv-lens, --q-pos FILE, --mask, into p
 * (arrays the caller frees). -1 after a message naming the option and the problem. */
static int load_inference(const struct run_opts *ro, struct ssmax_attn_params *p, float **sinks,
                          uint32_t **kvl, int64_t **qps, struct npy_array *m)
{
    char err[512];
    if (ro->sinks) {
        float one = 0, *arr = NULL;
        if (load_per_head("--sinks", ro->sinks, p->q_heads, &one, &arr) < 0)
            return -1;
        if (!arr) {
            if (!(arr = malloc(sizeof(float) * p->q_heads)))
                return fprintf(stderr, "ssmax run: out of host memory\n"), -1;
            for (uint32_t h = 0; h < p->q_heads; h++)
                arr[h] = one;
        }
        *sinks = arr;
        p->sinks = arr;
    }
    const char *files[2] = { ro->kv_lens, ro->q_pos_file };
    for (int f = 0; f < 2; f++) {
        if (!files[f])
            continue;
        const char *opt = f ? "--q-pos" : "--kv-lens";
        struct npy_array a;
        if (npy_read_ints(files[f], &a, err, sizeof(err)) < 0) {
            fprintf(stderr, "ssmax run: %s: %s\n", opt, err);
            return -1;
        }
        if (a.ndim != 1 || a.count != p->batch || (f == 0 && a.esize != 4)) {
            fprintf(stderr, "ssmax run: %s: %s must be %s [%u] (one value per batch item)\n", opt,
                    files[f], f ? "int32 or int64" : "int32", p->batch);
            npy_free(&a);
            return -1;
        }
        int64_t *v64 = malloc(sizeof(int64_t) * p->batch);
        if (!v64) {
            npy_free(&a);
            return fprintf(stderr, "ssmax run: out of host memory\n"), -1;
        }
        for (uint32_t b = 0; b < p->batch; b++)
            v64[b] = a.esize == 8 ? ((int64_t *)a.data)[b] : ((int32_t *)a.data)[b];
        npy_free(&a);
        for (uint32_t b = 0; b < p->batch; b++)
            if (v64[b] < 0) {
                fprintf(stderr, "ssmax run: %s: %s[%u] is %lld; must be >= 0\n", opt, files[f], b,
                        (long long)v64[b]);
                free(v64);
                return -1;
            }
        if (f == 1) {
            *qps = v64;
            p->q_positions = v64;
        } else {
            uint32_t *u = malloc(sizeof(uint32_t) * p->batch);
            for (uint32_t b = 0; u && b < p->batch; b++)
                u[b] = (uint32_t)v64[b];
            free(v64);
            if (!u)
                return fprintf(stderr, "ssmax run: out of host memory\n"), -1;
            *kvl = u;
            p->kv_lens = u;
        }
    }
    if (ro->mask) {
        if (npy_read(ro->mask, m, err, sizeof(err)) < 0) {
            fprintf(stderr, "ssmax run: --mask: %s\n", err);
            return -1;
        }
        const uint64_t *s = m->shape;
        const int tail = m->ndim >= 2 && s[m->ndim - 2] == p->q_len && s[m->ndim - 1] == p->kv_len;
        if (tail && m->ndim == 2)
            p->mask = SSMAX_MASK_LQ_LK;
        else if (tail && m->ndim == 4 && s[0] == p->batch && s[1] == 1)
            p->mask = SSMAX_MASK_B1_LQ_LK;
        else if (tail && m->ndim == 4 && s[0] == p->batch && s[1] == p->q_heads)
            p->mask = SSMAX_MASK_BH_LQ_LK;
        else {
            fprintf(stderr, "ssmax run: --mask: %s must have shape [%u,%u], [%u,1,%u,%u] or "
                    "[%u,%u,%u,%u] ([Lq,Lk], [B,1,Lq,Lk] or [B,Hq,Lq,Lk])\n", ro->mask, p->q_len,
                    p->kv_len, p->batch, p->q_len, p->kv_len, p->batch, p->q_heads, p->q_len,
                    p->kv_len);
            return -1;
        }
        p->mask_dtype = m->esize == 2 ? SSMAX_F16 : SSMAX_F32;
    }
    return 0;
}

static int cmd_run(int argc, char **argv)
{
    struct run_opts ro;
    int pr = run_parse_args(argc, argv, &ro, stderr);
    if (pr == 1) {
        cli_usage(stdout, usage_run);
        return 0;
    }
    if (pr < 0)
        return EXIT_BAD_INPUT;
    const char *fq = ro.q, *fk = ro.k, *fv = ro.v, *fo = ro.out, *flse = ro.lse, *fprobs = ro.probs;
    const char *dev = ro.device, *sarg = ro.s, *barg = ro.b;
    const int check = ro.check, quiet = ro.quiet, verbose = ro.verbose && !ro.quiet;
    struct ssmax_attn_params p = ro.p;
    int code = EXIT_BAD_INPUT;
    struct npy_array q = { 0 }, k = { 0 }, v = { 0 };
    float *s_arr = NULL, *b_arr = NULL, *sink_arr = NULL;
    uint32_t *kvl_arr = NULL;
    int64_t *qp_arr = NULL;
    struct npy_array m = { 0 };
    ssmax_context *ctx = NULL;
    ssmax_buffer *bq = NULL, *bk = NULL, *bv = NULL, *bo = NULL, *bl = NULL, *bp = NULL,
                 *bm = NULL;
    void *o = NULL;
    float *lse = NULL, *probs = NULL;
    double *oref = NULL, *lref = NULL;
    float *pref = NULL;
    char err[600];
    float num;
    // Outputs are resolved first: none may be an input or another output (README "Output files").
    struct in_file ins[9] = { { "--q", fq }, { "--k", fk }, { "--v", fv } };
    int nin = 3;
    if (sarg && cli_parse_float(sarg, &num) < 0)
        ins[nin++] = (struct in_file){ "--s", sarg };
    if (barg && cli_parse_float(barg, &num) < 0)
        ins[nin++] = (struct in_file){ "--b", barg };
    if (ro.sinks && cli_parse_float(ro.sinks, &num) < 0)
        ins[nin++] = (struct in_file){ "--sinks", ro.sinks };
    if (ro.mask)
        ins[nin++] = (struct in_file){ "--mask", ro.mask };
    if (ro.kv_lens)
        ins[nin++] = (struct in_file){ "--kv-lens", ro.kv_lens };
    if (ro.q_pos_file)
        ins[nin++] = (struct in_file){ "--q-pos", ro.q_pos_file };
    struct npy_out ao = { 0 }, alse = { 0 }, aprobs = { 0 };
    struct out_file outs[3];
    int nout = 0;
    memset(outs, 0, sizeof(outs));
    outs[nout++] = (struct out_file){ .opt = "--out", .path = fo, .write = out_npy_writer, .arg = &ao };
    if (flse)
        outs[nout++] = (struct out_file){ .opt = "--lse", .path = flse, .write = out_npy_writer,
                                          .arg = &alse };
    if (fprobs)
        outs[nout++] = (struct out_file){ .opt = "--probs", .path = fprobs,
                                          .write = out_npy_writer, .arg = &aprobs };
    if (out_files_check(outs, nout, ins, nin, err, sizeof(err)) < 0) {
        fprintf(stderr, "ssmax run: %s\n", err);
        goto out;
    }
    // With an output on standard output (--out /dev/stdout), messages go to stderr.
    FILE *msg = out_files_have_stdout(outs, nout) ? stderr : stdout;
    for (int i = 0; i < 3; i++) {
        struct npy_array *a = i == 0 ? &q : i == 1 ? &k : &v;
        if (npy_read(ins[i].path, a, err, sizeof(err)) < 0) {
            fprintf(stderr, "ssmax run: %s: %s\n", ins[i].opt, err);
            goto out;
        }
    }
    if (check_dims(fq, &q) || check_dims(fk, &k) || check_dims(fv, &v))
        goto out;
    if (k.esize != q.esize || v.esize != q.esize) {
        fprintf(stderr, "ssmax run: %s: dtype %s does not match %s's %s\n",
                k.esize != q.esize ? fk : fv, (k.esize != q.esize ? k.esize : v.esize) == 2
                ? "float16" : "float32", fq, q.esize == 2 ? "float16" : "float32");
        goto out;
    }
    for (int d = 0; d < 4; d++)
        if (v.shape[d] != k.shape[d]) {
            fprintf(stderr, "ssmax run: %s: shape must equal %s's [B,Hkv,Lk,D] (dimension %d: "
                    "%llu vs %llu)\n", fv, fk, d, (unsigned long long)v.shape[d],
                    (unsigned long long)k.shape[d]);
            goto out;
        }
    if (k.shape[0] != q.shape[0] || k.shape[3] != q.shape[3]) {
        fprintf(stderr, "ssmax run: %s: batch and head_dim must match %s ([%llu,..,%llu] vs "
                "[%llu,..,%llu])\n", fk, fq, (unsigned long long)k.shape[0],
                (unsigned long long)k.shape[3], (unsigned long long)q.shape[0],
                (unsigned long long)q.shape[3]);
        goto out;
    }
    p.dtype = q.esize == 2 ? SSMAX_F16 : SSMAX_F32;
    p.batch = (uint32_t)q.shape[0];
    p.q_heads = (uint32_t)q.shape[ro.blhd ? 2 : 1];
    p.q_len = (uint32_t)q.shape[ro.blhd ? 1 : 2];
    p.head_dim = (uint32_t)q.shape[3];
    p.kv_heads = (uint32_t)k.shape[ro.blhd ? 2 : 1];
    p.kv_len = (uint32_t)k.shape[ro.blhd ? 1 : 2];
    // [B, L, H, D] files go to the device as they are, with strides (SPEC.md section 7.1); O is
    // written in the same layout.
    struct ssmax_strides strides;
    if (ro.blhd) {
        const uint64_t R = (uint64_t)p.head_dim * q.esize;
        memset(&strides, 0, sizeof(strides));
        strides.q[0] = strides.o[0] = (uint64_t)p.q_len * p.q_heads * R;
        strides.q[1] = strides.o[1] = R;
        strides.q[2] = strides.o[2] = (uint64_t)p.q_heads * R;
        strides.k[0] = strides.v[0] = (uint64_t)p.kv_len * p.kv_heads * R;
        strides.k[1] = strides.v[1] = R;
        strides.k[2] = strides.v[2] = (uint64_t)p.kv_heads * R;
        p.strides = &strides;
    }
    if (sarg && load_per_head("--s", sarg, p.q_heads, &p.s_all, &s_arr) < 0)
        goto out;
    if (barg && load_per_head("--b", barg, p.q_heads, &p.b_all, &b_arr) < 0)
        goto out;
    p.s = s_arr;
    p.b = b_arr;
    if (load_inference(&ro, &p, &sink_arr, &kvl_arr, &qp_arr, &m) < 0)
        goto out;
    if (!(ctx = cli_context(&code)))
        goto out;
    int idx, one;
    if (dev && !strcmp(dev, "all")) {
        fprintf(stderr, "ssmax run: --device all: run takes one device\n");
        code = EXIT_BAD_INPUT;
        goto out;
    }
    if ((code = cli_run_devices(ctx, "ssmax run", dev, 1, &idx, &one)) != 0)
        goto out;
    if ((idx = ssmax_device_open(ctx, idx)) < 0) {
        fprintf(stderr, "ssmax run: %s\n", ssmax_last_error(ctx));
        code = cli_exit_code(idx);
        goto out;
    }
    struct ssmax_device_info di;
    ssmax_device_current(ctx, &di);
    // The plan, before any buffer is made: a problem the device cannot run fails here, by name.
    struct ssmax_plan_info plan;
    int r = ssmax_attn_plan_info(ctx, &p, NULL, &plan);
    if (r < 0) {
        fprintf(stderr, "ssmax run: %s\n", ssmax_last_error(ctx));
        code = cli_exit_code(r);
        goto out;
    }
    size_t nrow = (size_t)p.batch * p.q_heads * p.q_len, np = nrow * p.kv_len;
    size_t qbytes = q.count * (size_t)q.esize, kbytes = k.count * (size_t)k.esize;
    if ((r = ssmax_buffer_create(ctx, qbytes, &bq)) < 0 ||
        (r = ssmax_buffer_create(ctx, kbytes, &bk)) < 0 ||
        (r = ssmax_buffer_create(ctx, kbytes, &bv)) < 0 ||
        (r = ssmax_buffer_create(ctx, qbytes, &bo)) < 0 ||
        (flse && (r = ssmax_buffer_create(ctx, nrow * 4, &bl)) < 0) ||
        (fprobs && (r = ssmax_buffer_create(ctx, np * 4, &bp)) < 0) ||
        (r = ssmax_buffer_write(ctx, bq, 0, q.data, qbytes)) < 0 ||
        (r = ssmax_buffer_write(ctx, bk, 0, k.data, kbytes)) < 0 ||
        (r = ssmax_buffer_write(ctx, bv, 0, v.data, kbytes)) < 0 ||
        (m.data && (r = ssmax_buffer_create(ctx, m.count * (size_t)m.esize, &bm)) < 0) ||
        (m.data && (r = ssmax_buffer_write(ctx, bm, 0, m.data, m.count * (size_t)m.esize)) < 0)) {
        fprintf(stderr, "ssmax run: %s\n", ssmax_last_error(ctx));
        code = cli_exit_code(r);
        goto out;
    }
    struct ssmax_attn_buffers ab = { .q = bq, .k = bk, .v = bv, .o = bo, .lse = bl, .probs = bp,
                                     .mask = bm };
    r = ssmax_attn(ctx, &p, &ab);
    if (r < 0) {
        fprintf(stderr, "ssmax run: %s\n", ssmax_last_error(ctx));
        code = cli_exit_code(r);
        goto out;
    }
    o = malloc(qbytes);
    lse = flse || check ? malloc(nrow * 4) : NULL;
    probs = fprobs ? malloc(np * 4) : NULL;
    if (!o || ((flse || check) && !lse) || (fprobs && !probs)) {
        fprintf(stderr, "ssmax run: out of host memory\n");
        code = EXIT_DEVICE;
        goto out;
    }
    if ((r = ssmax_buffer_read(ctx, bo, 0, o, qbytes)) < 0 ||
        (bl && (r = ssmax_buffer_read(ctx, bl, 0, lse, nrow * 4)) < 0) ||
        (bp && (r = ssmax_buffer_read(ctx, bp, 0, probs, np * 4)) < 0)) {
        fprintf(stderr, "ssmax run: %s\n", ssmax_last_error(ctx));
        code = cli_exit_code(r);
        goto out;
    }
    // All outputs or none: temporary files renamed into place once every one is written.
    uint64_t ps[4] = { p.batch, p.q_heads, p.q_len, p.kv_len }; // LSE, probs: [B, Hq, Lq(, Lk)]
    ao = (struct npy_out){ q.esize, 4, q.shape, o };
    alse = (struct npy_out){ 4, 3, ps, lse };
    aprobs = (struct npy_out){ 4, 4, ps, probs };
    if (out_files_write(outs, nout, err, sizeof(err)) < 0) {
        fprintf(stderr, "ssmax run: %s\n", err);
        code = EXIT_BAD_INPUT;
        goto out;
    }
    uint64_t ns;
    ssmax_last_plan(ctx, &plan); // what ran (with --probs, the unfused path)
    ssmax_last_device_time(ctx, &ns);
    const enum ssmax_path path = plan.path;
    const uint32_t splits = plan.kv_splits;
    if (!quiet) {
        fprintf(msg, "device %s:%d %s\n", backend_name(di.backend), di.index, di.name);
        fprintf(msg, "attention B%u Hq%u Hkv%u Lq%u Lk%u D%u %s %s%s, path %s", p.batch, p.q_heads,
               p.kv_heads, p.q_len, p.kv_len, p.head_dim, p.dtype == SSMAX_F16 ? "f16" : "f32",
               h_mode_name(p.mode), p.causal ? " causal" : "", h_path_name(path));
        if (path == SSMAX_PATH_SPLIT_KV)
            fprintf(msg, " (%u splits)", splits);
        fprintf(msg, ", %.3f ms on the device\n", ns / 1e6);
    }
    if (verbose) {
        fprintf(msg, "plan: kernel %s, tiles %u rows x %u keys, %u submission%s, %llu bytes of "
                "scratch\n", plan.kernel, plan.tile_rows, plan.tile_keys, plan.submissions,
                plan.submissions == 1 ? "" : "s", (unsigned long long)plan.scratch_bytes);
        fprintf(msg, "plan: %s\n", plan.why);
    }
    code = EXIT_OK;
    if (check) {
        oref = malloc(sizeof(double) * q.count);
        lref = malloc(sizeof(double) * nrow);
        pref = fprobs ? malloc(sizeof(float) * np) : NULL;
        if (!oref || !lref || (fprobs && !pref)) {
            fprintf(stderr, "ssmax run: --check: out of host memory\n");
            code = EXIT_DEVICE;
            goto out;
        }
        struct ssmax_attn_host io = { q.data, k.data, v.data, NULL, NULL, pref, oref, lref, m.data };
        if (ssmax_attn_ref(&p, &io) < 0) {
            fprintf(stderr, "ssmax run: reference: %s\n", ssmax_last_error(NULL));
            code = EXIT_DEVICE;
            goto out;
        }
        if (ro.blhd) { // the reference's O is [B, Hq, Lq, D]; the device wrote [B, Lq, Hq, D]
            double *t = malloc(sizeof(double) * q.count);
            if (!t) {
                code = EXIT_DEVICE;
                goto out;
            }
            const size_t D = p.head_dim;
            for (size_t b = 0; b < p.batch; b++)
                for (size_t h = 0; h < p.q_heads; h++)
                    for (size_t i = 0; i < p.q_len; i++)
                        memcpy(t + ((b * p.q_len + i) * p.q_heads + h) * D,
                               oref + ((b * p.q_heads + h) * p.q_len + i) * D, sizeof(double) * D);
            free(oref);
            oref = t;
        }
        struct ssmax_compare c;
        if (p.dtype == SSMAX_F16)
            ssmax_compare_f16(oref, o, q.count, 0, &c);
        else
            ssmax_compare_f32(oref, o, q.count, 0, &c);
        struct htol ot = h_tol_o(p.dtype, c.max_ref);
        if (p.dtype == SSMAX_F16)
            ssmax_compare_f16(oref, o, q.count, ot.max_abs, &c);
        else
            ssmax_compare_f32(oref, o, q.count, ot.max_abs, &c);
        int ok = report_cmp(msg, "O", &c, ot.nmse, ot.max_abs, quiet);
        if (bl) { // LSE compared only when it was asked for
            ssmax_compare_f32(lref, lse, nrow, 0, &c);
            struct htol lt = h_tol_lse(c.max_ref);
            ssmax_compare_f32(lref, lse, nrow, lt.max_abs, &c);
            ok &= report_cmp(msg, "LSE", &c, lt.nmse, lt.max_abs, quiet);
        }
        if (fprobs) {
            double *pd = malloc(sizeof(double) * np);
            if (!pd) {
                code = EXIT_DEVICE;
                goto out;
            }
            for (size_t i = 0; i < np; i++)
                pd[i] = pref[i];
            struct htol pt = h_tol_probs(0); // the CLI does not scale by the logits' size
            ssmax_compare_f32(pd, probs, np, pt.max_abs, &c);
            free(pd);
            ok &= report_cmp(msg, "probs", &c, pt.nmse, pt.max_abs, quiet);
        }
        code = ok ? EXIT_OK : EXIT_MISMATCH;
    }
out:
    npy_free(&q);
    npy_free(&k);
    npy_free(&v);
    free(s_arr);
    free(b_arr);
    free(sink_arr);
    free(kvl_arr);
    free(qp_arr);
    npy_free(&m);
    free(o);
    free(lse);
    free(probs);
    free(oref);
    free(lref);
    free(pref);
    if (ctx) {
        ssmax_buffer_destroy(ctx, &bq);
        ssmax_buffer_destroy(ctx, &bk);
        ssmax_buffer_destroy(ctx, &bv);
        ssmax_buffer_destroy(ctx, &bo);
        ssmax_buffer_destroy(ctx, &bl);
        ssmax_buffer_destroy(ctx, &bp);
        ssmax_buffer_destroy(ctx, &bm);
        ssmax_context_destroy(&ctx);
    }
    return code;
}

/* The verify set: every mode, both dtypes, causal, GQA, odd sizes, each path. */
static int verify_device(ssmax_context *ctx, uint64_t seed, int *fails)
{
    static const struct {
        uint32_t b, hq, hkv, lq, lk, d;
        int causal, f16, mode, path, probs;
    } cases[] = {
        { 1, 1, 1, 1, 1, 8, 0, 0, 1, 0, 0 },      { 1, 2, 1, 3, 7, 16, 1, 0, 1, 0, 0 },
        { 1, 4, 2, 33, 113, 64, 0, 0, 0, 1, 0 },  { 2, 4, 1, 31, 31, 40, 1, 1, 2, 0, 0 },
        { 1, 8, 8, 7, 1000, 128, 0, 0, 3, 2, 0 }, { 1, 2, 2, 113, 113, 80, 1, 1, 4, 3, 1 },
        { 1, 8, 1, 1, 2048, 64, 0, 1, 1, 0, 0 },  { 1, 1, 1, 2, 3, 256, 1, 0, 1, 3, 1 },
        { 1, 3, 3, 17, 45, 96, 1, 0, 2, 1, 0 },   { 1, 2, 1, 1, 4100, 32, 0, 0, 1, 2, 0 },
    };
    int ran = 0;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct hcase c = { 0 };
        ssmax_attn_params_default(&c.p);
        c.p.batch = cases[i].b, c.p.q_heads = cases[i].hq, c.p.kv_heads = cases[i].hkv;
        c.p.q_len = cases[i].lq, c.p.kv_len = cases[i].lk, c.p.head_dim = cases[i].d;
        c.p.causal = cases[i].causal;
        c.p.dtype = cases[i].f16 ? SSMAX_F16 : SSMAX_F32;
        c.p.mode = (enum ssmax_mode)cases[i].mode;
        c.p.path = (enum ssmax_path)cases[i].path;
        c.p.train_len = 16;
        c.p.floor_scale = 8;
        c.per_head = 1;
        c.want_lse = 1;
        c.want_probs = cases[i].probs;
        c.seed = seed + i;
        char desc[256];
        h_describe(&c, desc, sizeof(desc));
        if (ssmax_attn_supported(ctx, &c.p) == SSMAX_ERR_UNSUPPORTED) {
            printf("  skip %s: %s\n", desc, ssmax_last_error(ctx));
            continue;
        }
        struct hresult r;
        int st = h_run(ctx, &c, &r);
        ran++;
        if (st == 0) {
            printf("  ok   %s  nmse %.2e\n", desc, r.o.nmse);
        } else {
            printf("  FAIL %s: %s\n", desc, r.why);
            (*fails)++;
            if (st < 0 && st != SSMAX_ERR_LIMIT_EXCEEDED)
                return st;
        }
    }
    return ran;
}

static int cmd_verify(int argc, char **argv)
{
    const char *dev = "all";
    uint64_t seed = 1;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            cli_usage(stdout, usage_verify);
            return 0;
        } else if (!strcmp(argv[i], "--device") && i + 1 < argc) {
            dev = argv[++i];
        } else if (!strcmp(argv[i], "--seed") && i + 1 < argc) {
            if (cli_parse_u64(argv[++i], &seed) < 0) {
                fprintf(stderr, "ssmax verify: --seed: invalid value '%s' (an integer in "
                        "[0, 2^64))\n", argv[i]);
                return EXIT_BAD_INPUT;
            }
        } else {
            fprintf(stderr, "ssmax verify: unknown option '%s'\n", argv[i]);
            cli_usage(stderr, usage_verify);
            return EXIT_BAD_INPUT;
        }
    }
    int code = 0;
    ssmax_context *ctx = cli_context(&code);
    if (!ctx)
        return code;
    int n = ssmax_device_count(ctx), fails = 0, devfail = 0;
    int only = -1;
    if (strcmp(dev, "all")) {
        only = cli_find_device(ctx, "ssmax verify", dev);
        if (only < 0) {
            ssmax_context_destroy(&ctx);
            return EXIT_BAD_INPUT;
        }
    }
    for (int i = 0; i < n; i++) {
        if (only >= 0 && i != only)
            continue;
        struct ssmax_device_info d;
        ssmax_device_get_info(ctx, i, &d);
        printf("%s:%d %s (seed %llu)\n", backend_name(d.backend), d.index, d.name,
               (unsigned long long)seed);
        fflush(stdout);
        if (only < 0 && d.compile_only) { // "all": the devices that can run
            printf("  skipped: compiles pipelines but cannot run them\n");
            continue;
        }
        if (cli_refuse_compile_only(ctx, "  device failure", i)) {
            devfail++;
            continue;
        }
        int r = ssmax_device_open(ctx, i);
        if (r >= 0)
            r = verify_device(ctx, seed, &fails);
        if (r < 0) {
            printf("  device failure: %s\n", ssmax_last_error(ctx));
            devfail++;
        }
    }
    ssmax_context_destroy(&ctx);
    printf("verify: %d failed, %d device failures\n", fails, devfail);
    return devfail ? EXIT_DEVICE : fails ? EXIT_MISMATCH : 0;
}

static int run_command(int argc, char **argv)
{
    if (argc < 2) {
        cli_usage(stderr, usage_main);
        return EXIT_BAD_INPUT;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        cli_usage(stdout, usage_main);
        return 0;
    }
    if (!strcmp(cmd, "--version")) {
        printf("ssmax %s\n", ssmax_version());
        return 0;
    }
    if (!strcmp(cmd, "devices"))
        return cmd_devices(argc - 2, argv + 2);
    if (!strcmp(cmd, "run"))
        return cmd_run(argc - 2, argv + 2);
    if (!strcmp(cmd, "verify"))
        return cmd_verify(argc - 2, argv + 2);
    if (!strcmp(cmd, "bench"))
        return cmd_bench(argc - 2, argv + 2);
    if (!strcmp(cmd, "pipelines"))
        return cmd_pipelines(argc - 2, argv + 2);
    if (!strcmp(cmd, "fading"))
        return cmd_fading(argc - 2, argv + 2);
    fprintf(stderr, "ssmax: unknown command '%s'\n", cmd);
    cli_usage(stderr, usage_main);
    return EXIT_BAD_INPUT;
}

/* Whatever a command printed must have reached standard output: a full disk or a closed descriptor
 * there is an error too (exit 2 unless the command failed already). */
int main(int argc, char **argv)
{
    int code = run_command(argc, argv);
    errno = 0;
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "ssmax: standard output: write error: %s\n",
                errno ? strerror(errno) : "an I/O error");
        if (code == EXIT_OK)
            code = EXIT_BAD_INPUT;
    }
    return code;
}
