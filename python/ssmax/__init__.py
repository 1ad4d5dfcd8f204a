"""ssmax: attention with Scalable-Softmax (SSMax) on Vulkan, OpenCL and the CPU, from NumPy.

    import numpy as np, ssmax
    q = k = v = np.random.rand(1, 8, 128, 64).astype(np.float32)      # [B, H, L, D]
    with ssmax.Context("auto") as ctx:                                # a GPU if there is one
        o = ctx.attention(q, k, v, mode="ssmax", s=0.43, causal=True)
    ref, lse = ssmax.reference(q, k, v, mode="ssmax", s=0.43, causal=True)
    print(ssmax.compare(ref, o))                                      # NMSE, max-abs, non-finite

The function is SPEC.md's; every option is the C library's (include/ssmax/ssmax.h), which this
package calls through ctypes. Thread-safety: a Context may be shared between threads (calls on it
take a lock); distinct contexts run at once.
"""
import collections
import ctypes
import dataclasses
import threading

import numpy as np

from . import _lib as L

_so = L.load()

__all__ = [
    "devices", "Context", "reference", "compare", "fading", "version", "DeviceInfo", "PlanInfo",
    "Comparison", "Error", "InvalidArgument", "Unsupported", "NoDevice", "OutOfMemory",
    "LimitExceeded", "KernelBuild", "DeviceLost", "BackendError", "ContextFailed",
]

__version__ = _so.ssmax_version().decode()


def version():
    """The loaded library's version string ("0.1.0")."""
    return _so.ssmax_version().decode()


# ---- errors ----

class Error(Exception):
    """A failed call: .code is the library's enum ssmax_result (negative), .message its
    ssmax_last_error() text naming the argument and the limit."""

    code = None

    def __init__(self, code, message):
        self.code = code
        self.message = message
        name = _so.ssmax_strerror(code).decode()
        super().__init__("%s (%d): %s" % (name, code, message) if message else "%s (%d)" % (name, code))


class InvalidArgument(Error, ValueError):
    """SSMAX_ERR_INVALID_ARG: an argument is out of its documented range."""


class Unsupported(Error, NotImplementedError):
    """SSMAX_ERR_UNSUPPORTED: valid, but this device or path cannot do it."""


class NoDevice(Error):
    """SSMAX_ERR_NO_DEVICE: no device matches the request."""


class OutOfMemory(Error, MemoryError):
    """SSMAX_ERR_OUT_OF_HOST_MEMORY or SSMAX_ERR_OUT_OF_DEVICE_MEMORY."""


class LimitExceeded(Error):
    """SSMAX_ERR_LIMIT_EXCEEDED: the problem exceeds a device limit."""


class KernelBuild(Error):
    """SSMAX_ERR_KERNEL_BUILD: a kernel or pipeline failed to build."""


class DeviceLost(Error):
    """SSMAX_ERR_DEVICE_LOST: the device was lost; the context is failed for good."""


class BackendError(Error):
    """SSMAX_ERR_BACKEND: any other driver error."""


class ContextFailed(Error):
    """SSMAX_ERR_CONTEXT_FAILED: an earlier device loss made the context unusable."""


_ERRORS = {-1: InvalidArgument, -2: Unsupported, -3: NoDevice, -4: OutOfMemory, -5: OutOfMemory,
           -6: LimitExceeded, -7: KernelBuild, -8: DeviceLost, -9: BackendError, -10: ContextFailed}


def _raise(code, ctx=None):
    msg = _so.ssmax_last_error(ctx)
    raise _ERRORS.get(code, Error)(code, msg.decode(errors="replace") if msg else "")


def _check(code, ctx=None):
    if code < 0:
        _raise(code, ctx)
    return code


def _bad(msg):
    return InvalidArgument(-1, msg)


# ---- devices ----

