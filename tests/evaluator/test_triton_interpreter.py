"""A Triton candidate through the whole evaluator on the CPU, under TRITON_INTERPRET=1."""

from __future__ import annotations

import pytest

from evoforge.candidate import Candidate
from evoforge.evaluator import EvalConfig, Evaluator
from evoforge.task import task_from_file
from evoforge.timing import TimingConfig
from tests.conftest import CANDIDATES, TASKS

pytest.importorskip("triton")


def test_triton_candidate_is_checked_and_timed_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # inherited by the worker, which runs on the CPU
    source = (CANDIDATES / "triton_tanh.py").read_text()
    cand = Candidate(name="triton_tanh", source=source)
    assert cand.language == "triton"
    config = EvalConfig(device="cpu", timeout_s=120, timing=TimingConfig(budget_ms=5, rounds=2, min_reps=3))
    result = Evaluator(task_from_file(TASKS / "tanh_matmul.py"), config).evaluate([cand]).results[0]
    assert result.status == "ok", (result.detail, result.logs[-2000:])
    assert result.language == "triton"
    assert result.max_abs_err is not None and result.max_abs_err < 1e-4
    assert result.timing["eager"].clock == "perf_counter_ns"
