"""The one timing module: everything in evoforge that measures time goes through :func:`measure`.

What a number means:

- **eager** (CUDA): one Python call of the function, timed with CUDA events recorded just before and
  just after it. Before every rep the L2 cache is flushed (a buffer larger than L2 is zeroed) and the
  device is synchronised, so the GPU sits idle when the start event is recorded: the launch cost a
  user pays when calling from Python is inside the number.
- **graph** (CUDA): the device time of one call from a cold L2. Two CUDA graphs are captured: one
  of ``calls`` repetitions of [L2 flush, call], one of ``calls`` flushes alone. Each rep replays both
  (events around each replay) and records ``(t_pairs - t_flushes) / calls``: the call's marginal
  device time with the graph-launch overhead amortised and the flush subtracted. (Triton's
  ``do_bench_cudagraph`` also replays many calls per graph, but with no flush between them: warm L2.)
- **eager** on a machine without CUDA: ``time.perf_counter_ns`` around one call, after writing a
  buffer larger than the CPU's L2. Results say ``clock="perf_counter_ns"``, so CPU timings are never
  mistaken for GPU ones.

After every rep the whole device is synchronised (``torch.cuda.synchronize``, not only the current
stream) before the next one starts. Reps per function are chosen from a time budget after warm-up
(between ``min_reps`` and ``max_reps``). Several functions timed together are **interleaved**: the reps
are split into rounds, and every round visits every function, so drifting clocks and a noisy neighbour
affect all of them alike and their ratio can be trusted. Rounds go in pairs: one order, then the same
order reversed, the next pair rotated by one. Over an even number of rounds every function is timed
right after each of its neighbours as often as before it: on an H100 the entry timed right after a
long-running one measured 3-4% slower than the same kernel timed first
(``benchmarks/results/template-ab-*-h100.json``), and a fixed order gave that edge to the same entry
every round. Statistics: median,
min, first and third quartile, interquartile range, mean, all in microseconds, as a
:class:`~evoforge.results.TimingStats` (a plain result type, re-exported here).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch

from evoforge.results import TimingStats

# Bound at import, before any candidate code runs: a candidate that patches torch or time later
# cannot change what the harness measures with.
_perf_counter_ns = time.perf_counter_ns
_cuda_synchronize = torch.cuda.synchronize
_CudaEvent = torch.cuda.Event

MODES = ("eager", "graph")


@dataclass
class TimingConfig:
    """How long and how often to time. ``budget_ms`` is the wall time spent on each function per mode
    (flushes and synchronisation included), after warm-up; ``flush_bytes=None`` picks twice the L2."""

    budget_ms: float = 100.0
    rounds: int = 6  # even: each order is also run reversed (see the module docstring)
    warmup: int = 5
    min_reps: int = 10
    max_reps: int = 1000
    flush_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(samples_us: list[float], *, mode: str, clock: str, device: str, flush_bytes: int) -> TimingStats:
    """Statistics of a list of per-call latencies (at least one sample)."""
    if not samples_us:
        raise ValueError("no samples to summarise")
    ordered = sorted(samples_us)
    if len(ordered) >= 2:
        q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    else:
        q1 = q3 = ordered[0]
    return TimingStats(
        mode=mode,
        clock=clock,
        device=device,
        reps=len(ordered),
        median_us=statistics.median(ordered),
        min_us=ordered[0],
        q1_us=q1,
        q3_us=q3,
        iqr_us=q3 - q1,
        mean_us=statistics.fmean(ordered),
        flush_bytes=flush_bytes,
    )


def cpu_l2_bytes() -> int:
    """The CPU's L2 size from sysfs (per core), 2 MiB where it can't be read."""
    try:
        text = Path("/sys/devices/system/cpu/cpu0/cache/index2/size").read_text().strip()
        units = {"K": 1024, "M": 1024**2}
        return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)
    except (OSError, ValueError, IndexError):
        return 2 * 1024**2


def gpu_l2_bytes(device: torch.device) -> int:
    props = torch.cuda.get_device_properties(device)
    return int(getattr(props, "L2_cache_size", 0) or 50 * 1024**2)


class _Clock:
    """Runs one timed rep of a prepared callable and returns its latency in microseconds."""

    name = ""

    def __init__(self, device: torch.device, flush_bytes: int) -> None:
        self.device = device
        self.flush_bytes = flush_bytes
        self.flush_buffer = torch.empty(max(flush_bytes // 4, 1), dtype=torch.int32, device=device)

    def prepare(self, fn: Callable[[], Any], mode: str) -> Callable[[], Any]:
        raise NotImplementedError

    def rep(self, run: Callable[[], Any], mode: str) -> float:
        raise NotImplementedError


class _CpuClock(_Clock):
    name = "perf_counter_ns"

    def prepare(self, fn: Callable[[], Any], mode: str) -> Callable[[], Any]:
        if mode != "eager":
            raise RuntimeError(f"{mode} mode needs a CUDA device")
        return fn

    def rep(self, run: Callable[[], Any], mode: str) -> float:
        self.flush_buffer.zero_()
        start = _perf_counter_ns()
        run()
        return (_perf_counter_ns() - start) / 1000.0


class _CudaClock(_Clock):
    name = "cuda_event"
    calls_per_graph = 10

    def __init__(self, device: torch.device, flush_bytes: int) -> None:
        super().__init__(device, flush_bytes)
        self.start = _CudaEvent(enable_timing=True)
        self.end = _CudaEvent(enable_timing=True)
        self.flush_graph: Callable[[], Any] | None = None

    def _capture(self, body: Callable[[], Any]) -> Callable[[], Any]:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(self.calls_per_graph):
                body()
        _cuda_synchronize(self.device)
        return graph.replay

    def prepare(self, fn: Callable[[], Any], mode: str) -> Callable[[], Any]:
        if mode == "eager":
            return fn
        if mode != "graph":
            raise ValueError(f"unknown timing mode {mode!r}")
        # Warm up on a side stream before capture, as torch.cuda.graphs requires.
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(3):
                fn()
        torch.cuda.current_stream(self.device).wait_stream(side)
        _cuda_synchronize(self.device)
        if self.flush_graph is None:
            self.flush_graph = self._capture(self.flush_buffer.zero_)

        def pair() -> None:
            self.flush_buffer.zero_()
            fn()

        return self._capture(pair)

    def elapsed_us(self, run: Callable[[], Any]) -> float:
        self.start.record()
        run()
        self.end.record()
        _cuda_synchronize(self.device)  # the whole device, so work on any stream has finished
        return self.start.elapsed_time(self.end) * 1000.0

    def rep(self, run: Callable[[], Any], mode: str) -> float:
        if mode == "graph":
            assert self.flush_graph is not None
            flushes = self.elapsed_us(self.flush_graph)
            return (self.elapsed_us(run) - flushes) / self.calls_per_graph
        self.flush_buffer.zero_()
        _cuda_synchronize(self.device)  # idle GPU: the launch cost lands inside the events
        return self.elapsed_us(run)


def make_clock(device: torch.device, flush_bytes: int | None = None) -> _Clock:
    if device.type == "cuda":
        size = flush_bytes if flush_bytes is not None else 2 * gpu_l2_bytes(device)
        return _CudaClock(device, size)
    size = flush_bytes if flush_bytes is not None else 2 * cpu_l2_bytes()
    return _CpuClock(device, size)


T = TypeVar("T")


def round_orders(items: list[T], rounds: int) -> list[list[T]]:
    """The order of every round: pairs of rounds, one order and then the same order reversed, the next
    pair rotated by one (see the module docstring), so no item is always timed right after the same one."""
    orders = []
    for r in range(rounds):
        shift = (r // 2) % len(items) if items else 0
        order = items[shift:] + items[:shift]
        if r % 2:
            order.reverse()
        orders.append(order)
    return orders


def measure(
    fns: dict[str, Callable[[], Any]],
    *,
    device: torch.device | str,
    modes: tuple[str, ...] = MODES,
    config: TimingConfig | None = None,
    on_switch: Callable[[str, str], None] | None = None,
) -> dict[str, dict[str, TimingStats | str]]:
    """Time every function in every mode, interleaved; see the module docstring for what it means.

    Returns ``{name: {mode: TimingStats or an error string}}``. A function that raises while being
    prepared or timed gets the error text for that mode and is dropped from later rounds; the others
    go on. ``on_switch(name, mode)`` is called before each block of reps (the evaluator's worker uses
    it to know whom to blame if the process dies). Modes a device can't do (graph on a CPU) get an
    error string, not an exception.
    """
    config = config or TimingConfig()
    device = torch.device(device)
    clock = make_clock(device, config.flush_bytes)
    results: dict[str, dict[str, TimingStats | str]] = {name: {} for name in fns}
    active: list[tuple[str, str, Callable[[], Any], int]] = []

    for mode in modes:
        for name, fn in fns.items():
            if on_switch:
                on_switch(name, mode)
            try:
                run = clock.prepare(fn, mode)
                wall = []
                for _ in range(max(config.warmup, 1)):
                    started = _perf_counter_ns()
                    clock.rep(run, mode)
                    wall.append((_perf_counter_ns() - started) / 1000.0)
            except Exception as exc:
                results[name][mode] = f"{type(exc).__name__}: {str(exc).strip()[:300]}"
                continue
            per_rep = max(statistics.median(wall), 1e-3)
            reps = int(config.budget_ms * 1000.0 / per_rep)
            reps = min(max(reps, config.min_reps), config.max_reps)
            active.append((name, mode, run, reps))

    samples: dict[tuple[str, str], list[float]] = {(n, m): [] for n, m, _, _ in active}
    rounds = max(config.rounds, 1)
    for order in round_orders(active, rounds):
        for name, mode, run, reps in order:
            if mode in results[name]:  # failed in an earlier round
                continue
            per_round = math.ceil(reps / rounds)
            if on_switch:
                on_switch(name, mode)
            try:
                samples[(name, mode)].extend(clock.rep(run, mode) for _ in range(per_round))
            except Exception as exc:
                results[name][mode] = f"{type(exc).__name__}: {str(exc).strip()[:300]}"

    for (name, mode), values in samples.items():
        if mode not in results[name] and values:
            results[name][mode] = summarize(
                values, mode=mode, clock=clock.name, device=str(device), flush_bytes=clock.flush_bytes
            )
    for name in fns:
        for mode in modes:
            results[name].setdefault(mode, "not timed")
    return results
