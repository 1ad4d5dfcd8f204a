"""ctypes mirror of include/ssmax/ssmax.h and the loading of libssmax.

Every struct the package passes to the library is declared here, field by field in the header's
order. At import the library is asked for its own sizes (ssmax_struct_size) and API version
(ssmax_version_api); any difference raises ImportError naming the struct, so a package and a
library built from different headers never pass fields at the wrong offsets.
"""
import ctypes
import ctypes.util
import os

# The API version (0x00MMmmpp) this file mirrors: include/ssmax/ssmax.h, SSMAX_VERSION_API.
API_VERSION = 0x000100

c_int, c_uint32, c_uint64, c_int64 = ctypes.c_int, ctypes.c_uint32, ctypes.c_uint64, ctypes.c_int64
c_float, c_double, c_size_t, c_uint8 = ctypes.c_float, ctypes.c_double, ctypes.c_size_t, ctypes.c_uint8
c_void_p, c_char_p = ctypes.c_void_p, ctypes.c_char_p
P = ctypes.POINTER

# enums are int-sized in C
DTYPE = {"float32": 0, "float16": 1}
MODES = {"softmax": 0, "ssmax": 1, "ssmax-bias": 2, "logn": 3, "floor-log": 4}
PATHS = {"auto": 0, "fused": 1, "split-kv": 2, "unfused": 3}
PATH_NAMES = {v: k for k, v in PATHS.items()}
BACKENDS = {0: "cpu", 1: "vulkan", 2: "opencl"}
DEVICE_TYPES = {0: "other", 1: "integrated-gpu", 2: "discrete-gpu", 3: "virtual-gpu", 4: "cpu"}
MASK_NONE, MASK_LQ_LK, MASK_B1_LQ_LK, MASK_BH_LQ_LK = 0, 1, 2, 3
PLAN_LSE, PLAN_PROBS = 1, 2


class DeviceInfo(ctypes.Structure):
    _fields_ = [
        ("backend", c_int), ("index", c_int), ("type", c_int),
        ("name", ctypes.c_char * 256), ("vendor", ctypes.c_char * 128),
        ("api_version", ctypes.c_char * 64), ("driver_version", ctypes.c_char * 128),
        ("vendor_id", c_uint32), ("device_id", c_uint32), ("compute_units", c_uint32),
        ("subgroup_size", c_uint32), ("max_workgroup_size", c_uint32),
        ("shared_memory", c_uint64), ("max_buffer_size", c_uint64), ("max_alloc_size", c_uint64),
        ("global_memory", c_uint64),
        ("fp16_arith", c_int), ("fp16_storage", c_int), ("subgroups", c_int),
        ("compile_only", c_uint8), ("has_device_uuid", c_uint8), ("has_driver_uuid", c_uint8),
        ("device_uuid", c_uint8 * 16), ("driver_uuid", c_uint8 * 16),
        ("reserved", c_uint8 * 29),
    ]


class Allocator(ctypes.Structure):
    _fields_ = [("malloc", c_void_p), ("realloc", c_void_p), ("free", c_void_p), ("priv", c_void_p)]


LOG_CB = ctypes.CFUNCTYPE(None, c_void_p, c_int, c_char_p)


class ContextParams(ctypes.Structure):
    _fields_ = [
        ("backends", c_uint32), ("log_cb", LOG_CB), ("log_priv", c_void_p), ("log_level", c_int),
        ("alloc", P(Allocator)), ("debug", c_int), ("cache_dir", c_char_p),
        ("max_work_per_submit", c_uint64), ("reserved", c_uint8 * 32),
    ]


class Strides(ctypes.Structure):
    _fields_ = [("q", c_uint64 * 3), ("k", c_uint64 * 3), ("v", c_uint64 * 3),
                ("o", c_uint64 * 3), ("reserved", c_uint8 * 32)]


