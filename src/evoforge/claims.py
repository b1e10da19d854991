"""What a run may claim about a candidate: faster than PyTorch only beyond noise, and never for PyTorch itself.

Every place that states a speedup (the console's ``best:`` line, report.html, the plots, a batch's fast_p,
an exported module's docstring) words it through :func:`claim`, so they agree:

* a candidate is *faster* only when the evaluator marked its win ``significant`` (its third-quartile latency
  below the best baseline's first quartile, the rule the sweep uses); a fitness above 1 without it is
  "not significant";
* an *unchanged PyTorch path* (a torch-language candidate whose source is a baseline's, or one of the
  template mutator's PyTorch backend variants, genome ``kind: torch``) re-measures PyTorch: it is never
  crowned the run's evolved best, whatever its fitness. The scoring leaves a baseline with the candidate's
  own source out of its comparison, so such a candidate is ranked against the *other* PyTorch paths, and a
  noisy round can put it above 1.

The run's own decisions follow the same rule: ``--target`` and ``--plateau`` read :func:`claimed_fitness`,
so neither a noisy round nor a re-measured PyTorch path ends a run at its target or keeps it off a plateau.
Selection still ranks by raw fitness (a parent is a parent, noise or not).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")

PYTORCH_PATH = "an unchanged PyTorch path, not an evolved kernel"


def is_pytorch_path(language: str | None, source_hash: str, genome: dict[str, Any] | None,
                    baseline_hashes: Iterable[str]) -> bool:
    """True for a candidate that only re-measures PyTorch: torch-language and a baseline's source, or a
    PyTorch backend variant (the template mutator's ``{"kind": "torch"}`` genome)."""
    if language not in (None, "", "torch"):
        return False
    if genome and genome.get("kind") == "torch":
        return True
    return source_hash in set(baseline_hashes)


def claim(fitness: float, significant: bool, pytorch_path: bool = False) -> str:
    """One phrase for a valid candidate's standing against the fastest baseline."""
    if pytorch_path:
        return PYTORCH_PATH
    if fitness > 1.0 and significant:
        return "faster, significant"
    if fitness > 1.0:
        return "not significant: the spreads overlap"
    return "not faster than PyTorch"


def beats_pytorch(fitness: float, significant: bool, pytorch_path: bool = False) -> bool:
    """Whether a speedup may be counted as a win (fast_p, a headline)."""
    return fitness > 1.0 and significant and not pytorch_path


def claimed_fitness(fitness: float, significant: bool, pytorch_path: bool = False) -> float:
    """The fitness a run may claim for a valid candidate, what its stop criteria read: its own where
    :func:`claim` would back it; 1.0 (PyTorch's speed) for a win above 1 that is not beyond noise; 0 for an
    unchanged PyTorch path, whose speed is PyTorch's, not the run's."""
    if pytorch_path:
        return 0.0
    if fitness > 1.0 and not significant:
        return 1.0
    return fitness


def crown(items: Iterable[T], fitness: Callable[[T], float], pytorch_path: Callable[[T], bool]) -> T | None:
    """The item to name as a run's best: the fittest evolved one; a PyTorch path only when nothing else is."""
    return max(items, key=lambda i: (not pytorch_path(i), fitness(i)), default=None)
