"""Executors: where batches of evaluations run, between the evolution loop and the evaluator.

The unit of work is a **batch**: one generation's candidates beside the baselines, checked and timed by
one worker process on one GPU, so a candidate's speedup is always against baselines timed in the same
process on the same device (the honest-ratio rule). An executor takes batches (``submit``) and hands
back their results as they complete (``wait``), so the loop can keep every slot busy instead of
waiting for the slowest batch of a generation.

- :class:`SerialExecutor` wraps a plain ``evaluate(candidates, generation)`` function: one batch at a
  time, in the caller's thread (the loop's behaviour before executors, and what the tests' fake
  evaluators use).
- :class:`LocalExecutor`: one slot per visible GPU (``CUDA_VISIBLE_DEVICES`` respected; each worker is
  pinned to its GPU), or N CPU slots without one. A slot never times two batches at once, so timings
  on a GPU are never concurrent. Optionally a precompile stage runs each submitted batch's candidates
  in a separate process that compiles their Triton kernels without launching them, so the timing
  worker's compile is a cache hit (Triton's on-disk cache) and compilation overlaps timing.
- :class:`RayExecutor` (``pip install 'evoforge[ray]'``): batches as Ray tasks with ``num_gpus=1``
  each (``num_cpus=1`` on a CPU cluster). Results stream back to the driver, which alone writes the
  run store; a batch whose worker or node is lost is re-queued.

Every executor decides a batch's baselines and absorbs its report in the driver's thread (through the
:class:`BatchPlanner`, :class:`evoforge.evolve.GenerationEvaluator`), and records per slot where each
batch ran (host, device name), how long the slot was busy, and how many evaluations it made.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from evoforge.candidate import Candidate
from evoforge.evaluator import EvalConfig, EvalReport, Evaluator, EvaluatorError
from evoforge.results import EvalResult
from evoforge.task import TaskSpec

EvaluateFn = Callable[[list[Candidate], int], tuple[list[EvalResult], list[EvalResult]]]
MAX_ATTEMPTS = 3  # a batch whose worker is lost this many times ends the run (something is systematically wrong)


class BatchPlanner(Protocol):
    """What an executor needs from the loop's evaluator (GenerationEvaluator implements it)."""

    spec: TaskSpec
    config: EvalConfig
    progress: Callable[[str], None] | None

    def plan(self, candidates: list[Candidate]) -> list[Candidate]: ...

    def absorb(self, generation: int, report: EvalReport, where: dict[str, Any]
               ) -> tuple[list[EvalResult], list[EvalResult]]: ...


@dataclass
class Done:
    """One finished batch, as the loop receives it."""

    generation: int
    candidates: list[Candidate]
    results: list[EvalResult]
    baselines: list[EvalResult]
    slot: str
    seconds: float  # the slot's busy time for this batch
    waited: float = 0.0  # seconds between submit and a slot taking it
    where: dict[str, Any] = field(default_factory=dict)  # host, device_name, slot
    attempts: int = 1


@dataclass
class SlotStats:
    """Throughput of one slot (one GPU, or one CPU worker) since the executor started."""

    batches: int = 0
    evaluations: int = 0  # candidates evaluated (baselines not counted)
    busy_s: float = 0.0
    where: dict[str, Any] = field(default_factory=dict)

    def summary(self, elapsed: float) -> dict[str, Any]:
        elapsed = max(elapsed, 1e-9)
        return {"batches": self.batches, "evaluations": self.evaluations, "busy_s": round(self.busy_s, 3),
                "idle_s": round(max(elapsed - self.busy_s, 0.0), 3),
                "idle_frac": round(max(elapsed - self.busy_s, 0.0) / elapsed, 4),
                "evals_per_min": round(60.0 * self.evaluations / elapsed, 3), **self.where}


@dataclass
class _Batch:
    generation: int
    candidates: list[Candidate]
    baselines: list[Candidate]
    submitted: float
    attempts: int = 0
    finished: bool = False  # a slot is done with it (its precompile, if still to come, is pointless)