@dataclasses.dataclass(frozen=True)
class DeviceInfo:
    """One device (struct ssmax_device_info). spec names it for Context(): "cpu", "vulkan:N",
    "opencl:N"."""
    spec: str
    backend: str
    index: int
    type: str
    name: str
    vendor: str
    api_version: str
    driver_version: str
    vendor_id: int
    device_id: int
    compute_units: int
    subgroup_size: int
    max_workgroup_size: int
    shared_memory: int
    max_buffer_size: int
    max_alloc_size: int
    global_memory: int
    fp16_arith: bool
    fp16_storage: bool
    subgroups: bool
    compile_only: bool
    device_uuid: str   # 8-4-4-4-12 hex, or None when unknown
    driver_uuid: str


def _uuid(b, known):
    if not known:
        return None
    h = bytes(b).hex()
    return "-".join((h[:8], h[8:12], h[12:16], h[16:20], h[20:]))


def _device_info(d):
    backend = L.BACKENDS.get(d.backend, str(d.backend))
    return DeviceInfo(
        spec="cpu" if backend == "cpu" else "%s:%d" % (backend, d.index), backend=backend,
        index=d.index, type=L.DEVICE_TYPES.get(d.type, str(d.type)),
        name=d.name.decode(errors="replace"), vendor=d.vendor.decode(errors="replace"),
        api_version=d.api_version.decode(errors="replace"),
        driver_version=d.driver_version.decode(errors="replace"),
        vendor_id=d.vendor_id, device_id=d.device_id, compute_units=d.compute_units,
        subgroup_size=d.subgroup_size, max_workgroup_size=d.max_workgroup_size,
        shared_memory=d.shared_memory, max_buffer_size=d.max_buffer_size,
        max_alloc_size=d.max_alloc_size, global_memory=d.global_memory,
        fp16_arith=bool(d.fp16_arith), fp16_storage=bool(d.fp16_storage),
        subgroups=bool(d.subgroups), compile_only=bool(d.compile_only),
        device_uuid=_uuid(d.device_uuid, d.has_device_uuid),
        driver_uuid=_uuid(d.driver_uuid, d.has_driver_uuid))


def _context_create(debug=False, cache_dir=None):
    cp = L.ContextParams()
    _so.ssmax_context_params_default(ctypes.byref(cp))
    if debug:
        cp.debug = 1
    if cache_dir is not None:
        cp.cache_dir = str(cache_dir).encode()
    h = ctypes.c_void_p()
    _check(_so.ssmax_context_create(ctypes.byref(cp), ctypes.byref(h)))
    return h


def devices():
    """Every device the library sees (Vulkan, OpenCL, then the CPU reference), as DeviceInfo."""
    h = _context_create()
    try:
        n = _check(_so.ssmax_device_count(h), h)
        out = []
        for i in range(n):
            d = L.DeviceInfo()
            _check(_so.ssmax_device_get_info(h, i, ctypes.byref(d)), h)
            out.append(_device_info(d))
        return out
    finally:
        _so.ssmax_context_destroy(ctypes.byref(h))


@dataclasses.dataclass(frozen=True)
class PlanInfo:
    """What a call ran and why (struct ssmax_plan_info)."""
    path: str
    kv_splits: int
    kernel: str
    tile_rows: int
    tile_keys: int
    submissions: int
    scratch_bytes: int
    why: str


# ---- results ----

AttentionLse = collections.namedtuple("AttentionLse", "o lse")
AttentionProbs = collections.namedtuple("AttentionProbs", "o probs")
AttentionLseProbs = collections.namedtuple("AttentionLseProbs", "o lse probs")


def _result(o, lse, probs):
    if lse is not None and probs is not None:
        return AttentionLseProbs(o, lse, probs)
    if lse is not None:
        return AttentionLse(o, lse)
    if probs is not None:
        return AttentionProbs(o, probs)
    return o


# ---- describing a call ----

