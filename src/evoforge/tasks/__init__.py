"""Built-in tasks, and the baselines every task is timed against.

- ``BUILTINS``: named parameter sets of the attention family (``attention``, ``attention-causal``,
  ``attention-gqa``, ``attention-tiny``, ...), each rendered to a KernelBench-format source
  (``tasks.attention.render_task``) so it is evaluated exactly like a user's file; ``builtin_task("name:key=
  value,...")`` makes its ``TaskSpec``, ``attention_params(spec)`` reads the parameters back (None for any
  other task).
- ``baselines_for(spec, device)``: PyTorch's own ways to compute a task, timed live beside every candidate:
  for attention every SDPA backend, FlexAttention, the seed's 3-kernel path and its compiled form (and
  FlashAttention-4 on CUDA where installed); for any other task its Model in eager mode (``EAGER_BASELINE``)
  and under torch.compile (``COMPILED_BASELINE``).

Part of the "tasks" layer (with ``task``, ``shapes``, ``workload`` and ``resolve``, which turns ``--task``
into a TaskSpec); the evaluator, mutators, evolve and sweep take their tasks and baselines from here.
"""

from __future__ import annotations

from dataclasses import dataclass

from evoforge.candidate import Candidate
from evoforge.task import TaskError, TaskSpec
from evoforge.tasks.attention import AttentionParams, fa4_variant, offers_fa4, render_task, variants


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


def attention_params(spec: TaskSpec) -> AttentionParams | None:
    """The attention parameters of a built-in attention task, None for any other task."""
    if spec.params.get("family") != "attention":
        return None
    shape = {k: v for k, v in spec.params.items() if k not in ("family", "shapes", "floor")}
    return AttentionParams(**shape)


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
        params={"family": "attention", **params.to_dict()},
    )


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


def baselines_for(spec: TaskSpec, device: str = "cpu") -> list[Candidate]:
    """PyTorch's own ways to compute the task on ``device``, timed live beside every candidate: for
    attention, every SDPA backend, FlexAttention, the seed's 3-kernel path and its compiled form, and on
    CUDA FlashAttention-4 where it is installed (``evoforge[fa4]``) and takes the dtype and head dim; for
    any other task, its own Model in eager mode and under torch.compile."""
    out = [Candidate(name=EAGER_BASELINE, source=TASK_MODEL_SOURCE, language="torch",
                     lineage={"baseline": True, "description": "the task's own Model"})]
    params = attention_params(spec)
    if params is not None:
        out += [v for v in variants(params) if v.lineage.get("baseline")]
        if offers_fa4(params, device):
            out.append(fa4_variant(params))
    else:
        out.append(Candidate(name=COMPILED_BASELINE, source=TASK_MODEL_COMPILED_SOURCE, language="torch",
                             lineage={"baseline": True, "description": "the task's own Model under torch.compile"}))
    return out
