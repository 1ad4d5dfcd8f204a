/*
 * ssmax pipelines: every pipeline (Vulkan) or kernel (OpenCL) the planner can choose on a device,
 * over a grid of head dims, dtypes and shapes, built with the driver's statistics. The plans are
 * the planner's own (ssmax_attn_pipelines, src/pipelines.h): nothing here chooses tiles.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "npy.h"
#include "src/pipelines.h"

static const char *usage_pipelines =
    "usage: ssmax pipelines [--device SPEC] [--json FILE] [--spirv DIR] [--head-dim D[,D...]]\n"
    "                       [--dtype f32|f16]\n"
    "Builds every pipeline the planner can choose on the device, as an attention call would build\n"
    "it, and prints one line per pipeline with the driver's statistics where it reports them\n"
    "(Vulkan: VK_KHR_pipeline_executable_properties, e.g. RADV's VGPRs, spills, LDS and occupancy;\n"
    "OpenCL: clGetKernelWorkGroupInfo). The grid: head_dim 64, 80, 96, 128, 256; f32 and f16;\n"
    "prefill B1 H8 L2048; decode, one query row over 16384 keys with 1, 4 and 8 query heads per KV\n"
    "head; the split-KV merge; the unfused kernels (qk, softmax, pv); the mask counts.\n"
    "\n"
    "  --device SPEC     as for run (default $SSMAX_DEVICE or auto); devices that compile but\n"
    "                    cannot run (marked in `ssmax devices`) work here when named\n"
    "  --json FILE       write the records: kernel, case, dtype, head_dim, q_per_kv,\n"
    "                    spec_constants, workgroup_size, subgroup_size, shared_bytes, stats\n"
    "                    (every statistic the driver reports, by its name; null when none)\n"
    "  --spirv DIR       write each Vulkan pipeline's SPIR-V (NNN-KERNEL-CASE-DTYPE-dD-gG.spv) and\n"
    "                    its specialization constants (.json); OpenCL: the build options (.json)\n"
    "  --head-dim LIST   only these head dims; --dtype: only this dtype\n"
    "\n"
    "Outputs are written all or nothing. Exit codes: 0 ok, 2 bad input (options, a device spec\n"
    "naming no device, a device that builds no pipelines, an output that cannot be written),\n"
    "4 a pipeline failed to build or the device failed.\n";

enum { CASE_PREFILL, CASE_DECODE, CASE_MERGE, CASE_UNFUSED, CASE_MASK };
static const char *const case_names[] = { "prefill", "decode", "merge", "unfused", "mask" };

struct rec {
    int cs;        // CASE_*
    int f16;
    uint32_t d, g; // head dim, query heads per KV head
    struct ssmax_plan_info plan;
    struct ssmax_pipe_info pi;
    char error[600]; // not empty: the case failed (pi unset)
};

struct recs {
    struct rec *r;
    int n, cap;
    int cs, f16;
    uint32_t d, g;
    struct ssmax_plan_info plan;
    const char *only_role; // the forced split-KV plan: its merge only; the masked plan: its mask
                           // counts only (each when not listed yet)
};

static struct rec *rec_add(struct recs *rs)
{
    if (rs->n == rs->cap) {
        int cap = rs->cap ? rs->cap * 2 : 64;
        struct rec *nr = realloc(rs->r, (size_t)cap * sizeof(*nr));
        if (!nr)
            return NULL;
        rs->r = nr;
        rs->cap = cap;
    }
    struct rec *r = &rs->r[rs->n++];
    memset(r, 0, sizeof(*r));
    r->cs = rs->cs, r->f16 = rs->f16, r->d = rs->d, r->g = rs->g;
    r->plan = rs->plan;
    return r;
}

static int same_pipe(const struct ssmax_pipe_info *a, const struct ssmax_pipe_info *b)
{
    return !strcmp(a->kernel, b->kernel) && a->nspec == b->nspec &&
           !memcmp(a->spec, b->spec, sizeof(a->spec)) && !strcmp(a->options, b->options);
}

static int on_pipe(void *priv, const struct ssmax_pipe_info *pi)
{
    struct recs *rs = priv;
    const int merge = !strcmp(pi->role, "merge"), mask = !strcmp(pi->role, "mask");
    if (rs->only_role && strcmp(pi->role, rs->only_role))
        return 0;
    const int cs = merge ? CASE_MERGE : mask ? CASE_MASK : rs->cs;
    if (merge || mask) // one per (head dim, dtype): they do not depend on the rest of the shape
        for (int i = 0; i < rs->n; i++)
            if (rs->r[i].cs == cs && !rs->r[i].error[0] && same_pipe(&rs->r[i].pi, pi))
                return 0;
    struct rec *r = rec_add(rs);
    if (!r)
        return SSMAX_ERR_OUT_OF_HOST_MEMORY;
    r->pi = *pi;
    r->cs = cs;
    return 0;
}

static const struct ssmax_pipe_stat *stat_of(const struct ssmax_pipe_info *pi, const char *name)
{
    for (int i = 0; i < pi->nstats; i++)
        if (!strcmp(pi->stats[i].name, name))
            return &pi->stats[i];
    return NULL;
}

static void stat_print(FILE *f, const struct ssmax_pipe_stat *s)
{
    switch (s->format) {
    case SSMAX_STAT_BOOL: fprintf(f, "%s", s->i ? "true" : "false"); break;
    case SSMAX_STAT_INT: fprintf(f, "%lld", (long long)s->i); break;
    case SSMAX_STAT_UINT: fprintf(f, "%llu", (unsigned long long)s->u); break;
    case SSMAX_STAT_FLOAT:
        if (s->f == s->f && s->f - s->f == 0)
            fprintf(f, "%.17g", s->f);
        else
            fprintf(f, "null");
        break;
    }
}

static int whole_subgroups(const struct ssmax_pipe_info *pi)
{
    return pi->subgroup_size && pi->workgroup_size % pi->subgroup_size == 0;
}

static void print_line(FILE *f, const struct rec *r)
{
    fprintf(f, "%-8s %-4s D%-3u g%u  ", case_names[r->cs], r->f16 ? "f16" : "f32", r->d, r->g);
    if (r->error[0]) {
        fprintf(f, "FAILED: %s\n", r->error);
        return;
    }
    const struct ssmax_pipe_info *pi = &r->pi;
    fprintf(f, "%-14s wg %-4u", pi->kernel, pi->workgroup_size);
    if (pi->subgroup_size)
        fprintf(f, " sg %-2u%s", pi->subgroup_size, whole_subgroups(pi) ? "" : " (partial)");
    fprintf(f, " shared %-6llu", (unsigned long long)pi->shared_bytes);
    if (pi->cl_info)
        fprintf(f, " | max wg %llu, multiple %llu, local %llu, private %llu",
                (unsigned long long)pi->cl_work_group_size,
                (unsigned long long)pi->cl_preferred_multiple,
                (unsigned long long)pi->cl_local_mem_size,
                (unsigned long long)pi->cl_private_mem_size);
    if (pi->nstats < 0) {
        if (!pi->cl_info)
            fprintf(f, " | no statistics");
    } else {
        static const char *const shown[] = { "VGPRs",     "SGPRs",   "Spilled VGPRs",
                                             "Spilled SGPRs", "LDS size", "Subgroups per SIMD",
                                             "Instructions" };
        int any = 0;
        for (size_t i = 0; i < sizeof(shown) / sizeof(shown[0]); i++) {
            const struct ssmax_pipe_stat *s = stat_of(pi, shown[i]);
            if (!s)
                continue;
            fprintf(f, "%s%s ", any++ ? ", " : " | ", shown[i]);
            stat_print(f, s);
        }
        if (!any)
            fprintf(f, " | %d statistics", pi->nstats);
    }
    fputc('\n', f);
}

static int write_json(FILE *f, void *arg)
{
    const struct recs *rs = arg;
    fprintf(f, "[\n");
    for (int i = 0; i < rs->n; i++) {
        const struct rec *r = &rs->r[i];
        const struct ssmax_pipe_info *pi = &r->pi;
        fprintf(f, "  {\"case\": \"%s\", \"dtype\": \"%s\", \"head_dim\": %u, \"q_per_kv\": %u, ",
                case_names[r->cs], r->f16 ? "f16" : "f32", r->d, r->g);
        if (r->error[0]) {
            fprintf(f, "\"kernel\": null, \"error\": ");
            cli_json_str(f, r->error);
            fprintf(f, "}%s\n", i + 1 < rs->n ? "," : "");
            continue;
        }
        fprintf(f, "\"kernel\": ");
        cli_json_str(f, pi->kernel);
        fprintf(f, ", \"role\": \"%s\", \"plan_kernel\": ", pi->role);
        cli_json_str(f, r->plan.kernel);
        fprintf(f, ", \"tiles\": [%u, %u], \"spec_constants\": {", r->plan.tile_rows,
                r->plan.tile_keys);
        for (int k = 0; k < pi->nspec; k++)
            fprintf(f, "%s\"%d\": %u", k ? ", " : "", k, pi->spec[k]);
        fprintf(f, "}, \"build_options\": ");
        cli_json_str(f, pi->options);
        fprintf(f, ", \"workgroup_size\": %u, \"subgroup_size\": %u, \"whole_subgroups\": %s, "
                "\"shared_bytes\": %llu, \"stats\": ",
                pi->workgroup_size, pi->subgroup_size, whole_subgroups(pi) ? "true" : "false",
                (unsigned long long)pi->shared_bytes);
        if (pi->nstats < 0) {
            fprintf(f, "null");
        } else {
            fputc('{', f);
            for (int k = 0; k < pi->nstats; k++) {
                if (k)
                    fprintf(f, ", ");
                cli_json_str(f, pi->stats[k].name);
                fprintf(f, ": ");
                stat_print(f, &pi->stats[k]);
            }
            fputc('}', f);
        }
        if (pi->cl_info)
            fprintf(f, ", \"opencl\": {\"CL_KERNEL_WORK_GROUP_SIZE\": %llu, "
                    "\"CL_KERNEL_PREFERRED_WORK_GROUP_SIZE_MULTIPLE\": %llu, "
                    "\"CL_KERNEL_LOCAL_MEM_SIZE\": %llu, \"CL_KERNEL_PRIVATE_MEM_SIZE\": %llu}",
                    (unsigned long long)pi->cl_work_group_size,
                    (unsigned long long)pi->cl_preferred_multiple,
                    (unsigned long long)pi->cl_local_mem_size,
                    (unsigned long long)pi->cl_private_mem_size);
        fprintf(f, "}%s\n", i + 1 < rs->n ? "," : "");
    }
    fprintf(f, "]\n");
    return ferror(f) ? -1 : 0;
}

static int write_spv(FILE *f, void *arg)
{
    const struct ssmax_pipe_info *pi = arg;
    return fwrite(pi->code, 1, pi->code_size, f) == pi->code_size ? 0 : -1;
}

static int write_spec(FILE *f, void *arg)
{
    const struct rec *r = arg;
    fprintf(f, "{\"kernel\": ");
    cli_json_str(f, r->pi.kernel);
    fprintf(f, ", \"case\": \"%s\", \"dtype\": \"%s\", \"head_dim\": %u, \"q_per_kv\": %u, "
            "\"spec_constants\": {", case_names[r->cs], r->f16 ? "f16" : "f32", r->d, r->g);
    for (int k = 0; k < r->pi.nspec; k++)
        fprintf(f, "%s\"%d\": %u", k ? ", " : "", k, r->pi.spec[k]);
    fprintf(f, "}, \"build_options\": ");
    cli_json_str(f, r->pi.options);
    fprintf(f, "}\n");
    return ferror(f) ? -1 : 0;
}

/* One case of the grid: plan and build, each pipeline a record; a failure is a record too. */
static int run_case(ssmax_context *ctx, struct recs *rs, const struct ssmax_attn_params *p)
{
    int before = rs->n;
    int r = ssmax_attn_pipelines(ctx, p, &rs->plan, on_pipe, rs);
    if (r == SSMAX_ERR_OUT_OF_HOST_MEMORY)
        return r;
    if (r < 0) {
        rs->n = before; // a half-built plan lists only its failure
        struct rec *e = rec_add(rs);
        if (!e)
            return SSMAX_ERR_OUT_OF_HOST_MEMORY;
        snprintf(e->error, sizeof(e->error), "%s", ssmax_last_error(ctx));
        return r;
    }
    return SSMAX_OK;
}

