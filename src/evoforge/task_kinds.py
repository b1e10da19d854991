"""What a kind of task answers, so that nothing downstream asks "is this attention?".

A task kind is an object registered in ``evoforge.registry.TASK_KINDS`` under its name (entry-point group
``evoforge.task_kinds``). It turns ``--task`` arguments into a :class:`~evoforge.task.TaskSpec` whose
``params["family"]`` is its name, and answers for every spec of that family (``evoforge.tasks.kind_of``):
its PyTorch baselines, the sweep's variants, the typed parameters that specialised mutators read, what two
shapes of a multi-shape task must share, and what an export of its best kernel looks like. A spec without a
family is a KernelBench-format file (:class:`FileKind`, also every kind's defaults); a multi-shape task is a
wrapper around the first shape's kind (:mod:`evoforge.shapes`). Adding one is one file::

    class Stencil(FileKind):
        name = "stencil"
        def names(self): return ["stencil"]
        def resolve(self, arg): return TaskSpec(..., params={"family": "stencil", ...}) if ... else None

    TASK_KINDS.register("stencil", Stencil())   # or [project.entry-points."evoforge.task_kinds"]

The built-in kinds (the attention family, the file task) live in :mod:`evoforge.tasks`; :mod:`evoforge.resolve`
asks every kind in turn, the file kind last.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from evoforge.candidate import Candidate
from evoforge.task import TaskSpec, task_from_file

FAMILY = "family"  # the key of TaskSpec.params that names a spec's kind (none: a KernelBench file)


@runtime_checkable
class TaskKind(Protocol):
    name: str
    signature: str  # the forward's arguments as an exported wrapper writes them ("q, k, v", "*inputs")
    guarded_export: bool  # its best kernel exports as a guarded module with a fallback (evoforge.export)

    def names(self) -> list[str]:
        """The names ``resolve`` takes (listed by errors and `evoforge tasks`)."""

    def resolve(self, arg: str) -> TaskSpec | None:
        """The spec ``arg`` names (TaskError for a malformed one of this kind), None if it is not this kind's."""

    def params(self, spec: TaskSpec) -> Any | None:
        """The kind's typed parameters (what specialised mutators read), None where it has none."""

    def baselines(self, spec: TaskSpec, device: str) -> list[Candidate]:
        """PyTorch's own ways to compute the task on ``device``, timed beside every candidate."""

    def variants(self, spec: TaskSpec) -> list[Candidate]:
        """The sweep's variants (baselines among them), [] where the kind has no sweep."""

    def shares(self, first: TaskSpec, other: TaskSpec) -> str | None:
        """Why ``other`` cannot be a shape of one multi-shape task with ``first`` (None: it can)."""


TASK_MODEL_SOURCE = '''import sys

import torch.nn as nn

# The task's own Model, as a user would call it: the evaluator's worker imports the task as
# the module "evoforge_task".
Model = sys.modules["evoforge_task"].Model


class ModelNew(Model):
    pass
'''


TASK_MODEL_COMPILED_SOURCE = '''import sys

import torch
import torch.nn as nn

# The task's own Model under torch.compile (default mode), as a user would write it.
Model = sys.modules["evoforge_task"].Model


class ModelNew(nn.Module):
    def __init__(self, *args):
        super().__init__()
        self.model = Model(*args)
        self.compiled = torch.compile(self.model, dynamic=False)

    def forward(self, *args):
        return self.compiled(*args)
'''

EAGER_BASELINE = "task_model"
COMPILED_BASELINE = "task_model_compiled"


def eager_baseline() -> Candidate:
    return Candidate(name=EAGER_BASELINE, source=TASK_MODEL_SOURCE, language="torch",
                     lineage={"baseline": True, "description": "the task's own Model"})


class FileKind:
    """A KernelBench-format ``.py`` file: its Model in eager mode and under torch.compile are the baselines."""

    name = "file"
    signature = "*inputs"
    guarded_export = False

    def names(self) -> list[str]:
        return []

    def resolve(self, arg: str) -> TaskSpec | None:
        if arg.endswith(".py") or "/" in arg or Path(arg).exists():
            return task_from_file(arg)
        return None

    def params(self, spec: TaskSpec) -> Any | None:
        return None

    def baselines(self, spec: TaskSpec, device: str) -> list[Candidate]:
        return [eager_baseline(),
                Candidate(name=COMPILED_BASELINE, source=TASK_MODEL_COMPILED_SOURCE, language="torch",
                          lineage={"baseline": True, "description": "the task's own Model under torch.compile"})]

    def variants(self, spec: TaskSpec) -> list[Candidate]:
        return []

    def shares(self, first: TaskSpec, other: TaskSpec) -> str | None:
        return None
