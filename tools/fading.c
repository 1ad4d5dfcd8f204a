/*
 * ssmax fading: the experiment of Figure 1 of the SSMax paper (Nakanishi 2025), measured on each
 * device. One query row and n keys: needles with logit +3 and n - K distractors at -2 (margin 5;
 * with --noise, distractors at -2 plus Gaussian noise), V one-hot on the needles, so O[0] reads the
 * total weight on the needles directly. Each mode's measured weight sits beside its closed form
 * (SPEC.md section 4): w = K / (K + (n - K) e^(-f(n) m)) for f the mode's factor at n; with noise,
 * beside the same sum in float64 over the logits as stored.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "harness.h"
#include "npy.h"
#include "ssmax/ssmax.h"

static const char *usage_fading =
    "usage: ssmax fading [options]\n"
    "Attention fading (the SSMax paper's Figure 1), measured: one query, n keys, needles at logit\n"
    "+3 among distractors at -2 (margin 5), V one-hot on the needles, so O reads their weight.\n"
    "  --device all|SPEC        devices (default all: the cpu and every device that runs)\n"
    "  --modes M[,M...]         of softmax, ssmax, ssmax-bias, logn, floor-log (default\n"
    "                           softmax,ssmax,logn,floor-log)\n"
    "  --s X                    SSMax s (default 0.43); --b X for ssmax-bias (default 0)\n"
    "  --train-len L            logn (default 8192); --beta X --floor F --pos-offset O floor-log\n"
    "                           (defaults 0.1, 8192, 1; the query sits at position n - 1)\n"
    "  --n-max N                largest n (default 1000000); n runs from 2 on a log grid\n"
    "  --per-decade K           grid points per decade (default 4)\n"
    "  --needles K              needles (default 1)\n"
    "  --noise SIGMA            distractor logits -2 + SIGMA * N(0, 1) (default 0)\n"
    "  --seed N                 noise seed (default 1)\n"
    "  --dtype f32|f16          storage type (default f32)\n"
    "  --tol X                  largest |measured - closed form| allowed (default 1e-5 for f32,\n"
    "                           1e-4 with --noise, 2e-3 for f16); any point past it exits 3\n"
    "  --json FILE --csv FILE   write the records (device, mode, s, n, needles, noise, measured,\n"
    "                           closed_form, abs_error)\n"
    "  --plot OUT.svg           draw weight against n (log x), one line per mode (closed form)\n"
    "                           and the measured points on it\n"
    "Prints, per device, the device time of its largest n. Exit codes: 0 ok, 2 bad input,\n"
    "3 a point past the tolerance, 4 device failure.\n";

#define MAX_MODES 5
#define MAX_POINTS 256

struct frec {
    char device[300];
    enum ssmax_mode mode;
    uint32_t n;
    double measured, closed, err, ms;
};

struct fopts {
    int modes[MAX_MODES], nmodes;
    struct ssmax_attn_params base; // s_all, b_all, train_len, floor params, dtype
    uint32_t n_max, per_decade, needles;
    double noise, tol;
    uint64_t seed;
    uint32_t grid[MAX_POINTS];
    int npoints;
};

static double gauss(uint64_t *s)
{
    double u1 = ((double)(h_rand(s) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
    double u2 = (double)(h_rand(s) >> 11) * (1.0 / 9007199254740992.0);
    return sqrt(-2 * log(u1)) * cos(2 * M_PI * u2);
}

/* Key j of n is a needle: K of them spread evenly over the keys. */
static int is_needle(uint32_t j, uint32_t n, uint32_t k)
{
    return (uint32_t)((uint64_t)j * k / n) != (uint32_t)((uint64_t)(j + 1) * k / n);
}

