"""The evaluator's driver side: runs workers, survives them, and turns their records into results.

Every evaluation runs in a fresh worker process (``python -m evoforge.evaluator.worker``) started in
its own session and scratch directory, with a scrubbed environment (no API keys or tokens), resource
limits (no core files, a file-size cap, a CPU-time cap; an address-space cap with a CPU build of torch, where
it cannot break CUDA), a cap on processes and threads (a pids cgroup, or a count of its descendants) and a
watchdog that polls the worker's resident memory; writes confined by Landlock where the sandbox asks
for it (see sandbox.py). The worker writes one progress line per
stage, so when it dies (segfault, ``os._exit``, CUDA error, out of memory) or outlives a stage's time
limit, the entry it was working on gets ``crashed`` or ``timeout`` and a fresh worker takes the
entries that remain. Baselines and candidates are checked and timed by the same worker, interleaved,
so their ratio is measured under the same conditions.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evoforge.cache import warm_bytecode, worker_bytecode_env
from evoforge.candidate import Candidate
from evoforge.evaluator import sandbox
from evoforge.evaluator.result import CaseCheck, EvalResult
from evoforge.shapes import combine, is_multi, shape_specs
from evoforge.task import TaskError, TaskSpec
from evoforge.timing import MODES, TimingConfig, TimingStats


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


@dataclass
class _Entry:
    candidate: Candidate
    role: str

    def job(self) -> dict[str, Any]:
        c = self.candidate
        return {"name": c.name, "source": c.source, "hash": c.hash, "language": c.language,
                "labels": c.labels, "role": self.role}


@dataclass
class _WorkerOutcome:
    records: list[dict[str, Any]]
    returncode: int | None
    stage: str
    killed: str | None  # "timeout" or "memory" when the parent killed it
    log_tail: str


class Evaluator:
    """Evaluate candidates against a task, beside the task's baselines, in worker processes."""

    def __init__(self, task: TaskSpec, config: EvalConfig | None = None,
                 progress: Callable[[str], None] | None = None, cancel: threading.Event | None = None) -> None:
        self.task = task
        self.config = config or EvalConfig()
        self.progress = progress or (lambda message: None)
        self.cancel = cancel  # set from another thread: the running worker is killed, EvaluatorError raised

    def evaluate(self, candidates: list[Candidate], baselines: list[Candidate] = ()) -> EvalReport:  # type: ignore[assignment]
        if is_multi(self.task):
            return self._evaluate_shapes(candidates, baselines)
        entries = [_Entry(c, "candidate") for c in candidates] + [_Entry(b, "baseline") for b in baselines]
        if not entries:
            raise ValueError("nothing to evaluate")
        names = [e.candidate.name for e in entries]
        if len(set(names)) != len(names):
            raise ValueError(f"entry names must be unique: {names}")
        final: dict[int, EvalResult] = {}
        pending = list(range(len(entries)))
        started = time.monotonic()
        profile: dict[str, float] = {}
        env: dict[str, Any] = {}
        seeds: list[int] = []
        workers = 0
        while pending:
            workers += 1
            outcome = self._run_worker([entries[i] for i in pending])
            records = outcome.records
            for rec in records:
                if rec["kind"] == "job_error":
                    raise TaskError(rec["message"])
                if rec["kind"] == "env" and not env:
                    env = rec["env"]
                if rec["kind"] == "seed":
                    seeds.append(rec["seed"])
                if rec["kind"] == "profile":
                    for kind, seconds in rec["seconds"].items():
                        profile[kind] = profile.get(kind, 0.0) + seconds
            checks = {rec["index"]: rec for rec in records if rec["kind"] == "check"}
            timings = {rec["index"]: rec for rec in records if rec["kind"] == "timing"}
            clean = outcome.returncode == 0 and outcome.stage == "done"
            if clean:
                for local, idx in enumerate(pending):
                    final[idx] = self._result(entries[idx], checks.get(local), timings.get(local))
                break
            culprit = _culprit(outcome.stage, checks)
            if culprit is None:
                raise EvaluatorError(_startup_failure(outcome))
            idx = pending[culprit]
            final[idx] = self._casualty(entries[idx], outcome, checks.get(culprit))
            self.progress(f"{entries[idx].candidate.name}: {final[idx].status} ({final[idx].detail}); "
                          "restarting the worker for the rest")
            pending.remove(idx)
        results = [final[i] for i in range(len(entries))]
        _redact(results, sandbox.redactor(os.environ))
        env["sandbox"] = {"mode": self.config.sandbox, "network_isolated": self.isolated_network(),
                          "writes_restricted": self.restricted_writes(),
                          "process_cap": "watchdog" if sandbox.process_cap_unavailable() else "cgroup"}
        _score(results, self._fitness_mode(env))
        profile["wall"] = time.monotonic() - started
        return EvalReport(results=results, env=env, seeds=seeds, workers=workers, profile=profile)

    def _evaluate_shapes(self, candidates: list[Candidate], baselines: list[Candidate]) -> EvalReport:
        """A multi-shape task: every shape in a worker of its own, folded by evoforge.shapes.combine."""
        specs = shape_specs(self.task)
        reports = []
        for i, spec in enumerate(specs):
            self.progress(f"shape {i + 1}/{len(specs)}: {spec.name}")
            reports.append(Evaluator(spec, self.config, self.progress, self.cancel).evaluate(candidates, baselines))
        names = [s.name for s in specs]
        env = {**reports[0].env, "shapes": names}
        profile: dict[str, float] = {}
        for rep in reports:
            for kind, seconds in rep.profile.items():
                profile[kind] = profile.get(kind, 0.0) + seconds
        return EvalReport(results=combine([r.results for r in reports], names, float(self.task.params.get("floor", 0))),
                          env=env, seeds=[s for r in reports for s in r.seeds], workers=sum(r.workers for r in reports),
                          profile=profile)

    def precompile(self, candidates: list[Candidate]) -> dict[str, Any]:
        """Compile the Triton kernels of ``candidates`` without running them, in a worker of its own
        (same sandbox and limits): inputs stay on the CPU and every Triton launch becomes a warm-up
        (compile only), so nothing runs on the GPU and a timing worker on it is undisturbed. The compiled
        kernels land in Triton's on-disk cache, where the worker that checks and times these candidates
        finds them. Best effort: whatever fails here is compiled (and judged) by that worker.
        Returns counts: kernels compiled, entries compiled/failed/skipped, and the worker's seconds."""
        if is_multi(self.task):  # kernels specialise per shape: compile for each
            counts: dict[str, Any] = {}
            for spec in shape_specs(self.task):
                shape = Evaluator(spec, self.config, self.progress, self.cancel)
                for key, value in shape.precompile(candidates).items():
                    if isinstance(value, bool):
                        counts[key] = counts.get(key, True) and value
                    elif isinstance(value, (int, float)):
                        counts[key] = counts.get(key, 0) + value
            return counts
        triton = [c for c in candidates if c.language == "triton"]
        if not triton:
            return {"kernels": 0, "compiled": 0, "failed": 0, "skipped": len(candidates)}
        outcome = self._run_worker([_Entry(c, "candidate") for c in triton], {"precompile": True})
        records = [r for r in outcome.records if r.get("kind") == "precompiled"]
        profile = next((r["seconds"] for r in outcome.records if r.get("kind") == "profile"), {})
        return {"kernels": sum(r.get("kernels", 0) for r in records),
                "compiled": sum(r.get("status") == "compiled" for r in records),
                "failed": len(triton) - sum(r.get("status") == "compiled" for r in records),
                "skipped": len(candidates) - len(triton), "worker_seconds": profile,
                "clean": outcome.returncode == 0 and outcome.stage == "done"}

    # ---------------------------------------------------------------- one worker
    def _run_worker(self, entries: list[_Entry], extra: dict[str, Any] | None = None) -> _WorkerOutcome:
        cfg = self.config
        # Both may refuse (strict sandbox) before anything exists.
        network, writes, env = self.isolated_network(), self.restricted_writes(), self._env()
        warm_bytecode(env, self.progress)  # a trusted import run; sandboxed workers only read what it wrote
        workdir = Path(tempfile.mkdtemp(prefix="evoforge-worker-"))
        ruleset: int | None = None
        cap: sandbox.ProcessCap | None = None
        try:
            if writes:
                (workdir / "tmp").mkdir()
                env["TMPDIR"] = str(workdir / "tmp")  # nvcc, gcc, Triton's launcher builds write here
                try:
                    ruleset = sandbox.landlock_ruleset(sandbox.worker_writable(workdir, env))
                except OSError as exc:
                    raise EvaluatorError(f"could not confine the worker's writes (Landlock): {exc}; "
                                         "use --sandbox none to run without") from None
            cap = sandbox.ProcessCap.create(cfg.max_tasks)
            if cap is None:
                sandbox.become_subreaper()  # escaped descendants stay ours to count and kill
            limits = self._limits(len(entries), network, ruleset, cap)
            return self._supervise(entries, workdir, limits, env, cap, extra or {})
        finally:  # also on Ctrl-C: the scratch directory never outlives its worker
            if cap is not None:
                cap.close()
            if ruleset is not None:
                os.close(ruleset)
            if not cfg.keep_workdir:
                shutil.rmtree(workdir, ignore_errors=True)

    def _supervise(self, entries: list[_Entry], workdir: Path, limits: Callable[[], None],
                   env: dict[str, str], cap: sandbox.ProcessCap | None, extra: dict[str, Any]) -> _WorkerOutcome:
        cfg = self.config
        job = {"task": self.task.to_dict(), "entries": [e.job() for e in entries], "config": cfg.worker_view(),
               **extra}
        (workdir / "job.json").write_text(json.dumps(job))
        out_path, err_path = workdir / "stdout.log", workdir / "stderr.log"
        killed: str | None = None
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "evoforge.evaluator.worker", str(workdir / "job.json")],
                cwd=workdir, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env,
                start_new_session=True, preexec_fn=limits,
            )
            stage, stage_since = "", time.monotonic()
            seen: set[int] = set()  # the worker's descendants, where no cgroup holds them
            next_count = 0.0
            try:
                while proc.poll() is None:
                    time.sleep(0.05)
                    now_stage = _last_line(workdir / "progress")
                    if now_stage != stage:
                        stage, stage_since = now_stage, time.monotonic()
                        self._report_stage(stage, entries)
                    limit = _stage_limit(cfg, stage.split(" ")[0])
                    if self.cancel is not None and self.cancel.is_set():
                        killed = "cancelled"
                    elif time.monotonic() - stage_since > limit:
                        killed = "timeout"
                    elif _rss_mb(proc.pid) > cfg.memory_limit_mb:
                        killed = "memory"
                    elif cap is not None and cap.hit_limit():
                        killed = "processes"
                    elif cap is None and time.monotonic() >= next_count:
                        # /proc is scanned less often than the cgroup is read: it costs more.
                        tree = sandbox.descendants(proc.pid)
                        seen.update(tree)
                        next_count = time.monotonic() + 0.25
                        if sum(tree.values()) > cfg.max_tasks:
                            killed = "processes"
                    if killed:
                        _kill_group(proc)
                        break
            finally:
                if proc.poll() is None:
                    _kill_group(proc)
                proc.wait()
                # Whatever the worker started dies with it, including what left its process group.
                _kill_group(proc)
                if cap is not None:
                    cap.kill_all()
                else:
                    _kill_escaped(seen - {proc.pid}, env.get(sandbox.WORKER_TOKEN, ""))
        if killed == "cancelled":
            raise EvaluatorError("evaluation cancelled")
        return _WorkerOutcome(_read_records(workdir / "results.jsonl"), proc.returncode,
                              _last_line(workdir / "progress"), killed, _log_tail(err_path) or _log_tail(out_path))

    def _report_stage(self, stage: str, entries: list[_Entry]) -> None:
        parts = stage.split(" ")
        if parts[0] in ("check", "recheck") and len(parts) > 1:
            self.progress(f"{parts[0]}ing {entries[int(parts[1])].candidate.name}")
        elif parts[0] == "compile" and len(parts) > 1:
            self.progress(f"compiling {entries[int(parts[1])].candidate.name} (C++/CUDA)")
        elif parts[0] in ("startup", "load"):
            self.progress({"startup": "starting a worker", "load": "computing reference outputs"}[parts[0]])
        elif parts[0] == "time" and len(parts) > 2:
            self.progress(f"timing {entries[int(parts[1])].candidate.name} ({parts[2]})")

    def _env(self) -> dict[str, str]:
        env = dict(os.environ) if self.config.sandbox == "none" else \
            {k: v for k, v in os.environ.items() if not sandbox.SECRET_NAME.search(k)}
        src = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["PYTHONUNBUFFERED"] = "1"
        env[sandbox.WORKER_TOKEN] = uuid.uuid4().hex
        env.setdefault("PYTHONFAULTHANDLER", "1")
        worker_bytecode_env(env)
        gpu = self.config.visible_gpu()
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        return env

    def cpu_time_limit_s(self, n_entries: int) -> int:
        """RLIMIT_CPU for a worker given n entries: generous, a backstop behind the wall-clock limits."""
        cfg = self.config
        if cfg.cpu_time_limit_s is not None:
            return max(int(cfg.cpu_time_limit_s), 1)
        stages = n_entries * (2 + len(cfg.modes))  # check, one block per timing mode, recheck
        return int((cfg.startup_timeout_s + cfg.timeout_s * stages) * (os.cpu_count() or 1))

    def _limits(self, n_entries: int = 1, network: bool = False, ruleset: int | None = None,
                cap: sandbox.ProcessCap | None = None) -> Callable[[], None]:
        """The child's resource limits and confinement, decided here and applied between fork and exec."""
        fsize = self.config.file_size_limit_mb * 2**20
        cpu = self.cpu_time_limit_s(n_entries)
        cpu_hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
        cpu_limits = (cpu, cpu + 30) if cpu_hard == resource.RLIM_INFINITY else (min(cpu, cpu_hard), cpu_hard)
        # An address-space cap breaks a CUDA build of torch (its libraries and the driver reserve
        # huge virtual ranges, even with --device cpu): only a CPU build gets it; everything else
        # relies on the resident-memory watchdog.
        address_space = self.config.memory_limit_mb * 2**20 if _cpu_build_of_torch() else None
        unshare = sandbox.netns_entry() if network else None
        prctl = sandbox.prctl_entry()
        restrict = sandbox.landlock_restrict() if ruleset is not None else None

        driver = os.getpid()

        def apply() -> None:
            if prctl is not None:
                prctl(sandbox.PR_SET_PDEATHSIG, signal.SIGKILL)  # an orphaned worker dies with its driver
                if os.getppid() != driver:  # the driver died before the request took effect
                    os._exit(98)
            if cap is not None:
                cap.join()  # before anything runs: every process the worker starts is born inside the cap
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
            resource.setrlimit(resource.RLIMIT_CPU, cpu_limits)
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 4096), hard))
            if address_space is not None:
                resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
            if unshare is not None and unshare(sandbox.CLONE_NEWNET) != 0:
                os._exit(97)  # the probe said it works; refuse to run unisolated if it now doesn't
            if restrict is not None and ruleset is not None and not restrict(ruleset):
                os._exit(96)  # the same for the write restriction

        return apply

    def restricted_writes(self) -> bool:
        """Whether workers' writes are confined (Landlock); raises for strict without it."""
        return self._layer(sandbox.write_restriction_unavailable, "cannot confine workers' writes here")

    def isolated_network(self) -> bool:
        """Whether workers get a network namespace of their own; raises for strict without one."""
        return self._layer(sandbox.network_isolation_unavailable, "no network isolation here")

    def _layer(self, unavailable: Callable[[], str | None], refusal: str) -> bool:
        """Whether a sandbox layer applies: never with ``none``; where ``unavailable()`` says it can't,
        skipped with ``basic`` and refused with ``strict``."""
        if self.config.sandbox not in sandbox.SANDBOXES:
            choices = ", ".join(sandbox.SANDBOXES)
            raise EvaluatorError(f"unknown sandbox {self.config.sandbox!r} (choose from {choices})")
        if self.config.sandbox == "none":
            return False
        reason = unavailable()
        if reason and self.config.sandbox == "strict":
            raise EvaluatorError(f"--sandbox strict: {refusal}: {reason}")
        return reason is None

    # ---------------------------------------------------------------- results
    def _result(self, entry: _Entry, check: dict[str, Any] | None, timed: dict[str, Any] | None) -> EvalResult:
        c = entry.candidate
        base = {"name": c.name, "hash": c.hash, "role": entry.role, "language": c.language, "labels": c.labels}
        if check is None:
            return EvalResult(**base, status="crashed", detail="no result from the worker")
        result = EvalResult(
            **base, status=check["status"], detail=check.get("detail", ""),
            max_abs_err=check.get("max_abs_err"), max_rel_err=check.get("max_rel_err"),
            checks=[CaseCheck(**x) for x in check.get("checks", [])],
            logs=check.get("logs", ""), seconds=check.get("seconds", 0.0),
        )
        if timed is not None:
            result.timing = {m: TimingStats.from_dict(s) for m, s in timed["timing"].items()}
            result.timing_errors = dict(timed.get("timing_errors", {}))
            result.kernels = list(timed.get("kernels", []))
            result.checks += [CaseCheck(**x) for x in timed.get("checks", [])]
            if timed.get("logs"):
                result.logs = (result.logs + "\n" + timed["logs"]).strip()
            if timed.get("guard_note"):
                result.logs = (result.logs + "\n" + timed["guard_note"]).strip()
            if timed.get("final"):
                result.status, result.detail = timed["final"]["status"], timed["final"]["detail"]
                result.timing = {}
            elif not result.timing:
                result.status = "runtime_error"
                result.detail = "could not be timed: " + "; ".join(f"{m}: {e}" for m, e in result.timing_errors.items())
        return result

    def _casualty(self, entry: _Entry, outcome: _WorkerOutcome, check: dict[str, Any] | None) -> EvalResult:
        """The result of the entry a worker died (or was killed) on."""
        c = entry.candidate
        stage = outcome.stage.split(" ")[0]
        if check is not None and check.get("fatal"):
            status, detail = check["status"], check["detail"]
        elif outcome.killed == "timeout":
            limit = _stage_limit(self.config, stage)
            status, detail = "timeout", f"{stage} stage ran past its {limit:g} s limit"
        elif outcome.killed == "memory":
            status, detail = "crashed", f"out of memory: worker passed the {self.config.memory_limit_mb} MiB limit"
        elif outcome.killed == "processes":
            status, detail = "crashed", (f"process limit: the worker and its children passed {self.config.max_tasks} "
                                         f"processes + threads during {stage} (a fork bomb?); all killed")
        else:
            status, detail = "crashed", _describe_exit(outcome.returncode, stage, outcome.log_tail)
        return EvalResult(name=c.name, hash=c.hash, status=status, detail=detail, role=entry.role,
                          language=c.language, labels=c.labels, logs=outcome.log_tail)

    def _fitness_mode(self, env: dict[str, Any]) -> str:
        if self.config.fitness_mode:
            return self.config.fitness_mode
        return "graph" if env.get("device_type") == "cuda" and "graph" in self.config.modes else "eager"


