"""``evoforge sweep``: the seed's attention sweep, done honestly (a task kind's ``variants``).

Every variant is a ModelNew source evaluated by the evaluator (its own worker process, fresh inputs,
a float32/float64 reference, guards, both timing modes). Each repeat is a fresh worker with fresh
seeds, so the spread across repeats is real. PyTorch's own paths (every SDPA backend, FlexAttention,
the 3-kernel path and its compiled form) are the baselines; a variant's fitness is the fastest
*other* baseline's latency divided by its own. Success (exit 0), as the seed defined it but with a
real baseline: some variant is correct in every repeat with fitness > 1 in every repeat — and, since
two names for the same kernel can differ by noise alone, with interquartile ranges that don't overlap
the best baseline's in every repeat.
"""

from __future__ import annotations

import datetime as _dt
import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evoforge import __version__
from evoforge.candidate import Candidate
from evoforge.evaluator import EvalConfig, EvalReport, Evaluator
from evoforge.task import TaskError, TaskSpec
from evoforge.tasks import kind_of

FITNESS_RULE = (
    "fitness = fastest correct baseline's median latency / the variant's median latency, in the fitness mode "
    "(graph on CUDA, eager on CPU); a baseline is never compared with itself; 0 if not correct. A win counts "
    "only if significant: the variant's third-quartile latency below the baseline's first quartile"
)
TIMING_METHOD = {
    "eager": "one Python call per rep, CUDA events, L2 flushed and device idle before each rep (launch cost "
             "included); on CPU: perf_counter_ns after flushing a buffer twice the L2 size",
    "graph": "one call captured in a CUDA graph, one replay per rep, L2 flushed before each replay "
             "(device time of one call from a cold L2)",
}


def select_variants(spec: TaskSpec, names: list[str] | None = None) -> list[Candidate]:
    every = kind_of(spec).variants(spec)
    if not every:  # a kind without a sweep: only the attention family has one today
        raise TaskError(f"{spec.origin}: the sweep needs a built-in attention task (see `evoforge tasks`)")
    if not names:
        return every
    known = {v.name: v for v in every}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise TaskError(f"unknown variant(s) {', '.join(unknown)} (known: {', '.join(known)})")
    return [known[n] for n in names]


@dataclass
class SweepOutcome:
    evidence: dict[str, Any]
    reports: list[EvalReport]

    @property
    def success(self) -> bool:
        return bool(self.evidence["success"])


def run_sweep(spec: TaskSpec, variants: list[Candidate], *, repeats: int, config: EvalConfig,
              progress: Callable[[str], None] | None = None) -> SweepOutcome:
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    say = progress or (lambda message: None)
    baselines = [v for v in variants if v.lineage.get("baseline")]
    others = [v for v in variants if not v.lineage.get("baseline")]
    reports = []
    for r in range(repeats):
        evaluator = Evaluator(spec, config, progress=lambda m, r=r: say(f"repeat {r + 1}/{repeats}: {m}"))
        reports.append(evaluator.evaluate(others, baselines))
    return SweepOutcome(evidence=build_evidence(spec, variants, reports, config), reports=reports)


def _spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def summarize_variant(variant: Candidate, reports: list[EvalReport]) -> dict[str, Any]:
    results = [rep.by_name()[variant.name] for rep in reports]
    modes = sorted({m for res in results for m in res.timing})
    latency = {m: [res.timing[m].median_us if m in res.timing else None for res in results] for m in modes}
    errors = [res.max_abs_err for res in results if res.max_abs_err is not None]
    fitness = [res.fitness for res in results]
    correct_all = all(res.ok for res in results)
    return {
        "name": variant.name,
        "description": variant.lineage.get("description", ""),
        "baseline": bool(variant.lineage.get("baseline")),
        "labels": variant.labels,
        "hash": variant.hash,
        "statuses": [res.status for res in results],
        "details": [res.detail for res in results],
        "correct_all": correct_all,
        "max_abs_err": max(errors) if errors else None,
        "latency_us": latency,
        "iqr_us": {m: [res.timing[m].iqr_us if m in res.timing else None for res in results] for m in modes},
        "latency_spread_us": {m: _spread([x for x in v if x is not None]) for m, v in latency.items()},
        "fitness": fitness,
        "fitness_mode": [res.fitness_mode for res in results],
        "fitness_spread": _spread(fitness),
        "best_baseline": [res.best_baseline for res in results],
        "significant": [res.significant for res in results],
        "faster_than_all_baselines": correct_all and all(f > 1.0 for f in fitness)
        and all(res.significant for res in results),
    }


def build_evidence(spec: TaskSpec, variants: list[Candidate], reports: list[EvalReport],
                   config: EvalConfig) -> dict[str, Any]:
    rows = [summarize_variant(v, reports) for v in variants]
    winners = [row for row in rows if row["faster_than_all_baselines"]]
    ranked = sorted(rows, key=lambda row: -(row["fitness_spread"] or {"median": 0})["median"])
    best = ranked[0]["name"] if ranked and (ranked[0]["fitness_spread"] or {}).get("median", 0) > 0 else None
    return {
        "tool": "evoforge",
        "version": __version__,
        "kind": "sweep",
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "task": {"name": spec.name, "origin": spec.origin, "params": spec.params},
        "device": reports[0].env if reports else {},
        "repeats": len(reports),
        "config": {**config.worker_view(), "timing": config.timing.to_dict()},
        "fitness_rule": FITNESS_RULE,
        "timing_method": TIMING_METHOD,
        "variants": rows,
        "best": best,
        "winners": [row["name"] for row in winners],
        "success": bool(winners),
        "runs": [rep.to_dict() for rep in reports],
    }


def write_evidence(evidence: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(evidence, indent=2, default=str))
    tmp.replace(path)  # atomic: a crash never leaves half a file
    return path