class AttnParams(ctypes.Structure):
    _fields_ = [
        ("dtype", c_int), ("batch", c_uint32), ("q_heads", c_uint32), ("kv_heads", c_uint32),
        ("q_len", c_uint32), ("kv_len", c_uint32), ("head_dim", c_uint32),
        ("scale", c_float), ("mode", c_int), ("s", P(c_float)), ("b", P(c_float)),
        ("s_all", c_float), ("b_all", c_float), ("train_len", c_uint32), ("floor_beta", c_float),
        ("floor_scale", c_uint32), ("pos_offset", c_uint32), ("causal", c_int),
        ("q_pos", c_int64), ("path", c_int), ("kv_splits", c_uint32),
        ("strides", P(Strides)),
        ("kv_lens", P(c_uint32)), ("q_positions", P(c_int64)), ("window", c_uint32),
        ("softcap", c_float), ("sinks", P(c_float)), ("mask", c_int), ("mask_dtype", c_int),
        ("mask_strides", c_uint64 * 3), ("reserved", c_uint8 * 32),
    ]


class AttnBuffers(ctypes.Structure):
    _fields_ = [
        ("q", c_void_p), ("k", c_void_p), ("v", c_void_p), ("o", c_void_p),
        ("lse", c_void_p), ("probs", c_void_p),
        ("q_off", c_size_t), ("k_off", c_size_t), ("v_off", c_size_t), ("o_off", c_size_t),
        ("lse_off", c_size_t), ("probs_off", c_size_t),
        ("mask", c_void_p), ("mask_off", c_size_t), ("scratch", c_void_p),
        ("scratch_off", c_size_t),
        ("reserved", c_uint8 * (32 - ctypes.sizeof(c_void_p) - ctypes.sizeof(c_size_t))),
    ]


class AttnHost(ctypes.Structure):
    _fields_ = [
        ("q", c_void_p), ("k", c_void_p), ("v", c_void_p), ("o", c_void_p),
        ("lse", P(c_float)), ("probs", P(c_float)), ("o_f64", P(c_double)),
        ("lse_f64", P(c_double)), ("mask", c_void_p),
    ]


class Compare(ctypes.Structure):
    _fields_ = [
        ("count", c_size_t), ("nmse", c_double), ("max_abs", c_double), ("max_ref", c_double),
        ("nonfinite_mismatch", c_size_t), ("first_bad", c_size_t * 8),
        ("first_ref", c_double * 8), ("first_got", c_double * 8), ("n_first_bad", c_int),
    ]


class PlanInfo(ctypes.Structure):
    _fields_ = [
        ("path", c_int), ("kv_splits", c_uint32), ("kernel", ctypes.c_char * 32),
        ("tile_rows", c_uint32), ("tile_keys", c_uint32), ("submissions", c_uint32),
        ("scratch_bytes", c_uint64), ("why", ctypes.c_char * 600), ("scratch_align", c_uint32),
        ("reserved", c_uint8 * 28),
    ]


class ExecArgs(ctypes.Structure):
    _fields_ = [("kv_len", c_uint32), ("q_pos", c_int64), ("kv_lens", P(c_uint32)),
                ("q_positions", P(c_int64)), ("reserved", c_uint8 * 32)]


class Tiles(ctypes.Structure):
    _fields_ = [("kernel", c_int), ("rows", c_uint32), ("keys", c_uint32), ("lanes", c_uint32)]


# The header's struct tag -> its mirror here: every one is checked at import.
STRUCTS = {
    "ssmax_attn_params": AttnParams,
    "ssmax_attn_buffers": AttnBuffers,
    "ssmax_attn_host": AttnHost,
    "ssmax_exec_args": ExecArgs,
    "ssmax_device_info": DeviceInfo,
    "ssmax_strides": Strides,
    "ssmax_compare": Compare,
    "ssmax_plan_info": PlanInfo,
    "ssmax_context_params": ContextParams,
    "ssmax_tiles": Tiles,
    "ssmax_allocator": Allocator,
}

