"""The local executor with real worker processes on CPU slots: batches run side by side, a crashing and
a hanging candidate cost only themselves, slots survive them, close() cancels, precompile overlaps."""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path

import pytest

from evoforge.candidate import Candidate
from evoforge.evaluator import EvalConfig, Evaluator
from evoforge.evolve import GenerationEvaluator, RunConfig, check_executor
from evoforge.executor import Done, LocalExecutor, local_slots
from evoforge.kernels.flash_attention import FlashGenome, render
from evoforge.task import TaskError, task_from_file
from evoforge.tasks import TASK_MODEL_SOURCE, builtin_task
from evoforge.timing import TimingConfig
from tests.conftest import CANDIDATES, TASKS

FAST = TimingConfig(budget_ms=5, rounds=2, warmup=2, min_reps=3, max_reps=20)


def cand(fixture: str, name: str | None = None) -> Candidate:
    return Candidate(name=name or fixture, source=(CANDIDATES / f"{fixture}.py").read_text())


def planner(timeout_s: float = 6.0) -> GenerationEvaluator:
    spec = task_from_file(TASKS / "tanh_matmul.py")
    baseline = Candidate(name="task_model", source=TASK_MODEL_SOURCE, lineage={"baseline": True})
    config = EvalConfig(device="cpu", timeout_s=timeout_s, memory_limit_mb=3072, timing=FAST)
    return GenerationEvaluator(spec, config, [baseline], keep=1)


def collect(executor: LocalExecutor, n: int, limit_s: float = 240) -> list[Done]:
    done: list[Done] = []
    deadline = time.monotonic() + limit_s
    while len(done) < n and time.monotonic() < deadline:
        done += executor.wait(timeout=5)
    assert len(done) == n, f"only {len(done)} of {n} batches came back"
    return done


def test_local_slots_respect_the_device_and_workers() -> None:
    assert local_slots("cpu", None) == ["cpu"]
    assert local_slots("cpu", 3) == ["cpu", "cpu", "cpu"]
    assert local_slots("cuda:1", 4) == ["cuda:1"]  # one named GPU: one slot, timings never shared
    with pytest.raises(Exception, match="at least one"):
        local_slots("cpu", 0)


def test_config_checks_the_executor_settings() -> None:
    check_executor(RunConfig.from_dict({"executor": "local", "workers": 2, "prefetch": 1}))
    with pytest.raises(TaskError, match="unknown executor 'slurm'"):
        check_executor(RunConfig(executor="slurm"))
    with pytest.raises(TaskError, match="--address is for --executor ray"):
        check_executor(RunConfig(address="auto"))


@pytest.fixture(scope="module")
def crash_hang_run() -> tuple[LocalExecutor, list[Done]]:
    executor = LocalExecutor(planner(), ["cpu", "cpu"])
    try:
        executor.submit(0, [cand("segfault"), cand("good", "good_a")])
        executor.submit(1, [cand("hangs"), cand("good", "good_b")])
        executor.submit(2, [cand("good", "good_c"), cand("os_exit")])  # queued: runs on whichever slot frees first
        assert executor.queued() >= 1
        done = collect(executor, 3)
    finally:
        executor.close()
    return executor, done


def test_crash_and_hang_cost_only_the_culprit(crash_hang_run: tuple[LocalExecutor, list[Done]]) -> None:
    _, done = crash_hang_run
    status = {r.name: r.status for d in done for r in d.results}
    assert status == {"segfault": "crashed", "good_a": "ok", "hangs": "timeout", "good_b": "ok",
                      "good_c": "ok", "os_exit": "crashed"}
    for d in done:  # every batch met its baseline in its own worker, and says where it ran
        assert [b.status for b in d.baselines] == ["ok"]
        assert d.where["host"] and d.where["device_name"].startswith("CPU")
        assert all(r.where.get("slot") == d.slot for r in d.results + d.baselines)
        assert all(r.fitness > 0 for r in d.results if r.ok)