class Executor(ABC):
    """Submit batches, receive them as they complete. ``capacity`` batches may be in flight."""

    name = "executor"

    def __init__(self, slots: list[str], prefetch: int = 0) -> None:
        if not slots:
            raise EvaluatorError("an executor needs at least one slot")
        self.slot_names = list(slots)
        self.prefetch = max(int(prefetch), 0)
        self.started = time.monotonic()
        self.stats: dict[str, SlotStats] = {s: SlotStats() for s in slots}
        self._in_flight = 0
        # (kind, data) for the run's event log; the loop takes them (the driver alone writes the store).
        self.events: list[tuple[str, dict[str, Any]]] = []

    @property
    def capacity(self) -> int:
        """Batches the loop keeps in flight: one per slot, plus ``prefetch`` proposed ahead (their
        compilation can overlap the current timing, at the price of parents one batch older)."""
        return len(self.slot_names) + self.prefetch

    def in_flight(self) -> int:
        return self._in_flight

    def queued(self) -> int:
        """Batches submitted that no slot has started yet."""
        return max(self._in_flight - self._running(), 0)

    def _running(self) -> int:
        return min(self._in_flight, len(self.slot_names))

    @abstractmethod
    def submit(self, generation: int, candidates: list[Candidate]) -> None: ...

    @abstractmethod
    def wait(self, timeout: float | None = None) -> list[Done]:
        """Block until at least one batch completes (or ``timeout`` passes: then maybe none)."""

    def close(self) -> None:  # noqa: B027 (a hook: most executors hold nothing)
        pass

    def _account(self, done: Done) -> None:
        stats = self.stats.setdefault(done.slot, SlotStats())
        stats.batches += 1
        stats.evaluations += len(done.results)
        stats.busy_s += done.seconds
        stats.where = {k: v for k, v in done.where.items() if k in ("host", "device_name")}

    def throughput(self) -> dict[str, Any]:
        """Evaluations per minute per slot, idle time per slot, queue depth: for the live view and report."""
        elapsed = time.monotonic() - self.started
        slots = {name: s.summary(elapsed) for name, s in self.stats.items()}
        evaluations = sum(s.evaluations for s in self.stats.values())
        n = max(len(self.slot_names), 1)
        return {"executor": self.name, "slots": len(self.slot_names), "elapsed_s": round(elapsed, 3),
                "evaluations": evaluations, "evals_per_min": round(60.0 * evaluations / max(elapsed, 1e-9), 3),
                "evals_per_min_per_slot": round(60.0 * evaluations / max(elapsed, 1e-9) / n, 3),
                "idle_frac": round(sum(s["idle_frac"] for s in slots.values()) / max(len(slots), 1), 4),
                "queue": self.queued(), "in_flight": self._in_flight, "per_slot": slots}


class SerialExecutor(Executor):
    """One batch at a time through a plain evaluate function, in the caller's thread."""

    name = "serial"

    def __init__(self, evaluate: EvaluateFn) -> None:
        super().__init__(["serial"])
        self.evaluate = evaluate
        self._todo: list[tuple[int, list[Candidate], float]] = []

    def submit(self, generation: int, candidates: list[Candidate]) -> None:
        self._todo.append((generation, candidates, time.monotonic()))
        self._in_flight += 1

    def wait(self, timeout: float | None = None) -> list[Done]:
        if not self._todo:
            return []
        generation, candidates, submitted = self._todo.pop(0)
        t0 = time.monotonic()
        try:
            results, baselines = self.evaluate(candidates, generation)
        finally:
            self._in_flight -= 1
        env = getattr(self.evaluate, "env", {}) or {}
        where = {"slot": "serial", **{k: env[k] for k in ("host", "device_name") if k in env}}
        done = Done(generation, candidates, results, baselines, "serial", time.monotonic() - t0, t0 - submitted, where)
        self._account(done)
        return [done]


def evaluate_batch(spec: TaskSpec, config: EvalConfig, candidates: list[Candidate], baselines: list[Candidate],
                   progress: Callable[[str], None] | None = None, cancel: threading.Event | None = None) -> EvalReport:
    """One batch in one worker (restarted past crashing or hanging entries by the Evaluator)."""
    return Evaluator(spec, config, progress=progress, cancel=cancel).evaluate(candidates, baselines)


def where_from(env: dict[str, Any], slot: str) -> dict[str, Any]:
    """Which node and device a batch ran on (from the worker's own environment record)."""
    return {"slot": slot, "host": env.get("host"), "device_name": env.get("device_name"),
            "device_type": env.get("device_type")}


# -------------------------------------------------------------------- local
def local_slots(device: str, workers: int | None) -> list[str]:
    """The devices of the local slots: each visible GPU for ``auto``/``cuda`` (at most ``workers`` of
    them), just that GPU for ``cuda:N``; ``workers`` CPU slots (default 1) for ``cpu``."""
    if workers is not None and workers < 1:
        raise EvaluatorError(f"--workers {workers}: need at least one worker")
    if device == "cpu":
        return ["cpu"] * (workers or 1)
    if device.startswith("cuda:"):
        return [device]
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        if device == "cuda":
            raise EvaluatorError("--device cuda: no CUDA device is visible")
        return ["cpu"] * (workers or 1)
    return [f"cuda:{i}" for i in range(count)][: workers or count]


