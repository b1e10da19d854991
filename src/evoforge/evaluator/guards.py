"""Guards against candidates that cheat, and the helpers the worker's checks share.

Each guard returns a one-line reason when it fires, else ``None``. They are runtime checks, so they
catch what a candidate *does*, whatever its source looks like.
"""

from __future__ import annotations

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
