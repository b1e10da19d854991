"""Multi-shape tasks: one kernel judged on every shape a model runs.

A multi-shape task is written as its shapes joined by ``;`` (``attention:seq_len=512;attention-long``),
optionally with ``floor=X`` as one more part. It is a :class:`TaskSpec` whose ``params`` are the first
shape's (so its kind, ``evoforge.tasks.kind_of``, is the first shape's, and mutators that read the head size,
causality or dtype see them) plus ``shapes`` (every shape's spec) and ``floor``: a wrapper, not a task kind.
The evaluator checks and times each shape in a worker of its own, with the same candidates and baselines,
and :func:`evoforge.fitness.combine` folds the per-shape reports into one:

- a candidate is correct only if it is correct on every shape (else it carries the first failing
  shape's status and detail, prefixed with that shape);
- fitness = the geometric mean of its per-shape fitnesses, and 0 if any shape's fitness is below the
  floor (so no shape a model runs gets much slower than PyTorch); per-shape numbers are kept in
  ``EvalResult.shapes``;
- timings shown elsewhere (latency, IQR) are the first shape's.
"""

from __future__ import annotations

from evoforge.task import TaskError, TaskSpec
from evoforge.tasks import baselines_for, kind_of


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
    """One task over several shapes of the same operation, of one kind. Its shapes must share what a candidate's
    source is specialised for (the kind's ``shares``: an attention task's head size, causality and dtype) and
    PyTorch's baselines, since the same candidates and baselines are evaluated on each."""
    if len(specs) < 2:
        raise TaskError(f"task {arg!r}: a multi-shape task needs at least two shapes")
    if any(is_multi(s) for s in specs):
        raise TaskError(f"task {arg!r}: shapes cannot be nested")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise TaskError(f"task {arg!r}: a shape is listed twice ({', '.join(names)})")
    kind = kind_of(specs[0])
    for spec in specs[1:]:
        if kind_of(spec) is not kind:
            raise TaskError(f"task {arg!r}: {specs[0].name} and {spec.name} are different kinds of task")
        if (why := kind.shares(specs[0], spec)) is not None:
            raise TaskError(f"task {arg!r}: {why}")
        ours = [(b.name, b.source) for b in baselines_for(specs[0])]
        if [(b.name, b.source) for b in baselines_for(spec)] != ours:
            raise TaskError(f"task {arg!r}: {specs[0].name} and {spec.name} need different PyTorch baselines "
                            "(for attention: give every shape the same grouped-query layout)")
    joined = "+".join(names)
    name = joined if len(joined) <= 80 else f"{names[0]}+{len(names) - 1}-more"
    return TaskSpec(name=name, source=specs[0].source, origin=f"multi:{arg}",
                    params={**specs[0].params, "shapes": [s.to_dict() for s in specs], "floor": floor})


