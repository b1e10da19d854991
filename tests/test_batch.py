"""Batch runs: problem discovery and levels, and the summary's arithmetic (fast_p, geometric mean)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from evoforge.batch import (
    BUDGET_MARGIN_S,
    BatchSummary,
    ProblemOutcome,
    baseline_failures,
    discover,
    fast_p,
    geomean,
    problem_level,
)
from evoforge.evaluator.result import EvalResult
from evoforge.task import TaskError

EXAMPLES = Path(__file__).parents[1] / "examples" / "problems"


def test_fast_p_on_known_results() -> None:
    # 5 problems: two fail (None), speedups 0.8, 1.2, 2.0 for the others.
    speedups = [None, 0.8, 1.2, None, 2.0]
    assert fast_p(speedups, 1.0) == pytest.approx(2 / 5)  # 1.2 and 2.0
    assert fast_p(speedups, 1.5) == pytest.approx(1 / 5)  # 2.0 only
    assert fast_p(speedups, 0.0) == pytest.approx(3 / 5)  # fast_0 is the correctness rate
    assert fast_p([1.0, 1.5], 1.0) == 0.5 and fast_p([1.0, 1.5], 1.5) == 0.0  # strictly faster by p
    assert fast_p([], 1.0) == 0.0


def test_geomean_over_correct_problems() -> None:
    assert geomean([2.0, 0.5, None]) == pytest.approx(1.0)
    assert geomean([1.0, 4.0]) == pytest.approx(2.0)
    assert geomean([None, None]) is None


def test_summary_measures() -> None:
    rows = [ProblemOutcome("a", "a.py", 1, "ok", vs_eager=2.0, vs_compile=1.1, fitness=1.1, significant=True,
                           significant_vs_eager=True),
            ProblemOutcome("b", "b.py", 1, "ok", vs_eager=1.2, vs_compile=0.6, fitness=0.6, significant_vs_eager=True),
            ProblemOutcome("c", "c.py", 1, "no valid candidate"),
            ProblemOutcome("d", "d.py", 1, "error", detail="bad")]
    m = BatchSummary(rows).measures()
    assert m["problems"] == 4 and m["correct"] == 2
    assert m["fast_1_vs_eager"] == 0.5 and m["fast_1.5_vs_eager"] == 0.25
    assert m["fast_1_vs_best"] == 0.25 and m["fast_1.5_vs_best"] == 0.0
    assert m["geomean_vs_eager"] == pytest.approx(math.sqrt(2.4))
    assert m["geomean_vs_best"] == pytest.approx(math.sqrt(0.66))
    assert m["over_budget"] == 0  # no row says how long it took


def test_a_problem_past_its_budget_and_margin_is_counted() -> None:
    """The stated margin (BUDGET_MARGIN_S) is a promise: a row whose session ran past budget + margin counts
    as over budget; one inside the margin, or without a budget, does not."""
    rows = [ProblemOutcome("in", "a.py", 1, "ok", wall_s=40.0 + BUDGET_MARGIN_S, budget_s=40.0),
            ProblemOutcome("over", "b.py", 1, "ok", wall_s=40.0 + BUDGET_MARGIN_S + 0.5, budget_s=40.0),
            ProblemOutcome("unbounded", "c.py", 1, "ok", wall_s=500.0),
            ProblemOutcome("resumed-before", "d.py", 1, "ok", budget_s=40.0)]
    assert BatchSummary(rows).measures()["over_budget"] == 1


def test_a_baseline_never_valid_says_why_its_column_is_empty() -> None:
    # On the H100 a sandbox refusal made torch.compile's baseline invalid, and "vs torch.compile" was a
    # bare "-": the row now carries the baseline's status and detail.
    def res(name: str, status: str, detail: str = "") -> EvalResult:
        return EvalResult(name=name, hash=name, status=status, detail=detail, role="baseline")

    refused = res("task_model_compiled", "rejected", "sandbox: refused at run time: walks the call stack")
    assert baseline_failures([res("task_model", "ok"), refused]) == (
        "baseline task_model_compiled rejected: sandbox: refused at run time: walks the call stack")
    # Valid in one generation is enough; an attention task's other baselines are not reported.
    assert baseline_failures([res("task_model", "ok"), refused, res("task_model_compiled", "ok")]) == ""
    assert baseline_failures([res("sdpa_flash", "crashed"), res("task_model", "ok")]) == ""
    assert baseline_failures([res("task_model", "timeout", "check stage ran past its 60 s limit"),
                              res("task_model_compiled", "crashed")]) == (
        "baseline task_model timeout: check stage ran past its 60 s limit; baseline task_model_compiled crashed")
    assert baseline_failures([]) == ""


def test_level_from_the_attribute_or_the_folder(tmp_path: Path) -> None:
    (tmp_path / "level2").mkdir()
    plain = tmp_path / "level2" / "p.py"
    plain.write_text("X = 1\n")
    tagged = tmp_path / "level2" / "q.py"
    tagged.write_text("LEVEL = 3\n")
    loose = tmp_path / "r.py"
    loose.write_text("x = (\n")  # not even valid Python: no level from it, and no crash
    assert problem_level(plain) == 2 and problem_level(tagged) == 3 and problem_level(loose) is None
    assert [p.name for p, _ in discover(tmp_path, 2)] == ["p.py"]
    assert [p.name for p, _ in discover(tmp_path)] == ["p.py", "q.py", "r.py"]
    with pytest.raises(TaskError, match="no problem files"):
        discover(tmp_path, 7)
    with pytest.raises(TaskError, match="no such folder"):
        discover(tmp_path / "missing")


def test_the_examples_are_at_their_levels() -> None:
    levels = {p.stem: lvl for p, lvl in discover(EXAMPLES)}
    assert levels == {"conv2d": 1, "layernorm": 1, "matmul": 1, "softmax": 1, "conv_relu_pool": 2,
                      "matmul_bias_gelu": 2, "transformer_block": 3}


def test_fast_p_counts_only_wins_beyond_noise_and_never_a_pytorch_path() -> None:
    # issue 23: a batch's fast_1 counted the task's own Model, re-measured, at "1.20x"
    rows = [ProblemOutcome("model", "m.py", 1, "ok", vs_eager=1.2, vs_compile=1.3, fitness=1.2, significant=True,
                           significant_vs_eager=True, pytorch_path=True),
            ProblemOutcome("noisy", "n.py", 1, "ok", vs_eager=1.3, vs_compile=1.1, fitness=1.1),
            ProblemOutcome("real", "r.py", 1, "ok", vs_eager=2.0, vs_compile=1.6, fitness=1.6, significant=True,
                           significant_vs_eager=True)]
    m = BatchSummary(rows).measures()
    assert m["correct"] == 3 and m["evolved"] == 2
    assert m["fast_1_vs_eager"] == pytest.approx(1 / 3) and m["fast_1_vs_best"] == pytest.approx(1 / 3)
    assert m["geomean_vs_best"] == pytest.approx(math.sqrt(1.1 * 1.6))  # the PyTorch path stays out
    assert fast_p([1.2, 2.0], 1.0, [False, True]) == 0.5


def test_crowned_prefers_an_evolved_candidate_and_finds_its_eager_baseline() -> None:
    from evoforge.batch import crowned
    from evoforge.candidate import Candidate
    from evoforge.timing import TimingStats

    def t(median: float) -> dict[str, TimingStats]:
        return {"eager": TimingStats("eager", "c", "cpu", 5, median, median, median - 1, median + 1, 2, median, 0)}

    model = Candidate(name="task_model", source="class ModelNew:\n    pass\n", language="torch")
    kernel = Candidate(name="k", source="class ModelNew:\n    x = 1\n", language="torch")
    same = EvalResult(name="model-copy", hash=model.hash, status="ok", fitness=1.2, fitness_mode="eager",
                      timing=t(10.0))
    evolved = EvalResult(name="k", hash=kernel.hash, status="ok", fitness=0.9, fitness_mode="eager",
                         timing=t(5.0))
    eager0 = EvalResult(name="task_model", hash=model.hash, status="ok", role="baseline", timing=t(20.0))
    eager1 = EvalResult(name="task_model", hash=model.hash, status="ok", role="baseline", timing=t(4.0))
    best, eager, torch_path = crowned([(same, 0), (evolved, 1)], [model, kernel], [(eager0, 0), (eager1, 1)])
    assert best is evolved and eager is eager1 and not torch_path
    best, _, torch_path = crowned([(same, 0)], [model], [(eager0, 0)])
    assert best is same and torch_path
    assert crowned([], [], []) is None
