"""The reference side of a generic task: exact comparison of integer and boolean outputs, and clear errors
for tasks that can't be a reference here (nondeterministic, CUDA-only on a CPU, too big for the GPU)."""

from __future__ import annotations

import pytest
import torch

from evoforge.candidate import Candidate
from evoforge.evaluator import EvalConfig, Evaluator
from evoforge.task import TaskError, check_fits, load_task, reference_bytes, task_from_file, tensor_bytes
from evoforge.timing import TimingConfig
from tests.conftest import TASKS

CONFIG = EvalConfig(device="cpu", timeout_s=120, timing=TimingConfig(budget_ms=2, rounds=1, min_reps=2))
cpu_only = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")

INT_GOOD = """import torch
import torch.nn as nn


class ModelNew(nn.Module):
    def forward(self, x):
        return x.argmax(dim=-1), x > 0
"""
INT_OFF_BY_ONE = INT_GOOD.replace("x.argmax(dim=-1)", "x.argmax(dim=-1) + (x[:, 0] > 1).long()")
BOOL_WRONG = INT_GOOD.replace("x > 0", "x >= 1e-3")


def test_integer_and_boolean_outputs_are_compared_exactly() -> None:
    cands = [Candidate(name=n, source=s) for n, s in
             (("good", INT_GOOD), ("argmax_off", INT_OFF_BY_ONE), ("mask_off", BOOL_WRONG))]
    results = Evaluator(task_from_file(TASKS / "int_output.py"), CONFIG).evaluate(cands).by_name()
    assert results["good"].status == "ok"
    for name in ("argmax_off", "mask_off"):
        assert results[name].status == "incorrect"
        assert "exact comparison for non-float outputs" in results[name].detail


def test_a_nondeterministic_model_is_refused() -> None:
    with pytest.raises(TaskError, match="Model is nondeterministic: two calls on the same inputs differ"):
        Evaluator(task_from_file(TASKS / "nondeterministic.py"), CONFIG).evaluate(
            [Candidate(name="c", source=INT_GOOD)])


@cpu_only
def test_a_task_with_cuda_inputs_on_a_cpu_only_machine() -> None:
    with pytest.raises(TaskError, match=r"this task needs CUDA \(`get_inputs\(\)` raised .*no CUDA device here"):
        load_task(task_from_file(TASKS / "cuda_only.py"))


@cpu_only
def test_a_task_whose_model_needs_cuda_on_a_cpu_only_machine() -> None:
    with pytest.raises(TaskError, match=r"this task needs CUDA \(Model raised .*no CUDA device here"):
        Evaluator(task_from_file(TASKS / "cuda_in_forward.py"), CONFIG).evaluate(
            [Candidate(name="c", source=INT_GOOD)])


def test_memory_arithmetic_and_the_message_says_how_much_was_needed() -> None:
    x, y = torch.zeros(1024, 256), torch.zeros(10, dtype=torch.int64)
    assert tensor_bytes([x, [y], 3]) == 1024 * 256 * 4 + 80
    assert reference_bytes([x, y, 3], 8) == 1024 * 256 * 8  # only floating inputs get a float64 copy
    check_fits("t.py", needed=2**30, free=2**31, device_name="GPU", what="inputs")
    with pytest.raises(TaskError, match=r"t.py: the task does not fit in GPU memory: 5 input sets need 3.00 GiB, "
                                        r"2.00 GiB free on NVIDIA H100"):
        check_fits("t.py", needed=3 * 2**30, free=2**31, device_name="NVIDIA H100", what="5 input sets")
