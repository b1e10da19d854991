"""Multi-shape tasks: one kernel judged on every shape a model runs.

A multi-shape task is written as its shapes joined by ``;`` (``attention:seq_len=512;attention-long``),
optionally with ``floor=X`` as one more part. It is a :class:`TaskSpec` whose ``params`` are the first
shape's (so mutators that read the head size, causality or dtype see them) plus ``shapes`` (every shape's
spec) and ``floor``. The evaluator checks and times each shape in a worker of its own, with the same
candidates and baselines, and :func:`combine` folds the per-shape reports into one:

- a candidate is correct only if it is correct on every shape (else it carries the first failing
  shape's status and detail, prefixed with that shape);
- fitness = the geometric mean of its per-shape fitnesses, and 0 if any shape's fitness is below the
  floor (so no shape a model runs gets much slower than PyTorch); per-shape numbers are kept in
  ``EvalResult.shapes``;
- timings shown elsewhere (latency, IQR) are the first shape's.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from evoforge.batch import geomean
from evoforge.task import TaskError, TaskSpec

if TYPE_CHECKING:  # evoforge.evaluator imports this module
    from evoforge.evaluator.result import EvalResult


def is_multi(spec: TaskSpec) -> bool:
    return bool(spec.params.get("shapes"))


def shape_specs(spec: TaskSpec) -> list[TaskSpec]:
    """The per-shape specs of a multi-shape task ([spec] for any other)."""
    return [TaskSpec.from_dict(s) for s in spec.params["shapes"]] if is_multi(spec) else [spec]


def parse_floor(part: str) -> float | None:
    """``floor=X`` as a part of a multi-shape task, else None."""
    key, sep, value = part.partition("=")
    if not sep or key.strip() != "floor":
        return None
    try:
        floor = float(value)
    except ValueError:
        raise TaskError(f"floor must be a number, got {value.strip()!r}") from None
    if not 0.0 <= floor < 100.0:
        raise TaskError(f"floor must be between 0 and 100, got {floor:g}")
    return floor


def multi_shape_task(arg: str, specs: list[TaskSpec], floor: float = 0.0) -> TaskSpec:
    """One task over several shapes of the same operation. Its shapes must share what a candidate's
    source is specialised for (an attention task's head size, causality and dtype) and PyTorch's
    baselines, since the same candidates and baselines are evaluated on each."""
    from evoforge.tasks import attention_params, baselines_for

    if len(specs) < 2:
        raise TaskError(f"task {arg!r}: a multi-shape task needs at least two shapes")
    if any(is_multi(s) for s in specs):
        raise TaskError(f"task {arg!r}: shapes cannot be nested")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise TaskError(f"task {arg!r}: a shape is listed twice ({', '.join(names)})")
    first = attention_params(specs[0])
    for spec in specs[1:]:
        params = attention_params(spec)
        if (first is None) != (params is None):
            raise TaskError(f"task {arg!r}: {specs[0].name} and {spec.name} are different kinds of task")
        if first is not None and params is not None:
            for attr in ("head_dim", "causal", "dtype"):
                if getattr(first, attr) != getattr(params, attr):
                    raise TaskError(f"task {arg!r}: every shape must share {attr} ({specs[0].name}: "
                                    f"{getattr(first, attr)}, {spec.name}: {getattr(params, attr)}); "
                                    "the kernel is specialised for it")
        ours = [(b.name, b.source) for b in baselines_for(specs[0])]
        if [(b.name, b.source) for b in baselines_for(spec)] != ours:
            raise TaskError(f"task {arg!r}: {specs[0].name} and {spec.name} need different PyTorch baselines "
                            "(for attention: give every shape the same grouped-query layout)")
    joined = "+".join(names)
    name = joined if len(joined) <= 80 else f"{names[0]}+{len(names) - 1}-more"
    return TaskSpec(name=name, source=specs[0].source, origin=f"multi:{arg}",
                    params={**specs[0].params, "shapes": [s.to_dict() for s in specs], "floor": floor})


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