static int parse_dims(const char *s, uint32_t *dims, int *n)
{
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", s);
    *n = 0;
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (*n == 16 || cli_parse_u32(t, &dims[*n]) < 0 || !dims[*n])
            return -1;
        (*n)++;
    }
    return *n ? 0 : -1;
}

int cmd_pipelines(int argc, char **argv)
{
    const char *dev = NULL, *json = NULL, *spirv = NULL;
    uint32_t dims[16] = { 64, 80, 96, 128, 256 };
    int ndims = 5, dtypes = 3; // bit 0 f32, bit 1 f16
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            cli_usage(stdout, usage_pipelines);
            return EXIT_OK;
        } else if (i + 1 < argc && !strcmp(a, "--device")) {
            dev = argv[++i];
        } else if (i + 1 < argc && !strcmp(a, "--json")) {
            json = argv[++i];
        } else if (i + 1 < argc && !strcmp(a, "--spirv")) {
            spirv = argv[++i];
        } else if (i + 1 < argc && !strcmp(a, "--head-dim")) {
            if (parse_dims(argv[++i], dims, &ndims) < 0) {
                fprintf(stderr, "ssmax pipelines: --head-dim: '%s' is not a list of head dims "
                        "(e.g. 64,128)\n", argv[i]);
                return EXIT_BAD_INPUT;
            }
        } else if (i + 1 < argc && !strcmp(a, "--dtype")) {
            const char *t = argv[++i];
            dtypes = !strcmp(t, "f32") ? 1 : !strcmp(t, "f16") ? 2 : 0;
            if (!dtypes) {
                fprintf(stderr, "ssmax pipelines: --dtype: '%s' is not f32 or f16\n", t);
                return EXIT_BAD_INPUT;
            }
        } else {
            fprintf(stderr, "ssmax pipelines: unknown option or missing value '%s'\n", a);
            cli_usage(stderr, usage_pipelines);
            return EXIT_BAD_INPUT;
        }
    }
    if (spirv) { // the folder is made if missing (its parent must exist)
        struct stat st;
        if (stat(spirv, &st) < 0 && (errno != ENOENT || mkdir(spirv, 0777) < 0)) {
            fprintf(stderr, "ssmax pipelines: --spirv: '%s': %s\n", spirv, strerror(errno));
            return EXIT_BAD_INPUT;
        }
        if (stat(spirv, &st) < 0 || !S_ISDIR(st.st_mode)) {
            fprintf(stderr, "ssmax pipelines: --spirv: '%s' is not a folder\n", spirv);
            return EXIT_BAD_INPUT;
        }
    }
    struct out_file jout;
    memset(&jout, 0, sizeof(jout));
    struct recs rs = { 0 };
    char err[600];
    jout = (struct out_file){ .opt = "--json", .path = json, .write = write_json, .arg = &rs };
    if (json && out_files_check(&jout, 1, NULL, 0, err, sizeof(err)) < 0) {
        fprintf(stderr, "ssmax pipelines: %s\n", err);
        return EXIT_BAD_INPUT;
    }
    FILE *msg = json && out_files_have_stdout(&jout, 1) ? stderr : stdout;
    int code = EXIT_OK;
    ssmax_context *ctx = cli_context(&code);
    if (!ctx)
        return code;
    struct out_file *souts = NULL;
    int idx = cli_find_device(ctx, "ssmax pipelines", dev);
    if (idx < 0) {
        code = EXIT_BAD_INPUT;
        goto out;
    }
    struct ssmax_device_info di;
    ssmax_device_get_info(ctx, idx, &di);
    if (di.backend == SSMAX_BACKEND_CPU) {
        fprintf(stderr, "ssmax pipelines: the cpu device builds no pipelines (name a vulkan or "
                "opencl device)\n");
        code = EXIT_BAD_INPUT;
        goto out;
    }
    int r = ssmax_device_open(ctx, idx);
    if (r < 0) {
        fprintf(stderr, "ssmax pipelines: %s\n", ssmax_last_error(ctx));
        code = EXIT_DEVICE;
        goto out;
    }
    fprintf(msg, "device %s:%d %s (%s)%s\n", di.backend == SSMAX_BACKEND_VULKAN ? "vulkan" :
            di.backend == SSMAX_BACKEND_OPENCL ? "opencl" : "cpu", di.index, di.name,
            di.driver_version, di.compile_only ? ", compile only" : "");
    int failed = 0, skipped = 0;
    for (int di_ = 0; di_ < ndims; di_++) {
        for (int f16 = 0; f16 < 2; f16++) {
            if (!(dtypes & (1 << f16)))
                continue;
            // prefill, decode (1, 4, 8 query heads a KV head), the merge of a split-KV decode,
            // the unfused kernels at the prefill shape
            static const struct {
                int cs, path;
                uint32_t g, lq, lk;
            } grid[] = {
                { CASE_PREFILL, SSMAX_PATH_AUTO, 1, 2048, 2048 },
                { CASE_DECODE, SSMAX_PATH_AUTO, 1, 1, 16384 },
                { CASE_DECODE, SSMAX_PATH_AUTO, 4, 1, 16384 },
                { CASE_DECODE, SSMAX_PATH_AUTO, 8, 1, 16384 },
                { CASE_MERGE, SSMAX_PATH_SPLIT_KV, 1, 1, 16384 },
                { CASE_UNFUSED, SSMAX_PATH_UNFUSED, 1, 2048, 2048 },
                { CASE_MASK, SSMAX_PATH_AUTO, 1, 1, 16384 },
            };
            for (size_t c = 0; c < sizeof(grid) / sizeof(grid[0]); c++) {
                struct ssmax_attn_params p;
                ssmax_attn_params_default(&p);
                p.dtype = f16 ? SSMAX_F16 : SSMAX_F32;
                p.batch = 1;
                p.kv_heads = 8;
                p.q_heads = 8 * grid[c].g;
                p.q_len = grid[c].lq;
                p.kv_len = grid[c].lk;
                p.head_dim = dims[di_];
                p.path = (enum ssmax_path)grid[c].path;
                if (grid[c].cs == CASE_MASK)
                    p.mask = SSMAX_MASK_B1_LQ_LK;
                rs.cs = grid[c].cs, rs.f16 = f16, rs.d = dims[di_], rs.g = grid[c].g;
                rs.only_role = grid[c].cs == CASE_MERGE ? "merge"
                               : grid[c].cs == CASE_MASK ? "mask"
                                                         : NULL;
                int first = rs.n;
                r = run_case(ctx, &rs, &p);
                if (r == SSMAX_ERR_OUT_OF_HOST_MEMORY) {
                    fprintf(stderr, "ssmax pipelines: out of host memory\n");
                    code = EXIT_DEVICE;
                    goto out;
                }
                if (r == SSMAX_ERR_INVALID_ARG || r == SSMAX_ERR_UNSUPPORTED ||
                    r == SSMAX_ERR_LIMIT_EXCEEDED) {
                    // the planner refuses this case on this device: nothing to build
                    fprintf(msg, "%-8s %-4s D%-3u g%u  skipped: %s\n", case_names[rs.cs],
                            f16 ? "f16" : "f32", dims[di_], grid[c].g, rs.r[rs.n - 1].error);
                    rs.n--;
                    skipped++;
                    continue;
                }
                failed += r < 0;
                for (int k = first; k < rs.n; k++)
                    print_line(msg, &rs.r[k]);
                if (r == SSMAX_ERR_DEVICE_LOST || r == SSMAX_ERR_CONTEXT_FAILED)
                    goto done;
            }
        }
    }