def _score(results: list[EvalResult], preferred_mode: str) -> None:
    """Speedups against every baseline, and fitness = fastest baseline / candidate latency.

    A baseline with the same source hash as the entry is left out of the entry's own comparison
    (so a PyTorch path measured as a candidate is compared with the *other* paths). Fitness uses
    ``preferred_mode`` where the entry has a timing in it, else eager, and says which it used.
    ``significant`` marks a win whose interquartile range clears the best baseline's.
    """
    baselines = [r for r in results if r.role == "baseline" and r.ok]
    for r in results:
        r.speedup = {}
        for mode, stats in r.timing.items():
            r.speedup[mode] = {
                b.name: b.timing[mode].median_us / stats.median_us
                for b in baselines if b.hash != r.hash and mode in b.timing and stats.median_us > 0
            }
        if not r.ok:
            r.fitness, r.fitness_mode, r.best_baseline = 0.0, None, None
            continue
        mode = preferred_mode if preferred_mode in r.timing else ("eager" if "eager" in r.timing else None)
        ratios = r.speedup.get(mode, {}) if mode else {}
        r.fitness_mode = mode
        r.significant = False
        if ratios and mode:
            r.best_baseline = min(ratios, key=ratios.__getitem__)
            r.fitness = ratios[r.best_baseline]
            best = next(b for b in baselines if b.name == r.best_baseline)
            r.significant = r.fitness > 1.0 and r.timing[mode].q3_us < best.timing[mode].q1_us
        else:
            r.best_baseline, r.fitness = None, 0.0


