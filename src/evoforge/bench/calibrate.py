"""``evoforge bench timing``: what evoforge's timing numbers mean on this machine, beside the field's tools.

For SDPA's default path and the seed's 3-kernel path (matmul, softmax, matmul) on one attention shape it records:
evoforge.timing's eager and graph medians (the product's numbers); triton.testing's ``do_bench`` and
``do_bench_cudagraph``; back-to-back calls (a launch-bound throughput, what the seed measured); the host time of
one call (the launch cost alone); and evoforge's medians again after a ``torch.profiler`` session in the same
process (CUPTI's after-effect, why the evaluator's side-stream guard runs after all timing). On a CPU only the
eager median, back-to-back calls and the host time exist; the others are recorded as None.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from evoforge import envinfo
from evoforge.timing import TimingConfig, measure

CUDA_ONLY = ("evoforge_graph_us", "do_bench_us", "do_bench_cudagraph_us")


def seed_3kernel(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    s = torch.matmul(q, k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)
    return torch.matmul(torch.softmax(s, dim=-1), v)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def back_to_back(fn: Callable[[], Any], device: torch.device, n: int = 200) -> float:
    """Microseconds per call of ``n`` calls issued back to back (events on CUDA, the wall clock on a CPU)."""
    for _ in range(10):
        fn()
    _sync(device)
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(n):
            fn()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end) * 1000 / n
    started = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - started) * 1e6 / n


def host_time(fn: Callable[[], Any], device: torch.device, n: int = 200) -> float:
    """Median microseconds the host spends in one call, the device idle before it."""
    samples = []
    for _ in range(n):
        _sync(device)
        t = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - t) / 1000)
    _sync(device)
    return statistics.median(samples)


def _median(stats: Any) -> float | None:
    return getattr(stats, "median_us", None)


def timing_methods(shape: tuple[int, int, int, int] = (1, 8, 512, 64), *, device: str = "cuda",
                   dtype: torch.dtype | None = None, budget_ms: float = 200, rounds: int = 5,
                   calls: int = 200) -> dict[str, Any]:
    """The record: the environment, the shape, and per path every method's microseconds."""
    dev = torch.device(device)
    dtype = dtype or (torch.float16 if dev.type == "cuda" else torch.float32)
    q, k, v = (torch.randn(*shape, dtype=dtype, device=dev) for _ in range(3))
    fns = {
        "sdpa_default": lambda: F.scaled_dot_product_attention(q, k, v),
        "seed_3kernel": lambda: seed_3kernel(q, k, v),
    }
    cfg = TimingConfig(budget_ms=budget_ms, rounds=rounds)
    out: dict[str, Any] = {"env": envinfo.collect(dev), "shape": list(shape), "dtype": str(dtype).replace("torch.", ""),
                           "methods": {}}
    cuda = dev.type == "cuda"
    modes = ("eager", "graph") if cuda else ("eager",)
    ours = measure(fns, device=dev, modes=modes, config=cfg)
    if cuda:
        import triton.testing as tt
    for name, fn in fns.items():
        out["methods"][name] = {
            "evoforge_eager_us": _median(ours[name]["eager"]),
            "evoforge_graph_us": _median(ours[name].get("graph")) if cuda else None,
            "do_bench_us": tt.do_bench(fn, return_mode="median") * 1000 if cuda else None,
            "do_bench_cudagraph_us": tt.do_bench_cudagraph(fn, return_mode="median") * 1000 if cuda else None,
            "back_to_back_us": back_to_back(fn, dev, calls),
            "host_call_us": host_time(fn, dev, calls),
        }
    if cuda:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA]):
            fns["sdpa_default"]()
            torch.cuda.synchronize()
        after = measure(fns, device=dev, modes=modes, config=cfg)
        for name in fns:
            out["methods"][name]["evoforge_eager_after_profiler_us"] = _median(after[name]["eager"])
            out["methods"][name]["evoforge_graph_after_profiler_us"] = _median(after[name]["graph"])
            out["methods"][name]["host_call_after_profiler_us"] = host_time(fns[name], dev, calls)
    return out
