"""The runner's pure parts: fitness and significance from timings, and GPU pinning."""

from __future__ import annotations

import pytest

from evoforge.evaluator.result import EvalResult
from evoforge.fitness import score as _score
from evoforge.timing import summarize


def _result(name: str, role: str, samples: list[float], status: str = "ok", hash_: str | None = None) -> EvalResult:
    r = EvalResult(name=name, hash=hash_ or name, status=status, role=role)
    if status == "ok":
        r.timing["graph"] = summarize(samples, mode="graph", clock="cuda_event", device="cuda:0", flush_bytes=0)
        r.timing["eager"] = summarize([s * 3 for s in samples], mode="eager", clock="cuda_event",
                                      device="cuda:0", flush_bytes=0)
    return r


def test_fitness_is_fastest_baseline_over_candidate_in_the_preferred_mode() -> None:
    cand = _result("c", "candidate", [5.0, 5.1, 5.2, 5.3])
    fast, slow = _result("fast", "baseline", [10.0, 10.1, 10.2, 10.3]), _result("slow", "baseline", [20.0] * 4)
    _score([cand, fast, slow], "graph")
    assert cand.fitness_mode == "graph" and cand.best_baseline == "fast"
    assert abs(cand.fitness - 10.15 / 5.15) < 1e-9
    assert cand.speedup["eager"]["slow"] == pytest.approx(60.0 / (5.15 * 3))
    assert cand.significant


def test_a_tie_within_noise_is_not_significant() -> None:
    cand = _result("c", "candidate", [9.9, 10.0, 10.2, 10.4])
    base = _result("b", "baseline", [10.0, 10.1, 10.2, 10.5])
    _score([cand, base], "graph")
    assert cand.fitness > 1.0 and not cand.significant


def test_failed_entries_score_zero_and_failed_baselines_do_not_count() -> None:
    cand = _result("c", "candidate", [5.0] * 4)
    broken = _result("broken", "baseline", [], status="runtime_error")
    bad = _result("bad", "candidate", [], status="incorrect")
    _score([cand, broken, bad], "graph")
    assert cand.fitness == 0.0 and cand.best_baseline is None
    assert bad.fitness == 0.0


def test_a_baseline_is_not_compared_with_itself() -> None:
    a = _result("a", "baseline", [10.0] * 4, hash_="same")
    twin = _result("twin", "candidate", [10.0] * 4, hash_="same")
    other = _result("other", "baseline", [12.0] * 4)
    _score([a, twin, other], "graph")
    assert "a" not in twin.speedup["graph"] and twin.best_baseline == "other"
    assert "a" not in a.speedup["graph"]


def test_a_candidate_missing_the_ranking_mode_is_not_ranked_by_another() -> None:
    cand = _result("c", "candidate", [5.0] * 4)
    del cand.timing["graph"]
    cand.timing_errors["graph"] = "capture failed"
    ranked = _result("r", "candidate", [8.0] * 4)
    base = _result("b", "baseline", [10.0] * 4)
    _score([cand, ranked, base], "graph")
    assert cand.status == "runtime_error" and "graph mode" in cand.detail and "capture failed" in cand.detail
    assert cand.fitness == 0.0
    assert ranked.fitness_mode == "graph" and ranked.fitness == pytest.approx(10.15 / 8.0, rel=0.02)


def test_worker_is_pinned_to_one_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from evoforge.evaluator import EvalConfig, EvaluatorError

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    assert EvalConfig(device="cuda:1").visible_gpu() == "6"
    assert EvalConfig(device="auto").visible_gpu() == "4"
    assert EvalConfig(device="cuda:1").worker_view()["device"] == "cuda:0"
    assert EvalConfig(device="cpu").visible_gpu() is None
    with pytest.raises(EvaluatorError):
        EvalConfig(device="cuda:2").visible_gpu()
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert EvalConfig(device="cuda:3").visible_gpu() == "3"