class LocalExecutor(Executor):
    """One thread per slot on this machine, each running one worker process at a time on its device."""

    name = "local"

    def __init__(self, planner: BatchPlanner, devices: list[str], prefetch: int = 0, precompile: bool = False,
                 precompile_device: str | None = None) -> None:
        names = [f"{d}#{i}" if devices.count(d) > 1 else d for i, d in enumerate(devices)]
        super().__init__(names, prefetch)
        self.planner = planner
        self.precompile = precompile
        self._todo: queue.Queue[_Batch | None] = queue.Queue()
        self._done: queue.Queue[tuple[_Batch, str, float, EvalReport | None, BaseException | None]] = queue.Queue()
        self._compile_todo: queue.Queue[_Batch | None] = queue.Queue()
        self._cancel = threading.Event()
        self._failure: BaseException | None = None
        self.compile_log: list[dict[str, Any]] = []  # one record per precompiled batch (start, end, seconds)
        self.timing_log: list[dict[str, Any]] = []  # one record per batch a slot ran (start, end)
        self._threads = [threading.Thread(target=self._slot, args=(name, device), daemon=True,
                                          name=f"evoforge-slot-{name}")
                         for name, device in zip(names, devices, strict=True)]
        if precompile:
            device = precompile_device or devices[0]
            self._threads.append(threading.Thread(target=self._compiler, args=(device,), daemon=True,
                                                  name="evoforge-precompile"))
        for thread in self._threads:
            thread.start()

    def submit(self, generation: int, candidates: list[Candidate]) -> None:
        batch = _Batch(generation, candidates, self.planner.plan(candidates), time.monotonic())
        self._in_flight += 1
        if self.precompile:
            self._compile_todo.put(batch)
        self._todo.put(batch)

    def queued(self) -> int:
        return self._todo.qsize()

    def _say(self, slot: str) -> Callable[[str], None]:
        progress = self.planner.progress
        if progress is None:
            return lambda message: None
        if len(self.slot_names) == 1:
            return progress
        return lambda message: progress(f"{slot}: {message}")

    def _slot(self, name: str, device: str) -> None:
        config = replace(self.planner.config, device=device)
        while True:
            batch = self._todo.get()
            if batch is None:
                return
            t0 = time.monotonic()
            report: EvalReport | None = None
            error: BaseException | None = None
            try:
                report = evaluate_batch(self.planner.spec, config, batch.candidates, batch.baselines, self._say(name),
                                        self._cancel)
            except BaseException as exc:  # the slot survives; the driver decides what the failure means
                error = exc
            batch.finished = True
            self.timing_log.append({"slot": name, "generation": batch.generation, "start": t0,
                                    "end": time.monotonic()})
            self._done.put((batch, name, t0, report, error))

    def _compiler(self, device: str) -> None:
        config = replace(self.planner.config, device=device)
        while True:
            batch = self._compile_todo.get()
            if batch is None:
                return
            if batch.finished:
                continue
            t0 = time.monotonic()
            try:
                compiled = Evaluator(self.planner.spec, config, cancel=self._cancel).precompile(batch.candidates)
            except Exception as exc:  # best effort: the timing worker compiles whatever this did not
                compiled = {"error": f"{type(exc).__name__}: {exc}"}
            record = {"generation": batch.generation, "start": t0, "end": time.monotonic(),
                      "seconds": time.monotonic() - t0, **compiled}
            self.compile_log.append(record)
            self.events.append(("precompile", {k: v for k, v in record.items() if k not in ("start", "end")}))

    def wait(self, timeout: float | None = None) -> list[Done]:
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure
        if not self._in_flight:
            return []
        try:
            items = [self._done.get(timeout=timeout)]
        except queue.Empty:
            return []
        while True:
            try:
                items.append(self._done.get_nowait())
            except queue.Empty:
                break
        out = []
        failure: BaseException | None = None
        for batch, slot, t0, report, error in items:
            self._in_flight -= 1
            if error is not None or report is None:
                failure = failure or error
                continue
            where = where_from(report.env, slot)
            results, bases = self.planner.absorb(batch.generation, report, where)
            done = Done(batch.generation, batch.candidates, results, bases, slot,
                        report.profile.get("wall", time.monotonic() - t0), t0 - batch.submitted, where)
            self._account(done)
            out.append(done)
        if failure is not None:  # the evaluator itself failed (as it would serially): the run ends,
            if not out:          # once the batches that did complete are handed over to be stored
                raise failure
            self._failure = failure
        return out

    def close(self) -> None:
        """Stop the slots. Batches still running (the loop stopped early: Ctrl-C, an error) are cancelled:
        their workers are killed and their scratch directories removed before this returns."""
        self._cancel.set()
        for pending in (self._todo, self._compile_todo):
            while True:
                try:
                    pending.get_nowait()
                except queue.Empty:
                    break
        for _ in self.slot_names:
            self._todo.put(None)
        self._compile_todo.put(None)
        for thread in self._threads:
            thread.join(timeout=30)


