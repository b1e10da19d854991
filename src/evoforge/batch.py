"""Batch runs: one evolution run per KernelBench-format problem in a folder, and their summary.

``run_batch`` is the orchestration behind `evoforge run --task-dir` and `evoforge resume batch-...`: for each
problem of a ``batch_store.BatchRecord`` without a row it starts (or continues) a run through ``evoforge.evolve``,
has the caller run its search (the CLI's, with its live line), and keeps the problem's row (a
``ProblemOutcome``, from ``crowned`` and ``outcome_from_result``) in the record as it finishes. With
``--problems-at-once N`` (``run_in_lanes``) N problems run at once, each run searched by an ``evoforge resume``
child process that sees one GPU. ``discover`` finds the problems; ``BatchSummary`` holds the rows and their
measures.

A problem's level is its ``LEVEL = N`` attribute where the file sets one (read without importing the
file), else the ``level<N>`` folder it sits in (KernelBench's layout, as in ``examples/problems/``),
else none (it is then only picked when no ``--level`` is asked for).

The summary uses the field's measures (KernelBench): ``fast_p`` is the fraction of *all* problems whose
best candidate is correct and more than ``p`` times faster than the reference; the geometric-mean
speedup is over the problems that have a correct candidate. Each is given against the task's Model in
eager mode (KernelBench's reference) and against the faster of eager and torch.compile (the fitness).

A speedup counts towards ``fast_p`` only when it is beyond noise (evoforge.claims): the candidate's
third-quartile latency below the baseline's first quartile, measured in the same batch. A problem whose
only valid candidate is an unchanged PyTorch path (the task's own Model re-measured, say) has no evolved
candidate: it counts as not fast and stays out of the geometric mean.
"""

from __future__ import annotations

import ast
import contextlib
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evoforge import claims
from evoforge.fitness import geomean
from evoforge.task import TaskError
from evoforge.tasks import COMPILED_BASELINE, EAGER_BASELINE

if TYPE_CHECKING:
    from evoforge.batch_store import BatchRecord
    from evoforge.evolve import Prepared, RunConfig
    from evoforge.store import Store

FAST_P = (1.0, 1.05, 1.5)  # 1.05: issue 22's bar against the faster of eager and compile
BUDGET_MARGIN_S = 10.0  # the README's stated margin: a problem's session ends within this after its --budget
_LEVEL_DIR = re.compile(r"level[_-]?(\d+)$", re.IGNORECASE)


def problem_level(path: Path) -> int | None:
    """``LEVEL = N`` in the file, else the nearest ``level<N>`` folder above it, else None."""
    try:
        tree = ast.parse(path.read_text())
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        tree = None
    for node in tree.body if tree else []:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "LEVEL" for t in node.targets):
            value = node.value
            if isinstance(value, ast.Constant) and isinstance(value.value, int) and not isinstance(value.value, bool):
                return value.value
    for parent in path.parents:
        if match := _LEVEL_DIR.fullmatch(parent.name):
            return int(match.group(1))
    return None


def discover(folder: Path, level: int | None = None) -> list[tuple[Path, int | None]]:
    """Problem files under ``folder`` (recursively, sorted), with their levels; only ``level`` if given."""
    if not folder.is_dir():
        raise TaskError(f"{folder}: no such folder of problems")
    found = []
    for path in sorted(folder.rglob("*.py")):
        if path.name.startswith("_") or any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue
        lvl = problem_level(path)
        if level is None or lvl == level:
            found.append((path, lvl))
    if not found:
        where = f" at level {level}" if level is not None else ""
        raise TaskError(f"{folder}: no problem files (*.py){where}")
    return found


def fast_p(speedups: list[float | None], p: float, significant: list[bool] | None = None) -> float:
    """The fraction of problems whose best candidate is correct (a speedup, not None) and faster than the
    reference by more than ``p`` (and, where ``significant`` is given, beyond noise). Problems without a
    correct candidate count in the denominator."""
    if not speedups:
        return 0.0
    sig = significant if significant is not None else [True] * len(speedups)
    return sum(1 for s, ok in zip(speedups, sig, strict=True) if s is not None and s > p and ok) / len(speedups)