/* The keys' logits as stored (K[j][0]; q = e_0, scale 1), for n keys. */
static void logits(const struct fopts *o, uint32_t n, float *z)
{
    uint64_t seed = o->seed * 0x9e3779b97f4a7c15ull + n;
    for (uint32_t j = 0; j < n; j++) {
        float x = is_needle(j, n, o->needles) ? 3.0f : (float)(-2.0 + o->noise * gauss(&seed));
        z[j] = o->base.dtype == SSMAX_F16 ? ssmax_f16_to_f32(ssmax_f32_to_f16(x)) : x;
    }
}

/* The closed form (SPEC.md section 4) for the weight on the needles, in float64 over the logits
 * as stored: sum over needles of e^(f z) / sum over all of e^(f z). */
static double closed_form(const struct ssmax_attn_params *p, uint32_t n, const float *z,
                          uint32_t needles)
{
    double f = ssmax_row_factor(p, 0, n, n - 1), m = -INFINITY, num = 0, den = 0;
    for (uint32_t j = 0; j < n; j++)
        m = fmax(m, f * z[j]);
    for (uint32_t j = 0; j < n; j++) {
        double w = exp(f * z[j] - m);
        den += w;
        if (is_needle(j, n, needles))
            num += w;
    }
    return num / den;
}

/* One device: every mode at every n. Records appended to *recs; returns 0, or an exit code. */
static int run_device(ssmax_context *ctx, int idx, const struct fopts *o, struct frec *recs,
                      int *nrec, double *ms_max)
{
    struct ssmax_device_info di;
    ssmax_device_get_info(ctx, idx, &di);
    int r = ssmax_device_open(ctx, idx);
    if (r < 0) {
        fprintf(stderr, "ssmax fading: %s: %s\n", di.name, ssmax_last_error(ctx));
        return cli_exit_code(r);
    }
    const uint32_t D = 8, nmax = o->grid[o->npoints - 1];
    const size_t esz = o->base.dtype == SSMAX_F16 ? 2 : 4;
    float *z = malloc(sizeof(float) * nmax);
    uint8_t *k = calloc((size_t)nmax * D, esz), *v = calloc((size_t)nmax * D, esz);
    ssmax_buffer *bq = NULL, *bk = NULL, *bv = NULL, *bo = NULL;
    int code = 0;
    if (!z || !k || !v) {
        fprintf(stderr, "ssmax fading: out of host memory for %u keys\n", nmax);
        code = EXIT_DEVICE;
        goto out;
    }
    uint8_t q[8 * 4] = { 0 }, got[8 * 4];
    if (esz == 2)
        ((uint16_t *)q)[0] = ssmax_f32_to_f16(1.0f);
    else
        ((float *)q)[0] = 1.0f;
    if ((r = ssmax_buffer_create(ctx, D * esz, &bq)) < 0 ||
        (r = ssmax_buffer_create(ctx, (size_t)nmax * D * esz, &bk)) < 0 ||
        (r = ssmax_buffer_create(ctx, (size_t)nmax * D * esz, &bv)) < 0 ||
        (r = ssmax_buffer_create(ctx, D * esz, &bo)) < 0 ||
        (r = ssmax_buffer_write(ctx, bq, 0, q, D * esz)) < 0) {
        fprintf(stderr, "ssmax fading: %s: %s\n", di.name, ssmax_last_error(ctx));
        code = cli_exit_code(r);
        goto out;
    }
    for (int pi = 0; pi < o->npoints; pi++) {
        const uint32_t n = o->grid[pi];
        logits(o, n, z);
        for (uint32_t j = 0; j < n; j++) {
            const float vj = is_needle(j, n, o->needles) ? 1.0f : 0.0f;
            if (esz == 2) {
                ((uint16_t *)k)[(size_t)j * D] = ssmax_f32_to_f16(z[j]);
                ((uint16_t *)v)[(size_t)j * D] = ssmax_f32_to_f16(vj);
            } else {
                ((float *)k)[(size_t)j * D] = z[j];
                ((float *)v)[(size_t)j * D] = vj;
            }
        }
        if ((r = ssmax_buffer_write(ctx, bk, 0, k, (size_t)n * D * esz)) < 0 ||
            (r = ssmax_buffer_write(ctx, bv, 0, v, (size_t)n * D * esz)) < 0) {
            fprintf(stderr, "ssmax fading: %s: %s\n", di.name, ssmax_last_error(ctx));
            code = cli_exit_code(r);
            goto out;
        }
        for (int mi = 0; mi < o->nmodes; mi++) {
            struct ssmax_attn_params p = o->base;
            p.mode = (enum ssmax_mode)o->modes[mi];
            p.head_dim = D;
            p.kv_len = n;
            p.scale = 1.0f;
            struct ssmax_attn_buffers ab = { .q = bq, .k = bk, .v = bv, .o = bo };
            if ((r = ssmax_attn(ctx, &p, &ab)) < 0 ||
                (r = ssmax_buffer_read(ctx, bo, 0, got, D * esz)) < 0) {
                fprintf(stderr, "ssmax fading: %s, %s, n %u: %s\n", di.name, h_mode_name(p.mode),
                        n, ssmax_last_error(ctx));
                code = cli_exit_code(r);
                goto out;
            }
            uint64_t ns = 0;
            ssmax_last_device_time(ctx, &ns);
            struct frec *rc = &recs[(*nrec)++];
            snprintf(rc->device, sizeof(rc->device), "%s", di.name);
            rc->mode = p.mode;
            rc->n = n;
            rc->measured = esz == 2 ? ssmax_f16_to_f32(((uint16_t *)got)[0]) : ((float *)got)[0];
            rc->closed = closed_form(&p, n, z, o->needles);
            rc->err = fabs(rc->measured - rc->closed);
            rc->ms = ns / 1e6;
            if (n == nmax && rc->ms > *ms_max)
                *ms_max = rc->ms;
        }
    }
out:
    free(z), free(k), free(v);
    ssmax_buffer_destroy(ctx, &bq), ssmax_buffer_destroy(ctx, &bk);
    ssmax_buffer_destroy(ctx, &bv), ssmax_buffer_destroy(ctx, &bo);
    return code;
}

