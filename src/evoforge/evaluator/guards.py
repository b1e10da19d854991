"""Guards against candidates that cheat, and the helpers the worker's checks share.

Each guard returns a one-line reason when it fires, else ``None``. They are runtime checks, so they
catch what a candidate *does*, whatever its source looks like.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import site
import sys
import sysconfig
import threading
import time
import warnings
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F

# Bound at import, before any candidate code runs.
_equal = torch.equal

# Functions a candidate could replace to fool the harness, or to route around the task.
_WATCHED: list[tuple[Any, str]] = [
    (torch, "allclose"), (torch, "isclose"), (torch, "equal"), (torch, "isfinite"), (torch, "abs"),
    (torch, "matmul"), (torch, "softmax"),
    (torch.Tensor, "__sub__"), (torch.Tensor, "abs"), (torch.Tensor, "max"), (torch.Tensor, "float"),
    (torch.Tensor, "double"), (torch.Tensor, "clone"), (torch.Tensor, "copy_"), (torch.Tensor, "to"),
    (torch.testing, "assert_close"), (F, "scaled_dot_product_attention"),
    (torch.cuda, "synchronize"), (torch.cuda, "Event"), (torch.cuda.Event, "record"),
    (torch.cuda.Event, "elapsed_time"), (torch.cuda, "graph"), (torch.cuda.CUDAGraph, "replay"),
    (time, "perf_counter"), (time, "perf_counter_ns"), (time, "time"), (time, "monotonic"),
]

# Global switches that change numerics or kernel choice for every later call.
_FLAGS: list[tuple[Any, str]] = [
    (torch.backends.cuda.matmul, "allow_tf32"),
    (torch.backends.cuda.matmul, "allow_fp16_reduced_precision_reduction"),
    (torch.backends.cuda.matmul, "allow_bf16_reduced_precision_reduction"),
    (torch.backends.cudnn, "allow_tf32"),
    (torch.backends.cudnn, "benchmark"),
    (torch.backends.cudnn, "deterministic"),
    (torch.backends.cudnn, "enabled"),
]
_SDPA_SWITCHES = ("flash_sdp_enabled", "mem_efficient_sdp_enabled", "math_sdp_enabled", "cudnn_sdp_enabled")


def _owner_name(owner: Any) -> str:
    return getattr(owner, "__name__", type(owner).__name__)


def patch_snapshot() -> dict[str, tuple[Any, str, Any]]:
    return {f"{_owner_name(o)}.{a}": (o, a, getattr(o, a, None)) for o, a in _WATCHED}


def patched(before: dict[str, tuple[Any, str, Any]]) -> str | None:
    """Fire if a watched function was replaced; put the original back so later entries are safe."""
    changed = []
    for name, (owner, attr, original) in before.items():
        if getattr(owner, attr, None) is not original:
            changed.append(name)
            setattr(owner, attr, original)
    return f"replaced {', '.join(changed)} (monkey-patching torch or time)" if changed else None


def flags_snapshot() -> dict[str, Any]:
    snap: dict[str, Any] = {f"{_owner_name(o)}.{a}": getattr(o, a) for o, a in _FLAGS}
    for name in _SDPA_SWITCHES:
        fn = getattr(torch.backends.cuda, name, None)
        if fn is not None:
            snap[f"torch.backends.cuda.{name}"] = fn()
    snap["float32_matmul_precision"] = torch.get_float32_matmul_precision()
    return snap


def restore_flags(snap: dict[str, Any]) -> None:
    for owner, attr in _FLAGS:
        setattr(owner, attr, snap[f"{_owner_name(owner)}.{attr}"])
    for name in _SDPA_SWITCHES:
        key = f"torch.backends.cuda.{name}"
        if key in snap:
            getattr(torch.backends.cuda, "enable_" + name.removesuffix("_enabled"))(snap[key])
    torch.set_float32_matmul_precision(snap["float32_matmul_precision"])


def flags_changed(before: dict[str, Any]) -> str | None:
    now = flags_snapshot()
    changed = [f"{k}: {before[k]} -> {now.get(k)}" for k in before if now.get(k) != before[k]]
    if not changed:
        return None
    restore_flags(before)
    return "changed global torch flags and left them changed (" + "; ".join(changed) + ")"


def tensors_in(value: Any) -> list[torch.Tensor]:
    """The tensors of an output, flattened in order (tuples, lists and dicts are walked)."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in tensors_in(v)]
    if isinstance(value, dict):
        return [t for k in sorted(value, key=str) for t in tensors_in(value[k])]
    return []


