"""The package's contract apart from numbers: the layout check at import, devices, errors."""
import ctypes
import os
import re

import numpy as np
import pytest

import ssmax
from ssmax import _lib as L

from conftest import DEVICES, REQUIRE_DEVICE, context, qkv

HERE = os.path.dirname(os.path.abspath(__file__))


def test_struct_sizes_match_library():
    lib = ssmax._so
    for name, cls in L.STRUCTS.items():
        assert lib.ssmax_struct_size(name.encode()) == ctypes.sizeof(cls), name
    assert lib.ssmax_struct_size(b"no_such_struct") == 0
    L.check_layout(lib)  # what import ran


def test_layout_mismatch_fails_import():
    class Short(ctypes.Structure):  # ssmax_exec_args as an older header might have had it
        _fields_ = [("kv_len", ctypes.c_uint32), ("q_pos", ctypes.c_int64)]

    with pytest.raises(ImportError, match="struct ssmax_exec_args is .* bytes in the library"):
        L.check_layout(ssmax._so, {**L.STRUCTS, "ssmax_exec_args": Short})


def test_api_version_mismatch_fails_import():
    class Lib:  # a library one minor version ahead
        def ssmax_version_api(self):
            return L.API_VERSION + 0x100

    with pytest.raises(ImportError, match="API version is 0.2.0, this package mirrors 0.1.0"):
        L.check_layout(Lib(), {})


def test_versions_agree():
    assert ssmax.version() == ssmax.__version__
    with open(os.path.join(HERE, "..", "pyproject.toml")) as f:
        m = re.search(r'^version = "([^"]+)"', f.read(), re.M)
    assert m and m.group(1) == ssmax.version()
    assert ssmax._so.ssmax_version_api() >> 8 == L.API_VERSION >> 8


def test_devices_listed():
    devs = ssmax.devices()
    assert devs[-1].spec == "cpu" and devs[-1].backend == "cpu"
    for d in devs:
        assert d.name and d.spec.split(":")[0] == d.backend
        assert d.device_uuid is None or re.fullmatch(r"[0-9a-f-]{36}", d.device_uuid)


@pytest.mark.parametrize("backend", ["vulkan", "opencl"])
def test_backend_present(backend):
    if not any(d.backend == backend for d in DEVICES):
        msg = "no %s device on this machine" % backend
        if REQUIRE_DEVICE:
            pytest.fail(msg + " (SSMAX_REQUIRE_DEVICE=1)")
        pytest.skip(msg)


def test_context_device_and_close():
    with ssmax.Context("cpu") as c:
        assert c.device.spec == "cpu" and "cpu" in repr(c)
    with pytest.raises(ssmax.ContextFailed, match="closed"):
        c.attention(*qkv())
    c.close()  # idempotent


def test_no_such_device():
    with pytest.raises(ssmax.NoDevice) as e:
        ssmax.Context("opencl:99")
    assert e.value.code == -3 and "opencl:99" in e.value.message
    with pytest.raises(ssmax.InvalidArgument) as e:
        ssmax.Context("uuid:xyz")
    assert e.value.code == -1 and "uuid:xyz" in e.value.message


# The library's own checks: each message names the field (ssmax_last_error).
LIBRARY_ERRORS = [
    (dict(mode="logn", train_len=1), "train_len"),
    (dict(scale=-1.0), "scale"),
    (dict(causal=True, q_pos=15), "q_pos"),
    (dict(mode="floor-log", floor_scale=0), "floor_scale"),
    (dict(kv_lens=[19, 0]), "kv_lens"),
    (dict(window=4), "window"),  # a window needs causal
    (dict(softcap=float("nan")), "softcap"),
]


@pytest.mark.parametrize("kw,field", LIBRARY_ERRORS, ids=[f for _, f in LIBRARY_ERRORS])
def test_library_errors_raise(kw, field):
    q, k, v = qkv()
    with pytest.raises(ssmax.InvalidArgument) as e:
        ssmax.reference(q, k, v, **kw)
    assert e.value.code == -1 and field in e.value.message and field in str(e.value)
    with pytest.raises(ssmax.InvalidArgument) as e:
        context("cpu").attention(q, k, v, **kw)
    assert e.value.code == -1 and field in e.value.message
    assert isinstance(e.value, ValueError)  # what a NumPy or PyTorch user catches


def test_gqa_ratio_error():
    q, _, _ = qkv(Hq=4)
    _, k, v = qkv(Hkv=3)
    with pytest.raises(ssmax.InvalidArgument, match="q_heads: 4 is not a multiple of kv_heads 3"):
        context("cpu").attention(q, k, v)


def test_argument_errors_raise():
    q, k, v = qkv()
    c = context("cpu")
    for call, field in [
        (lambda: c.attention(q.astype(np.float64), k, v), "q: dtype float64"),
        (lambda: c.attention(q, k.astype(np.float16), v), "dtypes"),
        (lambda: c.attention(q[0], k, v), "q: 3 dimensions"),
        (lambda: c.attention(q, k, v[:, :, :5]), "k, v: shapes"),
        (lambda: c.attention(q, k, v, mode="sparsemax"), "mode: 'sparsemax'"),
        (lambda: c.attention(q, k, v, path="fast"), "path: 'fast'"),
        (lambda: c.attention(q, k, v, layout="bshd"), "layout"),
        (lambda: c.attention(q, k, v, s=[0.4, 0.5]), "s: shape (2,)"),
        (lambda: c.attention(q, k, v, mask=np.zeros((3, 3), np.float32)), "mask: shape"),
    ]:
        with pytest.raises(ssmax.InvalidArgument, match=re.escape(field)) as e:
            call()
        assert e.value.code == -1
    with pytest.raises(TypeError, match="causl"):
        c.attention(q, k, v, causl=True)


def test_gpu_head_dim_unsupported(gpu_ctx):
    q, k, v = qkv(D=12)
    with pytest.raises(ssmax.Unsupported) as e:
        gpu_ctx.attention(q, k, v)
    assert e.value.code == -2 and "head_dim" in e.value.message


def test_compare():
    ref = np.array([1.0, 2.0, np.nan, 4.0])
    c = ssmax.compare(ref, np.array([1.0, 2.5, 3.0, 4.0], np.float32), atol=0.1)
    assert c.count == 4 and c.nonfinite_mismatch == 1 and c.max_abs == 0.5
    assert [i for i, _, _ in c.first_bad] == [1, 2]
    c = ssmax.compare(ref[[0, 1, 3]], np.array([1, 2, 4], np.float16))
    assert c.nmse == 0 and c.nonfinite_mismatch == 0
    with pytest.raises(ssmax.InvalidArgument):
        ssmax.compare(ref, ref)
