/*
 * ssmax bench: every shape is verified against the float64 reference (on a sample of rows for long
 * sequences), then timed on the device. Suites are data (bench/suites.txt, embedded at build time).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "npy.h"
#include "harness.h"
#include "suites.txt.inc"

static const char *usage_bench =
    "usage: ssmax bench [options]\n"
    "  --device all|SPEC        devices to run on (default: auto; 'all' = every GPU-API device)\n"
    "  --suite quick|prefill|decode|masked|full   shapes from bench/suites.txt (default quick)\n"
    "  --shape B,Hq,Hkv,Lq,Lk,D  a shape (repeatable; overrides the suite)\n"
    "  --causal                 make --shape shapes causal\n"
    "  --dtype f32|f16          storage type (default f32)\n"
    "  --mode MODE              {MODES} (default ssmax)\n"
    "  --path {PATHS}  (default auto)\n"
    "  --splits N               key splits for split-kv (default: sized from the device)\n"
    "  --warmup N --iters N     (defaults 2 and 5)\n"
    "  --json FILE --csv FILE   write the records\n"
    "  --no-verify              skip the reference check (results are marked unverified)\n"
    "  SPEC.md section 7, for --shape shapes (suite lines carry their own):\n"
    "  --window W               sliding window (with --causal)\n"
    "  --softcap C              soft-capping\n"
    "  --sinks X                a sink logit X for every query head\n"
    "  --kv-lens L1,L2,...      keys of each batch item (B values)\n"
    "  --q-pos P                position of query row 0 (default Lk-Lq, per item with --kv-lens)\n"
    "  --mask FRAC[/KEYS]       an additive [B,1,Lq,Lk] mask hiding FRAC of its blocks of KEYS rows\n"
    "                           x KEYS keys (default 64), -inf there and 0 elsewhere (as engines' masks)\n"
    "  --plan                   time executions of one plan (ssmax_plan_create once, then\n"
    "                           ssmax_plan_execute) instead of ssmax_attn calls\n"
    "  --tune                   search tile sizes for the fused kernel on each device and head dim\n"
    "                           of the shapes (default B1 H8 L1024 D64) and store the fastest in the\n"
    "                           cache directory; later runs on that device use them\n"
    "  --tune-tiles T;T;...     --tune over these tiles only, spelt as SSMAX_VK_TILES and\n"
    "                           SSMAX_CL_TILES take them ('rows,BC,RL' or 'BR,BC,TPR')\n"
    "FLOPs are 4*B*Hq*D*(visible keys summed over rows: the visible work, which with a window,\n"
    "lengths or a mask is less than Lq*Lk); bytes are Q, K, V, O once.\n";

/* A shape and its SPEC.md section 7 options. */
struct shape {
    uint32_t b, hq, hkv, lq, lk, d;
    int causal;
    uint32_t window;
    float softcap;
    int has_sink;
    float sink;
    uint32_t nkvl;            // kv_lens given (== b)
    uint32_t kvl[16];
    int64_t q_pos;            // < 0: the default
    double mask_hide;         // > 0: a block mask
    uint32_t mask_keys;
};

/* "window=W", "softcap=C", "sink=X", "kvlens=A,B,..", "qpos=P", "mask=FRAC[/KEYS]": one option
 * of a suite line or a command-line switch, into s; -1 on a bad value. */
static int shape_opt(struct shape *s, const char *key, const char *v)
{
    if (!strcmp(key, "window"))
        return cli_parse_u32(v, &s->window) || !s->window ? -1 : 0;
    if (!strcmp(key, "softcap"))
        return cli_parse_float(v, &s->softcap) || !(s->softcap > 0) ? -1 : 0;
    if (!strcmp(key, "sink"))
        return (s->has_sink = 1, cli_parse_float(v, &s->sink));
    if (!strcmp(key, "qpos")) {
        uint32_t u;
        if (cli_parse_u32(v, &u))
            return -1;
        s->q_pos = u;
        return 0;
    }
    if (!strcmp(key, "kvlens")) {
        s->nkvl = 0;
        for (const char *p = v; *p;) {
            char tok[16];
            size_t n = strcspn(p, ",");
            if (n == 0 || n > 10 || s->nkvl == 16)
                return -1;
            snprintf(tok, sizeof(tok), "%.*s", (int)n, p);
            if (cli_parse_u32(tok, &s->kvl[s->nkvl++]))
                return -1;
            p += n + (p[n] == ',');
        }
        return s->nkvl ? 0 : -1;
    }
    if (!strcmp(key, "mask")) {
        char tok[32];
        size_t n = strcspn(v, "/");
        if (n >= sizeof(tok))
            return -1;
        snprintf(tok, sizeof(tok), "%.*s", (int)n, v);
        float f;
        if (cli_parse_float(tok, &f) || !(f >= 0 && f <= 1))
            return -1;
        s->mask_hide = f;
        s->mask_keys = 64;
        if (v[n] == '/' && (cli_parse_u32(v + n + 1, &s->mask_keys) || !s->mask_keys))
            return -1;
        s->mask_hide = f > 0 ? f : 1e-9; // a mask that hides nothing is still a mask
        return 0;
    }
    return -1;
}

