"""Batches that survive (issue 22): each problem's row kept as it finishes (an atomically rewritten
file), `evoforge resume <batch>` runs only what is left, `evoforge report <batch>` renders it."""

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

from evoforge.batch import BatchSummary, ProblemOutcome
from evoforge.batch_store import CURVE_P, BatchRecord, batches_dir, fast_p_curve
from evoforge.store import StoreError
from tests.test_cli_run import TASKS, evoforge


def test_a_record_keeps_rows_and_knows_what_is_left(tmp_path: Path) -> None:
    db = tmp_path / ".evoforge" / "runs.db"
    problems = [(tmp_path / "a.py", 1), (tmp_path / "b.py", 1), (tmp_path / "c.py", 2)]
    record = BatchRecord.create(db, tmp_path, None, {"generations": 1}, problems)
    assert record.path == batches_dir(db) / f"{record.id}.json" and record.id.startswith("batch-")
    record.claim()
    record.begin(problems[0][0], "run-a")
    record.finish(ProblemOutcome("a", str(problems[0][0]), 1, "ok", run="run-a", vs_eager=2.0, fitness=1.5))
    record.begin(problems[1][0], "run-b")  # killed here: b's run is remembered
    again = BatchRecord.load(db, record.id[:16])  # a unique prefix is enough
    assert [p for p, _ in again.todo()] == [problems[1][0], problems[2][0]]
    assert again.run_of(problems[1][0]) == "run-b" and again.run_of(problems[2][0]) is None
    data = json.loads(record.path.read_text())
    assert data["rows"][0]["run"] == "run-a" and data["summary"]["problems"] == 1
    assert not list(record.path.parent.glob("*.tmp"))  # written through a temporary file, renamed over
    with pytest.raises(StoreError, match="is running in process"):  # a live process on this host runs it
        subprocess_record = BatchRecord.load(db, record.id)
        subprocess_record.pid = os.getppid()
        subprocess_record.claim()
    with pytest.raises(StoreError, match="no batch 'batch-nope'"):
        BatchRecord.load(db, "batch-nope")


def test_fast_p_curve_from_0_to_2() -> None:
    rows = [ProblemOutcome("a", "a.py", 1, "ok", vs_eager=1.8, fitness=1.2, significant=True,
                           significant_vs_eager=True),
            ProblemOutcome("b", "b.py", 1, "ok", vs_eager=0.9, fitness=0.7),
            ProblemOutcome("c", "c.py", 1, "ok", vs_eager=1.3, fitness=1.1),  # not beyond noise
            ProblemOutcome("d", "d.py", 1, "error")]
    curve = fast_p_curve(BatchSummary(rows))
    assert curve["p"] == CURVE_P and curve["p"][0] == 0.0 and curve["p"][-1] == 2.0 and len(curve["p"]) == 41
    at = {p: (e, b) for p, e, b in zip(curve["p"], curve["vs_eager"], curve["vs_best"], strict=True)}
    assert at[0.0] == (0.75, 0.75)  # fast_0: the correctness rate
    assert at[0.8] == (0.75, 0.5)
    assert at[1.0] == (0.25, 0.25)  # from 1 on, wins beyond noise only (c's are not)
    assert at[1.5] == (0.25, 0.0) and at[2.0] == (0.0, 0.0)


