"""The evaluator against real misbehaving candidates: each gets the right status, and the run goes on.

All candidates are evaluated in ONE evaluate() call, in this order, with a correct candidate last:
every crash or hang before it must cost only the culprit, never the run.
"""

from __future__ import annotations

import pytest

from evoforge.candidate import Candidate
from evoforge.evaluator import EvalConfig, EvalReport, Evaluator
from evoforge.task import task_from_file
from evoforge.tasks import TASK_MODEL_SOURCE
from evoforge.timing import TimingConfig
from tests.conftest import CANDIDATES, TASKS

ORDER = [
    "wrong_answer", "nan_output", "writes_input", "partial_output", "cached_result", "reused_buffer",
    "raises", "segfault", "hangs", "os_exit", "memory_hog", "prints_megabytes", "syntax_error",
    "no_modelnew", "leaks_flags", "wrong_shape", "wrong_dtype", "patches_torch", "good",
]


@pytest.fixture(scope="module")
def report() -> EvalReport:
    spec = task_from_file(TASKS / "tanh_matmul.py")
    candidates = [Candidate(name=n, source=(CANDIDATES / f"{n}.py").read_text()) for n in ORDER]
    baseline = Candidate(name="task_model", source=TASK_MODEL_SOURCE, lineage={"baseline": True})
    config = EvalConfig(device="cpu", timeout_s=8, memory_limit_mb=3072,
                        timing=TimingConfig(budget_ms=5, rounds=2, warmup=2, min_reps=3, max_reps=20))
    return Evaluator(spec, config).evaluate(candidates, [baseline])


@pytest.mark.parametrize(("name", "status", "detail"), [
    ("wrong_answer", "incorrect", "values off"),
    ("nan_output", "incorrect", "NaN/Inf"),
    ("writes_input", "rejected", "wrote into input"),
    ("partial_output", "incorrect", ""),
    ("cached_result", "rejected", "result reuse"),
    ("reused_buffer", "rejected", "overwrote the output"),
    ("raises", "runtime_error", "kernel launch configuration invalid"),
    ("segfault", "crashed", "SIGSEGV"),
    ("hangs", "timeout", "8 s limit"),
    ("os_exit", "crashed", "exited with code 0"),
    ("memory_hog", "crashed", "out of memory"),
    ("prints_megabytes", "ok", ""),
    ("syntax_error", "compile_error", "syntax error at line 4"),
    ("no_modelnew", "compile_error", "ModelNew"),
    ("leaks_flags", "rejected", "cudnn"),
    ("wrong_shape", "incorrect", "shape"),
    ("wrong_dtype", "incorrect", "dtype"),
    ("patches_torch", "rejected", "allclose"),
    ("good", "ok", ""),
])
def test_candidate_gets_its_status(report: EvalReport, name: str, status: str, detail: str) -> None:
    result = report.by_name()[name]
    assert result.status == status, f"{name}: {result.status} ({result.detail})"
    assert detail in result.detail


def test_failed_candidates_have_zero_fitness(report: EvalReport) -> None:
    for result in report.results:
        if not result.ok:
            assert result.fitness == 0.0
            assert result.timing == {}


def test_the_run_goes_on_after_crashes(report: EvalReport) -> None:
    good = report.by_name()["good"]
    assert good.ok and good.timing["eager"].reps >= 3
    assert good.fitness > 0 and good.best_baseline == "task_model"
    # one worker per entry (the task_model baseline included), none for the one the static pre-check
    # rejected (patches_torch): a crash or a hang costs only its own worker
    assert report.workers == len(ORDER) - 1 + 1


def test_crashed_worker_keeps_stderr_for_diagnosis(report: EvalReport) -> None:
    assert "Segmentation fault" in report.by_name()["segfault"].logs


def test_megabytes_of_output_are_truncated_in_logs(report: EvalReport) -> None:
    logs = report.by_name()["prints_megabytes"].logs
    assert 0 < len(logs) < 50_000
    assert "characters dropped" in logs


def test_correct_candidates_record_errors_and_every_case(report: EvalReport) -> None:
    good = report.by_name()["good"]
    assert good.max_abs_err is not None and good.max_abs_err < 1e-4
    cases = [c.case for c in good.checks]
    assert sum(c.startswith("random seed=") for c in cases) == 3
    assert any(c.startswith("large-magnitude") for c in cases)
    assert "after timing" in cases
    assert all(c.ok for c in good.checks)