struct record {
    char device[300], backend[16], path[16];
    uint32_t splits;
    struct ssmax_plan_info plan; // of the timed calls
    struct shape s;
    double ms_median, ms_min, ms_max, wall_ms, host_ms, gflops, gbps, nmse;
    int verified;
    int use_plan; // timed through a plan
    double visible; // keys seen, summed over rows and heads (the FLOPs' count)
    char opts[200]; // the shape's section 7 options
};

/* "B,Hq,Hkv,Lq,Lk,D": six integers in [1, 2^32), whose tensors' sizes fit in memory addresses and
 * in this machine's memory, and a problem the library accepts with the other options; -1 after a
 * message naming what is wrong. */
static int parse_shape(const char *s, const struct ssmax_attn_params *base, int causal,
                       const struct shape *ext, struct shape *out)
{
    static const char *names[6] = { "B", "Hq", "Hkv", "Lq", "Lk", "D" };
    uint32_t v[6];
    const char *p = s;
    for (int i = 0; i < 6; i++) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        char tok[32];
        if ((i < 5 && !e) || (i == 5 && e)) {
            fprintf(stderr, "ssmax bench: --shape '%s': expected six comma-separated numbers "
                    "B,Hq,Hkv,Lq,Lk,D\n", s);
            return -1;
        }
        snprintf(tok, sizeof(tok), "%.*s", (int)(n < 31 ? n : 31), p);
        if (n > 31 || cli_parse_u32(tok, &v[i]) < 0 || v[i] == 0) {
            fprintf(stderr, "ssmax bench: --shape '%s': %s is '%.*s'; it must be an integer in "
                    "[1, 2^32)\n", s, names[i], (int)(n < 40 ? n : 40), p);
            return -1;
        }
        p += n + 1;
    }
    *out = *ext;
    out->b = v[0], out->hq = v[1], out->hkv = v[2], out->lq = v[3], out->lk = v[4], out->d = v[5];
    out->causal = causal;
    // The harness holds Q, K, V and O, and the reference holds O in float64: every element count
    // times 8 bytes must be representable.
    uint64_t nq, nkv;
    if (__builtin_mul_overflow((uint64_t)v[0] * v[1], (uint64_t)v[3] * v[5], &nq) ||
        __builtin_mul_overflow((uint64_t)v[0] * v[2], (uint64_t)v[4] * v[5], &nkv) ||
        nq > SIZE_MAX / 8 || nkv > SIZE_MAX / 8) {
        fprintf(stderr, "ssmax bench: --shape '%s': too large: Q or K holds more than 2^61 "
                "elements\n", s);
        return -1;
    }
    // The harness's own host arrays (Q, K, V, O and O's float64 reference) exceed this machine's
    // memory: it cannot run here.
    long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    double esz = base->dtype == SSMAX_F16 ? 2 : 4;
    double need = (double)nq * (2 * esz + 8) + 2.0 * (double)nkv * esz;
    if (pages > 0 && psz > 0 && need > (double)pages * (double)psz) {
        fprintf(stderr, "ssmax bench: --shape '%s': too large: its host arrays need %.3g GiB, more "
                "than this machine's %.3g GiB of memory\n", s, need / (1 << 30),
                (double)pages * (double)psz / (1 << 30));
        return -1;
    }
    struct ssmax_attn_params p2 = *base;
    p2.batch = v[0], p2.q_heads = v[1], p2.kv_heads = v[2];
    p2.q_len = v[3], p2.kv_len = v[4], p2.head_dim = v[5], p2.causal = causal;
    p2.window = ext->window, p2.softcap = ext->softcap, p2.q_pos = ext->q_pos;
    if (ext->nkvl && ext->nkvl != v[0]) {
        fprintf(stderr, "ssmax bench: --kv-lens: %u values for batch %u\n", ext->nkvl, v[0]);
        return -1;
    }
    p2.kv_lens = ext->nkvl ? ext->kvl : NULL;
    char why[512];
    if (ssmax_attn_validate(&p2, why, sizeof(why)) < 0) {
        fprintf(stderr, "ssmax bench: --shape '%s': %s\n", s, why);
        return -1;
    }
    return 0;
}

