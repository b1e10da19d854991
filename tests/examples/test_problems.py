"""Every example problem loads, and its own Model passes the evaluator as a candidate on the CPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from evoforge.candidate import Candidate
from evoforge.evaluator import EvalConfig, Evaluator
from evoforge.task import load_task, task_from_file
from evoforge.tasks import TASK_MODEL_SOURCE
from evoforge.timing import TimingConfig

PROBLEMS = sorted((Path(__file__).parents[2] / "examples" / "problems").rglob("*.py"))


def test_there_are_problems_at_every_level() -> None:
    assert {p.parent.name for p in PROBLEMS} == {"level1", "level2", "level3"}


@pytest.mark.parametrize("path", PROBLEMS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_example_problem_loads(path: Path) -> None:
    task = load_task(task_from_file(path))
    assert task.model_cls.__name__ == "Model"


def test_each_problems_own_model_is_a_correct_candidate() -> None:
    config = EvalConfig(device="cpu", timeout_s=120, timing=TimingConfig(budget_ms=5, rounds=2, min_reps=3))
    for path in PROBLEMS:
        cand = Candidate(name="own_model", source=TASK_MODEL_SOURCE)
        result = Evaluator(task_from_file(path), config).evaluate([cand]).results[0]
        assert result.status == "ok", (path.name, result.detail)
        assert result.max_abs_err is not None
