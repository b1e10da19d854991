"""The evaluator on a GPU: CUDA timing modes, side-stream work, a CUDA error that breaks the context."""

from __future__ import annotations

import pytest

from evoforge.candidate import Candidate
from evoforge.evaluator import EvalConfig, EvalReport, Evaluator
from evoforge.task import task_from_file
from evoforge.tasks import TASK_MODEL_SOURCE
from evoforge.timing import TimingConfig
from tests.conftest import CANDIDATES, FIXTURES, TASKS

pytestmark = pytest.mark.gpu

GPU = FIXTURES / "gpu_candidates"


@pytest.fixture(scope="module")
def report() -> EvalReport:
    spec = task_from_file(TASKS / "tanh_matmul.py")
    files = [GPU / "side_stream.py", GPU / "side_stream_joined.py", GPU / "illegal_address.py",
             CANDIDATES / "partial_output.py", CANDIDATES / "cached_result.py", CANDIDATES / "good.py",
             GPU / "capture_does_nothing.py", GPU / "finds_reference_in_memory.py", GPU / "right_on_first_replay.py",
             GPU / "transposed_output.py",
             *(CANDIDATES / "judge" / f"{n}.py" for n in ("forges_timing", "same_objects_cache", "slows_the_reference",
                                                          "alias_tensor_method"))]
    candidates = [Candidate(name=f.stem, source=f.read_text()) for f in files]
    baseline = Candidate(name="task_model", source=TASK_MODEL_SOURCE, lineage={"baseline": True})
    config = EvalConfig(device="cuda", timeout_s=120, pool_slots=8, timing=TimingConfig(budget_ms=10, rounds=4))
    return Evaluator(spec, config).evaluate(candidates, [baseline])


def test_unjoined_side_stream_is_rejected(report: EvalReport) -> None:
    result = report.by_name()["side_stream"]
    assert result.status == "rejected" and "side stream" in result.detail, (result.status, result.detail, result.logs)


def test_joined_side_stream_is_fine(report: EvalReport) -> None:
    assert report.by_name()["side_stream_joined"].status == "ok"


def test_a_non_contiguous_output_is_ok_in_graph_mode(report: EvalReport) -> None:
    # its layout copy to the judge is no unreported work of its own (the clock check once rejected such a
    # candidate: a compiled channels-last convolution, 19 us per call)
    result = report.by_name()["transposed_output"]
    assert result.status == "ok", (result.status, result.detail)
    assert result.fitness_mode == "graph" and result.timing["graph"].median_us > 0


def test_illegal_address_crashes_only_its_worker(report: EvalReport) -> None:
    result = report.by_name()["illegal_address"]
    assert result.status == "crashed", result.detail
    assert report.by_name()["good"].ok


def test_partial_output_on_the_caching_allocator_is_caught(report: EvalReport) -> None:
    assert report.by_name()["partial_output"].status == "incorrect"


def test_cached_result_is_rejected_on_gpu(report: EvalReport) -> None:
    assert report.by_name()["cached_result"].status == "rejected"


def test_gpu_results_carry_both_modes_and_graph_fitness(report: EvalReport) -> None:
    good = report.by_name()["good"]
    assert set(good.timing) == {"eager", "graph"}
    assert good.timing["eager"].clock == "cuda_event"
    assert good.fitness_mode == "graph" and good.fitness > 0
    assert report.env["device_type"] == "cuda" and report.env["device_name"]


@pytest.mark.parametrize("name", ["capture_does_nothing", "finds_reference_in_memory", "right_on_first_replay",
                                  "forges_timing", "same_objects_cache", "alias_tensor_method"])
def test_hostile_candidates_on_the_gpu_are_not_ok(report: EvalReport, name: str) -> None:
    result = report.by_name()[name]
    assert result.status != "ok" and result.fitness == 0.0, f"{name}: {result.status} {result.detail}"


def test_slowing_the_reference_model_on_the_gpu_earns_nothing(report: EvalReport) -> None:
    baseline = report.by_name()["task_model"]
    assert baseline.ok and baseline.timing["eager"].median_us < 10_000
    assert report.by_name()["slows_the_reference"].fitness < 3.0
