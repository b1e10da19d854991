"""Evaluate these sources: kernel sources through evoforge's evaluator (the judge, one fresh worker per entry,
correctness checks, eager and graph timing) beside chosen PyTorch baselines, one evaluation per repeat.

This is the public function the benchmarks are built on: ``evoforge bench retime`` and the suite's re-time give it
an exported kernel's candidate, the experiments give it edited or prototype sources. ``evaluate_sources`` returns
the evaluator's own reports; ``retime_record`` condenses them into the record the suite and ``retime`` write
(statuses, fitness, latencies and every baseline's latency per repeat); ``time_sources`` and ``print_rows`` keep
the experiments' older row form (status, graph us, eager us, max abs err, detail) beside SDPA's three backends.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from evoforge.candidate import Candidate
from evoforge.evaluator import EvalConfig, EvalReport, Evaluator
from evoforge.evolve import resolve_device
from evoforge.resolve import resolve_task
from evoforge.task import TaskSpec
from evoforge.tasks import baselines_for

Row = tuple[str, float | None, float | None, float | None, str]  # status, graph us, eager us, max abs err, detail
SDPA_BACKENDS = ("sdpa_default", "sdpa_cudnn", "sdpa_flash")


def choose_baselines(spec: TaskSpec, device: str, names: Iterable[str] | None = None) -> list[Candidate]:
    """The task's baselines on ``device`` (every one with ``names`` None), or those named, in the task's order;
    a name the task does not offer there is a ValueError that lists the ones it does."""
    every = baselines_for(spec, device)
    if names is None:
        return every
    wanted = [n for n in names if n]
    unknown = sorted(set(wanted) - {b.name for b in every})
    if unknown:
        raise ValueError(f"no baseline {', '.join(unknown)} for {spec.name} on {device} "
                         f"(offered: {', '.join(b.name for b in every)})")
    return [b for b in every if b.name in wanted]


def stderr_progress(label: str = "", stream: Any = None) -> Callable[[str], None]:
    """A progress printer for long evaluations: each evaluator step on ``stream`` (stderr), with the seconds since
    the printer was made (a re-time of a long attention row takes minutes, and says what it is doing meanwhile)."""
    started = time.monotonic()

    def show(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {label}{message}", file=stream or sys.stderr, flush=True)

    return show


def evaluate_sources(task: str | TaskSpec, sources: dict[str, str] | list[Candidate], *,
                     baselines: Iterable[str] | None = None, repeats: int = 1,
                     config: EvalConfig | None = None, language: str = "triton",
                     progress: Callable[[str], None] | None = None) -> list[EvalReport]:
    """One evaluation per repeat of ``sources`` (name -> source, or candidates) beside the task's baselines
    (``baselines``: their names; None: every one on the device), each in fresh candidate workers. ``config``
    defaults to the evaluator's own (device ``auto``). ``progress`` gets the evaluator's steps, each prefixed
    with its repeat ("re-time 2/3: ..."), and a line as each repeat ends."""
    spec = resolve_task(task) if isinstance(task, str) else task
    config = config or EvalConfig()
    device = resolve_device(config.device)
    if config.device != device:
        config = dataclasses.replace(config, device=device)
    cands = sources if isinstance(sources, list) else [
        Candidate(name=n, source=s, language=language) for n, s in sources.items()]
    chosen = choose_baselines(spec, device, baselines)
    reports = []
    for i in range(repeats):
        step = None
        if progress is not None:
            def step(message: str, i: int = i) -> None:
                progress(f"re-time {i + 1}/{repeats}: {message}")

            step(f"{len(cands)} source(s) beside {len(chosen)} baseline(s), in fresh workers")
        started = time.monotonic()
        reports.append(Evaluator(spec, config, step).evaluate(cands, chosen))
        if step is not None:
            step(f"done in {time.monotonic() - started:.1f} s")
    return reports


def retime_record(reports: list[EvalReport], candidate: str = "evolved") -> dict[str, Any]:
    """A re-time's record from its reports: per repeat the candidate's status, fitness, its baseline and
    latencies, its speedup over each baseline, every baseline's median latency per mode, why each baseline
    that has no latency failed (its status and the start of its detail), and the evaluator's time profile
    (seconds per stage: where a slow re-time went)."""
    dicts = [r.to_dict() for r in reports]
    evolved = [next(x for x in d["results"] if x["name"] == candidate) for d in dicts]
    return {
        "statuses": [e["status"] for e in evolved],
        "fitness": [e["fitness"] for e in evolved],
        "fitness_mode": [e.get("fitness_mode") for e in evolved],
        "significant": [e.get("significant") for e in evolved],
        "best_baseline": [e["best_baseline"] for e in evolved],
        "latency_us": {m: [((e.get("timing") or {}).get(m) or {}).get("median_us") for e in evolved]
                       for m in ("eager", "graph")},
        "speedup_vs_each_baseline": [e["speedup"] for e in evolved],
        "baselines_us": [{r["name"]: {m: s["median_us"] for m, s in (r.get("timing") or {}).items()
                                      if isinstance(s, dict)} for r in d["results"] if r["name"] != candidate}
                         for d in dicts],
        "baselines_failed": [{r["name"]: f"{r['status']}: {(r.get('detail') or '')[:300]}" for r in d["results"]
                              if r["name"] != candidate and r["status"] != "ok"} for d in dicts],
        "profile": [d.get("profile") or {} for d in dicts],
    }


def rows(reports: list[EvalReport]) -> dict[str, list[Row]]:
    """Per entry name, one row per report: status, graph and eager medians, max abs error, detail."""
    out: dict[str, list[Row]] = {}
    for report in reports:
        for r in report.to_dict()["results"]:
            t = r.get("timing") or {}
            out.setdefault(r["name"], []).append(
                (r["status"], (t.get("graph") or {}).get("median_us"), (t.get("eager") or {}).get("median_us"),
                 r.get("max_abs_err"), (r.get("detail") or "")[:300]))
    return out


def time_sources(spec: TaskSpec, sources: dict[str, str], repeats: int,
                 device: str = "cuda") -> tuple[dict[str, Any], dict[str, list[Row]]]:
    """The last repeat's environment and, per name (the sources' and SDPA's default, cuDNN and flash
    baselines), one row per repeat."""
    offered = {b.name for b in baselines_for(spec, device)}
    reports = evaluate_sources(spec, sources, baselines=[n for n in SDPA_BACKENDS if n in offered],
                               repeats=repeats, config=EvalConfig(device=device))
    return reports[-1].env, rows(reports)


def print_rows(rows: dict[str, list[Row]], width: int = 15) -> None:
    for name, reps in rows.items():
        print(f"{name:{width}}", " | ".join(f"{s} graph={g and round(g, 2)} eager={e and round(e, 1)} "
                                            f"err={m and round(m, 5)} {d}" for s, g, e, m, d in reps))
