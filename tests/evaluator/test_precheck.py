"""The static pre-check: candidates that reach for the harness are rejected before they run; kernels
that only compute are not."""

from __future__ import annotations

import pytest

from evoforge.candidate import Candidate
from evoforge.evaluator import EvalConfig, EvalReport, Evaluator
from evoforge.evaluator.precheck import precheck
from evoforge.kernels.flash_attention import FlashGenome, render
from evoforge.task import task_from_file
from evoforge.tasks.attention import AttentionParams, variants
from evoforge.timing import TimingConfig
from tests.conftest import CANDIDATES, TASKS

REACHING = CANDIDATES / "reaching"


@pytest.mark.parametrize(("name", "reason"), [
    ("steals_api_key", "reads the secret 'OPENAI_API_KEY'"),
    ("opens_socket", "opens sockets"),
    ("walks_frames", "walks the call stack"),
    ("patches_timer", "replaces time.perf_counter_ns"),
    ("scans_gc", "uses gc"),
    ("runs_subprocess", "starts processes"),
    ("imports_harness", "imports evoforge's own modules"),
])
def test_reaching_candidates_are_rejected_with_a_reason(name: str, reason: str) -> None:
    found = precheck((REACHING / f"{name}.py").read_text())
    assert found is not None and reason in found and "line" in found


@pytest.mark.parametrize("source", [
    "import os\nX = os.environ.get('TRITON_INTERPRET')\n",
    "import torch\ntorch.backends.cudnn.benchmark = True\n",  # a flag: the runtime guard judges it
    "import os\nos._exit(0)\n",  # not a reach for the harness; the worker survives it
    "def f(:\n",  # syntax errors are the compile stage's to report
])
def test_what_is_not_a_reach_passes(source: str) -> None:
    assert precheck(source) is None


def test_dynamic_environment_reads_are_rejected() -> None:
    assert "chosen at run time" in precheck("import os\nk = 'X'\nv = os.environ[k]\n")
    assert "whole environment" in precheck("import os\nprint(dict(os.environ))\n")


def test_builtin_kernels_and_variants_pass() -> None:
    params = AttentionParams(causal=True)
    for v in variants(params):
        assert precheck(v.source) is None, v.name
    for g in (FlashGenome(), FlashGenome(split_kv=4, prescale_q=True, loop="tl.range")):
        assert precheck(render(g, causal=True, head_dim=64)) is None


@pytest.fixture(scope="module")
def report() -> EvalReport:
    names = ["steals_api_key", "opens_socket", "walks_frames", "patches_timer", "scans_gc", "runs_subprocess",
             "imports_harness"]
    cands = [Candidate(name=n, source=(REACHING / f"{n}.py").read_text()) for n in names]
    cands.append(Candidate(name="good", source=(CANDIDATES / "good.py").read_text()))
    config = EvalConfig(device="cpu", timeout_s=60, timing=TimingConfig(budget_ms=5, rounds=2, min_reps=3))
    return Evaluator(task_from_file(TASKS / "tanh_matmul.py"), config).evaluate(cands)


def test_the_evaluator_rejects_them_before_they_run_and_goes_on(report: EvalReport) -> None:
    for result in report.results[:-1]:
        assert result.status == "rejected" and result.detail.startswith("static pre-check"), result.name
    assert report.results[-1].status == "ok"
    assert report.workers == 1 + 1  # good's, and the clock check's reference (no baselines here): none for them


def test_the_report_says_where_the_workers_time_went(report: EvalReport) -> None:
    profile = report.profile
    assert {"startup", "load", "check", "time", "recheck", "wall"} <= set(profile)
    assert all(seconds >= 0 for seconds in profile.values())
    assert profile["wall"] >= profile["load"] + profile["check"] + profile["time"]