# -------------------------------------------------------------------- ray
def _ray() -> Any:
    try:
        import ray
    except ModuleNotFoundError:
        raise EvaluatorError("--executor ray needs Ray: pip install 'evoforge[ray]'") from None
    return ray


def _ray_evaluate(spec: TaskSpec, config: EvalConfig, candidates: list[Candidate],
                  baselines: list[Candidate]) -> tuple[EvalReport, dict[str, Any]]:
    """The body of a Ray task: one batch on the GPU (or CPU) Ray gave this task."""
    import platform

    if config.device == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")
    report = evaluate_batch(spec, config, candidates, baselines)
    gpu = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    host = report.env.get("host") or platform.node()
    slot = f"{host}/gpu{gpu}" if config.device != "cpu" and gpu else f"{host}/pid{os.getpid()}"
    return report, {"slot": slot, "pid": os.getpid()}


class RayExecutor(Executor):
    """Batches as Ray tasks across a cluster; the driver (this process) alone writes the run store."""

    name = "ray"

    def __init__(self, planner: BatchPlanner, address: str | None = "auto", workers: int | None = None,
                 prefetch: int = 0, device: str = "auto") -> None:
        ray = _ray()
        self.ray = ray
        if not ray.is_initialized():
            try:
                ray.init(address=address, log_to_driver=False, include_dashboard=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise EvaluatorError(f"--executor ray: cannot reach a Ray cluster at {address!r}: "
                                     f"{str(exc).strip().splitlines()[0] if str(exc).strip() else exc}") from None
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        if device == "cpu" or (device == "auto" and gpus == 0):
            self.device, per_task = "cpu", {"num_cpus": 1}
            n = workers or max(int(resources.get("CPU", 1)), 1)
        else:
            if gpus == 0:
                raise EvaluatorError(f"--device {device}: the Ray cluster has no GPU")
            self.device, per_task = "cuda", {"num_gpus": 1, "num_cpus": 1}
            n = min(workers or gpus, gpus)
        super().__init__([f"ray-{i}" for i in range(n)], prefetch)
        self.stats = {}  # slots are named after the node and GPU that ran a batch, as results arrive
        self.planner = planner
        self.requeued = 0
        # max_retries=0: a lost worker comes back to the driver, which re-queues the batch itself and
        # records that it did (Ray's own retry would hide it).
        self._remote = ray.remote(max_retries=0, **per_task)(_ray_evaluate)
        self._refs: dict[Any, _Batch] = {}
        self._running_since: dict[Any, float] = {}

    def submit(self, generation: int, candidates: list[Candidate]) -> None:
        batch = _Batch(generation, candidates, self.planner.plan(candidates), time.monotonic())
        self._in_flight += 1
        self._launch(batch)

    def _launch(self, batch: _Batch) -> None:
        batch.attempts += 1
        config = replace(self.planner.config, device=self.device)
        ref = self._remote.remote(self.planner.spec, config, batch.candidates, batch.baselines)
        self._refs[ref] = batch
        self._running_since[ref] = time.monotonic()

    def wait(self, timeout: float | None = None) -> list[Done]:
        ray = self.ray
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._refs:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            ready, _ = ray.wait(list(self._refs), num_returns=1, timeout=left)
            if not ready:
                return []
            out = []
            for ref in ready:
                batch = self._refs.pop(ref)
                t0 = self._running_since.pop(ref)
                try:
                    report, info = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:  # the evaluation itself failed: as locally
                    self._in_flight -= 1
                    cause = exc.as_instanceof_cause()
                    raise (cause if isinstance(cause, Exception) else EvaluatorError(str(exc))) from None
                except ray.exceptions.RayError as exc:  # worker or node lost: the batch goes again
                    if batch.attempts >= MAX_ATTEMPTS:
                        self._in_flight -= 1
                        raise EvaluatorError(f"batch of generation {batch.generation} lost its Ray worker "
                                             f"{batch.attempts} times: {type(exc).__name__}") from None
                    self.requeued += 1
                    self.events.append(("requeue", {"generation": batch.generation, "attempt": batch.attempts,
                                                    "error": type(exc).__name__}))
                    self._launch(batch)
                    continue
                self._in_flight -= 1
                where = {**where_from(report.env, info["slot"]), "pid": info["pid"]}
                results, bases = self.planner.absorb(batch.generation, report, where)
                done = Done(batch.generation, batch.candidates, results, bases, info["slot"],
                            report.profile.get("wall", time.monotonic() - t0), 0.0, where, batch.attempts)
                self._account(done)
                out.append(done)
            if out:
                return out
        return []

    def close(self) -> None:
        for ref in list(self._refs):
            self.ray.cancel(ref, force=True)
        self._refs.clear()
