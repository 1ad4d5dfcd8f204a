"""ssmax.fading(): the SSMax paper's Figure 1 measured on each device, as `ssmax fading` does.

One query row and n keys: needles at logit +3 among distractors at -2 (plus Gaussian noise of
standard deviation `noise`), V one-hot on the needles, so O[0] reads their total weight. Each
record holds the measured weight and the closed form of SPEC.md section 4 (in float64 over the
logits as stored): K / (K + (n - K) e^(-f(n) m)) without noise."""
import math

import numpy as np


def _grid(n_max, per_decade, needles):
    out = []
    k = 0
    while True:
        n = min(int(round(10 ** (k / per_decade))), n_max)
        k += 1
        if n >= 2 and n > needles and (not out or n != out[-1]):
            out.append(n)
        if n == n_max:
            return out


def _needles(n, k):
    j = np.arange(n, dtype=np.int64)
    return (j * k // n) != ((j + 1) * k // n)


def _factor(mode, n, s, b, train_len, beta, floor_scale, pos_offset):
    if mode == "softmax":
        return 1.0
    if mode == "ssmax":
        return s * math.log(n)
    if mode == "ssmax-bias":
        return s * math.log(n) + b
    if mode == "logn":
        return max(1.0, math.log(n) / math.log(train_len))
    if mode == "floor-log":  # the query at position n - 1
        return 1.0 + beta * math.log(math.floor((n - 1 + pos_offset) / floor_scale) + 1.0)
    raise ValueError("mode: %r is not one of softmax, ssmax, ssmax-bias, logn, floor-log" % (mode,))


def fading(device="all", *, modes=("softmax", "ssmax", "logn", "floor-log"), s=0.43, b=0.0,
           train_len=8192, floor_beta=0.1, floor_scale=8192, pos_offset=1, n_max=10 ** 6,
           per_decade=4, needles=1, noise=0.0, seed=1, dtype=np.float32):
    """Runs the experiment on `device` ("all": the cpu and every device that runs; or a spec, a
    DeviceInfo, or a list of them) and returns a list of dicts, one per (device, mode, n):
    device, spec, mode, s, n, needles, noise, measured, closed_form, abs_error, device_ms."""
    from . import Context, devices as _devices, DeviceInfo  # noqa: the package imports us
    if n_max < 2 or needles < 1 or needles >= n_max:
        raise ValueError("n_max must be >= 2 and needles in [1, n_max)")
    dtype = np.dtype(dtype)
    if device == "all":
        targets = [d for d in _devices() if not d.compile_only]
    elif isinstance(device, (list, tuple)):
        targets = list(device)
    else:
        targets = [device]
    grid = _grid(n_max, per_decade, needles)
    rng = np.random.default_rng(seed)
    # The logits of each n as stored, the same on every device.
    keys = {}
    for n in grid:
        z = np.full(n, -2.0)
        if noise > 0:
            z += noise * rng.standard_normal(n)
        nd = _needles(n, needles)
        z[nd] = 3.0
        keys[n] = (z.astype(dtype).astype(np.float64), nd)
    out = []
    for dev in targets:
        with Context(dev) as ctx:
            name = ctx.device.name
            spec = ctx.device.spec
            for n in grid:
                z, nd = keys[n]
                q = np.zeros((1, 1, 1, 8), dtype)
                q[..., 0] = 1
                k = np.zeros((1, 1, n, 8), dtype)
                k[0, 0, :, 0] = z
                v = np.zeros((1, 1, n, 8), dtype)
                v[0, 0, nd, 0] = 1
                for mode in modes:
                    f = _factor(mode, n, s, b, train_len, floor_beta, floor_scale, pos_offset)
                    o = ctx.attention(q, k, v, mode=mode, s=s, b=b, scale=1.0,
                                      train_len=train_len, floor_beta=floor_beta,
                                      floor_scale=floor_scale, pos_offset=pos_offset)
                    ms = ctx.last_device_time() * 1e3
                    w = np.exp(f * z - (f * z).max())
                    closed = float(w[nd].sum() / w.sum())
                    measured = float(o[0, 0, 0, 0])
                    out.append({"device": name, "spec": spec, "mode": mode, "s": s, "n": n,
                                "needles": needles, "noise": noise, "dtype": dtype.name,
                                "measured": measured, "closed_form": closed,
                                "abs_error": abs(measured - closed), "device_ms": ms})
    return out
