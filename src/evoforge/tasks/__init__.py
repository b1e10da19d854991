"""The built-in task kinds (:mod:`evoforge.task_kinds`), and the baselines every task is timed against.

- ``BUILTINS``: named parameter sets of the attention family (``attention``, ``attention-causal``,
  ``attention-gqa``, ``attention-tiny``, ...), each rendered to a KernelBench-format source
  (``tasks.attention.render_task``) so it is evaluated exactly like a user's file; ``builtin_task("name:key=
  value,...")`` makes its ``TaskSpec``, ``attention_params(spec)`` reads the parameters back (None for any
  other task).
- ``AttentionKind`` (``attention``) and ``FileKind`` (``file``, a KernelBench-format file), registered in
  ``registry.TASK_KINDS``; ``kind_of(spec)`` is a spec's kind (by its ``family``), ``task_kinds()`` every kind
  in the order ``--task`` is resolved.
- ``baselines_for(spec, device)``: PyTorch's own ways to compute a task (its kind's ``baselines``), timed live
  beside every candidate: for attention every SDPA backend, FlexAttention, the seed's 3-kernel path and its
  compiled form (and FlashAttention-4 on CUDA where installed); for any other task its Model in eager mode
  (``EAGER_BASELINE``) and under torch.compile (``COMPILED_BASELINE``).

Part of the "tasks" layer (with ``task``, ``task_kinds``, ``shapes``, ``workload`` and ``resolve``, which turns
``--task`` into a TaskSpec); everything downstream asks a task's kind here instead of "is this attention?".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from evoforge.candidate import Candidate
from evoforge.registry import TASK_KINDS
from evoforge.task import TaskError, TaskSpec
from evoforge.task_kinds import COMPILED_BASELINE as COMPILED_BASELINE  # the baselines' names and sources,
from evoforge.task_kinds import EAGER_BASELINE as EAGER_BASELINE  # imported from here by their users
from evoforge.task_kinds import FAMILY, FileKind, TaskKind, eager_baseline
from evoforge.task_kinds import TASK_MODEL_COMPILED_SOURCE as TASK_MODEL_COMPILED_SOURCE
from evoforge.task_kinds import TASK_MODEL_SOURCE as TASK_MODEL_SOURCE
from evoforge.tasks.attention import AttentionParams, fa4_variant, offers_fa4, render_task
from evoforge.tasks.attention import variants as attention_variants


@dataclass(frozen=True)
class Builtin:
    name: str
    params: AttentionParams
    description: str


BUILTINS: dict[str, Builtin] = {
    b.name: b
    for b in [
        Builtin("attention", AttentionParams(), "the seed's shape: B=1 H=8 S=512 D=64 fp16 (default)"),
        Builtin("attention-causal", AttentionParams(causal=True), "the seed's shape, causal"),
        Builtin("attention-bf16", AttentionParams(dtype="bf16"), "the seed's shape in bf16"),
        Builtin("attention-gqa", AttentionParams(batch=1, heads=32, kv_heads=8, seq_len=1024, head_dim=128),
                "grouped-query: 32 query heads share 8 K/V heads, S=1024 D=128"),
        Builtin("attention-long", AttentionParams(batch=4, heads=32, seq_len=2048, head_dim=64),
                "B=4 H=32 S=2048 D=64"),
        Builtin("attention-d128", AttentionParams(batch=2, heads=16, seq_len=4096, head_dim=128),
                "B=2 H=16 S=4096 D=128"),
        Builtin("attention-decode",
                AttentionParams(batch=8, heads=32, kv_heads=8, q_len=1, seq_len=8192, head_dim=128),
                "decode: one query, 32 query heads, 8 K/V heads, KV length 8192, D=128"),
        Builtin("attention-tiny", AttentionParams(batch=1, heads=2, seq_len=64, head_dim=32),
                "B=1 H=2 S=64 D=32: quick on a CPU, for tests and smoke runs"),
    ]
}


def builtin_names() -> list[str]:
    return list(BUILTINS)


def _shape(spec: TaskSpec) -> dict[str, Any]:
    return {k: v for k, v in spec.params.items() if k not in (FAMILY, "shapes", "floor")}


def attention_params(spec: TaskSpec) -> AttentionParams | None:
    """The attention parameters of a built-in attention task, None for any other task."""
    if spec.params.get(FAMILY) != AttentionKind.name:
        return None
    return AttentionParams(**_shape(spec))


def builtin_task(arg: str) -> TaskSpec:
    """``name`` or ``name:key=value,...`` (for example ``attention:seq_len=1024,causal=true``)."""
    name, _, overrides = arg.partition(":")
    if name not in BUILTINS:
        raise TaskError(f"unknown built-in task {name!r} (known: {', '.join(BUILTINS)})")
    try:
        params = BUILTINS[name].params.with_overrides(overrides)
    except (ValueError, TypeError) as exc:
        raise TaskError(f"task {arg!r}: {exc}") from None
    return TaskSpec(
        name=params.slug(),
        source=render_task(params),
        origin=f"builtin:{arg}",
        params={FAMILY: AttentionKind.name, **params.to_dict()},
    )


# SDPA backends with no kernel but CUDA's: elsewhere each would be a worker started only to fail its first check.
CUDA_ONLY_BASELINES = ("sdpa_mem_eff", "sdpa_cudnn")


class AttentionKind(FileKind):
    """The attention family: its built-in names, its parameters, PyTorch's attention paths as baselines and the
    sweep's variants; its shapes share head size, causality and dtype; its export is a guarded module."""

    name = "attention"
    signature = "q, k, v"
    guarded_export = True

    def names(self) -> list[str]:
        return builtin_names()

    def resolve(self, arg: str) -> TaskSpec | None:
        return builtin_task(arg) if arg.split(":", 1)[0] in BUILTINS else None

    def params(self, spec: TaskSpec) -> AttentionParams | None:
        return attention_params(spec)

    def baselines(self, spec: TaskSpec, device: str) -> list[Candidate]:
        params = AttentionParams(**_shape(spec))
        cuda = device.startswith("cuda")
        out = [eager_baseline(), *(v for v in attention_variants(params)
                                   if v.lineage.get("baseline") and (cuda or v.name not in CUDA_ONLY_BASELINES))]
        return [*out, fa4_variant(params)] if offers_fa4(params, device) else out

    def variants(self, spec: TaskSpec) -> list[Candidate]:
        return attention_variants(AttentionParams(**_shape(spec)))

    def shares(self, first: TaskSpec, other: TaskSpec) -> str | None:
        a, b = AttentionParams(**_shape(first)), AttentionParams(**_shape(other))
        for attr in ("head_dim", "causal", "dtype"):
            if getattr(a, attr) != getattr(b, attr):
                return (f"every shape must share {attr} ({first.name}: {getattr(a, attr)}, {other.name}: "
                        f"{getattr(b, attr)}); the kernel is specialised for it")
        return None