/* Writes --json: the records as a JSON array. */
struct records {
    const struct record *r;
    int n;
    const char *dtype, *mode;
};

static int write_json(FILE *f, void *arg)
{
    const struct records *rs = arg;
    fprintf(f, "[\n");
    for (int i = 0; i < rs->n; i++) {
        const struct record *r = &rs->r[i];
        fprintf(f, "  {\"device\": ");
        cli_json_str(f, r->device);
        fprintf(f, ", \"backend\": \"%s\", \"path\": \"%s\", "
                "\"kv_splits\": %u, \"dtype\": \"%s\", \"mode\": \"%s\", \"B\": %u, \"Hq\": %u, "
                "\"Hkv\": %u, \"Lq\": %u, \"Lk\": %u, \"D\": %u, \"causal\": %s, "
                "\"ms_median\": %.6f, \"ms_min\": %.6f, \"ms_max\": %.6f, "
                "\"wall_ms_median\": %.6f, \"gflops\": %.4f, \"gbytes_per_s\": %.4f, "
                "\"host_ms_median\": %.6f, \"api\": \"%s\", \"visible_pairs\": %.0f, "
                "\"nmse\": %.3e, \"verified\": %s, \"kernel\": ",
                r->backend, r->path, r->splits, rs->dtype, rs->mode, r->s.b, r->s.hq, r->s.hkv,
                r->s.lq, r->s.lk, r->s.d, r->s.causal ? "true" : "false", r->ms_median,
                r->ms_min, r->ms_max, r->wall_ms, r->gflops, r->gbps, r->host_ms,
                r->use_plan ? "plan" : "attn", r->visible, r->nmse,
                r->verified ? "true" : "false");
        cli_json_str(f, r->plan.kernel);
        fprintf(f, ", \"options\": ");
        cli_json_str(f, r->opts);
        fprintf(f, ", \"tile_rows\": %u, \"tile_keys\": %u, \"submissions\": %u, "
                "\"scratch_bytes\": %llu, \"plan\": ", r->plan.tile_rows, r->plan.tile_keys,
                r->plan.submissions, (unsigned long long)r->plan.scratch_bytes);
        cli_json_str(f, r->plan.why);
        fprintf(f, "}%s\n", i + 1 < rs->n ? "," : "");
    }
    fprintf(f, "]\n");
    return ferror(f) ? -1 : 0;
}

/* Writes --csv: a header line, then one line per record (the device name quoted, RFC 4180). */
static int write_csv(FILE *f, void *arg)
{
    const struct records *rs = arg;
    fprintf(f, "device,backend,path,kv_splits,dtype,mode,B,Hq,Hkv,Lq,Lk,D,causal,ms_median,ms_min,"
               "ms_max,wall_ms_median,gflops,gbytes_per_s,nmse,verified\n");
    for (int i = 0; i < rs->n; i++) {
        const struct record *r = &rs->r[i];
        fputc('"', f);
        for (const char *c = r->device; *c; c++) {
            if (*c == '"')
                fputc('"', f);
            fputc(*c, f);
        }
        fprintf(f, "\",%s,%s,%u,%s,%s,%u,%u,%u,%u,%u,%u,%d,%.6f,%.6f,%.6f,%.6f,%.4f,"
                "%.4f,%.3e,%d\n", r->backend, r->path, r->splits, rs->dtype, rs->mode, r->s.b,
                r->s.hq, r->s.hkv, r->s.lq, r->s.lk, r->s.d, r->s.causal, r->ms_median,
                r->ms_min, r->ms_max, r->wall_ms, r->gflops, r->gbps, r->nmse, r->verified);
    }
    return ferror(f) ? -1 : 0;
}