@dataclass
class ProblemOutcome:
    """One problem's line in the summary."""

    problem: str
    path: str
    level: int | None
    status: str  # ok | no valid candidate | error
    run: str | None = None
    best: str | None = None
    vs_eager: float | None = None  # the best candidate's speedup over the task's Model, eager
    vs_compile: float | None = None  # ... over the Model under torch.compile
    fitness: float | None = None  # ... over the faster of the two (what the search maximised)
    fitness_mode: str | None = None
    significant: bool = False  # the fitness's win is beyond noise (its spread clears the best baseline's)
    significant_vs_eager: bool = False  # ... and the win over the task's Model in eager mode
    pytorch_path: bool = False  # the best valid candidate is an unchanged PyTorch path (no evolved one was valid)
    claim: str = ""  # evoforge.claims.claim: what the summary may say about the fitness
    evaluated: int = 0
    valid: int = 0
    detail: str = ""
    wall_s: float | None = None  # this session's seconds on the problem, from its start to its row
    budget_s: float | None = None  # its --budget (None: unbounded)


def past_budget(wall_s: float | None, budget_s: float | None) -> bool:
    """A problem's session ran past its budget by more than the stated margin (a broken promise); False where
    either is unknown."""
    return wall_s is not None and budget_s is not None and wall_s > budget_s + BUDGET_MARGIN_S


def clears(result: Any, baseline: Any, mode: str | None) -> bool:
    """``result`` is faster than ``baseline`` beyond noise in ``mode``: its third quartile below the
    baseline's first (the rule of EvalResult.significant, against any one baseline)."""
    if not mode or baseline is None or mode not in result.timing or mode not in baseline.timing:
        return False
    return bool(result.timing[mode].q3_us < baseline.timing[mode].q1_us)


def outcome_from_result(result: Any, eager: Any = None, pytorch_path: bool = False) -> dict[str, Any]:
    """The speedups of a run's best candidate (an EvalResult) against the eager and compiled baselines;
    ``eager`` is the eager baseline's result from the same batch (for the significance of vs_eager)."""
    mode = result.fitness_mode
    ratios = result.speedup.get(mode, {}) if mode else {}
    return {"best": result.name, "vs_eager": ratios.get(EAGER_BASELINE), "vs_compile": ratios.get(COMPILED_BASELINE),
            "fitness": result.fitness, "fitness_mode": mode, "significant": result.significant,
            "significant_vs_eager": clears(result, eager, mode), "pytorch_path": pytorch_path,
            "claim": claims.claim(result.fitness, result.significant, pytorch_path)}


def crowned(evaluated: list[tuple[Any, int]], candidates: list[Any],
            baselines: list[tuple[Any, int]]) -> tuple[Any, Any, bool] | None:
    """A run's best for the summary, from its (result, generation) evaluations, its candidates and its
    (baseline, generation) evaluations: the fittest valid evolved candidate (an unchanged PyTorch path only
    when nothing else is valid), the eager baseline of the same batch, and whether it is a PyTorch path."""
    genomes = {c.hash: c.genome for c in candidates}
    base_hashes = {b.hash for b, _ in baselines}

    def torch_path(item: tuple[Any, int]) -> bool:
        return claims.is_pytorch_path(item[0].language, item[0].hash, genomes.get(item[0].hash), base_hashes)

    found = claims.crown([(r, g) for r, g in evaluated if r.ok], lambda item: item[0].fitness, torch_path)
    if found is None:
        return None
    eager = next((b for b, g in reversed(baselines) if g == found[1] and b.name == EAGER_BASELINE and b.ok), None)
    return found[0], eager, torch_path(found)


