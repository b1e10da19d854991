"""End to end (issue 23): the run lifecycle and one-line errors of the real `evoforge` CLI, on the CPU."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from evoforge.store import RunStore
from tests.conftest import CANDIDATES
from tests.test_store import _damaged_store, _lease_for

FAST = ["--budget-ms", "5", "--population", "2"]


def evoforge(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "evoforge.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, check=False)


def one_line(proc: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    for word in words:
        assert word in proc.stderr, proc.stderr


@pytest.mark.parametrize("command", ["run", "eval", "sweep"])
@pytest.mark.parametrize("device", ["cuda", "cuda:7", "tpu"])
def test_a_device_this_machine_lacks_is_one_line_and_exit_2(tmp_path: Path, command: str, device: str) -> None:
    if device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.device_count() > 7:
        pytest.skip("this machine has the device")
    args = {"run": ["run", "--budget-ms", "5"], "sweep": ["sweep", "--task", "attention-tiny"],
            "eval": ["eval", str(CANDIDATES / "good.py"), "--task", "attention-tiny"]}[command]
    proc = evoforge(*args, "--device", device, cwd=tmp_path)
    one_line(proc, 2, f"--device {device}: ")
    db = tmp_path / ".evoforge" / "runs.db"
    assert not db.exists() or RunStore(db).runs() == []  # no ghost run


@pytest.mark.parametrize("args", [["runs"], ["report", "latest"], ["run", "--device", "cpu"], ["resume", "latest"]])
def test_a_damaged_store_is_one_line_and_never_written(tmp_path: Path, args: list[str]) -> None:
    db = _damaged_store(tmp_path / ".evoforge")
    before = db.read_bytes()
    one_line(evoforge(*args, cwd=tmp_path), 2, "damaged store", "quick_check")
    assert db.read_bytes() == before


def _store_with_a_run(tmp_path: Path) -> tuple[RunStore, str]:
    (tmp_path / ".evoforge").mkdir()
    store = RunStore(tmp_path / ".evoforge" / "runs.db")
    run_id = store.create_run({"name": "attention-tiny"}, {"task": "attention-tiny", "device": "cpu"})
    return store, run_id


def test_a_second_session_of_a_live_run_is_refused(tmp_path: Path) -> None:
    store, run_id = _store_with_a_run(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        _lease_for(store, run_id, holder.pid)  # the run's process, alive
        proc = evoforge("resume", run_id, cwd=tmp_path)
        one_line(proc, 2, f"run {run_id} is already running (process {holder.pid} on ")
        assert store.lease(run_id).pid == holder.pid
        (row,) = json.loads(evoforge("runs", "--json", cwd=tmp_path).stdout)
        assert row["status"] == "running"
    finally:
        holder.kill()
        holder.wait()
    (row,) = json.loads(evoforge("runs", "--json", cwd=tmp_path).stdout)
    assert row["status"] == "interrupted"  # its process is gone


def test_report_latest_skips_runs_that_evaluated_nothing(tmp_path: Path) -> None:
    store, run_id = _store_with_a_run(tmp_path)
    store.release(run_id, status="failed", note="failed to start: RuntimeError: the Ray cluster is unreachable")
    one_line(evoforge("report", "latest", cwd=tmp_path), 2, "has evaluated a candidate yet")


def _signal_masks(pid: int) -> str:
    """The process's blocked, ignored and caught signal masks (Linux), for a failure's message."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return "unknown"
    return " ".join(line.replace("\t", "") for line in lines if line.startswith(("SigBlk", "SigIgn", "SigCgt")))


def _wait_for_candidates(db: Path, proc: subprocess.Popen[str]) -> str:
    """The run's id, once its first proposals are stored (the search is under way)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        try:
            row = sqlite3.connect(db).execute("SELECT run_id FROM candidates LIMIT 1").fetchone()
        except sqlite3.Error:
            continue
        if row:
            return str(row[0])
    raise AssertionError(f"the run never got going: {proc.communicate()[1] if proc.poll() is not None else ''}")


@pytest.mark.parametrize(("sig", "code", "note"), [(signal.SIGTERM, 143, "terminated (SIGTERM)"),
                                                   (signal.SIGINT, 130, "interrupted (SIGINT, Ctrl-C)")])
def test_a_run_ended_by_a_signal_is_marked_interrupted(tmp_path: Path, sig: int, code: int, note: str) -> None:
    # Started as from a terminal: with the signal's default disposition, whatever this test process inherited
    # (a process started with SIGINT ignored, as a shell's background job is, keeps it ignored: no Ctrl-C there).
    proc = subprocess.Popen([sys.executable, "-m", "evoforge.cli", "run", "--device", "cpu", "--generations", "3",
                             *FAST], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(sig, signal.SIG_DFL))
    db = tmp_path / ".evoforge" / "runs.db"
    run_id = _wait_for_candidates(db, proc)
    masks = _signal_masks(proc.pid)
    os.kill(proc.pid, sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, f"signal masks when it was sent: {masks}\n{stderr}"
    assert "Traceback" not in stderr
    record = RunStore(db).run(run_id)
    assert (record.status, record.note, record.lease) == ("interrupted", note, None)