static int load_suite(const char *suite, struct shape **out, int *n)
{
    const char *p = bench_suites;
    int cap = 64;
    *out = malloc(sizeof(**out) * (size_t)cap);
    *n = 0;
    while (*p) {
        const char *e = strchr(p, '\n');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        char line[256], name[32];
        snprintf(line, sizeof(line), "%.*s", (int)(len < 255 ? len : 255), p);
        struct shape s = { 0 };
        s.q_pos = -1;
        int used = 0;
        if (line[0] != '#' && sscanf(line, "%31s %u %u %u %u %u %u %d%n", name, &s.b, &s.hq, &s.hkv,
                                     &s.lq, &s.lk, &s.d, &s.causal, &used) == 8 &&
            (!strcmp(suite, "full") || !strcmp(suite, name)) && *n < cap) {
            // options: key=value words after the eight columns
            for (char *w = strtok(line + used, " \t"); w; w = strtok(NULL, " \t")) {
                char *eq = strchr(w, '=');
                if (eq)
                    *eq = 0;
                if (!eq || shape_opt(&s, w, eq + 1) < 0) {
                    fprintf(stderr, "ssmax bench: bench/suites.txt: bad option '%s' in suite %s\n",
                            w, name);
                    return -1;
                }
            }
            (*out)[(*n)++] = s;
        }
        p += len + (e ? 1 : 0);
    }
    return *n ? 0 : -1;
}

/* The case of shape s with base's other parameters. */
static void shape_case(const struct shape *s, const struct ssmax_attn_params *base, struct hcase *c)
{
    memset(c, 0, sizeof(*c));
    c->p = *base;
    c->p.batch = s->b, c->p.q_heads = s->hq, c->p.kv_heads = s->hkv;
    c->p.q_len = s->lq, c->p.kv_len = s->lk, c->p.head_dim = s->d, c->p.causal = s->causal;
    c->p.window = s->window;
    c->p.softcap = s->softcap;
    c->p.q_pos = s->q_pos;
    c->p.kv_lens = s->nkvl ? s->kvl : NULL;
    if (s->mask_hide > 0) {
        c->mask = SSMAX_MASK_B1_LQ_LK; // one per batch item, as engines pass theirs
        c->mask_hide = s->mask_hide;
        c->mask_block = s->mask_keys;
    }
}

/* The shape's options as "window=4096 ...", for the table and records. */
static void shape_opts(const struct shape *s, char *out, size_t n)
{
    size_t k = 0;
    out[0] = 0;
    if (s->window)
        k += (size_t)snprintf(out + k, n - k, " window=%u", s->window);
    if (s->softcap > 0 && k < n)
        k += (size_t)snprintf(out + k, n - k, " softcap=%g", (double)s->softcap);
    if (s->has_sink && k < n)
        k += (size_t)snprintf(out + k, n - k, " sink=%g", (double)s->sink);
    if (s->nkvl && k < n) {
        k += (size_t)snprintf(out + k, n - k, " kvlens=");
        for (uint32_t i = 0; i < s->nkvl && k < n; i++)
            k += (size_t)snprintf(out + k, n - k, "%s%u", i ? "," : "", s->kvl[i]);
    }
    if (s->q_pos >= 0 && k < n)
        k += (size_t)snprintf(out + k, n - k, " qpos=%lld", (long long)s->q_pos);
    if (s->mask_hide > 0 && k < n)
        snprintf(out + k, n - k, " mask=%g/%u", s->mask_hide >= 1e-6 ? s->mask_hide : 0,
                 s->mask_keys);
}

/* The override's spelling of t: "BR,BC,TPR" or "rows,BC,RL". */
static void tiles_str(char *out, size_t n, const struct ssmax_tiles *t)
{
    if (t->kernel == SSMAX_KERNEL_ROWS)
        snprintf(out, n, "rows,%u,%u", t->keys, t->rows);
    else
        snprintf(out, n, "%u,%u,%u", t->rows, t->keys, t->lanes);
}

/* --tune-tiles: "T;T;..." with each T as the overrides spell tiles ("rows,BC,RL" or
 * "BR,BC,TPR") into cand (at most max); the number read, 0 when one is malformed (the planner
 * judges the values). */