def test_a_batch_killed_after_its_first_problem_resumes_and_finishes_the_rest(tmp_path: Path) -> None:
    folder = tmp_path / "problems"
    folder.mkdir()
    (folder / "a_tanh.py").write_text((TASKS / "tanh_matmul.py").read_text())
    (folder / "b_tanh.py").write_text((TASKS / "tanh_matmul.py").read_text())
    (folder / "c_no_model.py").write_text((TASKS / "no_model.py").read_text())
    args = ["--task-dir", "problems", "--generations", "1", "--population", "1", "--budget-ms", "5",
            "--device", "cpu"]
    proc = subprocess.Popen([sys.executable, "-m", "evoforge.cli", "run", *args], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    batches = tmp_path / ".evoforge" / "batches"
    deadline = time.monotonic() + 400
    rows: list[dict] = []
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.3)
        files = list(batches.glob("batch-*.json")) if batches.is_dir() else []
        if files:
            rows = json.loads(files[0].read_text())["rows"]
            if rows:
                time.sleep(3)  # into the second problem's run
                break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    current = json.loads(next(batches.glob("batch-*.json")).read_text())["current"]
    assert [r["path"].rsplit("/", 1)[-1] for r in rows] == ["a_tanh.py"], "killed after the first problem"
    (batch_file,) = batches.glob("batch-*.json")
    batch_id = batch_file.stem
    first_run = rows[0]["run"]

    resumed = evoforge("resume", batch_id, "--json", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"batch {batch_id}: 2 problem(s)" in resumed.stderr and "(1 already finished)" in resumed.stderr
    data = json.loads(resumed.stdout)
    names = [p["path"].rsplit("/", 1)[-1] for p in data["problems"]]
    assert names == ["a_tanh.py", "b_tanh.py", "c_no_model.py"]
    assert data["problems"][0]["run"] == first_run and data["problems"][0]["status"] == "ok"
    assert data["problems"][1]["status"] == "ok" and data["problems"][2]["status"] == "error"
    db = sqlite3.connect(tmp_path / ".evoforge" / "runs.db")
    tasks = [json.loads(t)["arg"].rsplit("/", 1)[-1] for (t,) in db.execute("SELECT task_json FROM runs")]
    assert tasks.count("a_tanh.py") == 1  # a was not run again
    if current.get("run"):  # b's run, cut by the kill, was continued rather than started again
        assert data["problems"][1]["run"] == current["run"] and tasks.count("b_tanh.py") == 1
    assert json.loads(batch_file.read_text())["status"] == "finished"

    report = evoforge("report", batch_id[:18], "--out", "rep", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert "a_tanh" in report.stdout and "geomean" in report.stdout
    evidence = json.loads((tmp_path / "rep" / "batch.json").read_text())
    assert evidence["batch"]["id"] == batch_id and evidence["batch"]["finished"] == 3
    assert len(evidence["fast_p_curve"]["vs_eager"]) == 41 and evidence["summary"]["problems"] == 3
    assert "fast_p" in (tmp_path / "rep" / "report.html").read_text()


def test_a_budget_shorter_than_generation_0_says_so_in_the_row(tmp_path: Path) -> None:
    """A problem whose --budget ends before any evaluation comes back is not 'no valid candidate' (nothing was
    judged): its row says 'nothing evaluated' and why the run stopped. Between problems the batch closes the
    kept and spare workers of the last one (they hold its inputs)."""
    folder = tmp_path / "problems"
    folder.mkdir()
    (folder / "a_tanh.py").write_text((TASKS / "tanh_matmul.py").read_text())
    proc = evoforge("run", "--task-dir", "problems", "--budget", "1s", "--population", "2", "--device", "cpu",
                    "--json", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr  # no problem got a correct candidate
    (row,) = json.loads(proc.stdout)["problems"]
    assert row["status"] == "nothing evaluated" and row["evaluated"] == 0
    assert row["detail"].startswith("run stopped: time budget of 1 s"), row["detail"]


def test_release_workers_closes_kept_and_spare_workers() -> None:
    from evoforge.evaluator import process

    closed: list[str] = []

    class Fake:
        def __init__(self, name: str) -> None:
            self.name = name

        def close(self) -> None:
            closed.append(self.name)

    process.KEPT.workers["k"] = Fake("kept")  # type: ignore[assignment]
    process.SPARES.workers.setdefault("s", []).append(Fake("spare"))  # type: ignore[arg-type]
    process.release_workers()
    assert sorted(closed) == ["kept", "spare"] and not process.KEPT.workers and not process.SPARES.workers


def _three_problems(tmp_path: Path) -> Path:
    folder = tmp_path / "problems"
    folder.mkdir()
    for name in ("a_tanh.py", "b_tanh.py", "c_tanh.py"):
        (folder / name).write_text((TASKS / "tanh_matmul.py").read_text())
    (folder / "d_no_model.py").write_text((TASKS / "no_model.py").read_text())
    return folder


def test_problems_at_once_run_side_by_side_each_in_a_process_of_its_own(tmp_path: Path) -> None:
    _three_problems(tmp_path)
    proc = evoforge("run", "--task-dir", "problems", "--generations", "1", "--population", "1", "--budget-ms", "5",
                    "--device", "cpu", "--problems-at-once", "2", "--budget", "120s", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "2 problems at once, each in a process of its own (cpu#0, cpu#1)" in proc.stderr
    assert "share its cores" in proc.stderr  # on the CPU, said
    lanes = {line.split("]")[0] + "]" for line in proc.stderr.splitlines() if line.startswith("[cpu#")}
    assert lanes == {"[cpu#0]", "[cpu#1]"}, proc.stderr  # each lane's process' lines, prefixed
    data = json.loads(proc.stdout)
    names = [p["path"].rsplit("/", 1)[-1] for p in data["problems"]]
    assert names == ["a_tanh.py", "b_tanh.py", "c_tanh.py", "d_no_model.py"]  # the batch's order, not finish order
    assert [p["status"] for p in data["problems"]] == ["ok", "ok", "ok", "error"]
    assert "no `Model` class" in data["problems"][3]["detail"]
    assert all(p["budget_s"] == 120 and 0 < p["wall_s"] < 130 for p in data["problems"][:3])
    db = sqlite3.connect(tmp_path / ".evoforge" / "runs.db")
    runs = {r: (s, json.loads(c)["problems_at_once"])
            for r, s, c in db.execute("SELECT id, status, config_json FROM runs")}
    assert {p["run"] for p in data["problems"][:3]} == set(runs)  # d's file has no Model: refused before a run
    assert all(runs[p["run"]][0] == "finished" for p in data["problems"][:3])
    assert not db.execute("SELECT COUNT(*) FROM leases").fetchone()[0]  # every child gave its run's lease back
    spans = [db.execute("SELECT created, updated FROM runs WHERE id = ?", (p["run"],)).fetchone()
             for p in data["problems"][:2]]
    (a0, a1), (b0, b1) = spans  # a and b ran at the same time: each began before the other ended
    assert a0 < b1 and b0 < a1, spans
    (batch_file,) = (tmp_path / ".evoforge" / "batches").glob("batch-*.json")
    record = json.loads(batch_file.read_text())
    assert record["status"] == "finished" and record["running"] == {} and record["config"]["problems_at_once"] == 2


@pytest.mark.parametrize(("args", "message"), [
    (["--task-dir", "problems", "--problems-at-once", "2", "--executor", "ray"], "is for the local executor"),
    (["--task", "attention-tiny", "--problems-at-once", "2"], "is for a batch (--task-dir)"),
    (["resume", "20261201-000000-abcd", "--problems-at-once", "2"], "is for a batch (resume batch-...)"),
    (["--task-dir", "problems", "--problems-at-once", "0"], "--problems-at-once"),
])
def test_problems_at_once_refused_where_it_cannot_be_honoured(tmp_path: Path, args: list[str], message: str) -> None:
    _three_problems(tmp_path)
    command = args[:1] if args[0] == "resume" else ["run"]
    rest = args[1:] if args[0] == "resume" else [*args, "--device", "cpu"]
    proc = evoforge(*command, *rest, cwd=tmp_path)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / ".evoforge" / "batches").exists() or not list((tmp_path / ".evoforge" / "batches").iterdir())


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_ctrl_c_or_a_kill_stops_problems_at_once_and_resume_continues_their_runs(tmp_path: Path,
                                                                                   sig: signal.Signals) -> None:
    _three_problems(tmp_path)
    args = ["--task-dir", "problems", "--generations", "3", "--population", "1", "--budget-ms", "5",
            "--device", "cpu", "--problems-at-once", "2"]
    proc = subprocess.Popen([sys.executable, "-m", "evoforge.cli", "run", *args], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    batches = tmp_path / ".evoforge" / "batches"
    deadline = time.monotonic() + 300
    record: dict = {}
    store = tmp_path / ".evoforge" / "runs.db"
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.3)
        files = list(batches.glob("batch-*.json")) if batches.is_dir() else []
        if files and len(json.loads(files[0].read_text())["running"]) == 2:
            # both children in their sessions: each run has a batch evaluated (a child still importing when the
            # signal comes dies before its session starts, leaving its run as the batch's process recorded it)
            with sqlite3.connect(store) as probe:
                if probe.execute("SELECT COUNT(DISTINCT run_id) FROM evaluations").fetchone()[0] == 2:
                    break
    # the batch's process only: it passes a Ctrl-C on to its children; killed, its children get SIGTERM
    os.kill(proc.pid, sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == (130 if sig == signal.SIGINT else -signal.SIGKILL), err
    (batch_file,) = batches.glob("batch-*.json")
    record = json.loads(batch_file.read_text())
    assert record["rows"] == [] and len(record["running"]) == 2, (record, err)
    db = sqlite3.connect(tmp_path / ".evoforge" / "runs.db")
    deadline = time.monotonic() + 90  # after a kill the orphaned children end their runs on their own
    while db.execute("SELECT COUNT(*) FROM leases").fetchone()[0] and time.monotonic() < deadline:
        time.sleep(0.5)
    statuses = {r: s for r, s in db.execute("SELECT id, status FROM runs")}
    assert set(statuses) == set(record["running"].values())
    assert set(statuses.values()) == {"interrupted"}, statuses  # each child ended its session as Ctrl-C does
    assert not db.execute("SELECT COUNT(*) FROM leases").fetchone()[0]

    # after the kill, resumed one problem at a time (as on a machine with one GPU): the setting is resume's too
    one_at_a_time = ["--problems-at-once", "1"] if sig == signal.SIGKILL else []
    resumed = evoforge("resume", batch_file.stem, "--json", *one_at_a_time, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert ("problems at once" in resumed.stderr) == (not one_at_a_time), resumed.stderr
    data = json.loads(resumed.stdout)
    assert [p["status"] for p in data["problems"]] == ["ok", "ok", "ok", "error"]
    for path, run in record["running"].items():  # the interrupted runs were continued, not started again
        (row,) = [p for p in data["problems"] if p["path"] == path]
        assert row["run"] == run
    assert len(db.execute("SELECT id FROM runs").fetchall()) == 3
