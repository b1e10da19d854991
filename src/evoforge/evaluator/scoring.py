"""Fitness: the fastest baseline's latency over the entry's, in one timing mode for the whole ranking."""

from __future__ import annotations

from evoforge.evaluator.result import EvalResult


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