_INT_OF_SIZE = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise equality (a NaN equals the same NaN), for 'has this tensor been written?' questions."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    as_int = _INT_OF_SIZE.get(a.element_size())
    if as_int is None or a.dtype == torch.bool:
        return bool(_equal(a, b))
    return bool(_equal(a.view(as_int), b.view(as_int)))


def inputs_written(originals: Iterable[Any], copies: Iterable[Any]) -> str | None:
    for i, (orig, copy) in enumerate(zip(originals, copies, strict=True)):
        if isinstance(orig, torch.Tensor) and not same_bits(orig, copy):
            return f"wrote into input {i} (inputs must be left unchanged)"
    return None


def poison_allocator(nbytes: Iterable[int], device: torch.device) -> None:
    """Leave freed blocks full of NaN bytes (0xFF) in the allocator, sized like the outputs, so an
    output the candidate allocates but never fully writes shows garbage instead of whatever correct
    result happened to be in that memory before."""
    blocks = []
    for size in nbytes:
        for _ in range(2):
            blocks.append(torch.full((max(int(size), 1),), 255, dtype=torch.uint8, device=device))
    del blocks


def side_stream_work(model: Any, inputs: list[Any], device: torch.device,
                     profile_out: list[dict[str, Any]] | None = None) -> str | None:
    """Profile one call; fire if a kernel on another stream is still running after the call
    returned (work left on a side stream escapes CUDA-event timing on the current stream).

    Kernels on side streams that the candidate joins back before returning are fine: the marker
    kernel enqueued on the current stream after the call then starts after they end. With
    ``profile_out``, the call's kernels by device time (the two markers excluded) are appended to it:
    the performance profile that the LLM mutator feeds back.
    """
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    marker = torch.zeros(1, device=device)
    torch.cuda.synchronize(device)
    with warnings.catch_warnings(), profile(activities=[ProfilerActivity.CUDA]) as prof, torch.no_grad():
        warnings.simplefilter("ignore")
        marker.add_(1)
        model(*inputs)
        marker.add_(1)
        torch.cuda.synchronize(device)
    kernels = [
        e for e in prof.profiler.kineto_results.events()
        if e.device_type() == DeviceType.CUDA and e.duration_ns() >= 0
    ]
    kernels.sort(key=lambda e: e.start_ns())
    if len(kernels) < 2:
        return None
    # The first kernel is the opening marker (the GPU was idle before it); the last kernel on that
    # stream is the closing marker, enqueued right after the call returned.
    ours = kernels[0].device_resource_id()
    closing = [e for e in kernels if e.device_resource_id() == ours][-1]
    if profile_out is not None:
        inner = [e for e in kernels if e is not kernels[0] and e is not closing]
        profile_out.extend(top_kernels([(e.name(), e.duration_ns()) for e in inner]))
    late = [
        e.name() for e in kernels
        if e.device_resource_id() != ours and e.start_ns() + e.duration_ns() > closing.start_ns()
    ]
    if late:
        return f"left GPU work running on a side stream after returning ({late[0][:60]})"
    return None