class _Call:
    """One attention call turned into the library's structs, with the arrays they point into
    kept alive."""

    def __init__(self, q, k, v, *, mode, s, b, causal, q_pos, scale, path, splits, train_len,
                 floor_beta, floor_scale, pos_offset, kv_lens, q_positions, window, softcap,
                 sinks, mask, layout):
        if layout not in ("bhld", "blhd"):
            raise _bad("layout: %r; expected 'bhld' ([B, H, L, D]) or 'blhd' ([B, L, H, D])"
                       % (layout,))
        arrs = []
        for name, a in (("q", q), ("k", k), ("v", v)):
            a = np.asarray(a)
            if a.dtype not in (np.float32, np.float16):
                raise _bad("%s: dtype %s; ssmax takes float32 or float16" % (name, a.dtype))
            if a.ndim != 4:
                raise _bad("%s: %d dimensions, expected 4 (%s)" % (
                    name, a.ndim, "[B, H, L, D]" if layout == "bhld" else "[B, L, H, D]"))
            arrs.append(np.ascontiguousarray(a))
        q, k, v = arrs
        if not (q.dtype == k.dtype == v.dtype):
            raise _bad("q, k, v: dtypes %s, %s, %s differ" % (q.dtype, k.dtype, v.dtype))
        if layout == "bhld":
            (B, Hq, Lq, D), (Bk, Hk, Lk, Dk) = q.shape, k.shape
        else:
            (B, Lq, Hq, D), (Bk, Lk, Hk, Dk) = q.shape, k.shape
        if k.shape != v.shape:
            raise _bad("k, v: shapes %s and %s differ" % (k.shape, v.shape))
        if Bk != B or Dk != D:
            raise _bad("k: shape %s does not match q's %s in batch or head_dim" % (k.shape, q.shape))
        self.q, self.k, self.v, self.layout = q, k, v, layout
        self.dtype = q.dtype
        esz = q.dtype.itemsize
        self.shape = (B, Hq, Lq, D)
        p = L.AttnParams()
        _so.ssmax_attn_params_default(ctypes.byref(p))
        p.dtype = L.DTYPE[q.dtype.name]
        p.batch, p.q_heads, p.kv_heads, p.q_len, p.kv_len, p.head_dim = B, Hq, Hk, Lq, Lk, D
        mname = mode.replace("_", "-") if isinstance(mode, str) else mode
        if mname not in L.MODES:
            raise _bad("mode: %r; expected one of %s" % (mode, ", ".join(L.MODES)))
        p.mode = L.MODES[mname]
        self.keep = []  # arrays the structs point into

        def per_head(name, x, n):
            a = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
            if a.shape != (n,):
                raise _bad("%s: shape %s, expected a scalar or [q_heads] = (%d,)" % (name, a.shape, n))
            self.keep.append(a)
            return a, a.ctypes.data_as(ctypes.POINTER(ctypes.c_float))

        self.s = self.b = self.sinks = None
        if np.ndim(s) == 0:
            p.s_all = float(s)
        else:
            self.s, p.s = per_head("s", s, Hq)
        if np.ndim(b) == 0:
            p.b_all = float(b)
        else:
            self.b, p.b = per_head("b", b, Hq)
        if sinks is not None:
            self.sinks, p.sinks = per_head("sinks", sinks, Hq)
        p.scale = 0.0 if scale is None else float(scale)
        p.causal = 1 if causal else 0
        p.q_pos = -1 if q_pos is None else int(q_pos)
        if path not in L.PATHS:
            raise _bad("path: %r; expected one of %s" % (path, ", ".join(L.PATHS)))
        p.path = L.PATHS[path]
        p.kv_splits = int(splits)
        p.train_len, p.floor_beta = int(train_len), float(floor_beta)
        p.floor_scale, p.pos_offset = int(floor_scale), int(pos_offset)
        p.window, p.softcap = int(window), float(softcap)
        self.kv_lens = self.q_positions = None
        if kv_lens is not None:
            a = np.ascontiguousarray(np.asarray(kv_lens).astype(np.uint32))
            if a.shape != (B,) or np.any(np.asarray(kv_lens) < 0):
                raise _bad("kv_lens: expected [batch] = (%d,) non-negative integers, got %s"
                           % (B, np.asarray(kv_lens).shape))
            self.kv_lens = a
            self.keep.append(a)
        if q_positions is not None:
            a = np.ascontiguousarray(np.asarray(q_positions).astype(np.int64))
            if a.shape != (B,):
                raise _bad("q_positions: expected [batch] = (%d,), got %s" % (B, a.shape))
            self.q_positions = a
            self.keep.append(a)
        self.strides = None
        if layout == "blhd":
            st = L.Strides()
            for name, (Lx, Hx) in (("q", (Lq, Hq)), ("k", (Lk, Hk)), ("v", (Lk, Hk)),
                                   ("o", (Lq, Hq))):
                getattr(st, name)[:] = [Lx * Hx * D * esz, D * esz, Hx * D * esz]
            self.strides = st
            p.strides = ctypes.pointer(st)
        self.mask = None
        if mask is not None:
            self.mask = self._mask(p, mask, B, Hq, Lq, Lk)
        self.p = p

    def _mask(self, p, mask, B, Hq, Lq, Lk):
        m = np.asarray(mask)
        if m.dtype == np.bool_:  # PyTorch's rule: True takes part in attention
            m = np.where(m, np.float32(0), np.float32(-np.inf))
        elif m.dtype not in (np.float32, np.float16):
            m = m.astype(np.float32)
        if m.ndim not in (2, 4) or m.shape[-2:] != (Lq, Lk):
            raise _bad("mask: shape %s; expected [q_len, kv_len] = (%d, %d), [batch, 1, q_len, "
                       "kv_len] or [batch, q_heads, q_len, kv_len]" % (m.shape, Lq, Lk))
        if m.ndim == 2:
            m = m[None, None]
        mb, mh = m.shape[:2]
        if mb not in (1, B) or mh not in (1, Hq):
            raise _bad("mask: shape %s does not broadcast to (%d, %d, %d, %d)"
                       % (m.shape, B, Hq, Lq, Lk))
        if mb == 1 and mh == 1:
            p.mask, m = L.MASK_LQ_LK, m[0, 0]
        elif mh == 1:
            p.mask = L.MASK_B1_LQ_LK
        else:
            p.mask = L.MASK_BH_LQ_LK
            m = np.broadcast_to(m, (B, Hq, Lq, Lk))
        m = np.ascontiguousarray(m)
        p.mask_dtype = L.DTYPE[m.dtype.name]
        self.keep.append(m)
        return m

    def exec_args(self):
        a = L.ExecArgs()
        _so.ssmax_exec_args_default(ctypes.byref(a))
        a.q_pos = self.p.q_pos
        if self.kv_lens is not None:
            a.kv_lens = self.kv_lens.ctypes.data_as(ctypes.POINTER(ctypes.c_uint32))
        if self.q_positions is not None:
            a.q_positions = self.q_positions.ctypes.data_as(ctypes.POINTER(ctypes.c_int64))
        return a

    def plan_key(self, flags):
        """Everything a plan depends on: the params without their per-call values and pointers,
        plus what the pointers point at."""
        p = L.AttnParams.from_buffer_copy(self.p)
        p.s = p.b = p.sinks = None
        p.strides = None
        p.kv_lens = p.q_positions = None
        p.q_pos = 0
        return (bytes(p), flags, None if self.s is None else self.s.tobytes(),
                None if self.b is None else self.b.tobytes(),
                None if self.sinks is None else self.sinks.tobytes(),
                None if self.strides is None else bytes(self.strides))

    def out_shape(self):
        B, Hq, Lq, D = self.shape
        return (B, Hq, Lq, D) if self.layout == "bhld" else (B, Lq, Hq, D)