done:;
    int built = 0;
    for (int k = 0; k < rs.n; k++)
        built += !rs.r[k].error[0];
    fprintf(msg, "pipelines: %d built, %d failed, %d cases skipped\n", built, failed, skipped);
    // Outputs, all or nothing: the JSON and, with --spirv, two files a pipeline.
    int nout = 0;
    souts = calloc((size_t)(2 * rs.n + 1), sizeof(*souts));
    char(*names)[2][512] = spirv ? calloc((size_t)rs.n + 1, sizeof(*names)) : NULL;
    if (!souts || (spirv && !names)) {
        free(names);
        fprintf(stderr, "ssmax pipelines: out of host memory\n");
        code = EXIT_DEVICE;
        goto out;
    }
    if (json)
        souts[nout++] = jout;
    for (int k = 0; spirv && k < rs.n; k++) {
        const struct rec *rc = &rs.r[k];
        if (rc->error[0])
            continue;
        char base[300];
        snprintf(base, sizeof(base), "%s/%03d-%s-%s-%s-d%u-g%u", spirv, k, rc->pi.kernel,
                 case_names[rc->cs], rc->f16 ? "f16" : "f32", rc->d, rc->g);
        if (rc->pi.code) {
            snprintf(names[k][0], sizeof(names[k][0]), "%s.spv", base);
            souts[nout++] = (struct out_file){ .opt = "--spirv", .path = names[k][0],
                                               .write = write_spv, .arg = (void *)&rc->pi };
        }
        snprintf(names[k][1], sizeof(names[k][1]), "%s.json", base);
        souts[nout++] = (struct out_file){ .opt = "--spirv", .path = names[k][1],
                                           .write = write_spec, .arg = (void *)rc };
    }
    if (nout && (out_files_check(souts, nout, NULL, 0, err, sizeof(err)) < 0 ||
                 out_files_write(souts, nout, err, sizeof(err)) < 0)) {
        fprintf(stderr, "ssmax pipelines: %s\n", err);
        if (!failed)
            code = EXIT_BAD_INPUT;
    }
    free(names);
    if (failed)
        code = EXIT_DEVICE;
out:
    free(souts);
    free(rs.r);
    ssmax_context_destroy(&ctx);
    return code;
}