def top_kernels(events: list[tuple[str, int]], limit: int = 5) -> list[dict[str, Any]]:
    """(kernel name, device ns) events grouped by name, the ``limit`` largest by total device time."""
    total: dict[str, list[int]] = {}
    for name, ns in events:
        entry = total.setdefault(name, [0, 0])
        entry[0] += ns
        entry[1] += 1
    ranked = sorted(total.items(), key=lambda kv: -kv[1][0])[:limit]
    return [{"name": name[:120], "device_us": ns / 1e3, "calls": calls} for name, (ns, calls) in ranked]


# -------------------------------------------------------------------- audit hook
# A runtime layer behind the static pre-check: once installed (after the references are computed,
# before any candidate is imported) it refuses, to code that is neither the standard library nor an
# installed package (candidate modules live in the scratch directory), the ways Python hands out
# frames or arbitrary objects: frame walking, tracers, gc scans, raw memory through ctypes, and code
# objects forged to look like a library's. The refused call raises, and the refusal is recorded, so a
# candidate that catches the exception is still rejected. An audit hook cannot be removed.
_AUDIT_DIRECT = {
    "sys._getframe": "walks the call stack (sys._getframe)",
    "sys._current_frames": "reads the frames of every thread (sys._current_frames)",
    "sys._current_exceptions": "reads the exceptions of every thread (sys._current_exceptions)",
    "sys.settrace": "installs a tracer, which sees every frame (sys.settrace)",
    "sys.setprofile": "installs a profiler, which sees every frame (sys.setprofile)",
    "sys.monitoring.register_callback": "registers a sys.monitoring callback",
    "gc.get_objects": "scans live objects for the harness's data (gc.get_objects)",
    "gc.get_referrers": "scans live objects for the harness's data (gc.get_referrers)",
    "gc.get_referents": "scans live objects for the harness's data (gc.get_referents)",
    "code.__new__": "builds code objects by hand",
}
_AUDIT_FRAME_ATTRS = {"tb_frame", "gi_frame", "cr_frame", "ag_frame"}
# ctypes goes through ctypes' own (standard library) wrappers: the first frame outside the standard
# library is the one responsible.
_AUDIT_CTYPES = {"ctypes.dlopen", "ctypes.dlsym", "ctypes.dlsym/handle", "ctypes.cdata", "ctypes.cdata/buffer",
                 "ctypes.string_at", "ctypes.wstring_at", "ctypes.call_function"}
# Standard-library functions that hand a frame to their caller: their caller is the one responsible.
_FRAME_HELPERS = {("inspect", "currentframe"), ("inspect", "stack"), ("inspect", "trace"),
                  ("inspect", "getouterframes"), ("inspect", "getinnerframes"), ("traceback", "walk_stack"),
                  ("traceback", "walk_tb"), ("logging", "<lambda>")}
_audit_state = threading.local()
_violations: list[tuple[str, str]] = []  # (file of the code responsible, reason)
_trusted_dirs: tuple[str, ...] = ()  # the standard library and installed packages
_stdlib_dirs: tuple[str, ...] = ()
_site_dirs: tuple[str, ...] = ()  # may lie inside the standard library's directory (no venv)
_helper_files: dict[str, str] = {}


def _library_dirs() -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    paths = sysconfig.get_paths()
    stdlib = {os.path.realpath(paths[k]) for k in ("stdlib", "platstdlib") if paths.get(k)}
    site_dirs = {os.path.realpath(paths[k]) for k in ("purelib", "platlib") if paths.get(k)}
    with contextlib.suppress(AttributeError):
        site_dirs.update(os.path.realpath(p) for p in site.getsitepackages())
    with contextlib.suppress(AttributeError):
        site_dirs.add(os.path.realpath(site.getusersitepackages()))
    site_dirs.update(os.path.realpath(p) for p in sys.path if p.endswith(("site-packages", "dist-packages")))
    # Whatever is on sys.path (PYTHONPATH, .pth entries) is library code too; candidates live in the
    # worker's scratch directory, its working directory, which is not.
    # (The standard library's own entries stay out: its wrappers are looked past for ctypes.)
    cwd = os.path.realpath(os.getcwd())
    for entry in sys.path:
        real = os.path.realpath(entry) if entry else cwd
        inside = [d for d in (cwd, *stdlib) if real == d or real.startswith(d + os.sep)]
        if os.path.isdir(real) and not inside:
            site_dirs.add(real)
    for name in ("torch", "triton", "numpy", "evoforge"):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            site_dirs.update(os.path.realpath(p) for p in spec.submodule_search_locations)

    def norm(dirs: set[str]) -> tuple[str, ...]:
        return tuple(d.rstrip(os.sep) + os.sep for d in dirs)

    return norm(stdlib | site_dirs), norm(stdlib), norm(site_dirs)