_CALL_DEFAULTS = dict(mode="ssmax", s=0.43, b=0.0, causal=False, q_pos=None, scale=None,
                      path="auto", splits=0, train_len=8192, floor_beta=0.1, floor_scale=8192,
                      pos_offset=1, kv_lens=None, q_positions=None, window=0, softcap=0.0,
                      sinks=None, mask=None, layout="bhld")


# ---- the context ----

class Context:
    """A library context with one open device.

    device: "auto" (a real GPU first, then Vulkan, OpenCL, the CPU), "cpu", "vulkan[:N]",
    "opencl[:N]", "uuid:HEX", None ($SSMAX_DEVICE, else auto) or a DeviceInfo. debug=True turns
    on the Vulkan validation layer. Use as a context manager or call close().

    Device buffers are kept per problem size (a few sizes at once, least recently used dropped)
    and a plan per problem, so repeated calls of one shape neither allocate nor re-plan.
    """

    _MAX_BUFFER_SETS = 4
    _MAX_PLANS = 8

    def __init__(self, device="auto", *, debug=False, cache_dir=None):
        self._lock = threading.Lock()
        self._h = None
        self._buffers = collections.OrderedDict()
        self._plans = collections.OrderedDict()
        self._stats = {"buffers_created": 0, "buffers_destroyed": 0, "plans_created": 0,
                       "plans_destroyed": 0, "calls": 0}
        h = _context_create(debug=debug, cache_dir=cache_dir)
        try:
            spec = device.spec if isinstance(device, DeviceInfo) else device
            idx = _check(_so.ssmax_device_find(h, None if spec is None else str(spec).encode()), h)
            _check(_so.ssmax_device_open(h, idx), h)
            d = L.DeviceInfo()
            _check(_so.ssmax_device_current(h, ctypes.byref(d)), h)
        except BaseException:
            _so.ssmax_context_destroy(ctypes.byref(h))
            raise
        self._h = h
        self.device = _device_info(d)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self):
        return "<ssmax.Context %s%s>" % (
            self.device.spec if self._h else "closed", " (%s)" % self.device.name if self._h else "")

    def close(self):
        """Destroys the context, its plans and buffers. Idempotent."""
        with self._lock:
            if self._h is not None:
                while self._buffers:
                    self._drop_buffers(self._buffers.popitem()[1])
                while self._plans:
                    self._drop_plan(self._plans.popitem()[1])
                _so.ssmax_context_destroy(ctypes.byref(self._h))
                self._h = None

    def _handle(self):
        if self._h is None:
            raise ContextFailed(-10, "the Context is closed")
        return self._h

    def stats(self):
        """Counts of the device buffers and plans this context made and freed, and of calls."""
        with self._lock:
            return dict(self._stats)

    def last_plan(self):
        """The plan the last successful call ran (PlanInfo)."""
        with self._lock:
            pi = L.PlanInfo()
            _check(_so.ssmax_last_plan(self._handle(), ctypes.byref(pi)), self._h)
            return _plan_info(pi)

    def last_device_time(self):
        """Device time of the last call in seconds."""
        with self._lock:
            ns = ctypes.c_uint64()
            _check(_so.ssmax_last_device_time(self._handle(), ctypes.byref(ns)), self._h)
            return ns.value * 1e-9

    # buffers and plans, both under self._lock; each freed here when dropped or at close

    def _drop_buffers(self, bs):
        for h in bs.values():
            _so.ssmax_buffer_destroy(self._h, ctypes.byref(h))
            self._stats["buffers_destroyed"] += 1

    def _drop_plan(self, h):
        _so.ssmax_plan_destroy(self._h, ctypes.byref(h))
        self._stats["plans_destroyed"] += 1

    def _buffer_set(self, sizes):
        bs = self._buffers.get(sizes)
        if bs is not None:
            self._buffers.move_to_end(sizes)
            return bs
        while len(self._buffers) >= self._MAX_BUFFER_SETS:
            self._drop_buffers(self._buffers.popitem(last=False)[1])
        bs = {}
        try:
            for name, size in zip(("q", "k", "v", "o", "lse", "probs", "mask"), sizes):
                if size:
                    h = ctypes.c_void_p()
                    _check(_so.ssmax_buffer_create(self._h, size, ctypes.byref(h)), self._h)
                    self._stats["buffers_created"] += 1
                    bs[name] = h
        except BaseException:
            self._drop_buffers(bs)
            raise
        self._buffers[sizes] = bs
        return bs

    def _plan(self, call, flags):
        key = call.plan_key(flags)
        h = self._plans.get(key)
        if h is not None:
            self._plans.move_to_end(key)
            return h
        while len(self._plans) >= self._MAX_PLANS:
            self._drop_plan(self._plans.popitem(last=False)[1])
        h = ctypes.c_void_p()
        _check(_so.ssmax_plan_create(self._h, ctypes.byref(call.p), flags, ctypes.byref(h)),
               self._h)
        self._stats["plans_created"] += 1
        self._plans[key] = h
        return h

    def attention(self, q, k, v, *, lse=False, probs=False, **kw):
        """Attention on the open device (SPEC.md; ssmax_plan_execute).

        q: [B, Hq, Lq, D], k and v: [B, Hkv, Lk, D] (layout="bhld"), or [B, L, H, D] each
        (layout="blhd", the layout of most engines and of flash-attn); float32 or float16, all
        alike. Arguments, as `ssmax run` and struct ssmax_attn_params:
          mode      "softmax", "ssmax" (default), "ssmax-bias", "logn", "floor-log"
          s, b      SSMax s (default 0.43) and bias b: a scalar or a [Hq] array
          causal    row i sees keys 0..q_pos+i; q_pos: position of row 0 (default Lk - Lq)
          scale     softmax scale (default 1/sqrt(D))
          path      "auto", "fused", "split-kv", "unfused"; splits: split-KV pieces (0: planner)
          train_len (logn), floor_beta, floor_scale, pos_offset (floor-log)
          kv_lens   [B] keys of each batch item; q_positions: [B] position of each item's row 0
          window    sliding window (causal); softcap: C*tanh(z/C); sinks: [Hq] sink logits
          mask      additive mask [Lq, Lk], [B, 1, Lq, Lk] or [B, Hq, Lq, Lk], float32/float16
                    (-inf hides a key) or bool (True takes part, as PyTorch's attn_mask)
        Returns O (q's dtype and layout). With lse=True and/or probs=True, a named tuple
        (o, lse), (o, probs) or (o, lse, probs): lse float32 [B, Hq, Lq] (natural log), probs
        float32 [B, Hq, Lq, Lk] (the unfused path), in either layout.
        Raises an ssmax.Error subclass carrying the library's code and message.
        """
        for name in kw:
            if name not in _CALL_DEFAULTS:
                raise TypeError("attention() got an unexpected keyword argument %r" % name)
        call = _Call(q, k, v, **{**_CALL_DEFAULTS, **kw})
        B, Hq, Lq, D = call.shape
        Lk = call.p.kv_len
        flags = (L.PLAN_LSE if lse else 0) | (L.PLAN_PROBS if probs else 0)
        o = np.empty(call.out_shape(), dtype=call.dtype)
        lse_a = np.empty((B, Hq, Lq), dtype=np.float32) if lse else None
        probs_a = np.empty((B, Hq, Lq, Lk), dtype=np.float32) if probs else None
        sizes = (call.q.nbytes, call.k.nbytes, call.v.nbytes, o.nbytes,
                 0 if lse_a is None else lse_a.nbytes, 0 if probs_a is None else probs_a.nbytes,
                 0 if call.mask is None else call.mask.nbytes)
        with self._lock:
            h = self._handle()
            plan = self._plan(call, flags)
            bs = self._buffer_set(sizes)
            bufs = L.AttnBuffers()
            for name, arr in (("q", call.q), ("k", call.k), ("v", call.v), ("mask", call.mask)):
                if arr is not None:
                    _check(_so.ssmax_buffer_write(h, bs[name], 0, arr.ctypes.data, arr.nbytes), h)
            for name in bs:
                setattr(bufs, name, bs[name])
            args = call.exec_args()
            _check(_so.ssmax_plan_execute(h, plan, ctypes.byref(bufs), ctypes.byref(args)), h)
            for name, arr in (("o", o), ("lse", lse_a), ("probs", probs_a)):
                if arr is not None:
                    _check(_so.ssmax_buffer_read(h, bs[name], 0, arr.ctypes.data, arr.nbytes), h)
            self._stats["calls"] += 1
        return _result(o, lse_a, probs_a)


