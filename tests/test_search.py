"""The evolution loop with a deterministic fake evaluator and mutator: selection, elitism, dedup,
stop criteria, resume and seeded reproducibility."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest

from evoforge.candidate import Candidate
from evoforge.evaluator.result import EvalResult
from evoforge.mutators.base import Individual, Mutator
from evoforge.search import Search, SearchConfig, restore_rng, rng_state
from evoforge.store import RunStore


def make(x: int, lineage: dict | None = None) -> Candidate:
    return Candidate(name=f"x{x}", source=f"X = {x}\n", genome={"x": x}, lineage=lineage or {})


class StepMutator(Mutator):
    """Genome: an integer; mutation: +/- a random step; crossover: none."""

    name = "step"

    def seed(self) -> list[Candidate]:
        return [make(0), make(1)]

    def propose(self, parents: list[Individual], history: list[Individual], n: int) -> list[Candidate]:
        out = []
        for _ in range(n):
            parent = self.rng.choice(parents)
            x = parent.candidate.genome["x"] + self.rng.choice([-2, -1, 1, 2, 3])
            out.append(make(x, {"parents": [parent.candidate.hash], "mutation": "step", "level": "hardware"}))
        return out


class FakeEvaluator:
    """fitness = x / 10 for x >= 0; negative genomes are 'incorrect'. Records every evaluated hash."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, cands: list[Candidate], generation: int) -> tuple[list[EvalResult], list[EvalResult]]:
        results = []
        for c in cands:
            self.seen.append(c.hash)
            x = c.genome["x"]
            ok = x >= 0
            results.append(EvalResult(name=c.name, hash=c.hash, status="ok" if ok else "incorrect",
                                      fitness=x / 10 if ok else 0.0, fitness_mode="graph" if ok else None))
        base = EvalResult(name="baseline", hash="b", status="ok", role="baseline", fitness=1.0)
        return results, [base]


def new_search(tmp_path: Path, config: SearchConfig, evaluator: FakeEvaluator | None = None,
               run_id: str | None = None, store: RunStore | None = None) -> tuple[Search, FakeEvaluator, RunStore]:
    store = store or RunStore(tmp_path / "runs.db")
    run_id = run_id or store.create_run({"name": "fake"}, config.to_dict())
    record = store.run(run_id)
    rng = restore_rng(record.rng) if record.rng else random.Random(config.seed)
    evaluator = evaluator or FakeEvaluator()
    return Search(store, run_id, StepMutator(rng), evaluator, config, rng), evaluator, store


def test_generation_zero_is_the_seed(tmp_path: Path) -> None:
    search, _, _ = new_search(tmp_path, SearchConfig(generations=1))
    final = search.run()
    assert final.evaluated == 2 and "1 generations" in final.stop_reason
    assert [i.candidate.name for i in search.history] == ["x0", "x1"]


def test_runs_the_requested_generations_and_keeps_elites(tmp_path: Path) -> None:
    search, _, _ = new_search(tmp_path, SearchConfig(generations=6, population=4, elites=3, seed=1))
    final = search.run()
    assert final.generation == 5 and final.stop_reason == "reached 6 generations"
    elites = search.elites()
    assert len(elites) == 3
    assert [e.fitness for e in elites] == sorted((i.fitness for i in search.history), reverse=True)[:3]
    assert final.best_fitness == elites[0].fitness > 0.1  # it climbed from the seeds' 0.1


def test_no_candidate_is_evaluated_twice(tmp_path: Path) -> None:
    search, evaluator, store = new_search(tmp_path, SearchConfig(generations=12, population=6, seed=3))
    search.run()
    assert len(evaluator.seen) == len(set(evaluator.seen))
    assert any(e["kind"] == "dedup" for e in store.events(search.run_id))  # the mutator did repeat itself


def test_same_seed_same_search(tmp_path: Path) -> None:
    a, ev_a, _ = new_search(tmp_path / "a", SearchConfig(generations=5, population=3, seed=7))
    b, ev_b, _ = new_search(tmp_path / "b", SearchConfig(generations=5, population=3, seed=7))
    c, ev_c, _ = new_search(tmp_path / "c", SearchConfig(generations=5, population=3, seed=8))
    a.run(), b.run(), c.run()
    assert ev_a.seen == ev_b.seen
    assert ev_a.seen != ev_c.seen


