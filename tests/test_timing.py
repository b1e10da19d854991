"""The timing module on the CPU: statistics, rep counts, interleaving, failures as data."""

from __future__ import annotations

import itertools
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
    assert timed_blocks == ["a", "b", "b", "a", "b", "a"]


def test_over_an_even_number_of_rounds_each_function_follows_each_neighbour_as_often_as_it_precedes_it() -> None:
    """A function timed right after a long-running one can run on a hotter, slower GPU: no entry may
    get the same predecessor in every round."""
    seen: list[str] = []
    config = TimingConfig(budget_ms=2, rounds=6, warmup=1, min_reps=6, max_reps=6, flush_bytes=1 << 16)
    measure({n: (lambda: None) for n in "abcd"}, device="cpu", modes=("eager",), config=config,
            on_switch=lambda name, mode: seen.append(name))
    timed = seen[4:]  # after one warm-up visit each
    rounds = [timed[i:i + 4] for i in range(0, len(timed), 4)]
    assert len(rounds) == 6 and all(sorted(r) == list("abcd") for r in rounds)
    follows: dict[tuple[str, str], int] = {}
    for r in rounds:
        for before, after in itertools.pairwise(r):
            follows[(before, after)] = follows.get((before, after), 0) + 1
    assert follows and all(follows.get((y, x), 0) == n for (x, y), n in follows.items())
    assert len({r[0] for r in rounds}) >= 3  # and the round's first place moves around


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
