"""Multi-shape tasks: parsing, the fold of per-shape results, and a real evaluation and run on the CPU."""

from __future__ import annotations

import json
import math
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from evoforge.candidate import Candidate
from evoforge.evaluator import EvalConfig, Evaluator
from evoforge.evaluator.result import CaseCheck, EvalResult
from evoforge.fitness import combine
from evoforge.resolve import resolve_task
from evoforge.shapes import is_multi, shape_specs
from evoforge.task import TaskError
from evoforge.tasks import attention_params, baselines_for
from evoforge.timing import TimingConfig, TimingStats

MULTI = "attention-tiny;attention-tiny:seq_len=32,heads=4"


def test_a_multi_shape_task_keeps_every_shape_and_the_first_ones_params() -> None:
    spec = resolve_task(MULTI + ";floor=0.5")
    assert is_multi(spec) and spec.params["floor"] == 0.5
    shapes = shape_specs(spec)
    assert [attention_params(s).seq_len for s in shapes] == [64, 32]
    assert [attention_params(s).heads for s in shapes] == [2, 4]
    params = attention_params(spec)  # what the template mutator renders for: the shared head size etc.
    assert params is not None and (params.head_dim, params.seq_len) == (32, 64)
    assert spec.source == shapes[0].source and spec.name == "+".join(s.name for s in shapes)
    assert not is_multi(resolve_task("attention-tiny"))


@pytest.mark.parametrize(("arg", "message"), [
    ("attention-tiny;attention-tiny:d=16", "share head_dim"),
    ("attention-tiny;attention-tiny:causal=1", "share causal"),
    ("attention-tiny;attention-tiny", "listed twice"),
    ("attention-tiny;floor=0.5", "at least two shapes"),
    ("attention-tiny;attention-tiny:seq_len=32;floor=abc", "floor must be a number"),
    ("attention-tiny;attention-tiny:seq_len=32;floor=1;floor=2", "more than once"),
    ("attention-tiny;attention-tiny:kv_heads=1", "different PyTorch baselines"),
    ("attention-tiny;examples/problems/level1/softmax.py", "different kinds of task"),
])
def test_shapes_that_cannot_share_a_kernel_are_refused(arg: str, message: str) -> None:
    with pytest.raises(TaskError, match=message):
        resolve_task(arg)


def _timing(us: float) -> dict[str, TimingStats]:
    return {"eager": TimingStats(mode="eager", clock="cpu", device="cpu", reps=3, median_us=us, min_us=us,
                                 q1_us=us, q3_us=us, iqr_us=0.0, mean_us=us, flush_bytes=0)}


def _result(name: str, fitness: float, us: float, status: str = "ok", detail: str = "") -> EvalResult:
    return EvalResult(name=name, hash=name, status=status, detail=detail, fitness=fitness, fitness_mode="eager",
                      best_baseline="sdpa", timing=_timing(us),
                      speedup={"eager": {"sdpa": fitness, "math": 2 * fitness}},
                      checks=[CaseCheck(case="random seed=1", ok=status == "ok")], max_abs_err=1e-3 * fitness)


def test_fitness_is_the_geometric_mean_over_shapes_with_a_floor() -> None:
    per_shape = [[_result("fast", 2.0, 10.0), _result("uneven", 4.0, 5.0), _result("broken", 1.0, 9.0)],
                 [_result("fast", 8.0, 20.0), _result("uneven", 0.5, 40.0),
                  _result("broken", 0.0, 0.0, status="incorrect", detail="max abs err 0.3")]]
    fast, uneven, broken = combine(per_shape, ["s1", "s2"], floor=0.8)
    assert fast.ok and fast.fitness == pytest.approx(4.0)  # sqrt(2 * 8)
    assert fast.speedup["eager"] == {"math": pytest.approx(8.0), "sdpa": pytest.approx(4.0)}
    assert fast.timing["eager"].median_us == 10.0  # the first shape's
    assert [s["task"] for s in fast.shapes] == ["s1", "s2"] and fast.shapes[1]["latency_us"] == {"eager": 20.0}
    assert [c.case for c in fast.checks] == ["s1: random seed=1", "s2: random seed=1"]
    assert fast.max_abs_err == pytest.approx(8e-3)
    # sqrt(4 * 0.5) = 1.41 overall, but 0.5x on one shape is below the 0.8 floor: not a winner.
    assert uneven.ok and uneven.fitness == 0.0 and "below the floor of 0.8x on s2 (0.50x)" in uneven.detail
    assert combine(per_shape, ["s1", "s2"], floor=0.0)[1].fitness == pytest.approx(math.sqrt(2.0))
    # Wrong on one shape is wrong.
    assert broken.status == "incorrect" and broken.fitness == 0.0 and broken.detail == "shape s2: max abs err 0.3"


def test_baselines_are_not_held_to_the_floor() -> None:
    slow = _result("math", 0.1, 100.0)
    slow.role = "baseline"
    (folded,) = combine([[slow], [slow]], ["s1", "s2"], floor=0.8)
    assert folded.fitness == pytest.approx(0.1)


SDPA_CANDIDATE = '''import torch
import torch.nn as nn
import torch.nn.functional as F


class ModelNew(nn.Module):
    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v)
'''


def test_an_evaluation_checks_and_times_every_shape() -> None:
    spec = resolve_task(MULTI)
    config = EvalConfig(device="cpu", timeout_s=120, timing=TimingConfig(budget_ms=2, rounds=1, min_reps=2))
    baselines = [b for b in baselines_for(spec) if b.name in ("task_model", "sdpa_default")]
    report = Evaluator(spec, config).evaluate([Candidate(name="sdpa_again", source=SDPA_CANDIDATE)], baselines)
    cand = report.by_name()["sdpa_again"]
    assert cand.ok, cand.detail
    assert [s["task"] for s in cand.shapes] == [s.name for s in shape_specs(spec)]
    assert all(s["status"] == "ok" and s["fitness"] > 0 for s in cand.shapes)
    expected = math.sqrt(cand.shapes[0]["fitness"] * cand.shapes[1]["fitness"])
    assert cand.fitness == pytest.approx(expected)
    assert {c.case.split(":")[0] for c in cand.checks} == {s.name for s in shape_specs(spec)}
    assert report.env["shapes"] == [s.name for s in shape_specs(spec)] and report.workers >= 2


def test_a_run_on_a_multi_shape_task(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "evoforge.cli", "run", "--task", MULTI, "--generations", "2",
                           "--population", "2", "--budget-ms", "5", "--device", "cpu", "--json"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["valid"] >= 2 and summary["best_fitness"] > 0
    db = sqlite3.connect(tmp_path / ".evoforge" / "runs.db")
    results = [json.loads(r[0]) for r in db.execute("SELECT result_json FROM evaluations WHERE role='candidate'")]
    assert results and all(len(r["shapes"]) == 2 for r in results if r["status"] == "ok")
    report = subprocess.run([sys.executable, "-m", "evoforge.cli", "report", summary["run"], "--out", "rep"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=300, check=False)
    assert report.returncode == 0, report.stderr
    evidence = json.loads((tmp_path / "rep" / "evidence.json").read_text())
    ok = [c for c in evidence["candidates"] if c["status"] == "ok"]
    names = [s.name for s in shape_specs(resolve_task(MULTI))]
    assert ok and all([s["task"] for s in c["shapes"]] == names for c in ok)
