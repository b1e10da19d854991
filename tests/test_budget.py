"""Budgets that hold (issue 22): ``--budget`` is a deadline for the whole session, generation 0 and the
baselines included. No batch starts that the latest batch's time says would end past it; a generation
sent as several batches (``batch_size``) stops between them; batches still running at the deadline are
cut (cancelled), their candidates left pending for a resume, and everything that came back is kept."""

from __future__ import annotations

import json
import random
import sqlite3
import time
from pathlib import Path

from evoforge.candidate import Candidate
from evoforge.executor import Done, Executor
from evoforge.search import Search, SearchConfig, restore_rng
from evoforge.store import RunStore
from tests.test_cli_run import TASKS, evoforge
from tests.test_search import FakeEvaluator, StepMutator, make

MARGIN_S = 10.0  # the margin README states: a session ends within 10 s after its budget


class TimedExecutor(Executor):
    """One slot; each batch takes ``seconds(generation, n)`` of wall time; ``wait`` honours its timeout
    (returns nothing when the batch isn't done by then) and ``close`` records the batches it cancelled."""

    name = "timed"

    def __init__(self, seconds: float | dict[int, float]) -> None:
        super().__init__(["s0"])
        self.seconds = seconds
        self.evaluate = FakeEvaluator()
        self.todo: list[tuple[int, list[Candidate], float | None]] = []  # (generation, batch, when it ends)
        self.batches: list[tuple[int, int]] = []  # (generation, size) of every batch submitted
        self.cancelled: list[int] = []

    def submit(self, generation: int, candidates: list[Candidate]) -> None:
        self.todo.append((generation, candidates, None))
        self.batches.append((generation, len(candidates)))
        self._in_flight += 1

    def wait(self, timeout: float | None = None) -> list[Done]:
        generation, cands, due = self.todo[0]
        cost = self.seconds if isinstance(self.seconds, float) else self.seconds.get(generation, 0.05)
        if due is None:  # the slot starts it now
            due = time.monotonic() + cost
            self.todo[0] = (generation, cands, due)
        left = due - time.monotonic()
        if timeout is not None and left > timeout:
            time.sleep(timeout)
            return []
        time.sleep(max(left, 0.0))
        self.todo.pop(0)
        self._in_flight -= 1
        results, bases = self.evaluate(cands, generation)
        done = Done(generation, cands, results, bases, "s0", cost)
        self._account(done)
        return [done]

    def close(self) -> None:
        self.cancelled = [g for g, _, _ in self.todo]
        self.todo.clear()


class SeedsMutator(StepMutator):
    """Six seeds, so generation 0 alone goes as several batches."""

    def seed(self) -> list[Candidate]:
        return [make(x) for x in range(6)]


def _search(tmp_path: Path, config: SearchConfig, executor: Executor, mutator: type[StepMutator] = StepMutator,
            run_id: str | None = None, store: RunStore | None = None) -> tuple[Search, RunStore]:
    store = store or RunStore(tmp_path / "runs.db")
    run_id = run_id or store.create_run({"name": "fake"}, config.to_dict())
    record = store.run(run_id)
    rng = restore_rng(record.rng) if record.rng else random.Random(config.seed)
    return Search(store, run_id, mutator(rng), None, config, rng, executor=executor), store


def _pending(store: RunStore, run_id: str) -> set[str]:
    evaluated = {r.hash for r, _ in store.evaluations(run_id)}
    return {c.hash for c, _ in store.candidates(run_id)} - evaluated


