"""The mutator interface: the search loop only ever talks to this.

- ``Mutator``: the contract (``seed()`` gives generation 0, ``propose(parents, history, n)`` new candidates
  with their lineage, randomness only from the loop's ``rng``, ``stop_reason`` to end the run, progress
  messages through ``set_progress``); see the class for the full contract.
- ``GenomeMutator``: a mutator over genomes (plain dicts): ``build``, ``mutate`` and ``crossover`` one genome,
  and the shared proposal loop ``breed``.

Mutators read the population as :class:`~evoforge.results.Individual` (a neutral result type, re-exported
here) and return :class:`~evoforge.candidate.Candidate`; ``search`` drives them, ``registry.MUTATORS`` names them.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from evoforge.candidate import Candidate
from evoforge.results import Individual  # what mutators read; re-exported here for code that takes it from here

__all__ = ["GenomeMutator", "Individual", "Mutator"]


class Mutator(ABC):
    """Proposes candidates. Contract:

    - ``seed()`` returns generation 0;
    - ``propose(parents, history, n)`` returns up to ``n`` new candidates, each with its lineage
      (``parents`` as hashes, ``mutation``, ``level``, ``mutator``; the loop adds ``generation``);
    - randomness comes only from the ``rng`` the loop hands over, so a run replays exactly and
      resumes from its saved RNG state;
    - a mutator may return fewer than ``n`` (its space is exhausted); it never raises for that;
    - a mutator that must stop the run (a spent budget) returns nothing and sets ``stop_reason``;
    - ``propose_calls`` bounds how often the loop asks again to fill a generation with new candidates
      (low where each call costs money).
    """

    name: str = "base"
    propose_calls: int = 20

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.stop_reason: str | None = None
        self.note: str | None = None  # why the last proposal came up short, for the stop message
        self.progress: Callable[[str], None] = lambda message: None

    def set_progress(self, progress: Callable[[str], None]) -> None:
        """Where to say what a slow proposal is doing (the live view)."""
        self.progress = progress

    def begin_generation(self, generation: int) -> None:  # noqa: B027 (optional hook)
        """Called before the proposals of ``generation`` are asked for."""

    @abstractmethod
    def seed(self) -> list[Candidate]: ...

    @abstractmethod
    def propose(self, parents: list[Individual], history: list[Individual], n: int) -> list[Candidate]: ...


class GenomeMutator(Mutator):
    """A mutator over genomes (plain dicts): it builds a candidate from a genome, mutates one genome and
    crosses two. ``breed`` is the proposal loop the built-in mutators share."""

    crossover_rate: float = 0.2

    @abstractmethod
    def build(self, genome: dict[str, Any], lineage: dict[str, Any]) -> Candidate: ...

    @abstractmethod
    def mutate(self, genome: dict[str, Any]) -> tuple[dict[str, Any], str, str]:
        """One mutation of ``genome``: (new genome, description, level)."""

    @abstractmethod
    def crossover(self, a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]: ...

    def breed(self, n: int, seen: set[str], crossable: list[Individual], parents: list[Individual],
              base_of: Callable[[Individual], dict[str, Any]],
              admit: Callable[[dict[str, Any]], bool] = lambda genome: True,
              pick: Callable[[list[Individual]], Individual] | None = None) -> list[Candidate]:
        """Up to ``n`` candidates whose hashes are not in ``seen`` (which it extends): each a crossover of
        two ``crossable`` individuals (at ``crossover_rate``, when there are two) or a mutation of
        ``base_of`` one of ``parents`` (chosen by ``pick``, uniformly by default); genomes ``admit`` refuses
        are dropped. Gives up after 50 tries per candidate."""
        pick = pick or self.rng.choice
        out: list[Candidate] = []
        attempts = 0
        while len(out) < n and attempts < 50 * n:
            attempts += 1
            if len(crossable) >= 2 and self.rng.random() < self.crossover_rate:
                a, b = self.rng.sample(crossable, 2)
                genome = self.crossover(a.candidate.genome or {}, b.candidate.genome or {})
                lineage = {"parents": [a.candidate.hash, b.candidate.hash], "mutation": "crossover",
                           "level": "crossover"}
            else:
                parent = pick(parents)
                genome, description, level = self.mutate(base_of(parent))
                lineage = {"parents": [parent.candidate.hash], "mutation": description, "level": level}
            if not admit(genome):
                continue
            cand = self.build(genome, lineage)
            if cand.hash in seen:
                continue
            seen.add(cand.hash)
            out.append(cand)
        return out