@pytest.mark.parametrize(("config", "reason"), [
    (SearchConfig(generations=50, population=2, max_evals=7), "reached 7 evaluations"),
    (SearchConfig(generations=50, population=4, target_fitness=0.5), "target fitness"),
    (SearchConfig(generations=50, population=1, plateau=2, seed=5), "no gain over 1% in 2 generations"),
    (SearchConfig(generations=50, population=2, budget_s=0.0), "time budget"),
])
def test_stop_criteria(tmp_path: Path, config: SearchConfig, reason: str) -> None:
    search, _, _ = new_search(tmp_path, config)
    final = search.run()
    assert reason in final.stop_reason
    if config.max_evals:
        assert final.evaluated == config.max_evals
    if config.target_fitness:
        assert final.best_fitness >= config.target_fitness


def test_tournament_prefers_fitter_parents(tmp_path: Path) -> None:
    search, _, _ = new_search(tmp_path, SearchConfig(generations=1, elites=1, tournament=4))
    search.history = [Individual(make(x), EvalResult(name=f"x{x}", hash=make(x).hash, status="ok", fitness=x / 10))
                      for x in range(10)]
    picked = [p.candidate.genome["x"] for _ in range(20) for p in search.select_parents(1)]
    assert sum(picked) / len(picked) > 6  # uniform choice would average 4.5


def test_resume_continues_with_the_saved_population_and_rng(tmp_path: Path) -> None:
    whole, ev_whole, _ = new_search(tmp_path / "whole", SearchConfig(generations=6, population=3, seed=11))
    whole.run()
    # Same search in two sessions: stop after 3 generations, then resume to 6 with a fresh Search.
    part, ev_part, store = new_search(tmp_path / "part", SearchConfig(generations=3, population=3, seed=11))
    part.run()
    again, ev_again, _ = new_search(tmp_path, SearchConfig(generations=6, population=3, seed=11),
                                    run_id=part.run_id, store=store)
    again.run()
    assert ev_part.seen + ev_again.seen == ev_whole.seen


def test_resume_evaluates_pending_proposals_first(tmp_path: Path) -> None:
    config = SearchConfig(generations=3, population=3, seed=2)
    store = RunStore(tmp_path / "runs.db")
    run_id = store.create_run({"name": "fake"}, config.to_dict())
    rng = random.Random(2)
    # A session that proposed generation 0 and died before evaluating it.
    with store.transaction():
        for cand in [make(5), make(6)]:
            cand.lineage = {"generation": 0}
            store.add_candidate(run_id, cand, 0)
        store.update_run(run_id, generation=0, rng=rng_state(rng))
    search, evaluator, _ = new_search(tmp_path, config, run_id=run_id, store=store)
    search.run()
    assert evaluator.seen[:2] == [make(5).hash, make(6).hash]


def test_the_time_budget_does_not_judge_later_generations_by_generation_zero(tmp_path: Path) -> None:
    """Generation 0 times every baseline; later batches only a few. Its cost is scaled to a later
    batch's entries before the budget check, so a slow generation 0 doesn't end the run by itself."""
    from evoforge.executor import Done

    search, _, _ = new_search(tmp_path, SearchConfig(population=4, later_baselines=2))
    base = [EvalResult(name=f"b{i}", hash=f"b{i}", status="ok", role="baseline") for i in range(10)]
    seeds = [EvalResult(name="s", hash="s", status="ok")] * 2
    first = Done(generation=0, candidates=[], results=seeds, baselines=base, slot="s0", seconds=60.0)
    assert search._batch_estimate(first) == pytest.approx(60.0 * 6 / 12)
    later = Done(generation=3, candidates=[], results=seeds, baselines=base[:2], slot="s0", seconds=7.0)
    assert search._batch_estimate(later) == 7.0
    tiny = Done(generation=0, candidates=[], results=seeds, baselines=base[:1], slot="s0", seconds=5.0)
    assert search._batch_estimate(tiny) == 5.0  # never scaled up


class RepeatingMutator(StepMutator):
    """A seed that repeats itself (the same source twice) and reuses a name for different code, as a model
    that gives the same reply twice does."""

    def seed(self) -> list[Candidate]:
        return [make(0), make(0), make(1), Candidate(name="x0", source="X = 2\n", genome={"x": 2})]


class NameCheckingEvaluator(FakeEvaluator):
    def __call__(self, cands: list[Candidate], generation: int) -> tuple[list[EvalResult], list[EvalResult]]:
        names = [c.name for c in cands]
        assert len(set(names)) == len(names), names  # what the evaluator itself insists on
        return super().__call__(cands, generation)


