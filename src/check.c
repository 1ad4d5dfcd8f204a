/* Error metrics against the float64 reference (SPEC.md section 6): NMSE, max-abs, NaN/Inf parity and
 * the first mismatching elements. */
#include <math.h>
#include <string.h>

#include "internal.h"

/* got is g32 or g16 (the other NULL); out untouched when NULL, NaN NMSE when an array is. */
static void compare(const double *ref, const float *g32, const uint16_t *g16, size_t n, double atol,
                    struct ssmax_compare *out)
{
    if (!out)
        return;
    memset(out, 0, sizeof(*out));
    if (!ref || (!g32 && !g16)) {
        out->nmse = NAN;
        return;
    }
    out->count = n;
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double r = ref[i], g = g32 ? (double)g32[i] : (double)ssmax_half_to_float(g16[i]);
        int bad = 0;
        if (!isfinite(r) || !isfinite(g)) {
            int same = (isnan(r) && isnan(g)) || (isinf(r) && isinf(g) && (r > 0) == (g > 0));
            if (!same) {
                out->nonfinite_mismatch++;
                bad = 1;
            }
        } else {
            double d = fabs(g - r);
            num += d * d;
            den += r * r;
            if (d > out->max_abs)
                out->max_abs = d;
            if (fabs(r) > out->max_ref)
                out->max_ref = fabs(r);
            bad = atol > 0 && d > atol;
        }
        if (bad && out->n_first_bad < 8) {
            out->first_bad[out->n_first_bad] = i;
            out->first_ref[out->n_first_bad] = r;
            out->first_got[out->n_first_bad] = g;
            out->n_first_bad++;
        }
    }
    out->nmse = den > 0 ? num / den : num;
}

void ssmax_compare_f32(const double *ref, const float *got, size_t n, double atol,
                       struct ssmax_compare *out)
{
    compare(ref, got, NULL, n, atol, out);
}

void ssmax_compare_f16(const double *ref, const uint16_t *got, size_t n, double atol,
                       struct ssmax_compare *out)
{
    compare(ref, NULL, got, n, atol, out);
}