def baseline_failures(results: list[Any]) -> str:
    """Why a speedup column is empty: for each of a generic task's baselines (eager, torch.compile) that
    was evaluated but never valid in the run, its name, status and detail ("" when both were valid or
    the baseline was never evaluated). Without it, a baseline the evaluator refused is only a "-"."""
    notes = []
    for name in (EAGER_BASELINE, COMPILED_BASELINE):
        mine = [r for r in results if r.name == name]
        if mine and not any(r.ok for r in mine):
            last = mine[-1]
            notes.append(f"baseline {name} {last.status}" + (f": {last.detail[:200]}" if last.detail else ""))
    return "; ".join(notes)


@dataclass
class BatchSummary:
    problems: list[ProblemOutcome] = field(default_factory=list)

    def measures(self) -> dict[str, Any]:
        evolved = [p.status == "ok" and not p.pytorch_path for p in self.problems]
        eager = [p.vs_eager if ok else None for p, ok in zip(self.problems, evolved, strict=True)]
        best = [p.fitness if ok else None for p, ok in zip(self.problems, evolved, strict=True)]
        out: dict[str, Any] = {"problems": len(self.problems),
                               "correct": sum(p.status == "ok" for p in self.problems),
                               "evolved": sum(evolved)}
        for p in FAST_P:  # only wins beyond noise count
            out[f"fast_{p:g}_vs_eager"] = fast_p(eager, p, [q.significant_vs_eager for q in self.problems])
            out[f"fast_{p:g}_vs_best"] = fast_p(best, p, [q.significant for q in self.problems])
        out["geomean_vs_eager"] = geomean(eager)
        out["geomean_vs_best"] = geomean(best)
        out["over_budget"] = sum(past_budget(p.wall_s, p.budget_s) for p in self.problems)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"summary": self.measures(), "problems": [asdict(p) for p in self.problems]}


# search(run_id, prepared, run_config, started): run one problem's search to its end (the CLI's, with its live
# line); prepared is None for problems at once, whose child process prepares the run it searches
SearchFn = Callable[[str, "Prepared | None", "RunConfig", float], Any]


def run_batch(store: Store, config: RunConfig, record: BatchRecord, search: SearchFn,
              on_start: Callable[[list[tuple[Path, int | None]]], None] | None = None,
              on_error: Callable[[Path, Exception], None] | None = None,
              lanes: list[Lane] | None = None, say: Callable[[str], None] | None = None) -> BatchSummary:
    """Run the problems of ``record`` (a new BatchRecord, or an interrupted one) that have no row yet, one
    evolution run each, and return the batch's summary: per problem the best candidate's speedups.

    Each row is kept in the record as its problem finishes, so an interrupted batch continues where it was
    (``evoforge resume <batch id>``): the problems it was in continue their runs rather than starting again.
    ``config`` holds the run settings (``--budget`` is each problem's). ``on_start`` is told the problems
    about to run (after the record is claimed); a problem that can't be used (a TaskError, EvaluatorError or
    StoreError) becomes a row with its error as the detail, its run marked failed, and is passed to
    ``on_error`` while it is being handled (so ``traceback.print_exc()`` there shows it), not the end of
    the batch.

    With two or more ``lanes`` (``--problems-at-once``: one per GPU) that many problems run at once, each
    run's search in a process of its own on its lane's GPU (``run_in_lanes``); ``search`` is then unused and
    ``say`` gets those processes' lines."""
    record.claim()
    problems = record.todo()
    if on_start is not None:
        on_start(problems)
    if lanes and len(lanes) > 1 and len(problems) > 1:
        run_in_lanes(Path(store.path), config, record, problems, lanes, on_error, say or (lambda line: None))
    else:
        for path, lvl in problems:
            record.finish(_run_problem(store, config, record, path, lvl, search, on_error))
    record.close()
    return record.summary()


@dataclass
class Lane:
    """Where one of the problems run at once runs: its name in the log and its process's environment (the
    GPU it sees, as ``CUDA_VISIBLE_DEVICES``)."""

    name: str
    env: dict[str, str] = field(default_factory=dict)


