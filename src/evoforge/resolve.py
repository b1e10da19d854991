"""The ``--task`` argument, resolved to a :class:`~evoforge.task.TaskSpec`: the one place that knows every kind of
task a user can name. It sits above the kinds it dispatches to, which never import it:

- a name that a task kind resolves (``registry.TASK_KINDS``, asked in turn by :func:`evoforge.tasks.task_kinds`):
  a built-in attention name, with optional ``:key=value,...`` (:mod:`evoforge.tasks`), or a plugin kind's;
- a KernelBench-format ``.py`` file (the file kind, asked last: :func:`evoforge.task.task_from_file`);
- several of these joined by ``;``, with an optional ``floor=X`` part: a multi-shape task (:mod:`evoforge.shapes`);
- a ``.toml`` workload recorded by `evoforge capture`, ``FILE.toml:N`` for its class N (:mod:`evoforge.workload`).
"""

from __future__ import annotations

import re
from pathlib import Path

from evoforge.shapes import multi_shape_task, parse_floor
from evoforge.task import TaskError, TaskSpec
from evoforge.tasks import task_kinds
from evoforge.workload import task_from_capture


def resolve_task(arg: str) -> TaskSpec:
    """A task from the command line: a built-in name (with optional ``:key=value,...``) or a file path;
    several of them joined by ``;`` (with an optional ``floor=X`` part) make a multi-shape task
    (:mod:`evoforge.shapes`); a ``.toml`` file (``FILE.toml:N`` for its class N) is a workload recorded by
    `evoforge capture` (:mod:`evoforge.workload`)."""
    captured = re.fullmatch(r"(.+\.toml)(?::(\d+))?", arg.strip())
    if captured:  # a workload recorded by `evoforge capture` (evoforge.workload)
        return task_from_capture(Path(captured[1]), int(captured[2]) if captured[2] else None)
    if ";" in arg:
        shapes, floors = [], []
        for part in (p.strip() for p in arg.split(";")):
            floor = parse_floor(part) if part else None
            if floor is not None:
                floors.append(floor)
            elif part:
                shapes.append(resolve_task(part))
        if len(floors) > 1:
            raise TaskError(f"task {arg!r}: floor is given more than once")
        return multi_shape_task(arg, shapes, floors[0] if floors else 0.0)
    broken: list[str] = []
    kinds = task_kinds(broken)
    for kind in kinds:  # the built-in and plugin kinds' names, then a KernelBench file
        spec = kind.resolve(arg)
        if spec is not None:
            return spec
    names = [name for kind in kinds for name in kind.names()]
    raise TaskError(f"unknown task {arg!r}: not a built-in ({', '.join(names)}) and not a .py file"
                    + "".join(f"; {why}" for why in broken))
