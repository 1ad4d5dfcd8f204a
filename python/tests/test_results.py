"""Numbers: every device, mode and storage type against the float64 reference, an independent
NumPy implementation of SPEC.md, SPEC.md's exact cases, and PyTorch's attention where installed."""
import math

import numpy as np
import pytest

import ssmax

from conftest import assert_close, context, np_attention, qkv

MODES = {
    "softmax": {},
    "ssmax": dict(s=0.43),
    "ssmax-bias": dict(s=np.array([0.3, 0.4, 0.5, 0.6]), b=np.array([0.1, -0.2, 0.0, 0.3])),
    "logn": dict(train_len=4),
    "floor-log": dict(floor_beta=0.2, floor_scale=4, pos_offset=0),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["f32", "f16"])
@pytest.mark.parametrize("mode", list(MODES))
def test_modes(ctx, mode, dtype):
    kw = dict(MODES[mode], mode=mode, causal=mode != "softmax")
    q, k, v = qkv(seed=hash(mode) % 1000, dtype=dtype)
    ref = ssmax.reference(q, k, v, **kw)
    o, lse = ctx.attention(q, k, v, lse=True, **kw)
    assert o.dtype == dtype and o.shape == q.shape and lse.shape == (2, 4, 7)
    assert_close(ref.o, o, dtype)
    np.testing.assert_allclose(lse, ref.lse, rtol=1e-5, atol=1e-5)
    # the reference agrees with SPEC.md written out in NumPy
    o_np, lse_np = np_attention(q, k, v, **kw)
    np.testing.assert_allclose(ref.o, o_np, rtol=1e-5, atol=1e-6)  # fp32 logits
    np.testing.assert_allclose(ref.lse, lse_np, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("path", ["fused", "split-kv", "unfused"])
def test_paths(ctx, path):
    q, k, v = qkv(seed=3, Lq=2, Lk=300, D=32)
    kw = dict(causal=True, path=path, splits=4 if path == "split-kv" else 0)
    ref = ssmax.reference(q, k, v, probs=path == "unfused", **kw)
    if path == "unfused":
        o, lse, probs = ctx.attention(q, k, v, lse=True, probs=True, **kw)
        assert probs.shape == (2, 4, 2, 300)
        np.testing.assert_allclose(probs, ref.probs, atol=1e-6)
        np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    else:
        o, lse = ctx.attention(q, k, v, lse=True, **kw)
    assert_close(ref.o, o, np.float32)
    np.testing.assert_allclose(lse, ref.lse, rtol=1e-5, atol=1e-5)
    assert ctx.last_plan().path == path


def test_probs_only(ctx):
    q, k, v = qkv(seed=4)
    o, probs = ctx.attention(q, k, v, probs=True)
    assert type(o) is np.ndarray and probs.dtype == np.float32
    np.testing.assert_allclose(probs, ssmax.reference(q, k, v, probs=True).probs, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["f32", "f16"])
def test_layout_blhd(ctx, dtype):
    q, k, v = qkv(seed=5, dtype=dtype)
    t = lambda x: np.ascontiguousarray(x.transpose(0, 2, 1, 3))
    kw = dict(causal=True, s=np.array([0.3, 0.4, 0.5, 0.6]))
    o = ctx.attention(t(q), t(k), t(v), layout="blhd", **kw)
    assert o.shape == (2, 7, 4, 16)
    ref = ssmax.reference(t(q), t(k), t(v), layout="blhd", **kw)
    assert_close(ref.o, o, dtype)
    np.testing.assert_array_equal(ref.o, t(ssmax.reference(q, k, v, **kw).o))


def test_default_context_and_scalar_s():
    """s per head equal to a scalar s gives the same result; scale and q_pos are honoured."""
    q, k, v = qkv(seed=6)
    c = context("cpu")
    a = c.attention(q, k, v, s=0.5, scale=0.3, mode="floor-log", q_pos=100)
    b = c.attention(q, k, v, s=np.full(4, 0.5), scale=0.3, mode="floor-log", q_pos=100)
    np.testing.assert_array_equal(a, b)
    o_np, _ = np_attention(q, k, v, scale=0.3, mode="floor-log", q_pos=100)
    assert_close(o_np, a, np.float32)


# ---- SPEC.md section 7 ----

def section7_cases():
    rng = np.random.default_rng(7)
    B, Hq, Lq, Lk = 2, 4, 7, 19
    m = rng.standard_normal((B, Hq, Lq, Lk)).astype(np.float32)
    m[rng.random(m.shape) < 0.3] = -np.inf
    keep = rng.random((Lq, Lk)) < 0.7
    keep[:, 0] = True
    return {
        "mask-lq-lk": dict(mask=m[0, 0]),
        "mask-b1": dict(mask=m[:, :1]),
        "mask-bh-f16": dict(mask=m.astype(np.float16), causal=True),
        "mask-bool": dict(mask=keep),
        "window": dict(causal=True, window=5),
        "softcap": dict(softcap=1.5, s=0.8),
        "sinks": dict(sinks=np.array([0.5, -1.0, 2.0, 0.0]), causal=True),
        "kv-lens": dict(kv_lens=[19, 6]),
        "q-positions": dict(kv_lens=[19, 9], q_positions=[3, 2], causal=True),
        "all": dict(causal=True, window=6, softcap=2.0, sinks=np.array([-1.0, 0, 1, 2]),
                    mask=m[:, :1], kv_lens=[15, 19], mode="ssmax-bias", b=0.2),
    }


CASES7 = section7_cases()


@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["f32", "f16"])
@pytest.mark.parametrize("case", list(CASES7))
def test_section7_cpu(case, dtype):
    kw = CASES7[case]
    q, k, v = qkv(seed=8, dtype=dtype)
    ref = ssmax.reference(q, k, v, **kw)
    o_np, lse_np = np_attention(q, k, v, **kw)
    np.testing.assert_allclose(ref.o, o_np, rtol=1e-5, atol=1e-6)  # fp32 logits
    np.testing.assert_allclose(ref.lse, lse_np, rtol=1e-5, atol=1e-6)
    o, lse = context("cpu").attention(q, k, v, lse=True, **kw)
    assert_close(ref.o, o, dtype)
    np.testing.assert_allclose(lse, ref.lse, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", list(CASES7))
def test_section7_gpu(gpu_ctx, case):
    kw = CASES7[case]
    q, k, v = qkv(seed=8)
    try:
        o = gpu_ctx.attention(q, k, v, **kw)
    except ssmax.Unsupported as e:
        pytest.skip("not on %s yet (the library says: %s)" % (gpu_ctx.device.backend, e.message))
    assert_close(ssmax.reference(q, k, v, **kw).o, o, np.float32)


# SPEC.md section 7.5: case B's data, SSMAX, s = 0.5, c = 1/sqrt(2), q_pos = 0.
NI = -np.inf
SPEC_M = np.array([[0, NI, NI, NI], [0, -1, NI, NI], [NI, 0.5, 0, NI], [0, 0, NI, 0]])
SPEC75 = [
    (dict(causal=True, window=2),
     [[1, 0], [0.439039, 0.560961], [0.878077, 1.439039], [0.860411, 2.379863]],
     [0, 0.823168, 0.823168, 1.213009]),
    (dict(causal=True, softcap=1.0),
     [[1, 0], [0.440219, 0.559781], [0.885064, 0.885064], [0.804734, 1.513099]],
     [0, 0.820483, 1.359811, 1.915814]),
    (dict(causal=True, sinks=[0.5]),
     [[0.377541, 0], [0.254685, 0.325411], [0.620693, 0.620693], [0.892262, 1.302672]],
     [0.974077, 1.367729, 1.722412, 2.389667]),
    (dict(causal=True, mask=SPEC_M),
     [[1, 0], [0.680253, 0.319747], [0.643795, 1.321898], [0.161747, 1.179026]],
     [0, 0.385290, 1.133522, 1.464957]),
    (dict(kv_lens=[3]),
     [[1.120185, 1.0], [0.747360, 0.897909], [0.879815, 0.879815], [1.417300, 1.170338]],
     [1.373536, 1.148283, 1.373536, 1.801619]),
    (dict(causal=True, window=3, softcap=2.0, sinks=[-1.0], mask=SPEC_M),
     [[0.731059, 0], [0.544263, 0.255514], [0.576055, 1.182068], [-0.525675, 1.899812]],
     [0.313262, 0.608323, 1.244699, 0.886918]),
]


@pytest.mark.parametrize("kw,o_want,lse_want", SPEC75, ids=[
    "window", "softcap", "sink", "mask", "kv_len", "all"])
def test_spec_7_5(kw, o_want, lse_want):
    q = np.array([[1, 0], [0, 1], [1, 1], [2, -1]], np.float32)[None, None]
    k = np.array([[1, 0], [0, 1], [1, -1], [1, 1]], np.float32)[None, None]
    v = np.array([[1, 0], [0, 1], [2, 2], [-1, 3]], np.float32)[None, None]
    kw = dict(kw, mode="ssmax", s=0.5, q_pos=0)
    if "mask" in kw:
        kw["mask"] = kw["mask"].astype(np.float32)
    for o, lse in [ssmax.reference(q, k, v, **kw),
                   context("cpu").attention(q, k, v, lse=True, **kw),
                   np_attention(q, k, v, **kw)]:
        np.testing.assert_allclose(o[0, 0], o_want, atol=2e-6)
        np.testing.assert_allclose(lse[0, 0], lse_want, atol=2e-6)


# ---- PyTorch ----

def torch_attention(torch, q, k, v, causal, factor=None):
    """PyTorch's attention in float64: scaled_dot_product_attention where this torch has it,
    else softmax(q k^T * scale) v written in torch. SSMax is the same function with each query
    row pre-scaled by f = s * ln(n): torch then computes exactly what ssmax does."""
    q, k, v = (torch.from_numpy(np.asarray(x, np.float64)) for x in (q, k, v))
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    Lq, Lk = q.shape[2], k.shape[2]
    if factor is not None:
        q = q * torch.from_numpy(factor)[None, None, :, None]
    # bottom-right causal alignment (row i at position Lk - Lq + i), as ssmax's default q_pos
    keep = torch.ones(Lq, Lk, dtype=torch.bool)
    if causal:
        keep = torch.arange(Lk)[None, :] <= (Lk - Lq + torch.arange(Lq))[:, None]
    sdpa = getattr(torch.nn.functional, "scaled_dot_product_attention", None)
    if sdpa is not None:
        return sdpa(q, k, v, attn_mask=keep).numpy()
    z = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    z = z.masked_fill(~keep, float("-inf"))
    return (torch.softmax(z, dim=-1) @ v).numpy()


@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["f32", "f16"])
@pytest.mark.parametrize("mode", ["softmax", "ssmax"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_against_torch(ctx, mode, dtype, causal):
    torch = pytest.importorskip("torch")
    q, k, v = qkv(seed=9, Lq=5, Lk=23, D=32, dtype=dtype)
    Lq, Lk = q.shape[2], k.shape[2]
    factor = None
    if mode == "ssmax":
        n = (Lk - Lq + np.arange(Lq) + 1) if causal else np.full(Lq, Lk)
        factor = 0.43 * np.log(n.astype(np.float64))
    want = torch_attention(torch, q, k, v, causal, factor)
    got = ctx.attention(q, k, v, mode=mode, s=0.43, causal=causal)
    assert_close(want, got, dtype, "%s vs torch" % ctx.device.spec)
