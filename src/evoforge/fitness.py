"""Fitness, in one place: how a ranking's mode is chosen, how an entry is scored against the baselines
timed beside it, how a multi-shape task folds its shapes into one number, and which baselines a search keeps
timing. Everything that turns latencies into the number the search selects on lives here; it reads results
(:class:`evoforge.results.EvalResult`) and imports nothing else of the package.

- :func:`fitness_mode`: the configured mode, else graph on CUDA (the device's time) and eager elsewhere;
  every entry of one ranking is ranked in that one mode.
- :func:`score`: speedup over every baseline; fitness = the fastest correct baseline's median latency over
  the entry's (a baseline is never compared with itself); ``significant`` when the win clears noise.
- :func:`combine`: a multi-shape task's result per entry: correct only if correct on every shape,
  fitness the geometric mean of the shapes' (0 if one is below the floor).
- :func:`fastest_baselines`: the baselines the next batches are timed beside.
- :func:`geomean`: the geometric mean the batch summary and the shapes use.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from evoforge.results import EvalResult


def geomean(speedups: list[float | None]) -> float | None:
    """Geometric mean over the values that are there and positive (None when there is none)."""
    xs = [s for s in speedups if s is not None and s > 0]
    if not xs:
        return None
    return math.exp(sum(math.log(s) for s in xs) / len(xs))


def fitness_mode(preferred: str | None, device_type: str | None, modes: tuple[str, ...]) -> str:
    """The mode a ranking uses: the configured one, else graph on CUDA (the device's time) and eager
    elsewhere."""
    if preferred:
        return preferred
    return "graph" if device_type == "cuda" and "graph" in modes else "eager"


def score(results: list[EvalResult], mode: str) -> None:
    """Speedups against every baseline, and fitness = fastest baseline / candidate latency in ``mode``.

    Every entry of one ranking is ranked in the same mode: a candidate with no timing in ``mode``
    (say, its graph capture failed) is not ranked by another mode's number; it gets a runtime_error
    that says why, and fitness 0. A baseline with the same source hash as the entry is left out of the
    entry's own comparison (so a PyTorch path measured as a candidate is compared with the *other*
    paths). ``significant`` marks a win whose interquartile range clears the best baseline's.
    """
    for r in results:
        if r.ok and r.role == "candidate" and mode not in r.timing:
            why = r.timing_errors.get(mode, "not timed")
            r.status = "runtime_error"
            r.detail = f"could not be timed in {mode} mode, the mode this run ranks by: {why}"
            r.timing = {}
    baselines = [r for r in results if r.role == "baseline" and r.ok]
    for r in results:
        r.speedup = {}
        for m, stats in r.timing.items():
            r.speedup[m] = {
                b.name: b.timing[m].median_us / stats.median_us
                for b in baselines if b.hash != r.hash and m in b.timing and stats.median_us > 0
            }
        r.significant = False
        if not r.ok or mode not in r.timing:
            r.fitness, r.fitness_mode, r.best_baseline = 0.0, (mode if r.ok else None), None
            continue
        ratios = r.speedup.get(mode, {})
        r.fitness_mode = mode
        if ratios:
            r.best_baseline = min(ratios, key=ratios.__getitem__)
            r.fitness = ratios[r.best_baseline]
            best = next(b for b in baselines if b.name == r.best_baseline)
            r.significant = r.fitness > 1.0 and r.timing[mode].q3_us < best.timing[mode].q1_us
        else:
            r.best_baseline, r.fitness = None, 0.0


def fastest_baselines(baselines: list[EvalResult], mode: str, keep: int) -> list[str]:
    """The names of the ``keep`` fastest correct baselines in ``mode``: the ones a search keeps timing."""
    ranked = sorted((b for b in baselines if b.ok), key=lambda b: b.latency(mode) or math.inf)
    return [b.name for b in ranked[:keep]]


def _geomean(values: list[float]) -> float:
    """The geometric mean, 0 when any value is 0 (a shape without a speedup sinks the whole)."""
    return 0.0 if not values or min(values) <= 0 else geomean(values) or 0.0


def combine(per_shape: list[list[EvalResult]], shape_names: list[str], floor: float) -> list[EvalResult]:
    """Fold per-shape results (same entries in the same order on every shape) into one result per entry."""
    combined = []
    for i, first in enumerate(per_shape[0]):
        rs = [results[i] for results in per_shape]
        summary = [{"task": name, "status": r.status, "fitness": r.fitness, "best_baseline": r.best_baseline,
                    "latency_us": {m: t.median_us for m, t in r.timing.items()},
                    **({"detail": r.detail} if r.detail else {})} for name, r in zip(shape_names, rs, strict=True)]
        checks = [replace(c, case=f"{name}: {c.case}")
                  for name, r in zip(shape_names, rs, strict=True) for c in r.checks]
        errs = [r.max_abs_err for r in rs if r.max_abs_err is not None]
        rels = [r.max_rel_err for r in rs if r.max_rel_err is not None]
        out = replace(first, checks=checks, shapes=summary, seconds=sum(r.seconds for r in rs),
                      max_abs_err=max(errs) if errs else None, max_rel_err=max(rels) if rels else None,
                      logs="\n".join(f"[{name}] {r.logs}" for name, r in zip(shape_names, rs, strict=True) if r.logs))
        failed = next(((name, r) for name, r in zip(shape_names, rs, strict=True) if not r.ok), None)
        if failed is not None:
            name, r = failed
            out = replace(out, status=r.status, detail=f"shape {name}: {r.detail}", fitness=0.0, significant=False)
            combined.append(out)
            continue
        speedup: dict[str, dict[str, float]] = {}
        for mode in first.speedup:
            common = set.intersection(*(set(r.speedup.get(mode, {})) for r in rs))
            speedup[mode] = {b: _geomean([r.speedup[mode][b] for r in rs]) for b in sorted(common)}
        fitness = _geomean([r.fitness for r in rs])
        detail = first.detail
        low = [(name, r.fitness) for name, r in zip(shape_names, rs, strict=True) if r.fitness < floor]
        if low and first.role == "candidate":
            fitness = 0.0
            detail = "below the floor of {:g}x on {}".format(floor, ", ".join(f"{n} ({f:.2f}x)" for n, f in low))
        best: Any = Counter(r.best_baseline for r in rs if r.best_baseline).most_common(1)
        combined.append(replace(out, speedup=speedup, fitness=fitness, detail=detail,
                                significant=fitness > 1.0 and all(r.significant for r in rs),
                                best_baseline=best[0][0] if best else None))
    return combined
