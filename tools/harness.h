/*
 * The check-and-time core shared by the test suites, `ssmax verify` and `ssmax bench`: seeded random
 * inputs, guard bands around every output, the float64 reference, SPEC.md section 6 comparison, and
 * device timing.
 */
#ifndef SSMAX_HARNESS_H
#define SSMAX_HARNESS_H

#include <stdio.h>

#include "ssmax/ssmax.h"

struct hcase {
    struct ssmax_attn_params p; // s and b are filled per head from the seed when per_head is set
    uint64_t seed;
    int per_head;               // random per-head s (and b) instead of s_all/b_all
    int want_lse, want_probs;
    double amp;                 // Q and K uniform in [-amp, amp] (default 1); V in [-1, 1]
    int v_positive;             // V uniform in [0, 2] instead: every term of a row's O one sign
    int nan_v_hidden;           // plant NaN in V rows no query row can see (causal)
    int nan_q_row;              // > 0: plant NaN in Q[0, 0, nan_q_row - 1, 0] (that row only)
    int nan_k_key;              // > 0: plant NaN in K[0, 0, nan_k_key - 1, 0]
    int nan_v_key;              // > 0: plant NaN in V[0, 0, nan_v_key - 1, 0]
    uint32_t in_off;            // Q, K and V start this many bytes into their buffers
    uint32_t sample_rows;       // > 0: check only this many query rows (evenly spaced) per head
    int use_plan;               // a plan's execution, not ssmax_attn (h_time: executions of one
                                // plan made before timing); per-batch arrays as its arguments
    int layout;                 // enum h_layout: how Q, K, V, O sit in their buffers (strides)
    /* SPEC.md section 7: p.window, p.softcap, p.kv_lens, p.q_positions are used as given; these
     * make the rest from the seed. */
    int mask;                   // enum ssmax_mask_shape: an additive mask, dense, from the seed
    int mask_f16;               // ... of halves
    double mask_hide;           // ... each entry -inf with this probability (else uniform
                                // [-2, 1]); and about one row in 8 empty, one in 8 a single key
    uint32_t mask_block;        // > 0: hide whole blocks of mask_block rows x keys instead
                                // (mask_hide of them; no empty or single-key rows); the entries
                                // of the others are 0, as in engines' masks
    int mask_bias;              // ... unless this is set: then about half of those blocks hold
                                // uniform [-2, 1] entries
    int sinks;                  // a sink logit per query head, uniform in [-1, 2]
    int seq_lens;               // kv_lens per batch item, uniform in [1, kv_len] (unless given)
    int nan_hidden;             // NaN in every K and V row no query row of its batch item sees
    int nan_mask;               // NaN in the mask's first entry (row 0, key 0 of its first
                                // matrix): that row is NaN wherever it sees key 0
};

/* Tensor layouts for h_run (SPEC.md section 7.1). Every byte of an input buffer that is not an
 * element of its tensor holds NaN, so a kernel that reads past kv_len or ignores a stride gives
 * NaN or wrong values; bytes of O's buffer that are not elements of O must stay untouched. With
 * a layout, the strided reference on the strided buffers is also checked against the dense
 * reference on the same data, bit for bit. */
enum h_layout {
    H_DENSE = 0, // [B, H, L, D], strides NULL
    H_BLHD,      // Q, K, V, O all [B, L, H, D]
    H_CACHE,     // K, V a cache [B, Hkv, C, D] of C = kv_len + 5 rows; Q rows padded; O [B, L, H, D]
    H_KVI,       // K and V interleaved in one buffer, [B, C, 2, Hkv, D] with C = kv_len + 3 and
                 // each row padded by 8 bytes; Q [B, L, H, D]; O rows padded by 8 bytes
    H_LAYOUTS
};
const char *h_layout_name(int layout);

struct hresult {
    int pass;
    struct ssmax_compare o, lse, probs;
    double nmse_limit;
    enum ssmax_path path;
    uint32_t splits;
    uint64_t device_ns;
    int status;                 // ssmax_attn's result
    int guard_ok;
    char why[512];
};

/* SPEC.md section 6 limits against the float64 reference, for every checker (the harness, `ssmax
 * run --check`): an NMSE limit and a per-element max |got - ref| limit. */
struct htol {
    double nmse, max_abs;
};
/* O in storage dtype t, when the reference's largest magnitude is max_ref. */
struct htol h_tol_o(enum ssmax_dtype t, double max_ref);
/* LSE (float32 for every dtype), when the reference's largest magnitude is max_ref. */
struct htol h_tol_lse(double max_ref);
/* Probabilities (float32), when the reference LSE's largest magnitude is lse_max (0: unknown). */
struct htol h_tol_probs(double lse_max);

/* 1 when SSMAX_REQUIRE_DEVICE=1 (CI): a device a test needs and this machine lacks is a failure,
 * not a skip. */
int h_require_devices(void);
/* ctx's index of the device spec names; or, when this machine has none, -1 if a test may skip it
 * (after printing "# SPEC: no device, skipped") and -2 if it is required (h_require_devices(),
 * or the CPU device, which every build has). */
int h_find_device(ssmax_context *ctx, const char *spec);

uint64_t h_rand(uint64_t *s);
/* Fills a with n values uniform in [-amp, amp] (dtype storage). */
void h_fill(void *a, enum ssmax_dtype t, size_t n, double amp, uint64_t *seed);
/* Runs one case on ctx's open device and checks it against the reference. Returns 0 on pass, 1 on a
 * numerical failure, or a negative ssmax error (message in r->why). */
int h_run(ssmax_context *ctx, const struct hcase *c, struct hresult *r);
/* "B1 Hq8/2 Lq33 Lk113 D64 f16 causal ssmax" */
void h_describe(const struct hcase *c, char *buf, size_t len);
const char *h_mode_name(enum ssmax_mode m);
const char *h_path_name(enum ssmax_path p);

/* The keys the case's rows see, summed over every row of every head (SPEC.md section 7.2, mask
 * included): the work a kernel cannot skip. */
double h_visible_pairs(const struct hcase *c);

/* Timing of repeated calls on prepared buffers: median/min/max device ms and median wall ms. */
struct htiming {
    double ms_median, ms_min, ms_max, wall_ms_median;
    double host_ms_median; // the call's wall time less its device time: the host's part
    int iters;
};
int h_time(ssmax_context *ctx, const struct hcase *c, int warmup, int iters, struct htiming *t,
           char *why, size_t whylen);

#endif
