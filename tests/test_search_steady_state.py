"""The loop with several slots (a fake executor that completes batches out of order): steady state,
store contract, dedup of candidates in flight, resume after a kill with batches in flight."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from evoforge.candidate import Candidate
from evoforge.executor import Done, Executor
from evoforge.search import Search, SearchConfig, restore_rng
from evoforge.store import RunStore
from tests.test_search import FakeEvaluator, StepMutator, make


class OutOfOrderExecutor(Executor):
    """``slots`` slots; ``wait`` completes the most recently submitted batch first (the worst case for a
    loop that assumed generation order). ``die_after`` batches completed, it raises (a killed driver)."""

    name = "fake"

    def __init__(self, slots: int, die_after: int | None = None) -> None:
        super().__init__([f"s{i}" for i in range(slots)])
        self.evaluate = FakeEvaluator()
        self.todo: list[tuple[int, list[Candidate]]] = []
        self.submitted: list[int] = []
        self.sizes: list[int] = []  # candidates per submitted batch
        self.max_in_flight = 0
        self.die_after = die_after
        self.completed = 0

    def submit(self, generation: int, candidates: list[Candidate]) -> None:
        self.todo.append((generation, candidates))
        self.submitted.append(generation)
        self.sizes.append(len(candidates))
        self._in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self._in_flight)

    def wait(self, timeout: float | None = None) -> list[Done]:
        if self.die_after is not None and self.completed >= self.die_after:
            raise KeyboardInterrupt
        generation, cands = self.todo.pop()
        self._in_flight -= 1
        self.completed += 1
        results, bases = self.evaluate(cands, generation)
        slot = self.slot_names[generation % len(self.slot_names)]
        done = Done(generation, cands, results, bases, slot, 0.01, where={"slot": slot, "host": "h"})
        self._account(done)
        return [done]


def _search(tmp_path: Path, config: SearchConfig, executor: Executor, run_id: str | None = None,
            store: RunStore | None = None) -> tuple[Search, RunStore]:
    store = store or RunStore(tmp_path / "runs.db")
    run_id = run_id or store.create_run({"name": "fake"}, config.to_dict())
    record = store.run(run_id)
    rng = restore_rng(record.rng) if record.rng else random.Random(config.seed)
    return Search(store, run_id, StepMutator(rng), None, config, rng, executor=executor), store


def test_keeps_every_slot_busy_and_stores_every_batch(tmp_path: Path) -> None:
    executor = OutOfOrderExecutor(slots=3)
    search, store = _search(tmp_path, SearchConfig(generations=8, population=3, seed=1), executor)
    final = search.run()
    assert final.stop_reason == "reached 8 generations"
    assert executor.max_in_flight == 3
    # generation 0 (two seeds, nothing to breed from yet) goes out split over the slots, at once; later
    # generations are one batch each ("generation" = batch index)
    assert executor.submitted[:2] == [0, 0] and sorted(executor.submitted[2:]) == list(range(1, 8))
    seen = executor.evaluate.seen
    assert len(seen) == len(set(seen))  # a candidate in flight is never proposed again
    stored = [r.hash for r, _ in store.evaluations(search.run_id)]
    assert sorted(stored) == sorted(seen)
    events = store.events(search.run_id, "generation")
    assert sorted(e["generation"] for e in events) == [0, *range(8)]
    assert all(e["slot"] in ("s0", "s1", "s2") and e["host"] == "h" for e in events)
    (summary,) = store.events(search.run_id, "throughput")
    assert summary["slots"] == 3 and summary["evaluations"] == len(seen)
    assert set(summary["per_slot"]) == {"s0", "s1", "s2"}


def test_max_evals_counts_candidates_in_flight(tmp_path: Path) -> None:
    executor = OutOfOrderExecutor(slots=4)
    search, _ = _search(tmp_path, SearchConfig(generations=50, population=3, max_evals=11), executor)
    final = search.run()
    assert final.evaluated == 11 and final.stop_reason == "reached 11 evaluations"


def test_resume_resubmits_every_batch_that_was_in_flight(tmp_path: Path) -> None:
    config = SearchConfig(generations=7, population=2, seed=4)
    dying = OutOfOrderExecutor(slots=3, die_after=3)
    search, store = _search(tmp_path, config, dying)
    with pytest.raises(KeyboardInterrupt):
        search.run()
    evaluated = {r.hash for r, _ in store.evaluations(search.run_id)}
    persisted = {c.hash for c, _ in store.candidates(search.run_id)}
    in_flight = persisted - evaluated
    assert in_flight  # batches were in flight when it died
    again = OutOfOrderExecutor(slots=3)
    resumed, _ = _search(tmp_path, config, again, run_id=search.run_id, store=store)
    resumed.run()
    assert in_flight <= set(again.evaluate.seen)  # re-submitted ...
    assert not evaluated & set(again.evaluate.seen)  # ... and nothing evaluated twice
    after = [r.hash for r, _ in store.evaluations(search.run_id)]
    assert len(after) == len(set(after)) and set(after) == {c.hash for c, _ in store.candidates(search.run_id)}
    assert store.run(search.run_id).status == "finished"


def test_one_slot_is_the_generational_loop(tmp_path: Path) -> None:
    """A one-slot executor proposes exactly what the serial loop proposes (same seed, same order)."""
    serial_store = RunStore(tmp_path / "serial.db")
    config = SearchConfig(generations=6, population=3, seed=9)
    run_id = serial_store.create_run({"name": "fake"}, config.to_dict())
    serial_eval = FakeEvaluator()
    rng = random.Random(9)
    Search(serial_store, run_id, StepMutator(rng), serial_eval, config, rng).run()
    one = OutOfOrderExecutor(slots=1)
    _search(tmp_path, config, one)[0].run()
    assert one.evaluate.seen == serial_eval.seen


def test_generation_0_is_split_over_the_slots(tmp_path: Path) -> None:
    """Before any result there is nothing to breed from: the seeds are all the work, one batch per slot (in
    near-equal parts), so no GPU waits for another's generation 0; one slot, or a batch size, keeps one batch."""

    class FiveSeeds(StepMutator):
        def seed(self) -> list[Candidate]:
            return [make(x) for x in range(5)]

    for slots, batch_size, expected in ((2, None, [3, 2]), (1, None, [5]), (3, 4, [4, 1]), (8, None, [1] * 5)):
        executor = OutOfOrderExecutor(slots=slots)
        config = SearchConfig(generations=1, population=5, seed=2, batch_size=batch_size)
        store = RunStore(tmp_path / f"s{slots}-{batch_size}.db")
        run_id = store.create_run({"name": "fake"}, config.to_dict())
        rng = random.Random(2)
        Search(store, run_id, FiveSeeds(rng), None, config, rng, executor=executor).run()
        assert executor.submitted == [0] * len(expected) and executor.sizes == expected, (slots, batch_size)
