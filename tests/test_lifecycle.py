"""The run lifecycle (issue 23): how a session ends is recorded, a failed start is marked, devices this
machine lacks are refused before a run exists, and ``resume``'s budget is the session's."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from evoforge import evolve
from evoforge.evolve import RunConfig, Terminated
from evoforge.store import RunStore
from evoforge.task import TaskError


def _run(tmp_path: Path, **config: Any) -> tuple[RunStore, str]:
    store = RunStore(tmp_path / "runs.db")
    settings = {"task": "attention-tiny", "device": "cpu", **config}
    return store, store.create_run({"name": "attention-tiny"}, RunConfig(**settings).to_dict())


@pytest.mark.parametrize(("raised", "status", "note"), [
    (KeyboardInterrupt(), "interrupted", "interrupted (SIGINT, Ctrl-C)"),
    (Terminated("SIGTERM"), "interrupted", "terminated (SIGTERM)"),
    (RuntimeError("the Ray cluster at 10.0.0.1:6379\nis unreachable"), "failed",
     "RuntimeError: the Ray cluster at 10.0.0.1:6379 is unreachable"),
])
def test_a_session_that_ends_early_says_how(tmp_path: Path, raised: BaseException, status: str, note: str) -> None:
    store, run_id = _run(tmp_path)
    with pytest.raises(type(raised)), evolve.session(store, run_id):
        raise raised
    record = store.run(run_id)
    assert (record.status, record.note, record.lease) == (status, note, None)


def test_a_session_that_ends_normally_leaves_the_status_to_the_search(tmp_path: Path) -> None:
    store, run_id = _run(tmp_path)
    with evolve.session(store, run_id):
        assert store.run(run_id).status == "running"
        store.update_run(run_id, status="finished", note="reached 2 generations")
    record = store.run(run_id)
    assert (record.status, record.note, record.lease) == ("finished", "reached 2 generations", None)


def test_sigterm_becomes_terminated_in_the_main_thread() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated, match="SIGTERM"), evolve.on_signals():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)  # the handler raises here, at once
    assert signal.getsignal(signal.SIGTERM) == before


def test_a_failed_start_is_marked_failed_and_let_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise OSError("no space left on device")

    monkeypatch.setattr(evolve, "prepare", broken)
    store = RunStore(tmp_path / "runs.db")
    with pytest.raises(OSError):
        evolve.start(RunConfig(task="attention-tiny", device="cpu"), store)
    (record,) = store.runs()
    assert record.status == "failed" and record.lease is None
    assert record.note == "failed to start: OSError: no space left on device"


@pytest.mark.parametrize("device", ["tpu", "cuda:x", "npu0", "cuda", "cuda:7"])
def test_a_device_this_machine_lacks_is_one_line_and_no_run(tmp_path: Path, device: str) -> None:
    if device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.device_count() > 7:
        pytest.skip("this machine has the device")
    store = RunStore(tmp_path / "runs.db")
    with pytest.raises(TaskError, match=f"--device {device}: ") as info:
        evolve.start(RunConfig(task="attention-tiny", device=device), store)
    assert "\n" not in str(info.value)
    assert store.runs() == []  # no ghost run


def test_ray_devices_are_checked_for_their_form_only() -> None:
    assert evolve.check_device("cuda:3", local=False) == "cuda:3"
    with pytest.raises(TaskError, match="not a device evoforge runs on"):
        evolve.check_device("tpu", local=False)


def test_resume_budgets_are_this_sessions(tmp_path: Path) -> None:
    store, run_id = _run(tmp_path, budget="60s", generations=3)
    store.release(run_id, status="finished", note="time budget of 60 s would be exceeded by another generation")
    overrides = {"generations": 6, "budget": None, "max_evals": None, "executor": None, "address": None,
                 "workers": None}
    config, _, full_id = evolve.resume(store, run_id, overrides)
    assert full_id == run_id
    assert config.generations == 6 and config.budget is None  # the first session's 60 s does not apply again
    assert config.search_config().budget_s is None
    record = store.run(run_id)
    assert record.status == "running" and record.lease is not None and record.lease.mine
    assert record.config["budget"] == "60s" and record.config["generations"] == 6  # what was asked, kept
    store.release(run_id)
    config, _, _ = evolve.resume(store, run_id, {**overrides, "budget": "2m"})
    assert config.budget == "2m" and config.search_config().budget_s == 120.0
    store.release(run_id)


def test_a_resume_that_can_not_start_leaves_the_run_as_it_was(tmp_path: Path) -> None:
    store, run_id = _run(tmp_path)
    store.release(run_id, status="finished", note="reached 10 generations")
    with pytest.raises(TaskError, match="--device tpu"):
        evolve.resume(store, run_id, {"device": "tpu"})
    record = store.run(run_id)
    assert (record.status, record.note, record.lease) == ("finished", "reached 10 generations", None)
