"""Precompile is off by default for a problem whose input set is large (issue 22): the precompile process gets a
batch's inputs as JSON, which for a KernelBench-size input set is tens of gigabytes of Python objects."""

from __future__ import annotations

import random

import pytest

from evoforge import evolve
from evoforge.task import TaskSpec
from tests.test_memory_cap import HUGE


def test_precompile_is_off_by_default_for_large_input_sets(monkeypatch: pytest.MonkeyPatch) -> None:
    small = HUGE.replace("torch.randn(1 << 20, 1 << 20)", "torch.randn(64, 64)")
    assert evolve._large_inputs(TaskSpec("huge", HUGE, "huge.py"))
    assert not evolve._large_inputs(TaskSpec("small", small, "small.py"))
    made: dict[str, bool] = {}

    class Local:
        def __init__(self, evaluate: object, devices: list[str], prefetch: int, precompile: bool) -> None:
            made["precompile"] = precompile

    monkeypatch.setattr(evolve, "LocalExecutor", Local)
    monkeypatch.setattr(evolve, "local_slots", lambda device, workers: ["cuda:0"])
    prepared = evolve.Prepared(TaskSpec("huge", HUGE, "huge.py"), None, None, random.Random(0), "cuda")  # type: ignore[arg-type]
    evolve.make_executor(evolve.RunConfig(), prepared)
    assert made["precompile"] is False
    evolve.make_executor(evolve.RunConfig(precompile=True), prepared)  # asked for: kept
    assert made["precompile"] is True
    evolve.make_executor(evolve.RunConfig(), evolve.Prepared(TaskSpec("small", small, "small.py"), None, None,  # type: ignore[arg-type]
                                                             random.Random(0), "cuda"))
    assert made["precompile"] is True
