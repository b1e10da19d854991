"""The evolution loop (EvoEngineer's generate -> measure -> select -> mutate).

The loop talks only to interfaces: a :class:`~evoforge.mutators.Mutator` proposes, an evaluate
function measures (candidates and baselines of one generation, in one worker, so their ratio is
honest), a :class:`~evoforge.store.Store` remembers. Everything a resume needs is written before
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

from evoforge import claims
from evoforge.candidate import Candidate
from evoforge.executor import Done, EvaluateFn, Executor, SerialExecutor
from evoforge.mutators.base import Mutator
from evoforge.results import Individual
from evoforge.store import Store

PLATEAU_GAIN = 0.01


@dataclass
class SearchConfig:
    """Stop criteria and population shape. ``generations`` counts generation 0 (the seeds)."""

    generations: int = 10
    population: int = 8  # new candidates per generation
    elites: int = 3
    tournament: int = 2
    budget_s: float | None = None  # wall clock of this session of the run (a hard deadline: see Search.run)
    max_evals: int | None = None
    # Both read the best *claimed* fitness (evoforge.claims.claimed_fitness): an evolved candidate's, a win
    # above 1 counted only beyond noise, an unchanged PyTorch path never.
    target_fitness: float | None = None
    plateau: int | None = None  # stop after this many generations without a 1% gain
    seed: int = 0
    later_baselines: int = 3  # baselines a batch after generation 0 re-times (for the time-budget estimate)
    batch_size: int | None = None  # candidates per batch: a larger generation goes as several batches, in order

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
    slots: int = 1  # executor slots (GPUs, or CPU workers)
    queue: int = 0  # batches submitted that no slot has started
    in_flight: int = 0
    evals_per_min_per_slot: float = 0.0
    idle_frac: float = 0.0  # mean over slots of the share of time a slot had nothing to do
    # The named best is the fittest *evolved* candidate (evoforge.claims.crown); whether its win is beyond
    # noise, and the phrase every report uses for it (evoforge.claims.claim).
    best_significant: bool = False
    best_claim: str = ""


class Search:
    """The loop. ``evaluate`` is a plain function (one batch at a time, in this thread) or, with
    ``executor``, batches run wherever the executor runs them and come back as they complete."""

    def __init__(self, store: Store, run_id: str, mutator: Mutator, evaluate: EvaluateFn | None,
                 config: SearchConfig, rng: random.Random,
                 on_progress: Callable[[Progress], None] | None = None, executor: Executor | None = None,
                 started: float | None = None) -> None:
        if executor is None:
            if evaluate is None:
                raise ValueError("Search needs an evaluate function or an executor")
            executor = SerialExecutor(evaluate)
        self.store, self.run_id, self.mutator, self.evaluate = store, run_id, mutator, evaluate
        self.executor = executor
        self.config, self.rng = config, rng
        self.on_progress = on_progress or (lambda p: None)
        self.history: list[Individual] = []
        self.baseline_hashes: set[str] = set()  # the sources PyTorch's own paths run (claims.is_pytorch_path)
        self.best_by_generation: dict[int, float] = {}  # best claimed fitness up to each generation
        self.best_trace: list[float] = []  # best claimed fitness so far after each completed batch (target, plateau)
        self.started = started  # the budget's clock (time.monotonic()); None: when run() starts
        self.in_flight: dict[int, list[Candidate]] = {}  # submitted batches by batch key
        self.in_flight_generation: dict[int, int] = {}  # batch key -> its generation
        self._next_key = 0
        self.cut: list[tuple[int, list[Candidate]]] = []  # batches cancelled at the budget's deadline
        self.resubmit: list[tuple[int, list[Candidate]]] = []  # persisted, unevaluated, not yet re-submitted
        self.next_generation = 0
        self.completed = -1  # the highest generation whose batch has come back

    # ---------------------------------------------------------------- state
    def _load(self) -> tuple[int, dict[int, list[Candidate]]]:
        """Population and pending proposals (persisted, never evaluated: by generation) from the store."""
        record = self.store.run(self.run_id)
        results = {r.hash: r for r, _ in self.store.evaluations(self.run_id)}
        self.baseline_hashes |= {r.hash for r, _ in self.store.evaluations(self.run_id, role="baseline")}
        pending: dict[int, list[Candidate]] = {}
        for cand, gen in self.store.candidates(self.run_id):
            if cand.hash in results:
                self.history.append(Individual(cand, results[cand.hash]))
            else:
                pending.setdefault(gen, []).append(cand)
        for gen in sorted({i.candidate.lineage.get("generation", 0) for i in self.history}):
            self._record_best(gen)
        return record.generation, pending

    def _record_best(self, generation: int) -> None:
        best = max((self.claimed_fitness(i) for i in self.history
                    if i.result.ok and i.candidate.lineage.get("generation", 0) <= generation), default=0.0)
        self.best_by_generation[generation] = best
        self.best_trace.append(max(best, self.best_trace[-1] if self.best_trace else 0.0))

    def elites(self) -> list[Individual]:
        ranked = sorted((i for i in self.history if i.result.ok), key=lambda i: -i.fitness)
        return ranked[: self.config.elites]

    def best(self) -> Individual | None:
        elites = self.elites()
        return elites[0] if elites else None

    def is_pytorch_path(self, ind: Individual) -> bool:
        cand = ind.candidate
        return claims.is_pytorch_path(cand.language, cand.hash, cand.genome, self.baseline_hashes)

    def claimed_fitness(self, ind: Individual) -> float:
        """What the stop criteria read (evoforge.claims.claimed_fitness): the run's claim, not the raw ratio."""
        return claims.claimed_fitness(ind.fitness, ind.result.significant, self.is_pytorch_path(ind))

    def crowned(self) -> Individual | None:
        """The candidate reports name as the run's best: the fittest valid evolved one (selection still
        uses :meth:`best`, PyTorch paths included); an unchanged PyTorch path only when nothing else is valid."""
        return claims.crown((i for i in self.history if i.result.ok), lambda i: i.fitness, self.is_pytorch_path)

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
        """Steady state: keep ``executor.capacity`` batches in flight, a new one proposed from the
        population as it stands whenever one completes. Each batch's proposals and the RNG state are
        persisted before it is submitted; each result is stored as it arrives; with one slot this is
        the generational loop (propose, evaluate, select) exactly."""
        started = self.started if self.started is not None else time.monotonic()
        deadline = started + self.config.budget_s if self.config.budget_s is not None else None
        last, pending = self._load()
        if not self.history and not pending:
            pending = {0: self._persist_proposals(self._distinct(self.mutator.seed(), 0), 0)}
            last = 0
        # Before any batch has come back there are no parents to propose from, so the pending batches are all
        # the work there is: with several slots (GPUs) and no batch size, each is split over the slots, so that
        # generation 0 keeps every GPU busy rather than one (issue 22: the seed-shape run on 2 H200s was 1.70x
        # of one, its generation 0 on one GPU). Each part re-times the baselines on its own slot.
        spread = len(self.executor.slot_names) if not self.history and not self.config.batch_size else 1
        self.resubmit = resubmit = [(g, chunk) for g, b in sorted(pending.items())
                                    for chunk in self._chunks(self._unique_names(b), spread)]
        self.next_generation = last + 1
        self.completed = max((i.candidate.lineage.get("generation", 0) for i in self.history), default=-1)
        batch_seconds: list[float] = []
        evaluated_now = 0
        reason: str | None = None
        try:
            while True:
                while reason is None and len(self.in_flight) < self.executor.capacity:
                    if resubmit:
                        # the rest of a generation (or a resumed run's pending batches): not once the
                        # budget says no further batch fits (they stay pending: a resume evaluates them)
                        reason = self._budget_reason(started, batch_seconds) if self.history else None
                        if reason:
                            break
                        generation, batch = resubmit.pop(0)
                    else:
                        if not self.history:
                            break  # no parents until a batch has come back
                        reason = self._stop_reason(started, batch_seconds)
                        if reason:
                            if not self.in_flight and not batch_seconds:  # a resumed run that has nothing to do
                                self.on_progress(self._progress(started, evaluated_now, batch_seconds, reason))
                            break
                        n = self.config.population
                        if self.config.max_evals is not None:
                            n = min(n, self.config.max_evals - len(self.history) - self._in_flight_count())
                            if n <= 0:
                                break
                        generation = self.next_generation
                        self.mutator.begin_generation(generation)
                        fresh = self._fresh_proposals(n, generation)
                        if not fresh:
                            if self.mutator.stop_reason:
                                reason = self.mutator.stop_reason
                            elif not self.in_flight:  # else: new results may give it something new
                                note = f" ({self.mutator.note})" if self.mutator.note else ""
                                reason = f"the mutator has nothing new to propose{note}"
                            if reason:  # as in the generational loop, the generation it stopped in counts
                                self.completed = max(self.completed, generation)
                            break
                        batch, *rest = self._chunks(self._persist_proposals(fresh, generation))
                        resubmit[:0] = [(generation, chunk) for chunk in rest]
                    self.next_generation = max(self.next_generation, generation + 1)
                    self.in_flight[self._next_key] = batch
                    self.in_flight_generation[self._next_key] = generation
                    self._next_key += 1
                    self.executor.submit(generation, batch)
                if not self.in_flight:
                    break
                timeout = None if deadline is None else max(deadline - time.monotonic(), 0.0)
                finished = self.executor.wait(timeout)
                if not finished and deadline is not None and time.monotonic() >= deadline:
                    reason = self._cut_at_deadline()
                    self.on_progress(self._progress(started, evaluated_now, batch_seconds, reason))
                    break
                if not finished and not self.executor.in_flight():
                    raise RuntimeError(f"the {self.executor.name} executor holds none of the batches in flight "
                                       f"(generations {sorted(set(self.in_flight_generation.values()))})")
                for done in finished:
                    self._store(done)
                    evaluated_now += len(done.results)
                    batch_seconds.append(self._batch_estimate(done))
                    self.completed = max(self.completed, done.generation)
                    self._record_best(self.completed)
                    if reason is None:
                        reason = self._stop_reason(started, batch_seconds)
                    self.on_progress(self._progress(started, evaluated_now, batch_seconds, reason))
                self._flush_events()
        finally:
            self._flush_events()
            self.executor.close()
        self.store.add_event(self.run_id, "throughput", **self.executor.throughput())
        self.store.update_run(self.run_id, status="finished", note=reason)
        self.store.add_event(self.run_id, "stop", reason=reason)
        return self._progress(started, evaluated_now, batch_seconds, reason)

    def _in_flight_count(self) -> int:
        return sum(len(b) for b in self.in_flight.values())

    def _chunks(self, batch: list[Candidate], parts: int = 1) -> list[list[Candidate]]:
        """``batch`` in batches of at most ``batch_size`` candidates (one batch without a batch size); with
        ``parts`` > 1 (and no batch size), in that many batches of near-equal size (fewer if it is smaller)."""
        size = self.config.batch_size
        if not size and parts > 1 and len(batch) > 1:
            size = -(-len(batch) // min(parts, len(batch)))
        if not size or len(batch) <= size:
            return [batch]
        return [batch[i:i + size] for i in range(0, len(batch), size)]

    def _cut_at_deadline(self) -> str:
        """The budget's deadline passed with batches in flight: give them up (``close`` cancels them, killing
        their workers). Their candidates stay in the store unevaluated, so a resume evaluates them; every
        batch that came back before the deadline is kept."""
        self.cut = [(self.in_flight_generation.pop(k), b) for k, b in self.in_flight.items()]
        self.in_flight.clear()
        n = sum(len(b) for _, b in self.cut)
        self.store.add_event(self.run_id, "budget_cut", batches=len(self.cut), candidates=n,
                             generations=sorted({g for g, _ in self.cut}))
        return (f"time budget of {self.config.budget_s:g} s reached: {len(self.cut)} batch(es) in flight cut, "
                f"their {n} candidate(s) left pending for `evoforge resume`")

    def _key_of(self, done: Done) -> int | None:
        """The in-flight batch ``done`` is (the same list, else the same candidates)."""
        for key, batch in self.in_flight.items():
            if batch is done.candidates:
                return key
        hashes = [c.hash for c in done.candidates]
        for key, batch in self.in_flight.items():
            if [c.hash for c in batch] == hashes:
                return key
        return None

    def _store(self, done: Done) -> None:
        """One completed batch, in one transaction: its baselines, its results, its event."""
        key = self._key_of(done)
        if key is not None:
            self.in_flight.pop(key)
            self.in_flight_generation.pop(key, None)
        with self.store.transaction():
            for base in done.baselines:
                self.store.add_evaluation(self.run_id, base, done.generation)
                self.baseline_hashes.add(base.hash)
            for cand, result in zip(done.candidates, done.results, strict=True):
                self.store.add_evaluation(self.run_id, result, done.generation)
                self.history.append(Individual(cand, result))
            self.store.add_event(self.run_id, "generation", generation=done.generation,
                                 evaluated=len(done.results), valid=sum(r.ok for r in done.results),
                                 slot=done.slot, seconds=round(done.seconds, 3), waited=round(done.waited, 3),
                                 attempts=done.attempts, **{k: v for k, v in done.where.items() if k != "slot"})

    def _flush_events(self) -> None:
        while self.executor.events:
            kind, data = self.executor.events.pop(0)
            self.store.add_event(self.run_id, kind, **data)

    def _fresh_proposals(self, n: int, generation: int) -> list[Candidate]:
        """Ask the mutator until it gives ``n`` candidates never evaluated before, nor in flight (or its
        ``propose_calls`` run out, or it sets a stop reason): a repeat's stored result is reused,
        never re-measured."""
        known = {i.candidate.hash for i in self.history} | {c.hash for b in self.in_flight.values() for c in b}
        known |= {c.hash for _, batch in self.resubmit for c in batch}
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

    def _distinct(self, proposals: list[Candidate], generation: int) -> list[Candidate]:
        """``proposals`` without repeats (by hash: the same normalised source), each repeat counted in a
        ``dedup`` event (generation 0's seeds: a model that gives the same reply twice)."""
        out: dict[str, Candidate] = {}
        for cand in proposals:
            out.setdefault(cand.hash, cand)
        if len(out) < len(proposals):
            self.store.add_event(self.run_id, "dedup", generation=generation, skipped=len(proposals) - len(out))
        return list(out.values())

    def _unique_names(self, batch: list[Candidate]) -> list[Candidate]:
        """Give each candidate of ``batch`` a name no other candidate of the run has (``name-2``, ...): the
        evaluator tells a batch's entries apart by name, and reports tell the run's candidates apart by it."""
        taken = {i.candidate.name for i in self.history}
        taken |= {c.name for b in self.in_flight.values() for c in b}
        taken |= {c.name for _, b in self.resubmit for c in b}
        for cand in batch:
            if cand.name in taken:
                k = 2
                while f"{cand.name}-{k}" in taken:
                    k += 1
                cand.name = f"{cand.name}-{k}"
            taken.add(cand.name)
        return batch

    def _persist_proposals(self, proposals: list[Candidate], generation: int) -> list[Candidate]:
        self._unique_names(proposals)
        with self.store.transaction():
            for cand in proposals:
                cand.lineage = {**cand.lineage, "generation": generation}
                self.store.add_candidate(self.run_id, cand, generation)
            self.store.update_run(self.run_id, generation=generation, rng=rng_state(self.rng), status="running")
        return proposals

    def _batch_estimate(self, done: Done) -> float:
        """What this batch says a later generation's batch costs, in seconds. Generation 0 times every
        baseline (compiled ones included, which dominate on large shapes) and later batches only the
        few fastest, so its time is scaled by the entries a later batch holds."""
        if done.generation != 0:
            return done.seconds
        entries = len(done.results) + len(done.baselines)
        later = self.config.population + self.config.later_baselines
        return done.seconds * min(1.0, later / entries) if entries else done.seconds

    def _stop_reason(self, started: float, batch_seconds: list[float]) -> str | None:
        cfg = self.config
        bests = self.best_trace
        best = bests[-1] if bests else 0.0
        if self.next_generation >= cfg.generations:
            return f"reached {cfg.generations} generations"
        if cfg.max_evals is not None and len(self.history) >= cfg.max_evals:
            return f"reached {cfg.max_evals} evaluations"
        if cfg.target_fitness is not None and best >= cfg.target_fitness:
            beyond = " beyond noise" if cfg.target_fitness > 1.0 else ""
            return f"an evolved candidate reached the target fitness {cfg.target_fitness:g}{beyond}"
        budget = self._budget_reason(started, batch_seconds)
        if budget:
            return budget
        if cfg.plateau and len(bests) > cfg.plateau:
            before = bests[-cfg.plateau - 1]
            if best <= before * (1 + PLATEAU_GAIN):
                return (f"no gain over 1% in {cfg.plateau} generations (best claimed fitness {best:.3f}: "
                        "evolved candidates, wins above 1 beyond noise)")
        return None

    def _budget_reason(self, started: float, batch_seconds: list[float]) -> str | None:
        """Why no further batch may start: the latest batch's time (what the next one is expected to take)
        would carry the session past its budget."""
        cfg = self.config
        if cfg.budget_s is None:
            return None
        elapsed = time.monotonic() - started
        next_batch = batch_seconds[-1] if batch_seconds else 0.0
        if elapsed + next_batch > cfg.budget_s:
            return f"time budget of {cfg.budget_s:g} s would be exceeded by another generation"
        return None

    def _progress(self, started: float, evaluated_now: int, batch_seconds: list[float],
                  reason: str | None) -> Progress:
        elapsed = max(time.monotonic() - started, 1e-9)
        best = self.crowned()
        latency = None
        if best is not None and best.result.fitness_mode:
            latency = best.result.latency(best.result.fitness_mode)
        slots = max(len(self.executor.slot_names), 1)
        remaining = max(self.config.generations - self.completed - 1, 0)
        eta = remaining * (sum(batch_seconds) / len(batch_seconds)) / min(slots, max(remaining, 1)) \
            if batch_seconds and not reason else None
        throughput = self.executor.throughput()
        return Progress(
            generation=self.completed, evaluated=len(self.history),
            valid=sum(i.result.ok for i in self.history),
            best_fitness=best.fitness if best else 0.0, best_name=best.candidate.name if best else None,
            best_latency_us=latency, best_baseline=best.result.best_baseline if best else None,
            evals_per_min=60.0 * evaluated_now / elapsed, eta_s=eta, stop_reason=reason,
            slots=slots, queue=self.executor.queued(), in_flight=self.executor.in_flight(),
            evals_per_min_per_slot=60.0 * evaluated_now / elapsed / slots,
            idle_frac=throughput["idle_frac"],
            best_significant=bool(best and best.result.significant),
            best_claim=claims.claim(best.fitness, best.result.significant, self.is_pytorch_path(best)) if best else "",
        )