FILE_KIND = FileKind()
TASK_KINDS.register(AttentionKind.name, AttentionKind())
TASK_KINDS.register(FileKind.name, FILE_KIND)


def kind_of(task: TaskSpec | Mapping[str, Any]) -> TaskKind:
    """The kind of a spec, or of a stored run's task params: the one its ``family`` names (the KernelBench file
    kind where it names none, or a kind no longer installed)."""
    params = task.params if isinstance(task, TaskSpec) else task
    family = params.get(FAMILY)
    if family:
        try:
            return TASK_KINDS.get(family)
        except LookupError:
            pass
    return FILE_KIND


def task_kinds(broken: list[str] | None = None) -> list[TaskKind]:
    """Every registered kind (plugins' included), the file kind last: the order ``--task`` is resolved in. A
    plugin that fails to load is left out (its one-line error added to ``broken``), not every task with it."""
    kinds = []
    for name in TASK_KINDS.names():
        if name != FileKind.name:
            try:
                kinds.append(TASK_KINDS.get(name))
            except LookupError as exc:
                if broken is not None:
                    broken.append(str(exc))
    return [*kinds, FILE_KIND]


def baselines_for(spec: TaskSpec, device: str = "cpu") -> list[Candidate]:
    """PyTorch's own ways to compute the task on ``device``, timed live beside every candidate (its kind's
    ``baselines``): for attention, the task's Model, every SDPA backend that runs on ``device`` (memory-efficient
    and cuDNN on CUDA only), FlexAttention, the seed's 3-kernel path and its compiled form, and on CUDA
    FlashAttention-4 where it is installed (``evoforge[fa4]``) and takes the
    dtype and head dim; for a KernelBench file, its own Model in eager mode and under torch.compile."""
    return kind_of(spec).baselines(spec, device)
