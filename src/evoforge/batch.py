"""Batch runs: one evolution run per KernelBench-format problem in a folder, and their summary.

A problem's level is its ``LEVEL = N`` attribute where the file sets one (read without importing the
file), else the ``level<N>`` folder it sits in (KernelBench's layout, as in ``examples/problems/``),
else none (it is then only picked when no ``--level`` is asked for).

The summary uses the field's measures (KernelBench): ``fast_p`` is the fraction of *all* problems whose
best candidate is correct and more than ``p`` times faster than the reference; the geometric-mean
speedup is over the problems that have a correct candidate. Each is given against the task's Model in
eager mode (KernelBench's reference) and against the faster of eager and torch.compile (the fitness).

A speedup counts towards ``fast_p`` only when it is beyond noise (evoforge.claims): the candidate's
third-quartile latency below the baseline's first quartile, measured in the same batch. A problem whose
only valid candidate is an unchanged PyTorch path (the task's own Model re-measured, say) has no evolved
candidate: it counts as not fast and stays out of the geometric mean.
"""

from __future__ import annotations

import ast
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evoforge import claims
from evoforge.fitness import geomean
from evoforge.task import TaskError
from evoforge.tasks import COMPILED_BASELINE, EAGER_BASELINE

FAST_P = (1.0, 1.5)
_LEVEL_DIR = re.compile(r"level[_-]?(\d+)$", re.IGNORECASE)


def problem_level(path: Path) -> int | None:
    """``LEVEL = N`` in the file, else the nearest ``level<N>`` folder above it, else None."""
    try:
        tree = ast.parse(path.read_text())
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        tree = None
    for node in tree.body if tree else []:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "LEVEL" for t in node.targets):
            value = node.value
            if isinstance(value, ast.Constant) and isinstance(value.value, int) and not isinstance(value.value, bool):
                return value.value
    for parent in path.parents:
        if match := _LEVEL_DIR.fullmatch(parent.name):
            return int(match.group(1))
    return None


def discover(folder: Path, level: int | None = None) -> list[tuple[Path, int | None]]:
    """Problem files under ``folder`` (recursively, sorted), with their levels; only ``level`` if given."""
    if not folder.is_dir():
        raise TaskError(f"{folder}: no such folder of problems")
    found = []
    for path in sorted(folder.rglob("*.py")):
        if path.name.startswith("_") or any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue
        lvl = problem_level(path)
        if level is None or lvl == level:
            found.append((path, lvl))
    if not found:
        where = f" at level {level}" if level is not None else ""
        raise TaskError(f"{folder}: no problem files (*.py){where}")
    return found


def fast_p(speedups: list[float | None], p: float, significant: list[bool] | None = None) -> float:
    """The fraction of problems whose best candidate is correct (a speedup, not None) and faster than the
    reference by more than ``p`` (and, where ``significant`` is given, beyond noise). Problems without a
    correct candidate count in the denominator."""
    if not speedups:
        return 0.0
    sig = significant if significant is not None else [True] * len(speedups)
    return sum(1 for s, ok in zip(speedups, sig, strict=True) if s is not None and s > p and ok) / len(speedups)


@dataclass
class ProblemOutcome:
    """One problem's line in the summary."""

    problem: str
    path: str
    level: int | None
    status: str  # ok | no valid candidate | error
    run: str | None = None
    best: str | None = None
    vs_eager: float | None = None  # the best candidate's speedup over the task's Model, eager
    vs_compile: float | None = None  # ... over the Model under torch.compile
    fitness: float | None = None  # ... over the faster of the two (what the search maximised)
    fitness_mode: str | None = None
    significant: bool = False  # the fitness's win is beyond noise (its spread clears the best baseline's)
    significant_vs_eager: bool = False  # ... and the win over the task's Model in eager mode
    pytorch_path: bool = False  # the best valid candidate is an unchanged PyTorch path (no evolved one was valid)
    claim: str = ""  # evoforge.claims.claim: what the summary may say about the fitness
    evaluated: int = 0
    valid: int = 0
    detail: str = ""


