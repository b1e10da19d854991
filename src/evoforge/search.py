"""The evolution loop (EvoEngineer's generate -> measure -> select -> mutate).

The loop talks only to interfaces: a :class:`~evoforge.mutators.Mutator` proposes, an evaluate
function measures (candidates and baselines of one generation, in one worker, so their ratio is
honest), a :class:`~evoforge.store.RunStore` remembers. Everything a resume needs is written before
the next step starts: the proposals of a generation and the RNG state after proposing land in one
transaction, each evaluation as it is stored. A run killed at any point resumes with the same
population and RNG state; candidates already evaluated are never evaluated again (dedup by hash).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from evoforge.candidate import Candidate
from evoforge.evaluator.result import EvalResult
from evoforge.mutators.base import Individual, Mutator
from evoforge.store import RunStore

EvaluateFn = Callable[[list[Candidate], int], tuple[list[EvalResult], list[EvalResult]]]
PLATEAU_GAIN = 0.01


@dataclass
class SearchConfig:
    """Stop criteria and population shape. ``generations`` counts generation 0 (the seeds)."""

    generations: int = 10
    population: int = 8  # new candidates per generation
    elites: int = 3
    tournament: int = 2
    budget_s: float | None = None  # wall clock of this session of the run
    max_evals: int | None = None
    target_fitness: float | None = None
    plateau: int | None = None  # stop after this many generations without a 1% gain
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def rng_state(rng: random.Random) -> list[Any]:
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def restore_rng(state: list[Any]) -> random.Random:
    rng = random.Random()
    rng.setstate((state[0], tuple(state[1]), state[2]))
    return rng


@dataclass
class Progress:
    generation: int
    evaluated: int
    valid: int
    best_fitness: float
    best_name: str | None
    best_latency_us: float | None
    best_baseline: str | None
    evals_per_min: float
    eta_s: float | None
    stop_reason: str | None = None


class Search:
    def __init__(self, store: RunStore, run_id: str, mutator: Mutator, evaluate: EvaluateFn,
                 config: SearchConfig, rng: random.Random,
                 on_progress: Callable[[Progress], None] | None = None) -> None:
        self.store, self.run_id, self.mutator, self.evaluate = store, run_id, mutator, evaluate
        self.config, self.rng = config, rng
        self.on_progress = on_progress or (lambda p: None)
        self.history: list[Individual] = []
        self.best_by_generation: dict[int, float] = {}

    # ---------------------------------------------------------------- state
    def _load(self) -> tuple[int, list[Candidate]]:
        """Population and pending proposals from the store (empty for a new run)."""
        record = self.store.run(self.run_id)
        results = {r.hash: r for r, _ in self.store.evaluations(self.run_id)}
        pending = []
        for cand, gen in self.store.candidates(self.run_id):
            if cand.hash in results:
                self.history.append(Individual(cand, results[cand.hash]))
            elif gen == record.generation:
                pending.append(cand)
        for gen in sorted({i.candidate.lineage.get("generation", 0) for i in self.history}):
            self._record_best(gen)
        return record.generation, pending

    def _record_best(self, generation: int) -> None:
        self.best_by_generation[generation] = max(
            (i.fitness for i in self.history if i.candidate.lineage.get("generation", 0) <= generation), default=0.0)

    def elites(self) -> list[Individual]:
        ranked = sorted((i for i in self.history if i.result.ok), key=lambda i: -i.fitness)
        return ranked[: self.config.elites]

    def best(self) -> Individual | None:
        elites = self.elites()
        return elites[0] if elites else None

    def select_parents(self, n: int) -> list[Individual]:
        """Elites, plus tournament winners among all valid individuals (seeded RNG)."""
        valid = [i for i in self.history if i.result.ok]
        if not valid:
            return list(self.history)
        chosen = {i.candidate.hash: i for i in self.elites()}
        for _ in range(n):
            entrants = [self.rng.choice(valid) for _ in range(max(self.config.tournament, 1))]
            winner = max(entrants, key=lambda i: i.fitness)
            chosen.setdefault(winner.candidate.hash, winner)
        return list(chosen.values())

    # ---------------------------------------------------------------- the loop
    def run(self) -> Progress:
        started = time.monotonic()
        generation, pending = self._load()
        if not self.history and not pending:
            pending = self._persist_proposals(self.mutator.seed(), 0)
        gen_seconds: list[float] = []
        evaluated_now = 0
        reason: str | None = None
        while True:
            if pending:
                t0 = time.monotonic()
                results, baselines = self.evaluate(pending, generation)
                with self.store.transaction():
                    for base in baselines:
                        self.store.add_evaluation(self.run_id, base, generation)
                    for cand, result in zip(pending, results, strict=True):
                        self.store.add_evaluation(self.run_id, result, generation)
                        self.history.append(Individual(cand, result))
                    self.store.add_event(self.run_id, "generation", generation=generation,
                                         evaluated=len(results), valid=sum(r.ok for r in results))
                evaluated_now += len(results)
                gen_seconds.append(time.monotonic() - t0)
            self._record_best(generation)
            reason = self._stop_reason(generation, started, gen_seconds)
            self.on_progress(self._progress(generation, started, evaluated_now, gen_seconds, reason))
            if reason:
                break
            generation += 1
            n = self.config.population
            if self.config.max_evals is not None:
                n = min(n, self.config.max_evals - len(self.history))
            self.mutator.begin_generation(generation)
            fresh = self._fresh_proposals(n, generation)
            if not fresh:
                note = f" ({self.mutator.note})" if self.mutator.note else ""
                reason = self.mutator.stop_reason or f"the mutator has nothing new to propose{note}"
                break
            pending = self._persist_proposals(fresh, generation)
        self.store.update_run(self.run_id, status="finished", note=reason)
        self.store.add_event(self.run_id, "stop", reason=reason)
        return self._progress(generation, started, evaluated_now, gen_seconds, reason)

    def _fresh_proposals(self, n: int, generation: int) -> list[Candidate]:
        """Ask the mutator until it gives ``n`` candidates never evaluated before (or its
        ``propose_calls`` run out, or it sets a stop reason): a repeat's stored result is reused,
        never re-measured."""
        known = {i.candidate.hash for i in self.history}
        fresh: list[Candidate] = []
        skipped = 0
        for _ in range(max(self.mutator.propose_calls, 1)):
            if self.mutator.stop_reason:
                break
            for cand in self.mutator.propose(self.select_parents(n), self.history, n - len(fresh)):
                if cand.hash in known:
                    skipped += 1
                    continue
                known.add(cand.hash)
                fresh.append(cand)
            if len(fresh) >= n:
                break
        if skipped:
            self.store.add_event(self.run_id, "dedup", generation=generation, skipped=skipped)
        return fresh

    def _persist_proposals(self, proposals: list[Candidate], generation: int) -> list[Candidate]:
        with self.store.transaction():
            for cand in proposals:
                cand.lineage = {**cand.lineage, "generation": generation}
                self.store.add_candidate(self.run_id, cand, generation)
            self.store.update_run(self.run_id, generation=generation, rng=rng_state(self.rng), status="running")
        return proposals

    def _stop_reason(self, generation: int, started: float, gen_seconds: list[float]) -> str | None:
        cfg = self.config
        bests = [self.best_by_generation[g] for g in sorted(self.best_by_generation)]
        best = bests[-1] if bests else 0.0
        if generation + 1 >= cfg.generations:
            return f"reached {cfg.generations} generations"
        if cfg.max_evals is not None and len(self.history) >= cfg.max_evals:
            return f"reached {cfg.max_evals} evaluations"
        if cfg.target_fitness is not None and best >= cfg.target_fitness:
            return f"reached the target fitness {cfg.target_fitness:g}"
        if cfg.budget_s is not None:
            elapsed = time.monotonic() - started
            next_gen = gen_seconds[-1] if gen_seconds else 0.0
            if elapsed + next_gen > cfg.budget_s:
                return f"time budget of {cfg.budget_s:g} s would be exceeded by another generation"
        if cfg.plateau and len(bests) > cfg.plateau:
            before = bests[-cfg.plateau - 1]
            if best <= before * (1 + PLATEAU_GAIN):
                return f"no gain over 1% in {cfg.plateau} generations"
        return None

    def _progress(self, generation: int, started: float, evaluated_now: int, gen_seconds: list[float],
                  reason: str | None) -> Progress:
        elapsed = max(time.monotonic() - started, 1e-9)
        best = self.best()
        latency = None
        if best is not None and best.result.fitness_mode:
            latency = best.result.latency(best.result.fitness_mode)
        remaining = max(self.config.generations - generation - 1, 0)
        eta = remaining * (sum(gen_seconds) / len(gen_seconds)) if gen_seconds and not reason else None
        return Progress(
            generation=generation, evaluated=len(self.history),
            valid=sum(i.result.ok for i in self.history),
            best_fitness=best.fitness if best else 0.0, best_name=best.candidate.name if best else None,
            best_latency_us=latency, best_baseline=best.result.best_baseline if best else None,
            evals_per_min=60.0 * evaluated_now / elapsed, eta_s=eta, stop_reason=reason,
        )
