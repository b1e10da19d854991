"""The mutator interface: the search loop only ever talks to this."""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import dataclass

from evoforge.candidate import Candidate
from evoforge.evaluator.result import EvalResult


@dataclass
class Individual:
    """A candidate with its evaluation: what the population holds and mutators read."""

    candidate: Candidate
    result: EvalResult

    @property
    def fitness(self) -> float:
        return self.result.fitness if self.result.ok else 0.0


class Mutator(ABC):
    """Proposes candidates. Contract:

    - ``seed()`` returns generation 0;
    - ``propose(parents, history, n)`` returns up to ``n`` new candidates, each with its lineage
      (``parents`` as hashes, ``mutation``, ``level``, ``mutator``; the loop adds ``generation``);
    - randomness comes only from the ``rng`` the loop hands over, so a run replays exactly and
      resumes from its saved RNG state;
    - a mutator may return fewer than ``n`` (its space is exhausted); it never raises for that.
    """

    name: str = "base"

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    @abstractmethod
    def seed(self) -> list[Candidate]: ...

    @abstractmethod
    def propose(self, parents: list[Individual], history: list[Individual], n: int) -> list[Candidate]: ...