def test_repeated_seeds_are_dropped_and_names_made_unique(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    config = SearchConfig(generations=3, population=3)
    run_id = store.create_run({"name": "fake"}, config.to_dict())
    evaluator = NameCheckingEvaluator()
    search = Search(store, run_id, RepeatingMutator(random.Random(0)), evaluator, config, random.Random(0))
    final = search.run()
    assert final.stop_reason == "reached 3 generations"
    gen0 = [i.candidate for i in search.history if i.candidate.lineage["generation"] == 0]
    assert [c.name for c in gen0] == ["x0", "x1", "x0-2"]
    assert len(evaluator.seen) == len(set(evaluator.seen))  # nothing measured twice
    assert store.events(run_id, "dedup")[0] == {**store.events(run_id, "dedup")[0], "generation": 0, "skipped": 1}
    names = [c.name for c, _ in store.candidates(run_id)]
    assert len(names) == len(set(names))


class SignificanceEvaluator(FakeEvaluator):
    """FakeEvaluator's fitness (x / 10), its wins marked beyond noise only where ``significant(x)`` says."""

    def __init__(self, significant: Callable[[int], bool]) -> None:
        super().__init__()
        self.significant = significant

    def __call__(self, cands: list[Candidate], generation: int) -> tuple[list[EvalResult], list[EvalResult]]:
        results, bases = super().__call__(cands, generation)
        for cand, result in zip(cands, results, strict=True):
            result.significant = result.ok and result.fitness > 1.0 and self.significant(cand.genome["x"])
        return results, bases


class PyTorchPathMutator(StepMutator):
    """Every proposal after the seeds is one of PyTorch's own paths (genome kind ``torch``)."""

    def propose(self, parents: list[Individual], history: list[Individual], n: int) -> list[Candidate]:
        out = super().propose(parents, history, n)
        for cand in out:
            cand.genome = {**cand.genome, "kind": "torch"}
        return out


def raw_best_by_generation(search: Search) -> list[float]:
    gens = sorted({i.candidate.lineage["generation"] for i in search.history})
    return [max(i.fitness for i in search.history if i.candidate.lineage["generation"] <= g) for g in gens]


def test_a_win_within_noise_does_not_reach_the_target(tmp_path: Path) -> None:
    config = SearchConfig(generations=12, population=4, target_fitness=1.2, seed=1)
    search, _, _ = new_search(tmp_path, config, SignificanceEvaluator(lambda x: False))
    final = search.run()
    assert max(i.fitness for i in search.history) >= 1.2  # the raw ratio passed the target, within noise
    assert final.stop_reason == "reached 12 generations"
    assert final.best_claim == "not significant: the spreads overlap"


def test_a_win_beyond_noise_reaches_the_target(tmp_path: Path) -> None:
    config = SearchConfig(generations=12, population=4, target_fitness=1.2, seed=1)
    search, _, _ = new_search(tmp_path, config, SignificanceEvaluator(lambda x: True))
    final = search.run()
    assert final.stop_reason == "an evolved candidate reached the target fitness 1.2 beyond noise"
    assert final.best_fitness >= 1.2 and final.best_significant


def test_a_pytorch_path_never_reaches_the_target(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    config = SearchConfig(generations=8, population=4, target_fitness=1.2, seed=1)
    run_id = store.create_run({"name": "fake"}, config.to_dict())
    search = Search(store, run_id, PyTorchPathMutator(random.Random(1)), SignificanceEvaluator(lambda x: True),
                    config, random.Random(1))
    final = search.run()
    assert max(i.fitness for i in search.history) >= 1.2  # PyTorch's own paths, re-measured
    assert final.stop_reason == "reached 8 generations"


def test_a_climb_within_noise_is_a_plateau(tmp_path: Path) -> None:
    """Wins above 1 that are not beyond noise count as 1.0: the raw best still climbing past 1 by more than
    1% a generation does not keep the run off its plateau."""
    config = SearchConfig(generations=30, population=4, plateau=3, seed=1)
    search, _, _ = new_search(tmp_path, config, SignificanceEvaluator(lambda x: False))
    final = search.run()
    assert "no gain over 1% in 3 generations" in final.stop_reason
    raw = raw_best_by_generation(search)
    assert raw[-1] > raw[-4] * 1.01 > 1.0  # raw fitness gained in the plateau's generations


def test_pytorch_paths_do_not_lift_a_plateau(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    config = SearchConfig(generations=30, population=4, plateau=3, seed=1)
    run_id = store.create_run({"name": "fake"}, config.to_dict())
    search = Search(store, run_id, PyTorchPathMutator(random.Random(1)), SignificanceEvaluator(lambda x: True),
                    config, random.Random(1))
    final = search.run()
    assert final.stop_reason.startswith("no gain over 1% in 3 generations (best claimed fitness 0.100")
    raw = raw_best_by_generation(search)
    assert raw[-1] > raw[-4] * 1.01