struct frecs {
    const struct frec *r;
    int n;
    const struct fopts *o;
};

static int write_json(FILE *f, void *arg)
{
    const struct frecs *rs = arg;
    fprintf(f, "[\n");
    for (int i = 0; i < rs->n; i++) {
        const struct frec *r = &rs->r[i];
        fprintf(f, "  {\"device\": ");
        cli_json_str(f, r->device);
        fprintf(f, ", \"mode\": \"%s\", \"s\": %.9g, \"n\": %u, \"needles\": %u, \"noise\": %.9g, "
                "\"dtype\": \"%s\", \"measured\": %.9g, \"closed_form\": %.12g, \"abs_error\": "
                "%.3e, \"device_ms\": %.6f}%s\n", h_mode_name(r->mode),
                (double)rs->o->base.s_all, r->n, rs->o->needles, rs->o->noise,
                rs->o->base.dtype == SSMAX_F16 ? "f16" : "f32", r->measured, r->closed, r->err,
                r->ms, i + 1 < rs->n ? "," : "");
    }
    fprintf(f, "]\n");
    return ferror(f) ? -1 : 0;
}

static int write_csv(FILE *f, void *arg)
{
    const struct frecs *rs = arg;
    fprintf(f, "device,mode,s,n,needles,noise,dtype,measured,closed_form,abs_error,device_ms\n");
    for (int i = 0; i < rs->n; i++) {
        const struct frec *r = &rs->r[i];
        fputc('"', f);
        for (const char *c = r->device; *c; c++) {
            if (*c == '"')
                fputc('"', f);
            fputc(*c, f);
        }
        fprintf(f, "\",%s,%.9g,%u,%u,%.9g,%s,%.9g,%.12g,%.3e,%.6f\n", h_mode_name(r->mode),
                (double)rs->o->base.s_all, r->n, rs->o->needles, rs->o->noise,
                rs->o->base.dtype == SSMAX_F16 ? "f16" : "f32", r->measured, r->closed, r->err,
                r->ms);
    }
    return ferror(f) ? -1 : 0;
}