# -------------------------------------------------------------------- helpers
ENTRY_STAGES = ("compile", "check", "time", "recheck")  # stages that work on one entry (and can blame it)


def _stage_limit(cfg: EvalConfig, kind: str) -> float:
    """Seconds a worker may spend in one stage of this kind before it is killed."""
    if kind == "compile":
        return cfg.compile_timeout_s
    return cfg.timeout_s if kind in ENTRY_STAGES else cfg.startup_timeout_s


def _redact(results: list[EvalResult], redact: Callable[[str], str]) -> None:
    """Blank the driver's secrets out of everything a worker wrote into results (see sandbox.redactor)."""
    for r in results:
        r.detail, r.logs = redact(r.detail), redact(r.logs)
        r.timing_errors = {mode: redact(text) for mode, text in r.timing_errors.items()}
        for check in r.checks:
            check.detail = redact(check.detail)
        for kernel in r.kernels:  # kernel names are the candidate's to choose
            if isinstance(kernel.get("name"), str):
                kernel["name"] = redact(kernel["name"])


def _culprit(stage: str, checks: dict[int, dict[str, Any]]) -> int | None:
    parts = stage.split(" ")
    if parts[0] in ENTRY_STAGES and len(parts) > 1:
        return int(parts[1])
    fatal = [i for i, rec in checks.items() if rec.get("fatal")]
    return fatal[0] if fatal else None


