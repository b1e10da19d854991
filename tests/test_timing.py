"""The timing module on the CPU: statistics, rep counts, interleaving, failures as data."""

from __future__ import annotations

import time

import pytest
import torch

from evoforge.timing import TimingConfig, measure, summarize

FAST = TimingConfig(budget_ms=2, rounds=3, warmup=2, min_reps=3, max_reps=50, flush_bytes=1 << 16)


def test_summarize_reports_median_quartiles_and_min() -> None:
    stats = summarize([5.0, 1.0, 3.0, 2.0, 4.0], mode="eager", clock="perf_counter_ns", device="cpu", flush_bytes=0)
    assert stats.median_us == 3.0
    assert stats.min_us == 1.0
    assert (stats.q1_us, stats.q3_us) == (2.0, 4.0)
    assert stats.iqr_us == 2.0
    assert stats.reps == 5


def test_summarize_refuses_no_samples() -> None:
    with pytest.raises(ValueError):
        summarize([], mode="eager", clock="x", device="cpu", flush_bytes=0)


def test_cpu_timing_measures_the_call() -> None:
    results = measure({"sleep": lambda: time.sleep(0.002)}, device="cpu", modes=("eager",), config=FAST)
    stats = results["sleep"]["eager"]
    assert not isinstance(stats, str)
    assert stats.clock == "perf_counter_ns" and stats.device == "cpu"
    assert 1900 <= stats.median_us < 20_000
    assert stats.min_us <= stats.median_us


def test_slower_function_gets_fewer_reps_within_bounds() -> None:
    results = measure({"fast": lambda: None, "slow": lambda: time.sleep(0.001)}, device="cpu", modes=("eager",),
                      config=TimingConfig(budget_ms=20, rounds=2, warmup=2, min_reps=3, max_reps=500,
                                          flush_bytes=1 << 16))
    fast, slow = results["fast"]["eager"], results["slow"]["eager"]
    assert not isinstance(fast, str) and not isinstance(slow, str)
    assert fast.reps > slow.reps >= 3
    assert fast.reps <= 500 + 2  # rounding up per round


def test_functions_are_interleaved_across_rounds() -> None:
    seen: list[str] = []
    measure({"a": lambda: None, "b": lambda: None}, device="cpu", modes=("eager",), config=FAST,
            on_switch=lambda name, mode: seen.append(name))
    timed_blocks = seen[2:]  # after one warm-up visit each
    assert timed_blocks == ["a", "b", "b", "a", "a", "b"]


def test_graph_mode_on_cpu_is_an_error_string_not_an_exception() -> None:
    results = measure({"f": lambda: None}, device="cpu", modes=("eager", "graph"), config=FAST)
    assert "CUDA" in results["f"]["graph"]
    assert not isinstance(results["f"]["eager"], str)


def test_a_failing_function_does_not_stop_the_others() -> None:
    calls = {"n": 0}

    def flaky() -> None:
        calls["n"] += 1
        if calls["n"] > 3:
            raise RuntimeError("boom")

    results = measure({"flaky": flaky, "fine": lambda: None}, device="cpu", modes=("eager",), config=FAST)
    assert "boom" in results["flaky"]["eager"]
    assert not isinstance(results["fine"]["eager"], str)


@pytest.mark.gpu
def test_gpu_graph_mode_is_faster_than_eager_for_a_tiny_kernel() -> None:
    x = torch.randn(1024, device="cuda")
    results = measure({"add": lambda: x.add(1)}, device="cuda", config=TimingConfig(budget_ms=20))
    eager, graph = results["add"]["eager"], results["add"]["graph"]
    assert not isinstance(eager, str) and not isinstance(graph, str)
    assert eager.clock == "cuda_event"
    assert graph.median_us < eager.median_us
    assert eager.flush_bytes >= 2 * torch.cuda.get_device_properties(0).L2_cache_size