/* The plot: weight on the needles against n, log x axis; each mode's closed form as a line (the
 * noiseless formula at 200 points, or through the grid with noise), every device's measured
 * points on it as markers. */
static int write_svg(FILE *f, void *arg)
{
    const struct frecs *rs = arg;
    const struct fopts *o = rs->o;
    static const char *colors[MAX_MODES] = { "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e" };
    const double W = 720, H = 440, L = 70, R = 170, T = 40, B = 60;
    const double x0 = log10(2.0), x1 = log10((double)o->grid[o->npoints - 1]);
#define SX(n) (L + (log10((double)(n)) - x0) / (x1 > x0 ? x1 - x0 : 1) * (W - L - R))
#define SY(w) (T + (1 - (w)) * (H - T - B))
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
            "viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\" font-size=\"12\">\n", W, H, W, H);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    fprintf(f, "<text x=\"%.0f\" y=\"22\" font-size=\"14\">Weight on %u needle%s (logit +3) among "
            "n keys (distractors -2%s), s = %g</text>\n", L, o->needles,
            o->needles == 1 ? "" : "s", o->noise > 0 ? ", with noise" : "",
            (double)o->base.s_all);
    // axes and grid
    for (int d = 0; d <= (int)ceil(x1); d++) {
        double n = pow(10, d);
        if (log10(n) < x0 - 1e-9 || log10(n) > x1 + 1e-9)
            continue;
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n",
                SX(n), SY(0), SX(n), SY(1));
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">10^%d</text>\n", SX(n),
                SY(0) + 18, d);
    }
    for (int t = 0; t <= 4; t++) {
        double w = t / 4.0;
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n",
                L, SY(w), W - R, SY(w));
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%.2f</text>\n", L - 6,
                SY(w) + 4, w);
    }
    fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" "
            "stroke=\"black\"/>\n", L, T, W - L - R, H - T - B);
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">n (keys)</text>\n",
            (L + W - R) / 2, H - 18);
    fprintf(f, "<text transform=\"translate(18 %.1f) rotate(-90)\" text-anchor=\"middle\">weight "
            "on the needle%s</text>\n", (T + H - B) / 2, o->needles == 1 ? "" : "s");
    for (int mi = 0; mi < o->nmodes; mi++) {
        struct ssmax_attn_params p = o->base;
        p.mode = (enum ssmax_mode)o->modes[mi];
        static const char *dash[MAX_MODES] = { "none", "none", "8 4", "2 3", "12 3 2 3" };
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" "
                "stroke-dasharray=\"%s\" points=\"", colors[mi], dash[mi]);
        if (o->noise > 0) { // through the records of the first device
            for (int i = 0; i < rs->n; i++)
                if (rs->r[i].mode == p.mode && !strcmp(rs->r[i].device, rs->r[0].device))
                    fprintf(f, "%.1f,%.1f ", SX(rs->r[i].n), SY(rs->r[i].closed));
        } else {
            // SPEC.md section 4 at every integer n up to 100, then 200 points a decade past it
            double last = -1;
            for (double n = o->needles + 1.0; n <= o->grid[o->npoints - 1];
                 n = n < 100 ? n + 1 : n * pow(10, 1.0 / 200)) {
                const double ni = round(n), K = o->needles;
                if (ni == last)
                    continue;
                last = ni;
                double fct = ssmax_row_factor(&p, 0, (uint64_t)ni, (uint64_t)ni - 1);
                double w = K / (K + (ni - K) * exp(-fct * 5.0));
                fprintf(f, "%.1f,%.1f ", SX(ni), SY(w));
            }
        }
        fprintf(f, "\"/>\n");
        for (int i = 0; i < rs->n; i++)
            if (rs->r[i].mode == p.mode)
                fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\" "
                        "fill-opacity=\"0.6\"/>\n", SX(rs->r[i].n), SY(rs->r[i].measured),
                        colors[mi]);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                "stroke-width=\"2\" stroke-dasharray=\"%s\"/><text x=\"%.1f\" y=\"%.1f\">%s"
                "</text>\n", W - R + 14, T + 16 + 20 * mi, W - R + 40, T + 16 + 20 * mi,
                colors[mi], dash[mi], W - R + 46,
                T + 20 + 20 * mi, h_mode_name(p.mode));
    }
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" fill=\"#555\">lines: closed form</text>\n", W - R + 14,
            T + 30 + 20 * o->nmodes);
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" fill=\"#555\">dots: measured</text>\n", W - R + 14,
            T + 46 + 20 * o->nmodes);
    fprintf(f, "</svg>\n");
