"""What an evaluation says, as plain data: the neutral types every layer of evoforge reads.

This module imports nothing of the package (``tests/test_layers.py`` holds it to that), so the evaluator
that writes these types, the fitness rule that scores them, the mutators that read them and the stores that
keep them all depend on it, and never on each other for a data type. Each type goes to JSON and back.

- :class:`TimingStats`: one function's latency statistics in one mode (:mod:`evoforge.timing` measures them).
- :class:`EvalResult`: the evaluator's verdict on one candidate; :class:`CaseCheck`, one input set's check.
- :class:`Individual`: a candidate with its result, what the population holds and mutators read.

A failure is a status, never an exception (``STATUSES``): ``ok`` (correct, passed every guard, timed),
``compile_error`` (source or kernel did not build), ``runtime_error`` (raised when called),
``incorrect`` (wrong values, shape or dtype, or NaN/Inf), ``rejected`` (caught cheating: wrong on a
timed call, latencies the judge's clock disagrees with, inputs written, stale output reused, global flags
or torch patched, work left on a side stream; or unverified, where a guard could not run),
``timeout`` (a stage ran past its time limit), ``crashed`` (the worker process died: segfault,
``os._exit``, CUDA error, out of memory, output limit).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for the annotation only: an Individual holds whatever candidate it is given
    from evoforge.candidate import Candidate

STATUSES = ("ok", "compile_error", "runtime_error", "incorrect", "rejected", "timeout", "crashed")


@dataclass
class TimingStats:
    """Latency statistics of one function in one mode, microseconds."""

    mode: str
    clock: str
    device: str
    reps: int
    median_us: float
    min_us: float
    q1_us: float
    q3_us: float
    iqr_us: float
    mean_us: float
    flush_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TimingStats:
        return cls(**data)


@dataclass
class CaseCheck:
    """One input set's comparison with the reference."""

    case: str
    ok: bool
    max_abs_err: float | None = None
    max_rel_err: float | None = None
    detail: str = ""


@dataclass
class EvalResult:
    name: str
    hash: str
    status: str
    detail: str = ""
    role: str = "candidate"
    language: str = "torch"
    labels: list[str] = field(default_factory=list)
    max_abs_err: float | None = None
    max_rel_err: float | None = None
    checks: list[CaseCheck] = field(default_factory=list)
    timing: dict[str, TimingStats] = field(default_factory=dict)
    timing_errors: dict[str, str] = field(default_factory=dict)
    speedup: dict[str, dict[str, float]] = field(default_factory=dict)
    fitness: float = 0.0
    fitness_mode: str | None = None
    best_baseline: str | None = None
    # True when the win over the best baseline is beyond noise: the candidate's third-quartile
    # latency is below the baseline's first quartile (their interquartile ranges don't overlap).
    significant: bool = False
    logs: str = ""
    seconds: float = 0.0
    # Where it was measured: slot, host and device name (set by the executor's driver). A fitness is a
    # ratio within one batch, so it only ever compares timings from the same device.
    where: dict[str, str] = field(default_factory=dict)
    # The candidate's kernels by device time in one profiled call (GPU only): name, device_us, calls.
    kernels: list[dict[str, Any]] = field(default_factory=list)
    # Multi-shape tasks: per shape, its task name, status, fitness, best baseline and median latencies
    # (the result's own timing is the first shape's; see evoforge.shapes).
    shapes: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r}")

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def latency(self, mode: str) -> float | None:
        stats = self.timing.get(mode)
        return stats.median_us if stats else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalResult:
        data = dict(data)
        data["checks"] = [CaseCheck(**c) for c in data.get("checks", [])]
        data["timing"] = {m: TimingStats.from_dict(t) for m, t in data.get("timing", {}).items()}
        return cls(**data)


@dataclass
class Individual:
    """A candidate with its evaluation: what the population holds and mutators read."""

    candidate: Candidate
    result: EvalResult

    @property
    def fitness(self) -> float:
        return self.result.fitness if self.result.ok else 0.0
