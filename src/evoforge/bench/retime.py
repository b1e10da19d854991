"""``evoforge bench retime``: one exported kernel re-timed in fresh evaluator workers beside a task's baselines,
as the suite does after each search (for a row whose re-time must be repeated on its own).

A guarded attention export is re-timed as the evolved candidate it carries (``entry``: a table's Nth kernel,
1-based), as its run evaluated it; the module's checks and fallback are not part of the timing (the export's own
cost is what ``benchmarks/export_overhead.py`` measures).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from evoforge.bench.sources import evaluate_sources, retime_record
from evoforge.candidate import Candidate
from evoforge.evaluator import EvalConfig
from evoforge.export import candidate_sources
from evoforge.resolve import resolve_task

RETIME_KEYS = ("statuses", "fitness", "best_baseline", "latency_us", "speedup_vs_each_baseline", "baselines_us",
               "baselines_failed", "profile")


def retime(task: str, kernel: Path, *, entry: int = 1, repeats: int = 3, baselines: Iterable[str] | None = None,
           config: EvalConfig | None = None, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The record of ``repeats`` evaluations of the kernel file's ``entry`` beside the task's baselines: the
    task's name, the file's name, the first evaluation's environment and the re-time (see retime_record)."""
    spec = resolve_task(task)
    sources = candidate_sources(kernel.read_text())
    if not 1 <= entry <= len(sources):
        raise ValueError(f"--entry {entry}: {kernel} carries {len(sources)} kernel(s)")
    cand = Candidate(name="evolved", source=sources[entry - 1])
    reports = evaluate_sources(spec, [cand], baselines=baselines, repeats=repeats, config=config,
                               progress=progress)
    record = retime_record(reports)
    return {"task": spec.name, "kernel": kernel.name, "device": reports[0].env,
            "retime": {k: record[k] for k in RETIME_KEYS}}


def summary_lines(record: dict[str, Any]) -> list[str]:
    """What the re-time prints: the fitness and latencies per repeat, then each repeat's baselines."""
    import json

    retime = record["retime"]
    lines = [f"{json.dumps(retime['fitness'])} {json.dumps(retime['latency_us'])}"]
    lines += [str({n: {m: round(v, 1) for m, v in t.items()} for n, t in b.items()}) for b in retime["baselines_us"]]
    lines += [f"baseline {name} failed: {why[:200]}" for failed in retime["baselines_failed"]
              for name, why in failed.items()]
    return lines