def test_a_generation_in_batches_stops_between_them_and_keeps_what_came_back(tmp_path: Path) -> None:
    executor = TimedExecutor(0.3)
    config = SearchConfig(generations=50, population=4, budget_s=1.0, batch_size=2)
    search, store = _search(tmp_path, config, executor, SeedsMutator)
    t0 = time.monotonic()
    final = search.run()
    elapsed = time.monotonic() - t0
    assert elapsed <= 1.0 + 0.2  # no batch was started that would end past the deadline
    assert executor.batches[:3] == [(0, 2), (0, 2), (0, 2)]  # generation 0's six seeds, two by two
    assert "would be exceeded" in (final.stop_reason or "")
    assert final.evaluated == 2 * len(executor.batches)  # every batch that came back is kept
    assert executor.cancelled == []  # nothing was running at the end: nothing cut
    pending = _pending(store, search.run_id)
    # the rest of a generation that was stopped between batches stays pending, and a resume evaluates it
    resumed, _ = _search(tmp_path, SearchConfig(generations=1, population=4, batch_size=2),
                         TimedExecutor(0.01), SeedsMutator, search.run_id, store)
    resumed.run()
    assert not _pending(store, search.run_id)
    assert pending <= set(resumed.executor.evaluate.seen)  # type: ignore[attr-defined]


def test_a_batch_running_at_the_deadline_is_cut_and_left_pending(tmp_path: Path) -> None:
    executor = TimedExecutor({0: 0.2, 1: 0.2, 2: 5.0})  # generation 2 runs far longer than the estimate
    config = SearchConfig(generations=50, population=3, budget_s=1.0)
    search, store = _search(tmp_path, config, executor)
    t0 = time.monotonic()
    final = search.run()
    assert time.monotonic() - t0 <= 1.0 + 0.2  # the deadline held: generation 2 never finished
    assert "time budget of 1 s reached: 1 batch(es) in flight cut, their 3 candidate(s)" in (final.stop_reason or "")
    assert executor.cancelled == [2]
    assert final.evaluated == 2 + 3  # generations 0 and 1, kept
    assert len(_pending(store, search.run_id)) == 3
    (cut,) = store.events(search.run_id, "budget_cut")
    assert cut["batches"] == 1 and cut["candidates"] == 3 and cut["generations"] == [2]
    assert store.run(search.run_id).status == "finished"


def test_the_budget_counts_from_the_given_start(tmp_path: Path) -> None:
    """The CLI starts the clock when the command starts: loading the task and the executor count."""
    executor = TimedExecutor(0.3)
    store = RunStore(tmp_path / "runs.db")
    config = SearchConfig(generations=50, population=2, budget_s=1.0)
    run_id = store.create_run({"name": "fake"}, config.to_dict())
    rng = random.Random(0)
    search = Search(store, run_id, StepMutator(rng), None, config, rng, executor=executor,
                    started=time.monotonic() - 0.9)
    t0 = time.monotonic()
    final = search.run()
    assert time.monotonic() - t0 <= 0.1 + 0.2 and final.evaluated == 0 and "cut" in (final.stop_reason or "")


def test_the_cli_budget_holds_through_generation_zero_and_resume_finishes_it(tmp_path: Path) -> None:
    """The real CLI on a tiny CPU problem whose generation 0 (the baselines, torch.compile among them)
    takes far longer than the budget: the command ends within the stated margin, and a resume evaluates
    the candidates the cut left pending."""
    task = tmp_path / "tanh_matmul.py"
    task.write_text((TASKS / "tanh_matmul.py").read_text())
    t0 = time.monotonic()
    proc = evoforge("run", "--task", str(task), "--generations", "1", "--population", "1", "--budget", "4s",
                    "--budget-ms", "5", "--device", "cpu", "--json", cwd=tmp_path)
    elapsed = time.monotonic() - t0
    assert elapsed <= 4.0 + MARGIN_S, f"{elapsed:.1f} s for a 4 s budget"
    assert proc.returncode == 1, proc.stderr  # nothing evaluated yet
    summary = json.loads(proc.stdout)
    assert "time budget of 4 s reached" in summary["stop_reason"] and summary["evaluated"] == 0
    db = sqlite3.connect(tmp_path / ".evoforge" / "runs.db")
    (status,), = db.execute("SELECT status FROM runs")
    assert status == "finished"
    pending = {h for (h,) in db.execute("SELECT hash FROM candidates WHERE role='candidate'")}
    assert pending and not list(db.execute("SELECT hash FROM evaluations WHERE role='candidate'"))
    resumed = evoforge("resume", summary["run"], "--json", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    evaluated = {h for (h,) in db.execute("SELECT hash FROM evaluations WHERE role='candidate'")}
    assert evaluated == pending