def clears(result: Any, baseline: Any, mode: str | None) -> bool:
    """``result`` is faster than ``baseline`` beyond noise in ``mode``: its third quartile below the
    baseline's first (the rule of EvalResult.significant, against any one baseline)."""
    if not mode or baseline is None or mode not in result.timing or mode not in baseline.timing:
        return False
    return bool(result.timing[mode].q3_us < baseline.timing[mode].q1_us)


def outcome_from_result(result: Any, eager: Any = None, pytorch_path: bool = False) -> dict[str, Any]:
    """The speedups of a run's best candidate (an EvalResult) against the eager and compiled baselines;
    ``eager`` is the eager baseline's result from the same batch (for the significance of vs_eager)."""
    mode = result.fitness_mode
    ratios = result.speedup.get(mode, {}) if mode else {}
    return {"best": result.name, "vs_eager": ratios.get(EAGER_BASELINE), "vs_compile": ratios.get(COMPILED_BASELINE),
            "fitness": result.fitness, "fitness_mode": mode, "significant": result.significant,
            "significant_vs_eager": clears(result, eager, mode), "pytorch_path": pytorch_path,
            "claim": claims.claim(result.fitness, result.significant, pytorch_path)}


def crowned(evaluated: list[tuple[Any, int]], candidates: list[Any],
            baselines: list[tuple[Any, int]]) -> tuple[Any, Any, bool] | None:
    """A run's best for the summary, from its (result, generation) evaluations, its candidates and its
    (baseline, generation) evaluations: the fittest valid evolved candidate (an unchanged PyTorch path only
    when nothing else is valid), the eager baseline of the same batch, and whether it is a PyTorch path."""
    genomes = {c.hash: c.genome for c in candidates}
    base_hashes = {b.hash for b, _ in baselines}

    def torch_path(item: tuple[Any, int]) -> bool:
        return claims.is_pytorch_path(item[0].language, item[0].hash, genomes.get(item[0].hash), base_hashes)

    found = claims.crown([(r, g) for r, g in evaluated if r.ok], lambda item: item[0].fitness, torch_path)
    if found is None:
        return None
    eager = next((b for b, g in reversed(baselines) if g == found[1] and b.name == EAGER_BASELINE and b.ok), None)
    return found[0], eager, torch_path(found)


def baseline_failures(results: list[Any]) -> str:
    """Why a speedup column is empty: for each of a generic task's baselines (eager, torch.compile) that
    was evaluated but never valid in the run, its name, status and detail ("" when both were valid or
    the baseline was never evaluated). Without it, a baseline the evaluator refused is only a "-"."""
    notes = []
    for name in (EAGER_BASELINE, COMPILED_BASELINE):
        mine = [r for r in results if r.name == name]
        if mine and not any(r.ok for r in mine):
            last = mine[-1]
            notes.append(f"baseline {name} {last.status}" + (f": {last.detail[:200]}" if last.detail else ""))
    return "; ".join(notes)


@dataclass
class BatchSummary:
    problems: list[ProblemOutcome] = field(default_factory=list)

    def measures(self) -> dict[str, Any]:
        evolved = [p.status == "ok" and not p.pytorch_path for p in self.problems]
        eager = [p.vs_eager if ok else None for p, ok in zip(self.problems, evolved, strict=True)]
        best = [p.fitness if ok else None for p, ok in zip(self.problems, evolved, strict=True)]
        out: dict[str, Any] = {"problems": len(self.problems),
                               "correct": sum(p.status == "ok" for p in self.problems),
                               "evolved": sum(evolved)}
        for p in FAST_P:  # only wins beyond noise count
            out[f"fast_{p:g}_vs_eager"] = fast_p(eager, p, [q.significant_vs_eager for q in self.problems])
            out[f"fast_{p:g}_vs_best"] = fast_p(best, p, [q.significant for q in self.problems])
        out["geomean_vs_eager"] = geomean(eager)
        out["geomean_vs_best"] = geomean(best)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"summary": self.measures(), "problems": [asdict(p) for p in self.problems]}