def run_in_lanes(db: Path, config: RunConfig, record: BatchRecord, problems: list[tuple[Path, int | None]],
                 lanes: list[Lane], on_error: Callable[[Path, Exception], None] | None,
                 say: Callable[[str], None]) -> None:
    """Problems at once, one per lane, in the record's order as lanes come free. Each problem's run is started
    here (recorded, its row's run id kept in the record) and searched by ``evoforge resume <run>`` in a child
    process that sees only its lane's GPU, with what is left of the problem's budget; its lines go to ``say``
    prefixed with the lane, and its row is read from the store when it ends. A problem's fixed costs (its
    baselines, reference outputs and workers) then run beside the other lanes' instead of before them.

    On Ctrl-C or SIGTERM every child gets one SIGINT (it ends its session as an interrupted run) and the
    interrupt goes on once they have ended; if this process is killed outright they get SIGTERM, which ends
    their sessions the same way. The problems they were in keep no row, so ``evoforge resume`` of the batch
    continues their runs."""
    import subprocess

    from evoforge.evaluator import sandbox

    prctl, parent = sandbox.prctl_entry(), os.getpid()

    def orphan_ends() -> None:  # between fork and exec: the child ends its run as SIGTERM does if we die
        if prctl is not None:
            prctl(sandbox.PR_SET_PDEATHSIG, signal.SIGTERM)
            if os.getppid() != parent:  # the batch's process died before the request took effect
                os._exit(98)

    lock = threading.Lock()  # the record, starting runs (tasks are imported), the queue
    queue = list(problems)
    stopping = threading.Event()
    children: dict[str, subprocess.Popen[str]] = {}

    def lane_search(lane: Lane, store: Store) -> SearchFn:
        def search(run_id: str, prepared: Prepared | None, run_config: RunConfig, started: float) -> None:
            from evoforge.evaluator import EvaluatorError
            from evoforge.evolve import parse_duration

            store.release(run_id)  # the child takes the run's lease
            cmd = [sys.executable, "-m", "evoforge.cli", "resume", run_id, "--db", str(db), "--json"]
            if run_config.budget:  # the problem's budget, less what starting its run here took
                left = parse_duration(run_config.budget) - (time.monotonic() - started)
                cmd += ["--budget", f"{max(left, 1.0):.1f}s"]
            tail: list[str] = []
            with lock:
                if stopping.is_set():
                    return
                # its own session: Ctrl-C reaches it once, from here; PR_SET_PDEATHSIG is this thread's, which
                # waits for it, so a SIGKILL of the batch's process ends it as SIGTERM does
                child = subprocess.Popen(cmd, env={**os.environ, **lane.env}, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                         start_new_session=True, preexec_fn=orphan_ends)
                children[lane.name] = child
            assert child.stderr is not None
            for line in child.stderr:
                if line.strip():
                    tail = [*tail[-4:], line.rstrip()]
                    say(f"[{lane.name}] {line.rstrip()}")
            code = child.wait()
            with lock:
                children.pop(lane.name, None)
            if code not in (0, 1) and not stopping.is_set():  # 1: no valid candidate, a verdict
                raise EvaluatorError(f"its process on {lane.name} exited {code}: "
                                     + (tail[-1] if tail else "no output"))
        return search

    failures: list[BaseException] = []  # what a lane could not handle as a row: raised here once all stop

    def work(lane: Lane) -> None:
        from evoforge.store import RunStore

        try:
            store = RunStore(db)  # a connection of this thread's own
        except BaseException as exc:
            failures.append(exc)
            stopping.set()
            return
        try:
            while not stopping.is_set():
                with lock:
                    if not queue:
                        return
                    path, lvl = queue.pop(0)
                row = _run_problem(store, config, record, path, lvl, lane_search(lane, store), on_error, lock)
                if stopping.is_set():
                    return  # interrupted: no row, its run continues on resume
                with lock:
                    record.finish(row)
        except BaseException as exc:
            failures.append(exc)
            stopping.set()
        finally:
            store.close()

    threads = [threading.Thread(target=work, args=(lane,), name=f"evoforge-lane-{lane.name}", daemon=True)
               for lane in lanes]
    for thread in threads:
        thread.start()
    try:
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(timeout=0.2)  # short joins: the main thread takes Ctrl-C between them
    except BaseException:
        stopping.set()
        with lock:
            for child in children.values():
                with contextlib.suppress(OSError):
                    child.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 60
        for t in threads:
            t.join(timeout=max(deadline - time.monotonic(), 0.1))
        with lock:
            for child in children.values():
                with contextlib.suppress(OSError):
                    child.kill()
        raise
    if failures:
        raise failures[0]