def _plan_info(pi):
    return PlanInfo(path=L.PATH_NAMES.get(pi.path, str(pi.path)), kv_splits=pi.kv_splits,
                    kernel=pi.kernel.decode(errors="replace"), tile_rows=pi.tile_rows,
                    tile_keys=pi.tile_keys, submissions=pi.submissions,
                    scratch_bytes=pi.scratch_bytes, why=pi.why.decode(errors="replace"))


# ---- the float64 reference and comparison ----

def reference(q, k, v, *, lse=True, probs=False, **kw):
    """The float64 reference (ssmax_attn_ref) on host arrays: the same arguments as
    Context.attention (path and splits are accepted and have no effect). Returns a named tuple
    (o, lse) of float64 arrays, O in q's layout and LSE [B, Hq, Lq]; with probs=True
    (o, lse, probs), probs float32 [B, Hq, Lq, Lk]. Thread-safe."""
    for name in kw:
        if name not in _CALL_DEFAULTS:
            raise TypeError("reference() got an unexpected keyword argument %r" % name)
    call = _Call(q, k, v, **{**_CALL_DEFAULTS, **kw})
    B, Hq, Lq, D = call.shape
    o = np.empty((B, Hq, Lq, D), dtype=np.float64)
    lse_a = np.empty((B, Hq, Lq), dtype=np.float64)
    probs_a = np.empty((B, Hq, Lq, call.p.kv_len), dtype=np.float32) if probs else None
    io = L.AttnHost()
    io.q, io.k, io.v = call.q.ctypes.data, call.k.ctypes.data, call.v.ctypes.data
    io.o_f64 = o.ctypes.data_as(ctypes.POINTER(ctypes.c_double))
    io.lse_f64 = lse_a.ctypes.data_as(ctypes.POINTER(ctypes.c_double))
    if probs_a is not None:
        io.probs = probs_a.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
    if call.mask is not None:
        io.mask = call.mask.ctypes.data
    p = call.p
    p.path, p.kv_splits = 0, 0
    if call.kv_lens is not None:
        p.kv_lens = call.kv_lens.ctypes.data_as(ctypes.POINTER(ctypes.c_uint32))
    if call.q_positions is not None:
        p.q_positions = call.q_positions.ctypes.data_as(ctypes.POINTER(ctypes.c_int64))
    # o_f64 is dense [B, Hq, Lq, D] whatever the layout: Q, K, V keep their strides
    _check(_so.ssmax_attn_ref(ctypes.byref(p), ctypes.byref(io)))
    if call.layout == "blhd":
        o = np.ascontiguousarray(o.transpose(0, 2, 1, 3))
    if probs:
        return AttentionLseProbs(o, lse_a, probs_a)
    return AttentionLse(o, lse_a)


