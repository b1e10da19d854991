"""The judge against candidates that try to talk their way into a better score (issue 19's table, on a
CPU). Each runs in a worker of its own; the judge draws the inputs, holds the references, compares the
outputs and checks the reported latencies against its own clock, so each gets a non-ok status or no
more fitness than its honest work earns.

Most run with ``--sandbox none``: the judge must hold without the worker's guards, which are only
early rejections. The GPU classes (graph capture, the allocator walk, graph replays) are in
test_gpu.py."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from evoforge.candidate import Candidate
from evoforge.evaluator import EvalConfig, EvalReport, Evaluator
from evoforge.task import task_from_file
from evoforge.tasks import TASK_MODEL_SOURCE
from evoforge.timing import TimingConfig
from tests.conftest import CANDIDATES, TASKS

JUDGE = CANDIDATES / "judge"
HOSTILE = ["alias_tensor_method", "forges_timing", "same_objects_cache", "slows_the_reference",
           "reads_its_surroundings", "walks_memory", "slow_first_process"]


def _evaluate(names: list[str], sandbox: str) -> EvalReport:
    spec = task_from_file(TASKS / "tanh_matmul.py")
    marker = Path(tempfile.mkdtemp(prefix="evoforge-test-")) / "first-process"  # slow_first_process's
    candidates = [Candidate(name=n, source=(JUDGE / f"{n}.py").read_text().replace("__MARKER__", str(marker)))
                  for n in names]
    candidates.append(Candidate(name="good", source=(CANDIDATES / "good.py").read_text()))
    baseline = Candidate(name="task_model", source=TASK_MODEL_SOURCE, lineage={"baseline": True})
    # Four slots: timed calls come back to a slot (with fresh values) within a few calls.
    config = EvalConfig(device="cpu", timeout_s=60, sandbox=sandbox, pool_slots=4,
                        timing=TimingConfig(budget_ms=60, rounds=2, warmup=2, min_reps=8, max_reps=40))
    return Evaluator(spec, config).evaluate(candidates, [baseline])


@pytest.fixture(scope="module")
def report() -> EvalReport:
    return _evaluate(HOSTILE, "none")


def test_replacing_tensor_methods_cannot_fool_a_comparison_made_elsewhere(report: EvalReport) -> None:
    result = report.by_name()["alias_tensor_method"]
    assert result.status in ("incorrect", "rejected") and result.fitness == 0.0


def test_forged_latencies_disagree_with_the_judges_clock(report: EvalReport) -> None:
    result = report.by_name()["forges_timing"]
    assert result.status == "rejected" and "judge's clock" in result.detail
    assert "fresh process" in result.detail  # a third look, in a process of its own, found the forgery again
    assert result.fitness == 0.0


def test_a_process_slow_outside_its_calls_is_timed_again_in_a_fresh_one(report: EvalReport) -> None:
    # Its first process spends 5 ms per call outside the calls it times (beyond the clock check's tolerance),
    # its second does not: the fresh process's samples count, and it is ranked on them.
    result = report.by_name()["slow_first_process"]
    assert result.ok and result.fitness > 0, result.detail
    assert report.profile.get("time.fresh", 0) > 0


def test_a_cache_keyed_on_tensor_objects_is_caught_on_timed_calls(report: EvalReport) -> None:
    result = report.by_name()["same_objects_cache"]
    assert result.status in ("rejected", "incorrect") and result.fitness == 0.0
    assert "timed call" in result.detail or "result reuse" in result.detail


def test_slowing_the_reference_model_only_slows_its_own_process(report: EvalReport) -> None:
    baseline = report.by_name()["task_model"]
    assert baseline.ok and baseline.timing["eager"].median_us < 10_000  # no 20 ms stall in the baseline
    assert report.by_name()["slows_the_reference"].ok


def test_no_seed_or_job_is_there_to_read_before_inputs_are_drawn(report: EvalReport) -> None:
    logs = report.by_name()["reads_its_surroundings"].logs
    assert "FILE" in logs and "ENV" in logs  # it did look
    assert str(report.seeds[0]) not in logs
    files = {line.split()[1] for line in logs.splitlines() if line.startswith("FILE ")}
    # its own source and the task's (the task_model baselines need it): no job, no seed, no references
    assert all(f.startswith(("evoforge_candidate_", "evoforge_task")) for f in files), files


def test_no_reference_in_the_workers_memory(report: EvalReport) -> None:
    result = report.by_name()["walks_memory"]
    assert result.status == "incorrect" and result.fitness == 0.0


def test_an_honest_candidate_beside_them_is_unharmed(report: EvalReport) -> None:
    good = report.by_name()["good"]
    assert good.ok and good.fitness > 0
    assert {c.case for c in good.checks} >= {"after timing"}


def test_with_the_basic_sandbox_the_guards_reject_early() -> None:
    report = _evaluate(["alias_tensor_method", "walks_memory"], "basic")
    assert report.by_name()["walks_memory"].status == "rejected"  # gc is refused before it runs
    assert report.by_name()["alias_tensor_method"].status in ("rejected", "incorrect")
    assert report.by_name()["good"].ok


def test_baselines_compile_into_caches_no_candidate_may_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from evoforge.evaluator import sandbox
    from evoforge.evaluator.judge import _private_caches

    monkeypatch.setenv("EVOFORGE_CACHE_DIR", str(tmp_path / "cache"))
    env = {"HOME": str(tmp_path / "home"), "EVOFORGE_CACHE_DIR": str(tmp_path / "cache")}
    private = _private_caches(env)
    candidate_writable = sandbox.worker_writable(tmp_path / "work", dict(env))
    for name in ("TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR"):
        path = private[name]
        assert path != env.get(name)
        assert not any(path == str(w) or path.startswith(str(w).rstrip("/") + "/") for w in candidate_writable), name


def test_without_baselines_the_clock_check_has_the_tasks_model_as_its_reference() -> None:
    # No baseline to rank against, so no candidate's overhead stands for the honest one (the smallest of
    # several honest candidates' would reject the others): the task's Model is timed beside them, unreported.
    spec = task_from_file(TASKS / "tanh_matmul.py")
    candidates = [Candidate(name=n, source=(JUDGE / f"{n}.py").read_text()) for n in ("forges_timing",)]
    candidates.append(Candidate(name="good", source=(CANDIDATES / "good.py").read_text()))
    config = EvalConfig(device="cpu", timeout_s=60, sandbox="none", pool_slots=4,
                        timing=TimingConfig(budget_ms=60, rounds=2, warmup=2, min_reps=8, max_reps=40))
    report = Evaluator(spec, config).evaluate(candidates)
    assert [r.name for r in report.results] == ["forges_timing", "good"]  # the reference is not reported
    # forges_timing, good, the reference, and forges_timing's fresh process for the clock check's third look
    assert report.workers == 4 and report.env["judge"]["clock_reference"] == "clock-reference"
    forged = report.by_name()["forges_timing"]
    assert forged.status == "rejected" and "judge's clock" in forged.detail
    good = report.by_name()["good"]
    assert good.ok and good.best_baseline is None and good.fitness == 0.0  # nothing to rank it against


def test_progress_says_how_far_and_what_a_hang_is_waiting_on() -> None:
    spec = task_from_file(TASKS / "tanh_matmul.py")
    candidates = [Candidate(name=n, source=(CANDIDATES / f"{n}.py").read_text()) for n in ("hangs", "good")]
    baseline = Candidate(name="task_model", source=TASK_MODEL_SOURCE, lineage={"baseline": True})
    config = EvalConfig(device="cpu", timeout_s=4, sandbox="none", pool_slots=4,
                        timing=TimingConfig(budget_ms=20, rounds=2, warmup=1, min_reps=4, max_reps=8))
    said: list[str] = []
    report = Evaluator(spec, config, progress=said.append).evaluate(candidates, [baseline])
    assert report.by_name()["hangs"].status == "timeout"
    # while it hung, what the judge was waiting on named it, and the stage
    assert any("hangs (checking)" in m and m.startswith("loaded and checked ") for m in said), said
    assert "loaded and checked 3/3" in said
    assert any(m.startswith("timing round 2/2: good") for m in said), said


def test_precompile_sends_input_shapes_not_values(tmp_path: Path) -> None:
    from evoforge.evaluator.judge import _shapes_of
    from evoforge.evaluator.worker import _decode
    from evoforge.task import load_task

    task = load_task(task_from_file(TASKS / "tanh_matmul.py"), module_name="evoforge_shapes_test", directory=tmp_path)
    sent = _shapes_of(task)
    assert sent == [{"empty": [32, 48], "dtype": "float32"}, {"empty": [48, 16], "dtype": "float32"}]
    made = _decode(sent[0])
    assert made.shape == (32, 48) and made.dtype.is_floating_point
    index = _decode({"empty": [5], "dtype": "int64"})
    assert index.tolist() == [0] * 5  # integers made zero: an index input stays in range
