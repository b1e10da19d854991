"""The evaluator's configuration and report: plain data the judge, the CLI and the executors share.

- ``EvalConfig``: how candidates are evaluated (device, random input sets and edge cases, timing modes and
  settings, timeouts per stage, a worker's limits: memory, files, processes, CPU time; sandbox level, input
  seed); defaults suit a GPU, tests shrink them.
  The CLI builds it from its options (``cli.common.eval_config``), ``evolve`` from a run's RunConfig.
- ``EvalReport``: what one evaluation produced: an ``EvalResult`` per entry (candidates and baselines),
  the environment (``envinfo``), the input seeds, the worker count and a time profile per stage.
- ``EvaluatorError``: the evaluator itself could not work (one line; the CLI exits 3).

Imported by ``evaluator.judge`` (which takes an EvalConfig and returns an EvalReport) and re-exported by
``evoforge.evaluator``.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from evoforge.results import EvalResult
from evoforge.timing import MODES, TimingConfig


class EvaluatorError(Exception):
    """The evaluator itself could not work (the worker can't start at all). One line."""


def _default_memory_limit_mb() -> int:
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    except (ValueError, OSError):
        total = 16 * 1024
    return int(min(32 * 1024, total * 0.75))


@dataclass
class EvalConfig:
    """How candidates are evaluated. Defaults suit a GPU; tests shrink timeouts and budgets."""

    device: str = "auto"
    n_random: int = 3
    edge_cases: bool = True
    modes: tuple[str, ...] = MODES
    timing: TimingConfig = field(default_factory=TimingConfig)
    fitness_mode: str | None = None  # None: graph on CUDA, eager on a CPU
    timeout_s: float = 300.0  # per stage of one entry (import+checks, or one block of timing reps)
    compile_timeout_s: float = 600.0  # building one C++/CUDA candidate's extension (load_inline)
    startup_timeout_s: float = 600.0  # worker start, task load, reference outputs
    memory_limit_mb: int = field(default_factory=_default_memory_limit_mb)
    file_size_limit_mb: int = 512
    # Processes + threads of one worker and all its descendants (a fork bomb stops here). torch,
    # Triton and Inductor's compile workers use a few hundred at most.
    max_tasks: int = 1024
    # RLIMIT_CPU of a worker (and of each process it starts); None: every stage's wall limit times
    # the number of cores, so legitimate work never meets it.
    cpu_time_limit_s: float | None = None
    seed: int | None = None
    side_stream_guard: bool = True
    # torch's intra-op threads in a CPU worker: one by default, so a CPU timing is not at the mercy of
    # the scheduler (300 SDPA calls: 70 over 1 ms with 2 threads, 1 with one thread on a 2-core machine).
    cpu_threads: int = 1
    # Input/output slots the judge shares with a worker: timed calls rotate through them, each block
    # of calls on fresh values. Fewer when a slot is large (see judge.pool_slots).
    pool_slots: int = 48
    # Outputs of each timed block that the judge compares with its reference.
    samples_per_block: int = 2
    # Keep baseline workers (PyTorch's own code) alive for the next evaluation of the same task, instead of
    # starting them again; candidates always get a fresh worker.
    keep_baselines: bool = True
    # Candidate workers started ahead, while this evaluation's workers load and check, for the next
    # evaluation of the same config to take (see process.SpareWorkers): 0 none, None as many as this
    # evaluation started for its candidates. A search on a GPU turns it on; a single evaluation has no
    # use for them.
    spare_workers: int | None = 0
    # Workers started and loaded at once (their imports and compiles overlap); None: one per CPU core.
    parallel_workers: int | None = None
    # How much unreported time per call the judge's clock tolerates beyond the baselines' overhead
    # (besides a share of the reported latency and three times the baselines' spread); None: per device
    # and mode, see judge._ABSOLUTE (GPU graph 2 us, GPU eager 20 us, CPU 2 ms).
    clock_tolerance_us: float | None = None
    sandbox: str = "basic"  # none | basic | strict (see evaluator/sandbox.py)
    keep_workdir: bool = False
    log_limit_chars: int = 16_000  # kept per entry in its result's logs
    file_log_limit_chars: int = 1_000_000  # passed through to the worker's stdout/stderr files

    def worker_view(self) -> dict[str, Any]:
        data = asdict(self)
        data["modes"] = list(self.modes)
        # The worker sees exactly one GPU (pinned through CUDA_VISIBLE_DEVICES), always as cuda:0.
        if self.device.startswith("cuda"):
            data["device"] = "cuda:0"
        return data

    def visible_gpu(self) -> str | None:
        """The CUDA_VISIBLE_DEVICES entry the worker is pinned to; None for CPU runs and for auto
        where no GPU is visible (then the worker decides by itself)."""
        if self.device == "cpu":
            return None
        visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
        index = int(self.device.split(":", 1)[1]) if self.device.startswith("cuda:") else 0
        if visible:
            if index >= len(visible):
                raise EvaluatorError(f"device {self.device}: only {len(visible)} GPU(s) visible")
            return visible[index].strip()
        if "CUDA_VISIBLE_DEVICES" in os.environ:  # set but empty: no GPU visible
            return None
        return str(index)


@dataclass
class EvalReport:
    """Everything one evaluation produced: a result per entry plus the environment it ran in."""

    results: list[EvalResult]
    env: dict[str, Any]
    seeds: list[int]
    workers: int
    # Seconds per stage kind summed over this evaluation's workers (startup, load, check, time,
    # recheck), plus "wall": the driver's clock around all of them.
    profile: dict[str, float] = field(default_factory=dict)

    def by_name(self) -> dict[str, EvalResult]:
        return {r.name: r for r in self.results}

    def to_dict(self) -> dict[str, Any]:
        return {"env": self.env, "seeds": self.seeds, "workers": self.workers, "profile": self.profile,
                "results": [r.to_dict() for r in self.results]}
