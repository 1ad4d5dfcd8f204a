/* SPEC.md section 7.5: the six exact cases, on the data of case B (section 5: SSMAX, s = 0.5,
 * c = 1/sqrt(2), q_pos = 0, D = 2), for the reference's test and every device's. */
#ifndef SSMAX_TEST_SPEC_CASES_H
#define SSMAX_TEST_SPEC_CASES_H

#include <math.h>
#include <stdint.h>

static const float spec7_q[8] = { 1, 0, 0, 1, 1, 1, 2, -1 }, spec7_k[8] = { 1, 0, 0, 1, 1, -1, 1, 1 },
                   spec7_v[8] = { 1, 0, 0, 1, 2, 2, -1, 3 };
/* The mask M of the cases (rows i, columns j). */
static const float spec7_mask[16] = { 0,         -INFINITY, -INFINITY, -INFINITY, //
                                      0,         -1,        -INFINITY, -INFINITY, //
                                      -INFINITY, 0.5f,      0,         -INFINITY, //
                                      0,         0,         -INFINITY, 0 };
static const struct spec7_case {
    int causal;
    uint32_t window, kv_len; // kv_len: 0 = all 4 keys, else kv_lens[0]
    float cap, sink;
    int has_sink, has_mask;
    double o[4][2], lse[4];
} spec7_cases[6] = {
    { 1, 2, 0, 0, 0, 0, 0,
      { { 1, 0 }, { 0.439039, 0.560961 }, { 0.878077, 1.439039 }, { 0.860411, 2.379863 } },
      { 0, 0.823168, 0.823168, 1.213009 } },
    { 1, 0, 0, 1, 0, 0, 0,
      { { 1, 0 }, { 0.440219, 0.559781 }, { 0.885064, 0.885064 }, { 0.804734, 1.513099 } },
      { 0, 0.820483, 1.359811, 1.915814 } },
    { 1, 0, 0, 0, 0.5f, 1, 0,
      { { 0.377541, 0 }, { 0.254685, 0.325411 }, { 0.620693, 0.620693 }, { 0.892262, 1.302672 } },
      { 0.974077, 1.367729, 1.722412, 2.389667 } },
    { 1, 0, 0, 0, 0, 0, 1,
      { { 1, 0 }, { 0.680253, 0.319747 }, { 0.643795, 1.321898 }, { 0.161747, 1.179026 } },
      { 0, 0.385290, 1.133522, 1.464957 } },
    { 0, 0, 3, 0, 0, 0, 0,
      { { 1.120185, 1.000000 }, { 0.747360, 0.897909 }, { 0.879815, 0.879815 }, { 1.417300, 1.170338 } },
      { 1.373536, 1.148283, 1.373536, 1.801619 } },
    { 1, 3, 0, 2, -1, 1, 1,
      { { 0.731059, 0 }, { 0.544263, 0.255514 }, { 0.576055, 1.182068 }, { -0.525675, 1.899812 } },
      { 0.313262, 0.608323, 1.244699, 0.886918 } },
};

#endif
