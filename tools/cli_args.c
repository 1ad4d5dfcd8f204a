/* Argument parsing for the ssmax CLI, free of I/O so it can be fuzzed. */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "src/names.h"

int cli_parse_mode(const char *s) { return ssmax_mode_parse(s); }
int cli_parse_path(const char *s) { return ssmax_path_parse(s); }

static const char *const mode_names[] = SSMAX_MODE_NAMES;
static const char *const path_names[] = SSMAX_PATH_NAMES;

const char *cli_names(int paths, const char *sep, const char *last, char *out, size_t n)
{
    const char *const *v = paths ? path_names : mode_names;
    const size_t count = paths ? sizeof(path_names) / sizeof(*v) : sizeof(mode_names) / sizeof(*v);
    size_t len = 0;
    out[0] = 0;
    for (size_t i = 0; i < count && len < n; i++)
        len += (size_t)snprintf(out + len, n - len, "%s%s", i == 0 ? "" : i + 1 == count ? last : sep,
                                v[i]);
    return out;
}

void cli_usage(FILE *f, const char *text)
{
    char modes[128], paths[128];
    cli_names(0, "|", "|", modes, sizeof(modes));
    cli_names(1, "|", "|", paths, sizeof(paths));
    for (const char *t = text; *t;) {
        if (!strncmp(t, "{MODES}", 7))
            fputs(modes, f), t += 7;
        else if (!strncmp(t, "{PATHS}", 7))
            fputs(paths, f), t += 7;
        else
            fputc(*t++, f);
    }
}

/* Decimal digits only: no sign, no space, no "0x". */
int cli_parse_u64(const char *s, uint64_t *out)
{
    if (!s || !*s)
        return -1;
    uint64_t v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9' || v > (UINT64_MAX - 9) / 10)
            return -1;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    *out = v;
    return 0;
}

int cli_parse_u32(const char *s, uint32_t *out)
{
    uint64_t v;
    if (cli_parse_u64(s, &v) < 0 || v > UINT32_MAX)
        return -1;
    *out = (uint32_t)v;
    return 0;
}

int cli_parse_float(const char *s, float *out)
{
    char *end;
    if (!s || !*s || isspace((unsigned char)*s))
        return -1;
    errno = 0;
    double v = strtod(s, &end);
    if (*end || errno == ERANGE)
        return -1;
    *out = (float)v;
    return 0;
}

#define ERR(...) (err ? (fprintf(err, __VA_ARGS__), -1) : -1)

int run_parse_args(int argc, char **argv, struct run_opts *o, FILE *err)
{
    memset(o, 0, sizeof(*o));
    ssmax_attn_params_default(&o->p);
    struct ssmax_attn_params *p = &o->p;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h"))
            return 1;
        if (!strcmp(a, "--causal")) {
            p->causal = 1;
            continue;
        }
        if (!strcmp(a, "--check")) {
            o->check = 1;
            continue;
        }
        if (!strcmp(a, "--quiet")) {
            o->quiet = 1;
            continue;
        }
        if (!strcmp(a, "--verbose") || !strcmp(a, "-v")) {
            o->verbose = 1;
            continue;
        }
        if (a[0] != '-' || a[1] != '-')
            return ERR("ssmax run: unexpected argument '%s'\n", a);
        if (i + 1 >= argc)
            return ERR("ssmax run: option %s needs a value\n", a);
        const char *v = argv[++i];
        int bad = 0, m;
        if (!strcmp(a, "--q")) o->q = v;
        else if (!strcmp(a, "--k")) o->k = v;
        else if (!strcmp(a, "--v")) o->v = v;
        else if (!strcmp(a, "--out")) o->out = v;
        else if (!strcmp(a, "--lse")) o->lse = v;
        else if (!strcmp(a, "--probs")) o->probs = v;
        else if (!strcmp(a, "--device")) o->device = v;
        else if (!strcmp(a, "--layout")) {
            if (strcmp(v, "bhld") && strcmp(v, "blhd"))
                return ERR("ssmax run: --layout: '%s' is not bhld or blhd\n", v);
            o->blhd = !strcmp(v, "blhd");
        }
        else if (!strcmp(a, "--s")) o->s = v;
        else if (!strcmp(a, "--b")) o->b = v;
        else if (!strcmp(a, "--mode")) {
            bad = (m = cli_parse_mode(v)) < 0;
            p->mode = bad ? p->mode : (enum ssmax_mode)m;
        } else if (!strcmp(a, "--path")) {
            bad = (m = cli_parse_path(v)) < 0;
            p->path = bad ? p->path : (enum ssmax_path)m;
        } else if (!strcmp(a, "--train-len")) bad = cli_parse_u32(v, &p->train_len);
        else if (!strcmp(a, "--beta")) bad = cli_parse_float(v, &p->floor_beta);
        else if (!strcmp(a, "--floor")) bad = cli_parse_u32(v, &p->floor_scale);
        else if (!strcmp(a, "--pos-offset")) bad = cli_parse_u32(v, &p->pos_offset);
        else if (!strcmp(a, "--splits")) bad = cli_parse_u32(v, &p->kv_splits);
        else if (!strcmp(a, "--scale")) {
            bad = cli_parse_float(v, &p->scale);
            if (!bad && p->scale == 0)
                return ERR("ssmax run: --scale: 0 is not a usable softmax scale\n");
        } else if (!strcmp(a, "--q-pos")) {
            uint32_t qp = 0;
            if (cli_parse_u32(v, &qp) == 0) // a number, else an int32/int64 [B] .npy file
                p->q_pos = qp;
            else if (v[0] >= '0' && v[0] <= '9')
                bad = 1;
            else
                o->q_pos_file = v;
        } else if (!strcmp(a, "--window")) {
            bad = cli_parse_u32(v, &p->window);
            if (!bad && p->window == 0)
                return ERR("ssmax run: --window: 0 is not a window (omit the option for none)\n");
        } else if (!strcmp(a, "--softcap")) {
            bad = cli_parse_float(v, &p->softcap);
            if (!bad && !(p->softcap > 0))
                return ERR("ssmax run: --softcap: %s must be a number > 0 (omit the option for "
                           "none)\n", v);
        } else if (!strcmp(a, "--mask")) o->mask = v;
        else if (!strcmp(a, "--sinks")) o->sinks = v;
        else if (!strcmp(a, "--kv-lens")) o->kv_lens = v;
        else {
            return ERR("ssmax run: unknown option '%s' (see ssmax run --help)\n", a);
        }
        char names[128];
        if (bad)
            return ERR("ssmax run: %s: invalid value '%s' (%s)\n", a, v,
                       !strcmp(a, "--mode")   ? cli_names(0, ", ", " or ", names, sizeof(names))
                       : !strcmp(a, "--path") ? cli_names(1, ", ", " or ", names, sizeof(names))
                       : !strcmp(a, "--beta") || !strcmp(a, "--scale") || !strcmp(a, "--softcap")
                           ? "a number"
                       : !strcmp(a, "--q-pos") ? "an integer in [0, 2^32) or an int32/int64 .npy"
                           : "an integer in [0, 2^32)");
    }
    if (!o->q || !o->k || !o->v || !o->out)
        return ERR("ssmax run: --q, --k, --v and --out are required (see ssmax run --help)\n");
    return 0;
}
