"""The LLM mutator: EvoEngineer's two-layer traverse over any OpenAI-compatible model.

Each proposal is one request. The operation is picked with the loop's RNG: ``repair`` a recent
failed candidate (its source and error), ``crossover`` of two valid parents, ``mutate`` one parent,
or ``generate`` from scratch when there is nothing to build on. The solution-guiding layer
(:mod:`evoforge.llm.guide`) decides what the prompt carries (``free`` / ``insight`` / ``full``), the
prompt-engineering layer (:mod:`evoforge.llm.prompts`) how it is worded. Every prompt and reply is
handed to ``record`` (the run store's ``llm_calls``), with tokens, cost, latency, attempts and the
candidate it produced, or why it produced none.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from evoforge.candidate import Candidate
from evoforge.llm.client import Completion, LLMClient
from evoforge.llm.extract import extract
from evoforge.llm.guide import GUIDES, TaskContext, feedback, insights
from evoforge.llm.prompts import Prompts
from evoforge.mutators.base import Mutator
from evoforge.results import Individual

REPAIR_RATE = 0.25
CROSSOVER_RATE = 0.2
ELITES_SHOWN = 3
REPAIRABLE = ("compile_error", "runtime_error", "incorrect", "rejected", "timeout", "crashed")


def _unique_name(name: str, taken: set[str]) -> str:
    """``name``, or ``name-2``, ``name-3``, ... when another candidate of the run has it already."""
    if name not in taken:
        return name
    k = 2
    while f"{name}-{k}" in taken:
        k += 1
    return f"{name}-{k}"


def _summary(ind: Individual) -> str:
    r = ind.result
    mode = r.fitness_mode or next(iter(r.timing), "eager")
    latency = r.latency(mode)
    lat = f", {latency:.2f} µs ({mode})" if latency is not None else ""
    return f"{r.fitness:.2f}x the best PyTorch path ({r.best_baseline}){lat}"


class LLMMutator(Mutator):
    name = "llm"
    propose_calls = 2  # each call costs tokens: one retry to fill a generation, no more

    def __init__(self, rng: random.Random, client: LLMClient, prompts: Prompts, context: TaskContext,
                 guide: str = "full", record: Callable[[dict[str, Any]], None] | None = None,
                 seeds: list[Candidate] | None = None, seed_generations: int = 4) -> None:
        super().__init__(rng)
        if guide not in GUIDES:
            raise ValueError(f"guide must be one of {GUIDES}, got {guide!r}")
        self.client, self.prompts, self.context, self.guide = client, prompts, context, guide
        self.record = record or (lambda call: None)
        self.seeds = list(seeds or [])
        self.seed_generations = seed_generations
        self.generation = 0
        self.made: dict[str, str] = {}  # hash -> name of every candidate this mutator handed over

    def begin_generation(self, generation: int) -> None:
        self.generation = generation

    # ---------------------------------------------------------------- prompts
    def _values(self, history: list[Individual]) -> dict[str, Any]:
        values: dict[str, Any] = {"ctx": self.context, "guide": self.guide, "insights": [], "elites": []}
        if self.guide in ("insight", "full"):
            values["insights"] = [i.text for i in insights(history)]
        if self.guide == "full":
            ranked = sorted((i for i in history if i.result.ok and not i.candidate.lineage.get("baseline")),
                            key=lambda i: -i.fitness)[:ELITES_SHOWN]
            values["elites"] = [{"name": i.candidate.name, "summary": _summary(i), "source": i.candidate.source}
                                for i in ranked]
        return values

    @staticmethod
    def _parent(ind: Individual) -> dict[str, Any]:
        return {"name": ind.candidate.name, "source": ind.candidate.source, "hash": ind.candidate.hash,
                "feedback": feedback(ind)}

    def _plan(self, parents: list[Individual], history: list[Individual], n: int) -> list[tuple[str, list[Individual]]]:
        valid = [p for p in parents if p.result.ok]
        repaired = {h for i in history if i.candidate.lineage.get("mutation") == "repair"
                    for h in i.candidate.lineage.get("parents", [])}
        failures = [i for i in reversed(history)
                    if i.result.status in REPAIRABLE and i.candidate.lineage.get("mutator") == self.name
                    and i.candidate.hash not in repaired]
        plan: list[tuple[str, list[Individual]]] = []
        for _ in range(n):
            roll = self.rng.random()
            if failures and roll < REPAIR_RATE:
                plan.append(("repair", [failures.pop(0)]))
            elif len(valid) >= 2 and roll < REPAIR_RATE + CROSSOVER_RATE:
                plan.append(("crossover", self.rng.sample(valid, 2)))
            elif valid:
                plan.append(("mutate", [self.rng.choice(valid)]))
            else:
                plan.append(("generate", []))
        return plan

    def _messages(self, operation: str, picked: list[Individual], values: dict[str, Any]) -> list[dict[str, str]]:
        extra: dict[str, Any] = {}
        if operation == "mutate":
            extra["parent"] = self._parent(picked[0])
        elif operation == "crossover":
            extra["parents"] = [self._parent(p) for p in picked]
        elif operation == "repair":
            extra["failed"] = self._parent(picked[0])
        return self.prompts.messages(operation, **values, **extra)

    # ---------------------------------------------------------------- asking
    def _ask(self, plan: list[tuple[str, list[Individual]]], history: list[Individual]) -> list[Candidate]:
        reason = self.client.budget.exhausted()
        if reason:
            self.stop_reason = reason
            return []
        values = self._values(history)
        messages = [self._messages(op, picked, values) for op, picked in plan]
        requests = [(m, self.client.pick_model(self.rng)) for m in messages]
        ops = ", ".join(sorted({op for op, _ in plan}))
        self.progress(f"asking the LLM for {len(requests)} candidate(s) ({ops})")
        completions = self.client.complete_many(requests)
        known = {i.candidate.hash: i.candidate.name for i in history} | {c.hash: c.name for c in self.seeds}
        known |= self.made
        out: list[Candidate] = []
        duplicates = 0
        for (op, picked), prompt, done in zip(plan, messages, completions, strict=True):
            cand, found = self._candidate(op, picked, done)
            duplicate = cand is not None and cand.hash in known
            self._record(op, prompt, done, cand, found, duplicate)
            if cand is None or duplicate:
                duplicates += duplicate
                continue
            cand.name = _unique_name(cand.name, set(known.values()))
            known[cand.hash] = self.made[cand.hash] = cand.name
            out.append(cand)
        if out:
            self.note = None
        elif duplicates:
            self.note = (f"{duplicates} of its last {len(completions)} replies repeated a candidate it already had"
                         + ("" if duplicates == len(completions) else ", the others held no usable code"))
        else:
            self.note = f"its last {len(completions)} replies held no usable code"
        reason = self.client.budget.exhausted()
        if reason:
            self.stop_reason = reason
        elif completions and all(c.error for c in completions):
            self.stop_reason = f"every LLM request failed (last: {completions[-1].error})"
        return out

    def _candidate(self, op: str, picked: list[Individual], done: Completion) -> tuple[Candidate | None, Any]:
        """The candidate in ``done``'s reply (or None), and what extraction found."""
        if done.error:
            return None, None
        found = extract(done.text)
        if found.code is None:
            return None, found
        lineage = {"mutator": self.name, "mutation": op, "level": f"llm:{op}",
                   "parents": [p.candidate.hash for p in picked], "model": done.model, "guide": self.guide}
        if found.thought:
            lineage["thought"] = found.thought
        return Candidate(name=f"llm-{found.name or op}", source=found.code, lineage=lineage), found

    def _record(self, op: str, prompt: list[dict[str, str]], done: Completion, cand: Candidate | None,
                found: Any, duplicate: bool = False) -> None:
        """One call, with its status: ok, no_code, duplicate (the code of a candidate the run already has,
        by normalised-source hash: not proposed again), error, or budget."""
        if done.error:
            status = "budget" if done.attempts == 0 else "error"
        elif cand is None:
            status = "no_code"
        else:
            status = "duplicate" if duplicate else "ok"
        self.record({
            "generation": self.generation, "model": done.model, "guide": self.guide, "operation": op,
            "status": status, "prompt": prompt, "reply": done.text or None, "tokens_in": done.tokens_in,
            "tokens_out": done.tokens_out, "cost": done.cost, "latency_s": done.latency_s,
            "attempts": done.attempts, "error": done.error or (found.problem if found else None),
            "retried": done.retried, "candidate_hash": cand.hash if cand else None,
            "thought": found.thought if found else None,
        })

    # ---------------------------------------------------------------- the Mutator interface
    def seed(self) -> list[Candidate]:
        self.generation = 0
        plan: list[tuple[str, list[Individual]]] = [("generate", [])] * self.seed_generations
        return [*self.seeds, *self._ask(plan, [])]

    def propose(self, parents: list[Individual], history: list[Individual], n: int) -> list[Candidate]:
        if n <= 0:
            return []
        return self._ask(self._plan(parents, history, n), history)