ctx_p = c_void_p
_PROTOS = {
    "ssmax_version": (c_char_p, []),
    "ssmax_version_api": (ctypes.c_uint, []),
    "ssmax_struct_size": (c_size_t, [c_char_p]),
    "ssmax_strerror": (c_char_p, [c_int]),
    "ssmax_last_error": (c_char_p, [ctx_p]),
    "ssmax_context_params_default": (None, [P(ContextParams)]),
    "ssmax_context_create": (c_int, [P(ContextParams), P(ctx_p)]),
    "ssmax_context_destroy": (None, [P(ctx_p)]),
    "ssmax_device_count": (c_int, [ctx_p]),
    "ssmax_device_get_info": (c_int, [ctx_p, c_int, P(DeviceInfo)]),
    "ssmax_device_find": (c_int, [ctx_p, c_char_p]),
    "ssmax_device_open": (c_int, [ctx_p, c_int]),
    "ssmax_device_current": (c_int, [ctx_p, P(DeviceInfo)]),
    "ssmax_buffer_create": (c_int, [ctx_p, c_size_t, P(c_void_p)]),
    "ssmax_buffer_destroy": (None, [ctx_p, P(c_void_p)]),
    "ssmax_buffer_write": (c_int, [ctx_p, c_void_p, c_size_t, c_void_p, c_size_t]),
    "ssmax_buffer_read": (c_int, [ctx_p, c_void_p, c_size_t, c_void_p, c_size_t]),
    "ssmax_attn_params_default": (None, [P(AttnParams)]),
    "ssmax_attn_validate": (c_int, [P(AttnParams), c_char_p, c_size_t]),
    "ssmax_attn_supported": (c_int, [ctx_p, P(AttnParams)]),
    "ssmax_attn": (c_int, [ctx_p, P(AttnParams), P(AttnBuffers)]),
    "ssmax_last_device_time": (c_int, [ctx_p, P(c_uint64)]),
    "ssmax_last_plan": (c_int, [ctx_p, P(PlanInfo)]),
    "ssmax_exec_args_default": (None, [P(ExecArgs)]),
    "ssmax_plan_create": (c_int, [ctx_p, P(AttnParams), c_uint32, P(c_void_p)]),
    "ssmax_plan_execute": (c_int, [ctx_p, c_void_p, P(AttnBuffers), P(ExecArgs)]),
    "ssmax_plan_get_info": (c_int, [ctx_p, c_void_p, P(PlanInfo)]),
    "ssmax_plan_destroy": (None, [ctx_p, P(c_void_p)]),
    "ssmax_attn_ref": (c_int, [P(AttnParams), P(AttnHost)]),
    "ssmax_compare_f32": (None, [P(c_double), c_void_p, c_size_t, c_double, P(Compare)]),
    "ssmax_compare_f16": (None, [P(c_double), c_void_p, c_size_t, c_double, P(Compare)]),
}


def library_candidates():
    """Where the library is looked for, in order: $SSMAX_LIBRARY, the path meson install (or a
    pip build given SSMAX_LIBRARY) wrote into _build_info.py, then the system's search."""
    out = []
    env = os.environ.get("SSMAX_LIBRARY")
    if env:
        return [("SSMAX_LIBRARY", env)]
    try:
        from . import _build_info  # generated at install time; absent in the source tree
        if getattr(_build_info, "LIBRARY", None):
            out.append(("_build_info.py", _build_info.LIBRARY))
    except ImportError:
        pass
    found = ctypes.util.find_library("ssmax")
    if found:
        out.append(("find_library", found))
    out.append(("the loader's search path", "libssmax.so.0"))
    return out


def check_layout(lib, structs=None):
    """ImportError unless the library's API version and every struct size match this mirror."""
    got = lib.ssmax_version_api()
    if (got >> 8) != (API_VERSION >> 8):
        raise ImportError(
            "ssmax: the library's API version is %d.%d.%d, this package mirrors %d.%d.%d"
            % (got >> 16, (got >> 8) & 255, got & 255,
               API_VERSION >> 16, (API_VERSION >> 8) & 255, API_VERSION & 255))
    for name, cls in (structs or STRUCTS).items():
        want = lib.ssmax_struct_size(name.encode())
        if want != ctypes.sizeof(cls):
            raise ImportError(
                "ssmax: struct %s is %d bytes in the library, %d in the package: the package "
                "and the library were built from different headers" % (name, want, ctypes.sizeof(cls)))


def load():
    tried = []
    lib = None
    for where, path in library_candidates():
        try:
            lib = ctypes.CDLL(path)
            break
        except OSError as e:
            tried.append("%s (%s): %s" % (path, where, e))
    if lib is None:
        raise ImportError("ssmax: cannot load libssmax; set SSMAX_LIBRARY to the shared library "
                          "(build/libssmax.so). Tried: " + "; ".join(tried))
    if not hasattr(lib, "ssmax_struct_size"):
        raise ImportError("ssmax: %s has no ssmax_struct_size: the library is older than this "
                          "package" % lib._name)
    for name, (res, args) in _PROTOS.items():
        f = getattr(lib, name)
        f.restype, f.argtypes = res, args
    check_layout(lib)
    return lib
