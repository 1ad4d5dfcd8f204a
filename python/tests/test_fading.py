"""ssmax.fading(): the paper's Figure 1 on every device, within 1e-5 of the closed form (f32)."""
import math

import pytest

import ssmax
from conftest import SPECS


@pytest.mark.parametrize("spec", SPECS)
def test_fading_closed_form(spec):
    recs = ssmax.fading(spec, n_max=100000)
    assert {r["mode"] for r in recs} == {"softmax", "ssmax", "logn", "floor-log"}
    assert min(r["n"] for r in recs) == 2 and max(r["n"] for r in recs) == 100000
    assert max(r["abs_error"] for r in recs) <= 1e-5, max(recs, key=lambda r: r["abs_error"])
    for r in recs:  # SPEC.md section 4, written out here
        if r["mode"] in ("softmax", "ssmax"):
            f = 1.0 if r["mode"] == "softmax" else 0.43 * math.log(r["n"])
            assert abs(r["closed_form"] - 1 / (1 + (r["n"] - 1) * math.exp(-5 * f))) <= 1e-6
    big = {r["mode"]: r["measured"] for r in recs if r["n"] == 100000}
    assert big["softmax"] < 0.01 and big["ssmax"] > 0.99  # fading, and SSMax without it


def test_fading_needles_noise():
    recs = ssmax.fading("cpu", modes=("softmax", "ssmax"), n_max=10000, needles=3, noise=0.5)
    assert all(r["needles"] == 3 and r["abs_error"] <= 1e-6 for r in recs)
    with pytest.raises(ValueError):
        ssmax.fading("cpu", n_max=10, needles=10)
