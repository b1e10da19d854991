"""Loading KernelBench-format task files, and the one-line errors for broken ones."""

from __future__ import annotations

import pytest
import torch

from evoforge.resolve import resolve_task
from evoforge.task import TaskError, edge_inputs, load_task, make_inputs, task_from_file
from tests.conftest import TASKS


def test_loads_a_kernelbench_file_with_metadata() -> None:
    task = load_task(task_from_file(TASKS / "tanh_matmul.py"))
    assert task.model_cls.__name__ == "Model"
    assert [tuple(x.shape) for x in make_inputs(task, seed=1)] == [(32, 48), (48, 16)]
    assert task.tolerance(torch.float32) == (1e-4, 1e-4)


def test_inputs_are_fresh_per_seed_and_reproducible() -> None:
    task = load_task(task_from_file(TASKS / "tanh_matmul.py"))
    a, b, again = make_inputs(task, 1), make_inputs(task, 2), make_inputs(task, 1)
    assert not torch.equal(a[0], b[0])
    assert torch.equal(a[0], again[0])


def test_default_edge_case_scales_floating_inputs() -> None:
    task = load_task(task_from_file(TASKS / "tanh_matmul.py"))
    (name, scaled), = edge_inputs(task, seed=3)
    assert "large" in name
    assert torch.equal(scaled[0], make_inputs(task, 3)[0] * 8)


@pytest.mark.parametrize(("file", "message"), [
    ("missing.py", "no such task file"),
    ("no_model.py", "no `Model` class"),
    ("inputs_raise.py", "`get_inputs()` raised RuntimeError: dataset not found"),
    ("inputs_wrong_type.py", "must return a list or tuple, got Tensor"),
    ("syntax_error.py", "syntax error at line 3"),
])
def test_broken_task_files_get_one_line_errors(file: str, message: str) -> None:
    with pytest.raises(TaskError) as info:
        load_task(task_from_file(TASKS / file))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_task_name_lists_the_builtins() -> None:
    with pytest.raises(TaskError, match="attention-tiny"):
        resolve_task("attenton")


def test_builtin_with_overrides() -> None:
    spec = resolve_task("attention:seq_len=128,causal=true,d=32")
    assert spec.params["seq_len"] == 128 and spec.params["causal"] is True and spec.params["head_dim"] == 32
    task = load_task(spec)
    q, k, _ = make_inputs(task, 0)
    assert q.shape == (1, 8, 128, 32) and q.dtype == torch.float16 and k.shape == q.shape


@pytest.mark.parametrize("bad", ["attention:seq_len=abc", "attention:heads=8,kv_heads=3", "attention:colour=red"])
def test_bad_builtin_overrides_are_task_errors(bad: str) -> None:
    with pytest.raises(TaskError):
        resolve_task(bad)
