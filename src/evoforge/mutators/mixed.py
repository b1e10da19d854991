"""Several mutators in one run, each proposing its share of every generation.

``MixedMutator(rng, parts)`` takes (mutator, share) pairs: each proposal slot goes to a part drawn with the
loop's RNG by share, generation 0 is every part's seed (deduplicated), and when one part must stop the run
(the LLM's budget is spent) the whole run stops. ``evolve`` builds it for ``--mutator mixed`` (the built-in
mutator plus the LLM, ``--llm-share``).
"""

from __future__ import annotations

import random
from collections.abc import Callable

from evoforge.candidate import Candidate
from evoforge.mutators.base import Mutator
from evoforge.results import Individual


class MixedMutator(Mutator):
    """``parts`` are (mutator, share) pairs. Each proposal slot goes to a part drawn with the
    loop's RNG by share; generation 0 is every part's seed, deduplicated. When one part must stop
    the run (the LLM's budget is spent), the run stops: a budget means the run's budget."""

    name = "mixed"

    def __init__(self, rng: random.Random, parts: list[tuple[Mutator, float]]) -> None:
        super().__init__(rng)
        self.parts = [(m, s) for m, s in parts if s > 0]
        if not self.parts:
            raise ValueError("a mixed mutator needs at least one part with a positive share")
        self.propose_calls = min(m.propose_calls for m, _ in self.parts)

    def set_progress(self, progress: Callable[[str], None]) -> None:
        super().set_progress(progress)
        for part, _ in self.parts:
            part.set_progress(progress)

    def begin_generation(self, generation: int) -> None:
        for part, _ in self.parts:
            part.begin_generation(generation)

    def _collect_stop(self) -> None:
        for part, _ in self.parts:
            if part.stop_reason and not self.stop_reason:
                self.stop_reason = f"{part.name}: {part.stop_reason}"

    def seed(self) -> list[Candidate]:
        out: dict[str, Candidate] = {}
        for part, _ in self.parts:
            for cand in part.seed():
                out.setdefault(cand.hash, cand)
        self._collect_stop()
        return list(out.values())

    def propose(self, parents: list[Individual], history: list[Individual], n: int) -> list[Candidate]:
        counts = [0] * len(self.parts)
        for _ in range(n):
            counts[self.rng.choices(range(len(self.parts)), weights=[s for _, s in self.parts])[0]] += 1
        out: list[Candidate] = []
        for (part, _), k in zip(self.parts, counts, strict=True):
            if k:
                out += part.propose(parents, history, k)
        self._collect_stop()
        self.note = "; ".join(f"{p.name}: {p.note}" for p, _ in self.parts if p.note) or None
        return out