def _in(filename: str, dirs: tuple[str, ...]) -> bool:
    if filename.startswith("<"):  # <frozen importlib...> is the standard library; <string> is anyone's
        return filename.startswith("<frozen ")
    return os.path.realpath(filename).startswith(dirs)


def _in_stdlib(filename: str) -> bool:
    return _in(filename, _stdlib_dirs) and (filename.startswith("<") or not _in(filename, _site_dirs))


def install_audit_guard() -> None:
    """Install the hook (once per process)."""
    global _trusted_dirs, _stdlib_dirs, _site_dirs
    if _trusted_dirs:
        return
    _trusted_dirs, _stdlib_dirs, _site_dirs = _library_dirs()
    import inspect
    import logging
    import traceback

    _helper_files.update({inspect.__file__: "inspect", traceback.__file__: "traceback",
                          logging.__file__: "logging"})
    sys.addaudithook(_audit)


def _responsible(frame: Any, past_stdlib: bool) -> Any:
    """The frame answerable for an audited call made by ``frame``: itself, or the caller of a
    frame-returning helper, or (``past_stdlib``) the first frame outside the standard library."""
    while frame is not None:
        code = frame.f_code
        helper = (_helper_files.get(code.co_filename), code.co_name) in _FRAME_HELPERS
        if not helper and not (past_stdlib and _in_stdlib(code.co_filename)):
            return frame
        frame = frame.f_back
    return None


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event in _AUDIT_DIRECT:
        reason, past_stdlib = _AUDIT_DIRECT[event], False
    elif event == "object.__getattr__" and len(args) > 1 and args[1] in _AUDIT_FRAME_ATTRS:
        reason, past_stdlib = f"reaches for frames through .{args[1]}", False
    elif event == "object.__setattr__" and len(args) > 1 and args[1] == "__code__":
        reason, past_stdlib = "replaces a function's code", False
    elif event in _AUDIT_CTYPES:
        reason, past_stdlib = f"reaches raw memory or C symbols through ctypes ({event})", True
    elif event == "compile" and len(args) > 1 and isinstance(args[1], str) and args[1] \
            and not args[1].startswith("<") and _in(args[1], _trusted_dirs):
        reason, past_stdlib = f"compiles code under a library's file name ({args[1]})", False
    else:
        return
    if getattr(_audit_state, "busy", False):
        return  # our own sys._getframe below
    _audit_state.busy = True
    try:
        frame = _responsible(sys._getframe(1), past_stdlib)
        filename = frame.f_code.co_filename if frame is not None else "<unknown>"
        if frame is None or _in(filename, _trusted_dirs):
            return
        where = f"{os.path.basename(filename)}:{frame.f_lineno} in {frame.f_code.co_name}"
    finally:
        _audit_state.busy = False
    _violations.append((filename, f"{reason} at {where}"))
    raise RuntimeError(f"sandbox: refused at run time: candidate code {reason}")


def audit_violation(files: set[str] | None = None) -> str | None:
    """The first refused reach by code from ``files`` (any code when None) since the last call,
    as a rejection reason; those violations are consumed."""
    mine = [v for v in _violations if files is None or v[0] in files]
    if not mine:
        return None
    for v in mine:
        _violations.remove(v)
    return f"runtime guard: {mine[0][1]} (refused by the sandbox's audit hook)"