def _run_problem(store: Store, config: RunConfig, record: BatchRecord, path: Path, lvl: int | None,
                 search: SearchFn, on_error: Callable[[Path, Exception], None] | None,
                 lock: threading.Lock | None = None) -> ProblemOutcome:
    from evoforge import evolve
    from evoforge.evaluator import EvaluatorError
    from evoforge.evolve import parse_duration
    from evoforge.store import StoreError

    started = time.monotonic()  # --budget is each problem's
    row = ProblemOutcome(problem=path.stem, path=str(path), level=lvl, status="error",
                         budget_s=parse_duration(config.budget) if config.budget else None)
    try:
        with lock or contextlib.nullcontext():  # problems at once: one start at a time (it imports the task)
            earlier = record.run_of(path)  # the run an interrupted session was in: continued, not restarted
            prepared: Prepared | None = None
            if lock is not None:
                # Problems at once: the run is only recorded here; the lane's child prepares and searches it,
                # its memory plan against the one GPU it sees (here the other lanes' problems fill them all).
                run_id = earlier or evolve.create(
                    evolve.RunConfig.from_dict({**config.to_dict(), "task": str(path)}), store)[0]
                run_config = evolve.RunConfig.from_dict({**store.run(run_id).config, "budget": config.budget})
            elif earlier:
                run_config, prepared, run_id = evolve.resume(store, earlier, {"budget": config.budget})
            else:
                run_config = evolve.RunConfig.from_dict({**config.to_dict(), "task": str(path)})
                run_id, prepared = evolve.start(run_config, store)
                run_config = evolve.RunConfig.from_dict(store.run(run_id).config)
            record.begin(path, run_id)
        row.run, row.problem = run_id, store.run(run_id).task["name"]
        search(run_id, prepared, run_config, started)
        evaluated = store.evaluations(run_id)
        row.evaluated = len(evaluated)
        valid = [(r, g) for r, g in evaluated if r.ok]
        row.valid = len(valid)
        base = store.evaluations(run_id, role="baseline")
        if valid:
            row.status = "ok"
            # the problem's best: its fittest evolved candidate, never an unchanged PyTorch path (claims)
            best, eager, torch_path = crowned(valid, [c for c, _ in store.candidates(run_id)], base)
            for key, value in outcome_from_result(best, eager, torch_path).items():
                setattr(row, key, value)
        elif not evaluated:  # nothing came back: say why the run ended (a budget shorter than generation 0)
            row.status = "nothing evaluated"
        else:
            row.status = "no valid candidate"
        row.detail = baseline_failures([r for r, _ in base])
        if not evaluated:
            note = store.run(run_id).note or "the run ended before any evaluation came back"
            row.detail = "; ".join(filter(None, [f"run stopped: {note}", row.detail]))
    except (TaskError, EvaluatorError, StoreError) as exc:
        row.detail = str(exc)
        if row.run:  # the run record says why it ended, as a finished run's does
            store.update_run(row.run, status="failed", note=str(exc)[:500])
        if on_error is not None:
            on_error(path, exc)
    finally:
        # This problem's kept baseline workers and spare workers (processes holding its inputs on the GPU)
        # are of no use to the next problem, and would take device memory from it. On an H200 a batch's third
        # problem saw 99 of 139 GiB free after the first one's (benchmarks/results/kernelbench-15s-level1-h200
        # .stderr.txt): these workers, or the driver's cached blocks (released where the memory plan reads
        # what is free); which of the two has not been measured.
        from evoforge.evaluator.process import release_workers

        if lock is None:  # problems at once: the workers are their child processes', never this one's
            release_workers()
        row.wall_s = round(time.monotonic() - started, 2)
    return row