@dataclasses.dataclass(frozen=True)
class Comparison:
    """ssmax_compare_f32/_f16 (SPEC.md section 6): nmse = sum (got-ref)^2 / sum ref^2,
    max_abs over finite pairs, nonfinite_mismatch = positions where exactly one side is NaN/Inf
    (or the Infs differ); first_bad: (flat index, ref, got) of the first elements over atol or
    non-finite-mismatched."""
    count: int
    nmse: float
    max_abs: float
    max_ref: float
    nonfinite_mismatch: int
    first_bad: list


def compare(ref, got, atol=0.0):
    """Compares got (float32 or float16, any shape) with ref (float64, the same number of
    elements, compared in C order). Returns a Comparison."""
    ref = np.ascontiguousarray(np.asarray(ref, dtype=np.float64))
    got = np.ascontiguousarray(np.asarray(got))
    if got.dtype not in (np.float32, np.float16):
        raise _bad("got: dtype %s; compare takes float32 or float16" % got.dtype)
    if ref.size != got.size:
        raise _bad("ref, got: %d and %d elements" % (ref.size, got.size))
    c = L.Compare()
    fn = _so.ssmax_compare_f32 if got.dtype == np.float32 else _so.ssmax_compare_f16
    fn(ref.ctypes.data_as(ctypes.POINTER(ctypes.c_double)), got.ctypes.data, ref.size,
       float(atol), ctypes.byref(c))
    bad = [(int(c.first_bad[i]), c.first_ref[i], c.first_got[i]) for i in range(c.n_first_bad)]
    return Comparison(count=c.count, nmse=c.nmse, max_abs=c.max_abs, max_ref=c.max_ref,
                      nonfinite_mismatch=c.nonfinite_mismatch, first_bad=bad)


from ._fading import fading  # noqa: E402 (it uses Context and devices, defined above)
