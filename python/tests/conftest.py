"""Shared fixtures: the devices this machine has, one context per device for the session, and an
independent float64 NumPy implementation of SPEC.md (sections 1 to 3 and 7)."""
import math
import os

import numpy as np
import pytest

import ssmax

REQUIRE_DEVICE = os.environ.get("SSMAX_REQUIRE_DEVICE") == "1"
DEVICES = [d for d in ssmax.devices() if not d.compile_only]
SPECS = [d.spec for d in DEVICES]
GPU_SPECS = [s for s in SPECS if s != "cpu"]

_contexts = {}


def context(spec):
    """One context per device for the whole session (opening lavapipe or PoCL costs time)."""
    if spec not in _contexts:
        _contexts[spec] = ssmax.Context(spec)
    return _contexts[spec]


def pytest_sessionfinish(session, exitstatus):
    for c in _contexts.values():
        c.close()


@pytest.fixture(params=SPECS)
def ctx(request):
    return context(request.param)


@pytest.fixture(params=GPU_SPECS or [pytest.param(None, marks=pytest.mark.skip(
    reason="no Vulkan or OpenCL device on this machine"))])
def gpu_ctx(request):
    return context(request.param)


def rand(rng, shape, dtype=np.float32, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def qkv(seed=0, B=2, Hq=4, Hkv=2, Lq=7, Lk=19, D=16, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return (rand(rng, (B, Hq, Lq, D), dtype), rand(rng, (B, Hkv, Lk, D), dtype),
            rand(rng, (B, Hkv, Lk, D), dtype))


def limits(dtype):
    """SPEC.md section 6: NMSE bound for the storage type (f16: the stricter practical aim)."""
    return 1e-8 if dtype == np.float32 else 1e-5


def assert_close(ref, got, dtype, what="o"):
    c = ssmax.compare(ref, got)
    assert c.nonfinite_mismatch == 0, "%s: %s" % (what, c)
    assert c.nmse <= limits(dtype), "%s: %s" % (what, c)
    if dtype == np.float32:
        assert c.max_abs <= 1e-3 * max(c.max_ref, 1e-30), "%s: %s" % (what, c)


def np_attention(q, k, v, mode="ssmax", s=0.43, b=0.0, causal=False, q_pos=None, scale=None,
                 train_len=8192, floor_beta=0.1, floor_scale=8192, pos_offset=1, kv_lens=None,
                 q_positions=None, window=0, softcap=0.0, sinks=None, mask=None):
    """SPEC.md in float64, one row at a time: O [B, Hq, Lq, D] and LSE [B, Hq, Lq]."""
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    B, Hq, Lq, D = q.shape
    Hkv, Lk = k.shape[1], k.shape[2]
    c = 1.0 / math.sqrt(D) if scale is None else scale
    s = np.broadcast_to(np.asarray(s, dtype=np.float64), (Hq,))
    b = np.broadcast_to(np.asarray(b, dtype=np.float64), (Hq,))
    if mask is not None:
        m = np.asarray(mask)
        if m.dtype == np.bool_:
            m = np.where(m, 0.0, -np.inf)
        m = np.broadcast_to(m.astype(np.float64), (B, Hq, Lq, Lk))
    o = np.zeros((B, Hq, Lq, D))
    lse = np.zeros((B, Hq, Lq))
    for bi in range(B):
        kvl = Lk if kv_lens is None else int(kv_lens[bi])
        if q_positions is not None:
            qp = int(q_positions[bi])
        elif q_pos is not None and q_pos >= 0:
            qp = q_pos
        else:
            qp = max(kvl - Lq, 0)
        for h in range(Hq):
            g = h // (Hq // Hkv)
            for i in range(Lq):
                p = qp + i
                j = np.arange(Lk)
                vis = j < kvl
                if causal:
                    vis &= j <= p
                if window:
                    vis &= j > p - window
                if mask is not None:
                    vis &= m[bi, h, i] != -np.inf
                n = int(vis.sum())
                sink = None if sinks is None else float(sinks[h])
                if n == 0:
                    lse[bi, h, i] = -np.inf if sink is None else sink
                    continue
                f = {"softmax": lambda: 1.0,
                     "ssmax": lambda: s[h] * math.log(n),
                     "ssmax-bias": lambda: s[h] * math.log(n) + b[h],
                     "logn": lambda: max(1.0, math.log(n) / math.log(train_len)),
                     "floor-log": lambda: 1 + floor_beta * math.log(
                         math.floor((p + pos_offset) / floor_scale) + 1)}[mode]()
                z = f * c * (k[bi, g][vis] @ q[bi, h, i])
                if softcap:
                    z = softcap * np.tanh(z / softcap)
                if mask is not None:
                    z = z + m[bi, h, i][vis]
                mx = max(z.max(), sink) if sink is not None else z.max()
                w = np.exp(z - mx)
                den = w.sum() + (math.exp(sink - mx) if sink is not None else 0.0)
                o[bi, h, i] = w @ v[bi, g][vis] / den
                lse[bi, h, i] = mx + math.log(den)
    return o, lse