def _last_line(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    lines = data.decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else ""


def _read_records(path: Path) -> list[dict[str, Any]]:
    records = []
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return records
    for line in text.splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a record cut short by the worker's death
    return records


def _log_tail(path: Path, limit: int = 4000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(size - limit, 0))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return ("..." if size > limit else "") + text.strip()


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


def _kill_escaped(pids: set[int], token: str) -> None:
    """Kill what is left of a worker's descendants that no cgroup holds: those seen while it ran
    and those carrying its token (this process is their subreaper, so they are ours now), and reap
    those that became our children."""
    for _ in range(20):
        pids |= sandbox.carrying(token) if token else set()
        alive = set(sandbox.descendants(*pids)) if pids else set()
        if not alive:
            return
        for pid in alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)
        for pid in alive:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)
        pids = alive


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


def _describe_exit(code: int | None, stage: str, log: str) -> str:
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        if name == "SIGXFSZ":
            return f"worker killed by {name} during {stage}: output file size limit exceeded"
        if name == "SIGXCPU":
            return f"worker killed by {name} during {stage}: CPU time limit exceeded"
        return f"worker killed by {name} during {stage}"
    last = log.strip().splitlines()[-1] if log.strip() else ""
    return f"worker exited with code {code} during {stage}" + (f": {last[:200]}" if last else "")


def _startup_failure(outcome: _WorkerOutcome) -> str:
    if outcome.returncode == 97:
        return "the worker could not enter its own network namespace; use --sandbox none to run without one"
    if outcome.returncode == 96:
        return "the worker could not confine its writes (Landlock); use --sandbox none to run without"
    last = outcome.log_tail.strip().splitlines()[-1] if outcome.log_tail.strip() else "no output"
    what = "timed out" if outcome.killed == "timeout" else f"exited with code {outcome.returncode}"
    return f"evaluation worker {what} during {outcome.stage or 'startup'}: {last[:300]}"


def _cpu_build_of_torch() -> bool:
    import torch

    return torch.version.cuda is None and getattr(torch.version, "hip", None) is None