static size_t tiles_list(const char *s, struct ssmax_tiles *cand, size_t max)
{
    size_t n = 0;
    while (*s && n < max) {
        unsigned a, b, c;
        int used = 0;
        if (sscanf(s, "rows,%u,%u%n", &b, &c, &used) == 2 && used > 0)
            cand[n++] = (struct ssmax_tiles){ SSMAX_KERNEL_ROWS, c, b, 0 };
        else if (sscanf(s, "%u,%u,%u%n", &a, &b, &c, &used) == 3 && used > 0)
            cand[n++] = (struct ssmax_tiles){ SSMAX_KERNEL_TILES, a, b, c };
        else
            return 0;
        s += used;
        if (*s && *s++ != ';')
            return 0;
    }
    return *s ? 0 : n;
}

/* --tune: time the fused kernel over a grid of tiles through the SSMAX_*_TILES override, verify
 * the winner, and store it for the device. */
static int run_tune(ssmax_context *ctx, const int *devs, int nd, const struct shape *shapes,
                    int nshapes, struct ssmax_attn_params base, const char *only)
{
    static const uint32_t brs[] = { 8, 16, 32, 64 }, bcs[] = { 16, 32, 48, 64, 128 };
    struct shape def = { 1, 8, 8, 1024, 1024, 64, 0 };
    if (!nshapes)
        shapes = &def, nshapes = 1;
    int code = 0;
    for (int di = 0; di < nd; di++) {
        struct ssmax_device_info d;
        ssmax_device_get_info(ctx, devs[di], &d);
        if (d.backend == SSMAX_BACKEND_CPU)
            continue;
        const char *var = d.backend == SSMAX_BACKEND_VULKAN ? "SSMAX_VK_TILES" : "SSMAX_CL_TILES";
        for (int si = 0; si < nshapes; si++) {
            int r = ssmax_device_open(ctx, devs[di]);
            if (r < 0) {
                fprintf(stderr, "ssmax bench: %s: %s\n", d.name, ssmax_last_error(ctx));
                code = EXIT_DEVICE;
                break;
            }
            struct hcase c = { 0 };
            c.p = base;
            c.p.path = SSMAX_PATH_FUSED;
            c.p.batch = shapes[si].b, c.p.q_heads = shapes[si].hq, c.p.kv_heads = shapes[si].hkv;
            c.p.q_len = shapes[si].lq, c.p.kv_len = shapes[si].lk, c.p.head_dim = shapes[si].d;
            c.p.causal = shapes[si].causal;
            c.seed = 77;
            c.sample_rows = 8;
            double best = 1e300;
            struct ssmax_tiles bt = { 0 };
            printf("tuning %s, D %u (shape %u,%u,%u,%u,%u,%u):\n", d.name, c.p.head_dim,
                   c.p.batch, c.p.q_heads, c.p.kv_heads, c.p.q_len, c.p.kv_len, c.p.head_dim);
            struct ssmax_tiles cand[40];
            size_t nc = 0;
            if (only) // --tune-tiles: these, in the overrides' spelling
                nc = tiles_list(only, cand, sizeof(cand) / sizeof(cand[0]));
            if (!only && d.backend == SSMAX_BACKEND_VULKAN) // rows kernel: rows a lane, keys a step
                for (uint32_t rl = 1; rl <= 4; rl++)
                    for (uint32_t bc = 1; bc <= 2; bc++)
                        cand[nc++] = (struct ssmax_tiles){ SSMAX_KERNEL_ROWS, rl, bc, 0 };
            for (size_t i = 0; !only && i < sizeof(brs) / sizeof(brs[0]); i++)
                for (size_t j = 0; j < sizeof(bcs) / sizeof(bcs[0]); j++)
                    cand[nc++] = (struct ssmax_tiles){ SSMAX_KERNEL_TILES, brs[i], bcs[j], 4 };
            for (size_t k = 0; k < nc; k++) {
                char val[32], why[512];
                tiles_str(val, sizeof(val), &cand[k]);
                setenv(var, val, 1);
                struct htiming tm;
                if (ssmax_attn_supported(ctx, &c.p) < 0 ||
                    h_time(ctx, &c, 1, 2, &tm, why, sizeof(why)) < 0)
                    continue;
                printf("  %-10s %10.3f ms\n", val, tm.ms_median);
                if (tm.ms_median < best)
                    best = tm.ms_median, bt = cand[k];
            }
            unsetenv(var);
            if (!bt.rows) {
                printf("  no tile size ran\n");
                code = EXIT_DEVICE;
                continue;
            }
            // ssmax_tune_store runs the tiles against the reference on every path before storing.
            char val[32];
            tiles_str(val, sizeof(val), &bt);
            if (ssmax_tune_store(ctx, c.p.head_dim, &bt) < 0) {
                int wrong = strstr(ssmax_last_error(ctx), "wrong result") != NULL;
                printf("  best %s: %s\n", val, ssmax_last_error(ctx));
                code = wrong ? EXIT_MISMATCH : EXIT_DEVICE;
                continue;
            }
            printf("  stored %s (%.3f ms, verified on the fused, split-kv and unfused paths)\n",
                   val, best);
        }
    }
    return code;
}