#undef SX
#undef SY
    return ferror(f) ? -1 : 0;
}

static int parse_modes(const char *v, struct fopts *o)
{
    o->nmodes = 0;
    for (const char *p = v; *p;) {
        char tok[32];
        size_t n = strcspn(p, ",");
        if (!n || n >= sizeof(tok) || o->nmodes == MAX_MODES)
            return -1;
        snprintf(tok, sizeof(tok), "%.*s", (int)n, p);
        int m = cli_parse_mode(tok);
        if (m < 0)
            return -1;
        for (int i = 0; i < o->nmodes; i++)
            if (o->modes[i] == m)
                return -1;
        o->modes[o->nmodes++] = m;
        p += n + (p[n] == ',');
    }
    return o->nmodes ? 0 : -1;
}

int cmd_fading(int argc, char **argv)
{
    struct fopts o;
    memset(&o, 0, sizeof(o));
    ssmax_attn_params_default(&o.base);
    o.modes[0] = SSMAX_MODE_SOFTMAX, o.modes[1] = SSMAX_MODE_SSMAX, o.modes[2] = SSMAX_MODE_LOGN;
    o.modes[3] = SSMAX_MODE_FLOOR_LOG, o.nmodes = 4;
    o.n_max = 1000000, o.per_decade = 4, o.needles = 1, o.seed = 1, o.tol = -1;
    const char *dev = "all", *json = NULL, *csv = NULL, *svg = NULL;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            cli_usage(stdout, usage_fading);
            return 0;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "ssmax fading: option %s needs a value\n", a);
            return EXIT_BAD_INPUT;
        }
        const char *v = argv[++i];
        int bad = 0;
        float x = 0;
        if (!strcmp(a, "--device")) dev = v;
        else if (!strcmp(a, "--modes")) bad = parse_modes(v, &o);
        else if (!strcmp(a, "--s")) bad = cli_parse_float(v, &o.base.s_all);
        else if (!strcmp(a, "--b")) bad = cli_parse_float(v, &o.base.b_all);
        else if (!strcmp(a, "--train-len")) bad = cli_parse_u32(v, &o.base.train_len);
        else if (!strcmp(a, "--beta")) bad = cli_parse_float(v, &o.base.floor_beta);
        else if (!strcmp(a, "--floor")) bad = cli_parse_u32(v, &o.base.floor_scale);
        else if (!strcmp(a, "--pos-offset")) bad = cli_parse_u32(v, &o.base.pos_offset);
        else if (!strcmp(a, "--n-max")) bad = cli_parse_u32(v, &o.n_max) || o.n_max < 2;
        else if (!strcmp(a, "--per-decade"))
            bad = cli_parse_u32(v, &o.per_decade) || !o.per_decade || o.per_decade > 32;
        else if (!strcmp(a, "--needles")) bad = cli_parse_u32(v, &o.needles) || !o.needles;
        else if (!strcmp(a, "--noise")) {
            bad = cli_parse_float(v, &x) || !(x >= 0) || !isfinite(x);
            o.noise = x;
        } else if (!strcmp(a, "--seed")) bad = cli_parse_u64(v, &o.seed);
        else if (!strcmp(a, "--tol")) {
            bad = cli_parse_float(v, &x) || !(x > 0);
            o.tol = x;
        } else if (!strcmp(a, "--dtype")) {
            bad = strcmp(v, "f32") && strcmp(v, "f16");
            o.base.dtype = !strcmp(v, "f16") ? SSMAX_F16 : SSMAX_F32;
        } else if (!strcmp(a, "--json")) json = v;
        else if (!strcmp(a, "--csv")) csv = v;
        else if (!strcmp(a, "--plot")) svg = v;
        else {
            fprintf(stderr, "ssmax fading: unknown option '%s' (see ssmax fading --help)\n", a);
            return EXIT_BAD_INPUT;
        }
        if (bad) {
            char names[128];
            fprintf(stderr, "ssmax fading: %s: invalid value '%s' (%s)\n", a, v,
                    !strcmp(a, "--modes") ? cli_names(0, ", ", " or ", names, sizeof(names))
                    : !strcmp(a, "--n-max") ? "an integer in [2, 2^32)"
                    : !strcmp(a, "--per-decade") ? "an integer in [1, 32]"
                    : !strcmp(a, "--needles") ? "an integer >= 1"
                    : !strcmp(a, "--noise") ? "a finite number >= 0"
                    : !strcmp(a, "--tol") ? "a number > 0"
                    : !strcmp(a, "--dtype") ? "f32 or f16"
                    : "a number");
            return EXIT_BAD_INPUT;
        }
    }
    if (o.needles >= o.n_max) {
        fprintf(stderr, "ssmax fading: --needles: %u must be less than --n-max %u\n", o.needles,
                o.n_max);
        return EXIT_BAD_INPUT;
    }
    // f32: the logits are exact (+3, -2) and the sum's fp32 rounding stays below 1e-7 over 10^6
    // keys; noisy distractors of many magnitudes, summed in fp32 over runs of up to 65536 keys a
    // workgroup, move the weight by up to about 2e-5 there (the reference sums in float64). f16:
    // O is stored in half.
    if (o.tol < 0)
        o.tol = o.base.dtype == SSMAX_F16 ? 2e-3 : o.noise > 0 ? 1e-4 : 1e-5;
    // The grid: n = 10^(k / per_decade) rounded, from 2 (and past the needles) to n_max, distinct.
    for (uint32_t k = 0; o.npoints < MAX_POINTS; k++) {
        double x = pow(10.0, (double)k / o.per_decade);
        uint32_t n = x >= o.n_max ? o.n_max : (uint32_t)llround(x);
        if (n < 2 || n <= o.needles)
            continue;
        if (!o.npoints || n != o.grid[o.npoints - 1])
            o.grid[o.npoints++] = n;
        if (n == o.n_max)
            break;
    }
    // Every mode's parameters must be valid before anything runs.
    for (int mi = 0; mi < o.nmodes; mi++) {
        struct ssmax_attn_params p = o.base;
        p.mode = (enum ssmax_mode)o.modes[mi];
        p.kv_len = o.n_max;
        p.head_dim = 8;
        char why[512];
        if (ssmax_attn_validate(&p, why, sizeof(why)) < 0) {
            fprintf(stderr, "ssmax fading: %s\n", why);
            return EXIT_BAD_INPUT;
        }
    }
    struct frecs rs = { NULL, 0, &o };
    struct out_file outs[3];
    int nout = 0;
    char err[600];
    memset(outs, 0, sizeof(outs));
    if (json)
        outs[nout++] = (struct out_file){ .opt = "--json", .path = json, .write = write_json, .arg = &rs };
    if (csv)
        outs[nout++] = (struct out_file){ .opt = "--csv", .path = csv, .write = write_csv, .arg = &rs };
    if (svg)
        outs[nout++] = (struct out_file){ .opt = "--plot", .path = svg, .write = write_svg, .arg = &rs };
    if (out_files_check(outs, nout, NULL, 0, err, sizeof(err)) < 0) {
        fprintf(stderr, "ssmax fading: %s\n", err);
        return EXIT_BAD_INPUT;
    }
    int code = 0;
    ssmax_context *ctx = cli_context(&code);
    if (!ctx)
        return code;
    int ndev = ssmax_device_count(ctx), nd = 0;
    int *devs = calloc((size_t)ndev, sizeof(int));
    struct frec *recs = calloc((size_t)ndev * o.nmodes * o.npoints + 1, sizeof(*recs));
    if (!devs || !recs) {
        fprintf(stderr, "ssmax fading: out of host memory\n");
        code = EXIT_DEVICE;
        goto out;
    }
    if ((code = cli_run_devices(ctx, "ssmax fading", dev, 1, devs, &nd)) != 0)
        goto out;
    rs.r = recs;
    FILE *msg = out_files_have_stdout(outs, nout) ? stderr : stdout;
    int worst = 0;
    for (int di = 0; di < nd; di++) {
        struct ssmax_device_info d;
        ssmax_device_get_info(ctx, devs[di], &d);
        int first = rs.n;
        double ms = 0;
        int r = run_device(ctx, devs[di], &o, recs, &rs.n, &ms);
        if (r) {
            if (!code || code == EXIT_MISMATCH)
                code = r;
            continue;
        }
        fprintf(msg, "%s (%s), %u needle%s%s, %s:\n", d.name,
                d.backend == SSMAX_BACKEND_VULKAN ? "vulkan" : d.backend == SSMAX_BACKEND_OPENCL
                ? "opencl" : "cpu", o.needles, o.needles == 1 ? "" : "s",
                o.noise > 0 ? ", noisy distractors" : "",
                o.base.dtype == SSMAX_F16 ? "f16" : "f32");
        fprintf(msg, "  %10s", "n");
        for (int mi = 0; mi < o.nmodes; mi++)
            fprintf(msg, "  %-26s", h_mode_name((enum ssmax_mode)o.modes[mi]));
        fprintf(msg, "\n  %10s", "");
        for (int mi = 0; mi < o.nmodes; mi++)
            fprintf(msg, "  %-9s %-9s %-6s", "measured", "closed", "error");
        fprintf(msg, "\n");
        for (int pi = 0; pi < o.npoints; pi++) {
            fprintf(msg, "  %10u", o.grid[pi]);
            for (int mi = 0; mi < o.nmodes; mi++) {
                const struct frec *rc = &recs[first + pi * o.nmodes + mi];
                if (rc->err > o.tol || !(rc->err == rc->err))
                    worst = 1;
                fprintf(msg, "  %-9.6f %-9.6f %-6.0e%s", rc->measured, rc->closed, rc->err,
                        rc->err > o.tol || !(rc->err == rc->err) ? "!" : "");
            }
            fprintf(msg, "\n");
        }
        fprintf(msg, "  largest n (%u keys, D 8): %.3f ms on the device (slowest mode)\n",
                o.grid[o.npoints - 1], ms);
    }
    if (worst) {
        fprintf(msg, "points marked ! are further than %g from the closed form\n", o.tol);
        if (!code)
            code = EXIT_MISMATCH;
    }
    if (nout && out_files_write(outs, nout, err, sizeof(err)) < 0) {
        fprintf(stderr, "ssmax fading: %s\n", err);
        if (!code)
            code = EXIT_BAD_INPUT;
    }
out:
    free(devs);
    free(recs);
    ssmax_context_destroy(&ctx);
    return code;
}