def test_two_slots_ran_side_by_side_and_survived(crash_hang_run: tuple[LocalExecutor, list[Done]]) -> None:
    executor, done = crash_hang_run
    assert {d.slot for d in done} == {"cpu#0", "cpu#1"}
    log = sorted(executor.timing_log, key=lambda r: r["start"])
    first, second = log[0], log[1]
    assert second["start"] < first["end"]  # the first two batches overlapped: two workers at once
    for slot in ("cpu#0", "cpu#1"):  # but never two batches at once on one slot
        mine = sorted((r for r in log if r["slot"] == slot), key=lambda r: r["start"])
        assert all(a["end"] <= b["start"] for a, b in itertools.pairwise(mine))
    summary = executor.throughput()
    assert summary["slots"] == 2 and summary["evaluations"] == 6
    assert set(summary["per_slot"]) == {"cpu#0", "cpu#1"}
    assert all(0.0 <= s["idle_frac"] < 1.0 for s in summary["per_slot"].values())


def test_close_cancels_a_running_batch() -> None:
    from tests.test_cli_run import _children

    executor = LocalExecutor(planner(timeout_s=120), ["cpu"])
    executor.submit(0, [cand("hangs")])
    deadline = time.monotonic() + 60
    workers: list[int] = []
    scratch = Path()
    while not workers and time.monotonic() < deadline:
        time.sleep(0.2)
        # Other short-lived children (the sandbox's probes) may come and go: find the worker by its cwd.
        for pid in _children(os.getpid()):
            try:
                cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
            except OSError:
                continue
            if cwd.name.startswith("evoforge-worker-"):
                workers, scratch = [pid], cwd
    assert workers, "no worker started"
    t0 = time.monotonic()
    executor.close()
    assert time.monotonic() - t0 < 20
    assert not any(t.is_alive() for t in executor._threads)
    assert not Path(f"/proc/{workers[0]}").exists()  # the worker was killed (and reaped) ...
    assert not scratch.exists()  # ... and its scratch directory removed


def _attention_candidates(tag: str) -> list[Candidate]:
    genomes = [FlashGenome(block_m=16, block_n=16), FlashGenome(block_m=32, block_n=16, exp2=False)]
    return [Candidate(name=f"{tag}-{i}", source=render(g, causal=False, head_dim=32), language="triton")
            for i, g in enumerate(genomes)]


def test_precompile_turns_launches_into_compiles_without_running_anything() -> None:
    spec = builtin_task("attention-tiny")
    config = EvalConfig(device="cpu", timeout_s=60, timing=FAST)
    env_before = os.environ.get("TRITON_INTERPRET")
    broken = Candidate(name="broken", source="raise RuntimeError('no')\n", language="triton")
    torch_cand = Candidate(name="plain", source=(CANDIDATES / "good.py").read_text(), language="torch")
    info = Evaluator(spec, config).precompile([*_attention_candidates("p"), broken, torch_cand])
    assert info["compiled"] == 2 and info["failed"] == 1 and info["skipped"] == 1
    assert info["kernels"] >= 2 and info["clean"]
    assert os.environ.get("TRITON_INTERPRET") == env_before


def test_precompile_of_the_next_batch_overlaps_the_current_timing() -> None:
    spec = builtin_task("attention-tiny")
    config = EvalConfig(device="cpu", timeout_s=60, timing=FAST)
    from evoforge.tasks import baselines_for

    plan = GenerationEvaluator(spec, config, baselines_for(spec)[:1], keep=1)
    executor = LocalExecutor(plan, ["cpu"], prefetch=1, precompile=True)
    try:
        executor.submit(0, _attention_candidates("a"))
        executor.submit(1, _attention_candidates("b"))
        done = collect(executor, 2)
        deadline = time.monotonic() + 60
        while len(executor.compile_log) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        executor.close()
    assert all(r.ok for d in done for r in d.results)
    timed = {r["generation"]: r for r in executor.timing_log}
    compiled = {r["generation"]: r for r in executor.compile_log}
    assert compiled[1]["kernels"] >= 2
    # batch 1 was being compiled while batch 0 was being checked and timed on the slot
    assert compiled[1]["start"] < timed[0]["end"] and timed[0]["start"] < compiled[1]["end"]
    assert {kind for kind, _ in executor.events} == {"precompile"}


def test_a_broken_task_ends_the_run_as_it_does_serially() -> None:
    spec = task_from_file(TASKS / "model_raises.py")
    config = EvalConfig(device="cpu", timeout_s=30, timing=FAST)
    executor = LocalExecutor(GenerationEvaluator(spec, config, [], keep=1), ["cpu", "cpu"])
    try:
        executor.submit(0, [cand("good")])
        with pytest.raises(TaskError, match="Model raised"):
            collect(executor, 1)
        assert executor.in_flight() == 0
    finally:
        executor.close()