int cmd_bench(int argc, char **argv)
{
    const char *dev = NULL, *suite = "quick", *json = NULL, *csv = NULL;
    struct shape shapes[64];
    const char *shape_args[64];
    int nshapes = 0, causal = 0, warmup = 2, iters = 5, verify = 1, tune = 0, use_plan = 0;
    const char *tune_tiles = NULL;
    struct ssmax_attn_params base;
    ssmax_attn_params_default(&base);
    struct shape ext = { 0 }; // section 7 options of --shape shapes
    ext.q_pos = -1;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            cli_usage(stdout, usage_bench);
            return 0;
        }
        if (!strcmp(a, "--causal")) {
            causal = 1;
            continue;
        }
        if (!strcmp(a, "--no-verify")) {
            verify = 0;
            continue;
        }
        if (!strcmp(a, "--tune")) {
            tune = 1;
            continue;
        }
        if (!strcmp(a, "--tune-tiles") && i + 1 < argc) {
            struct ssmax_tiles t[40];
            tune_tiles = argv[++i];
            if (!tiles_list(tune_tiles, t, 40)) {
                fprintf(stderr, "ssmax bench: --tune-tiles: '%s' must be tiles as the overrides "
                        "spell them, 'rows,BC,RL' or 'BR,BC,TPR', joined by ';' (at most 40)\n",
                        tune_tiles);
                return EXIT_BAD_INPUT;
            }
            tune = 1;
            continue;
        }
        if (!strcmp(a, "--plan")) {
            use_plan = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "ssmax bench: option %s needs a value\n", a);
            return EXIT_BAD_INPUT;
        }
        const char *v = argv[++i];
        int bad = 0;
        uint32_t u = 0;
        if (!strcmp(a, "--device")) dev = v;
        else if (!strcmp(a, "--suite")) {
            suite = v;
            bad = strcmp(v, "quick") && strcmp(v, "prefill") && strcmp(v, "decode") &&
                  strcmp(v, "masked") && strcmp(v, "full");
        } else if (!strcmp(a, "--shape")) {
            if (nshapes == 64) {
                fprintf(stderr, "ssmax bench: --shape: at most 64 shapes\n");
                return EXIT_BAD_INPUT;
            }
            shape_args[nshapes++] = v; // parsed once every option is known
        } else if (!strcmp(a, "--dtype")) {
            bad = strcmp(v, "f32") && strcmp(v, "f16");
            base.dtype = !strcmp(v, "f16") ? SSMAX_F16 : SSMAX_F32;
        } else if (!strcmp(a, "--mode")) bad = (int)(base.mode = (enum ssmax_mode)cli_parse_mode(v)) < 0;
        else if (!strcmp(a, "--path")) bad = (int)(base.path = (enum ssmax_path)cli_parse_path(v)) < 0;
        else if (!strcmp(a, "--splits")) bad = cli_parse_u32(v, &base.kv_splits) || base.kv_splits > 256;
        else if (!strcmp(a, "--warmup")) {
            bad = cli_parse_u32(v, &u) || u > 1000;
            warmup = (int)u;
        } else if (!strcmp(a, "--iters")) {
            bad = cli_parse_u32(v, &u) || !u || u > 100000;
            iters = (int)u;
        }
        else if (!strcmp(a, "--window")) bad = shape_opt(&ext, "window", v);
        else if (!strcmp(a, "--softcap")) bad = shape_opt(&ext, "softcap", v);
        else if (!strcmp(a, "--sinks")) bad = shape_opt(&ext, "sink", v);
        else if (!strcmp(a, "--kv-lens")) bad = shape_opt(&ext, "kvlens", v);
        else if (!strcmp(a, "--q-pos")) bad = shape_opt(&ext, "qpos", v);
        else if (!strcmp(a, "--mask")) bad = shape_opt(&ext, "mask", v);
        else if (!strcmp(a, "--json")) json = v;
        else if (!strcmp(a, "--csv")) csv = v;
        else {
            fprintf(stderr, "ssmax bench: unknown option '%s'\n", a);
            cli_usage(stderr, usage_bench);
            return EXIT_BAD_INPUT;
        }
        if (bad) {
            fprintf(stderr, "ssmax bench: %s: invalid value '%s'%s\n", a, v,
                    !strcmp(a, "--splits")   ? " (an integer in [0, 256])"
                    : !strcmp(a, "--warmup") ? " (an integer in [0, 1000])"
                    : !strcmp(a, "--iters")  ? " (an integer in [1, 100000])"
                    : !strcmp(a, "--window") ? " (an integer in [1, 2^32))"
                    : !strcmp(a, "--softcap") ? " (a number > 0)"
                    : !strcmp(a, "--kv-lens") ? " (up to 16 integers, comma-separated)"
                    : !strcmp(a, "--mask") ? " (FRAC in [0, 1], optionally /KEYS)"
                                             : "");
            return EXIT_BAD_INPUT;
        }
    }
    for (int i = 0; i < nshapes; i++)
        if (parse_shape(shape_args[i], &base, causal, &ext, &shapes[i]) < 0)
            return EXIT_BAD_INPUT;
    // The record files are checked before anything runs, and written all or nothing at the end.
    struct records rs = { NULL, 0, base.dtype == SSMAX_F16 ? "f16" : "f32", h_mode_name(base.mode) };
    struct out_file outs[2];
    int nout = 0;
    char err[600];
    memset(outs, 0, sizeof(outs));
    if (json)
        outs[nout++] = (struct out_file){ .opt = "--json", .path = json, .write = write_json,
                                          .arg = &rs };
    if (csv)
        outs[nout++] = (struct out_file){ .opt = "--csv", .path = csv, .write = write_csv,
                                          .arg = &rs };
    if (out_files_check(outs, nout, NULL, 0, err, sizeof(err)) < 0) {
        fprintf(stderr, "ssmax bench: %s\n", err);
        return EXIT_BAD_INPUT;
    }
    struct shape *list = shapes;
    int nlist = nshapes;
    struct shape *suite_list = NULL;
    if (!nshapes && load_suite(suite, &suite_list, &nlist) < 0) {
        fprintf(stderr, "ssmax bench: suite '%s' has no shapes\n", suite);
        free(suite_list);
        return EXIT_BAD_INPUT;
    }
    if (!nshapes)
        list = suite_list;
    int code = 0;
    ssmax_context *ctx = cli_context(&code);
    if (!ctx) {
        free(suite_list);
        return code;
    }
    int ndev = ssmax_device_count(ctx);
    int *devs = calloc((size_t)ndev, sizeof(int)), nd = 0;
    if ((code = cli_run_devices(ctx, "ssmax bench", dev, 0, devs, &nd)) != 0)
        goto out;
    if (tune) {
        code = run_tune(ctx, devs, nd, nshapes ? shapes : NULL, nshapes, base, tune_tiles);
        goto out;
    }
    struct record *recs = calloc((size_t)(nd * nlist) + 1, sizeof(*recs));
    if (!recs) {
        fprintf(stderr, "ssmax bench: out of host memory\n");
        code = EXIT_DEVICE;
        goto out;
    }
    // With --json or --csv on standard output, the table goes to stderr.
    FILE *msg = out_files_have_stdout(outs, nout) ? stderr : stdout;
    int nrec = 0;
    fprintf(msg, "%-26s %-6s %-8s %-24s %10s %10s %10s %9s %8s %9s\n", "device", "dtype", "path",
           "shape B,Hq,Hkv,Lq,Lk,D", "ms median", "ms min", "wall ms", "GFLOP/s", "GB/s", "nmse");
    for (int di = 0; di < nd; di++) {
        struct ssmax_device_info d;
        ssmax_device_get_info(ctx, devs[di], &d);
        int r = ssmax_device_open(ctx, devs[di]);
        if (r < 0) {
            fprintf(stderr, "ssmax bench: %s: %s\n", d.name, ssmax_last_error(ctx));
            code = EXIT_DEVICE;
            continue;
        }
        const char *bname = d.backend == SSMAX_BACKEND_VULKAN   ? "vulkan"
                            : d.backend == SSMAX_BACKEND_OPENCL ? "opencl"
                                                                : "cpu";
        for (int si = 0; si < nlist; si++) {
            const struct shape *s = &list[si];
            struct hcase c;
            shape_case(s, &base, &c);
            float *sinks = NULL;
            if (s->has_sink && (sinks = malloc(sizeof(float) * s->hq)))
                for (uint32_t h = 0; h < s->hq; h++)
                    sinks[h] = s->sink;
            c.p.sinks = sinks;
            c.seed = 1000 + (uint64_t)si;
            c.use_plan = use_plan;
            c.sample_rows = 8;
            char shp[64], opts[200];
            snprintf(shp, sizeof(shp), "%u,%u,%u,%u,%u,%u%s", s->b, s->hq, s->hkv, s->lq, s->lk,
                     s->d, s->causal ? " c" : "");
            shape_opts(s, opts, sizeof(opts));
            if (isatty(2)) // progress on long suites, only where a person watches
                fprintf(stderr, "[%d/%d] %s %s ...\r", di * nlist + si + 1, nd * nlist, bname, shp);
            struct record *rc = &recs[nrec];
            snprintf(rc->device, sizeof(rc->device), "%s", d.name);
            snprintf(rc->backend, sizeof(rc->backend), "%s", bname);
            rc->s = *s;
            rc->nmse = -1;
            if (verify) {
                struct hresult hr;
                int st = h_run(ctx, &c, &hr);
                if (st != 0) {
                    fprintf(msg, "%-26.26s %-6s %-8s %-24s  %s\n", d.name,
                           c.p.dtype == SSMAX_F16 ? "f16" : "f32", h_path_name(c.p.path), shp,
                           st < 0 ? hr.why : "WRONG RESULT (not timed)");
                    if (st > 0) {
                        fprintf(msg, "    %s\n", hr.why);
                        code = EXIT_MISMATCH;
                    } else if (code == 0) {
                        code = cli_exit_code(st);
                    }
                    goto next;
                }
                rc->nmse = hr.o.nmse;
                rc->verified = 1;
            }
            struct htiming t;
            char why[512];
            int st = h_time(ctx, &c, warmup, iters, &t, why, sizeof(why));
            if (st < 0) {
                fprintf(msg, "%-26.26s %s: %s\n", d.name, shp, why);
                code = cli_exit_code(st);
                goto next;
            }
            ssmax_last_plan(ctx, &rc->plan);
            rc->splits = rc->plan.kv_splits;
            snprintf(rc->path, sizeof(rc->path), "%s", h_path_name(rc->plan.path));
            const double vis = h_visible_pairs(&c);
            double flops = 4.0 * s->d * (vis > 0 ? vis : 0);
            double esz = c.p.dtype == SSMAX_F16 ? 2 : 4;
            double bytes = esz * s->d * s->b * (2.0 * s->hq * s->lq + 2.0 * s->hkv * s->lk);
            rc->ms_median = t.ms_median, rc->ms_min = t.ms_min, rc->ms_max = t.ms_max;
            rc->wall_ms = t.wall_ms_median;
            rc->host_ms = t.host_ms_median;
            rc->use_plan = use_plan;
            rc->gflops = flops / (t.ms_median * 1e6);
            rc->gbps = bytes / (t.ms_median * 1e6);
            rc->visible = vis;
            snprintf(rc->opts, sizeof(rc->opts), "%s", opts[0] ? opts + 1 : "");
            fprintf(msg, "%-26.26s %-6s %-8s %-24s %10.3f %10.3f %10.3f %9.2f %8.2f %9.1e%s\n",
                   d.name, c.p.dtype == SSMAX_F16 ? "f16" : "f32", rc->path, shp, t.ms_median,
                   t.ms_min, t.wall_ms_median, rc->gflops, rc->gbps, rc->nmse, opts);
            fflush(msg);
            nrec++;
        next:
            free(sinks);
        }
    }
    if (isatty(2))
        fprintf(stderr, "%60s\r", "");
    rs.r = recs;
    rs.n = nrec;
    if (nout && out_files_write(outs, nout, err, sizeof(err)) < 0) {
        fprintf(stderr, "ssmax bench: %s\n", err);
        if (code == 0)
            code = EXIT_BAD_INPUT;
    }
    free(recs);
out:
    free(devs);
    free(suite_list);
    ssmax_context_destroy(&ctx);
    return code;
}
