"""End to end on the CPU: `evoforge run`, a kill -9 and `evoforge resume`, `report`, `best --export`."""

from __future__ import annotations

import importlib.util
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

from evoforge.task import load_task, make_inputs
from evoforge.tasks import builtin_task

FAST = ["--budget-ms", "5", "--device", "cpu", "--population", "3"]


def evoforge(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "evoforge.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    cwd = tmp_path_factory.mktemp("run")
    proc = evoforge("run", "--generations", "2", "--json", *FAST, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["generations"] == 2 and summary["evaluated"] >= 4
    assert "CPU timings" in proc.stderr
    return cwd, summary["run"]


def test_run_stores_everything_in_the_project_store(finished_run: tuple[Path, str]) -> None:
    cwd, run_id = finished_run
    db = sqlite3.connect(cwd / ".evoforge" / "runs.db")
    (status, config), = db.execute("SELECT status, config_json FROM runs WHERE id = ?", (run_id,))
    assert status == "finished" and json.loads(config)["task"] == "attention-tiny"
    n_cands = db.execute("SELECT COUNT(*) FROM candidates WHERE run_id=? AND role='candidate'", (run_id,)).fetchone()
    n_evals = db.execute("SELECT COUNT(*) FROM evaluations WHERE run_id=? AND role='candidate'", (run_id,)).fetchone()
    assert n_cands == n_evals and n_cands[0] >= 4
    baselines = db.execute("SELECT COUNT(*) FROM evaluations WHERE run_id=? AND role='baseline'", (run_id,)).fetchone()
    assert baselines[0] > 0


def test_runs_lists_it(finished_run: tuple[Path, str]) -> None:
    cwd, run_id = finished_run
    proc = evoforge("runs", "--json", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    (row,) = [r for r in json.loads(proc.stdout) if r["id"] == run_id]
    assert row["status"] == "finished" and row["valid"] >= 1


def test_report_writes_json_plots_and_html(finished_run: tuple[Path, str]) -> None:
    cwd, run_id = finished_run
    proc = evoforge("report", run_id, "--out", "rep", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    for name in ("evidence.json", "fitness.png", "latency.png", "validity.png", "report.html"):
        assert (cwd / "rep" / name).stat().st_size > 0, name
    data = json.loads((cwd / "rep" / "evidence.json").read_text())
    assert data["run"]["id"] == run_id and data["best"]["status"] == "ok"
    assert set(data["generations"]) == {"0", "1"}
    assert "seed" in data["validity_by_level"]
    html = (cwd / "rep" / "report.html").read_text()
    assert "data:image/png;base64," in html and "class ModelNew" in html


def test_best_exports_an_importable_module(finished_run: tuple[Path, str]) -> None:
    cwd, run_id = finished_run
    proc = evoforge("best", run_id, "--export", "kernel.py", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    text = (cwd / "kernel.py").read_text()
    assert text.startswith('"""Evolved by evoforge') and "Speedup:" in text and "Device:" in text
    spec = importlib.util.spec_from_file_location("exported_kernel", cwd / "kernel.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    task = load_task(builtin_task("attention-tiny"))
    q, k, v = make_inputs(task, 5)
    expected = task.model_cls()(q.double(), k.double(), v.double())
    torch.testing.assert_close(module.evolved(q, k, v).double(), expected, atol=2e-3, rtol=2e-3)
    assert isinstance(module.EvolvedModel(), torch.nn.Module)


def test_resume_after_kill_9_loses_nothing_and_evaluates_nothing_twice(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "evoforge.cli", "run", "--generations", "4", *FAST],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    db_path = tmp_path / ".evoforge" / "runs.db"
    deadline = time.monotonic() + 300
    evaluated_before: list[tuple[str, int]] = []
    while time.monotonic() < deadline:
        time.sleep(0.5)
        if db_path.exists():
            try:
                evaluated_before = list(sqlite3.connect(db_path).execute(
                    "SELECT hash, generation FROM evaluations WHERE role='candidate'"))
            except sqlite3.OperationalError:
                continue
            if any(gen >= 1 for _, gen in evaluated_before):
                break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert any(gen >= 1 for _, gen in evaluated_before), "the run never reached generation 1"
    (run_id,) = next(iter(sqlite3.connect(db_path).execute("SELECT id FROM runs")))
    listed = evoforge("runs", "--json", cwd=tmp_path)
    assert [r["status"] for r in json.loads(listed.stdout)] == ["interrupted"]  # its process is gone (issue 23)

    resumed = evoforge("resume", run_id[:12], cwd=tmp_path)  # a unique prefix of the id is enough
    assert resumed.returncode == 0, resumed.stderr
    db = sqlite3.connect(db_path)
    after = list(db.execute("SELECT hash, generation FROM evaluations WHERE role='candidate'"))
    assert set(evaluated_before) <= set(after)  # nothing recorded was lost
    hashes = [h for h, _ in after]
    assert len(hashes) == len(set(hashes))  # no candidate evaluated twice
    (status, generation), = db.execute("SELECT status, generation FROM runs")
    assert status == "finished" and generation == 3


EXAMPLES = Path(__file__).parents[1] / "examples" / "problems"
TASKS = Path(__file__).parent / "fixtures" / "tasks"


def test_run_evolves_a_kernelbench_problem_with_the_generic_mutator(tmp_path: Path) -> None:
    proc = evoforge("run", "--task", str(EXAMPLES / "level1" / "softmax.py"), "--generations", "2", "--json",
                    "--budget-ms", "5", "--device", "cpu", "--population", "2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["generations"] == 2 and summary["valid"] >= 3 and summary["best_fitness"] > 0
    assert "mutator generic" in proc.stderr
    db = sqlite3.connect(tmp_path / ".evoforge" / "runs.db")
    rows = [(json.loads(g), json.loads(lin)) for g, lin in
            db.execute("SELECT genome_json, lineage_json FROM candidates WHERE role='candidate'")]
    assert rows and all(g["kind"] == "generic" and lin["mutator"] == "generic" for g, lin in rows)
    baselines = {json.loads(r[0])["name"]
                 for r in db.execute("SELECT result_json FROM evaluations WHERE role='baseline'")}
    assert baselines == {"task_model", "task_model_compiled"}  # eager and torch.compile, timed live
    export = evoforge("best", summary["run"], "--export", "kernel.py", cwd=tmp_path)
    assert export.returncode == 0, export.stderr
    assert "class ModelNew" in (tmp_path / "kernel.py").read_text()


def test_batch_runs_every_problem_of_a_level_and_summarises(tmp_path: Path) -> None:
    for level, name in ((1, "tanh_matmul.py"), (1, "no_model.py"), (2, "model_raises.py")):
        folder = tmp_path / "problems" / f"level{level}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text((TASKS / name).read_text())
    proc = evoforge("run", "--task-dir", "problems", "--level", "1", "--generations", "1", "--population", "1",
                    "--json", "--budget-ms", "5", "--device", "cpu", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    rows = {p["path"].rsplit("/", 1)[-1]: p for p in data["problems"]}
    assert set(rows) == {"tanh_matmul.py", "no_model.py"}  # level 2 left out
    assert rows["no_model.py"]["status"] == "error" and "no `Model` class" in rows["no_model.py"]["detail"]
    ok = rows["tanh_matmul.py"]
    assert ok["status"] == "ok" and ok["level"] == 1 and ok["vs_eager"] > 0 and ok["fitness"] > 0
    assert ok["vs_compile"] > 0 and ok["detail"] == ""  # both baselines valid: no note on the row
    assert ok["wall_s"] > 0 and ok["budget_s"] is None  # how long the problem took (no --budget given)
    m = data["summary"]
    assert m["problems"] == 2 and m["correct"] == 1
    assert not ok["pytorch_path"] and ok["claim"]  # a generic candidate is evolved, never the Model re-measured
    # fast_p counts a win only beyond noise (issue 23)
    assert m["fast_1_vs_eager"] == (0.5 if ok["vs_eager"] > 1.0 and ok["significant_vs_eager"] else 0.0)
    assert m["geomean_vs_eager"] == pytest.approx(ok["vs_eager"])
    table = evoforge("run", "--task-dir", "problems", "--level", "9", cwd=tmp_path)
    assert table.returncode == 2 and "no problem files (*.py) at level 9" in table.stderr


def test_old_schema_store_gets_a_clear_message(tmp_path: Path) -> None:
    (tmp_path / ".evoforge").mkdir()
    db = sqlite3.connect(tmp_path / ".evoforge" / "runs.db")
    db.executescript("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);"
                     "INSERT INTO meta VALUES ('schema_version', '0');")
    db.commit()
    proc = evoforge("runs", cwd=tmp_path)
    assert proc.returncode == 2 and "schema version 0" in proc.stderr


def test_config_file_and_flags(tmp_path: Path) -> None:
    (tmp_path / "evoforge.toml").write_text('[run]\ngenerations = 1\npopulation = 2\ncolour = "red"\n')
    proc = evoforge("run", *FAST, cwd=tmp_path)
    assert proc.returncode == 2 and "unknown run setting(s): colour" in proc.stderr
    (tmp_path / "evoforge.toml").write_text('[run]\ngenerations = 1\nbudget_ms = 5.0\n')
    proc = evoforge("run", "--json", "--device", "cpu", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["generations"] == 1


def test_a_refused_run_leaves_no_run_record(tmp_path: Path) -> None:
    task = Path(__file__).parent / "fixtures" / "tasks" / "no_model.py"
    refused = evoforge("run", "--task", str(task), *FAST, cwd=tmp_path)
    assert refused.returncode == 2 and "no `Model` class" in refused.stderr
    proc = evoforge("run", "--mutator", "bogus", *FAST, cwd=tmp_path)
    assert proc.returncode == 2 and "unknown mutator 'bogus'" in proc.stderr
    proc = evoforge("run", "--mutator", "llm", *FAST, cwd=tmp_path)
    assert proc.returncode == 2 and "needs --model NAME" in proc.stderr
    assert "name[:weight][@price_in/price_out]" in proc.stderr  # printed as is, not eaten as markup
    runs = evoforge("runs", "--json", cwd=tmp_path)
    assert runs.returncode == 0 and json.loads(runs.stdout) == []


def _children(parent: int) -> list[int]:
    """Processes whose parent is ``parent`` (from /proc, no pgrep needed)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            found.append(int(stat.parent.name))
    return found


def test_workers_die_with_a_killed_driver(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "evoforge.cli", "run", "--generations", "3", *FAST],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    worker = None
    deadline = time.monotonic() + 120
    while worker is None and time.monotonic() < deadline:
        time.sleep(0.2)
        # The driver's first child may be a short-lived sandbox probe: find the worker by its scratch cwd.
        for pid in _children(proc.pid):
            try:
                if Path(os.readlink(f"/proc/{pid}/cwd")).name.startswith("evoforge-worker-"):
                    worker = pid
            except OSError:
                continue
    assert worker is not None, "no worker started"
    os.killpg(proc.pid, signal.SIGKILL)  # the driver's group; the worker has a session of its own
    proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and Path(f"/proc/{worker}").exists():
        status = Path(f"/proc/{worker}/status").read_text() if Path(f"/proc/{worker}/status").exists() else ""
        if "State:\tZ" in status:
            break
        time.sleep(0.1)
    status = Path(f"/proc/{worker}/status").read_text() if Path(f"/proc/{worker}/status").exists() else ""
    assert not status or "State:\tZ" in status, "the worker outlived its driver"


def test_each_generation_records_where_its_time_went(finished_run: tuple[Path, str]) -> None:
    cwd, run_id = finished_run
    db = sqlite3.connect(cwd / ".evoforge" / "runs.db")
    rows = [json.loads(r[0]) for r in db.execute(
        "SELECT data_json FROM events WHERE run_id = ? AND kind = 'profile'", (run_id,))]
    assert [r["generation"] for r in rows] == [0, 1]
    assert all(r["seconds"]["wall"] > 0 and "check" in r["seconds"] for r in rows)


def test_two_cpu_workers_run_batches_side_by_side_and_report_throughput(tmp_path: Path) -> None:
    proc = evoforge("run", "--generations", "3", "--workers", "2", "--json", *FAST, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "executor local: 2 slot(s)" in proc.stderr and "per slot × 2" in proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["generations"] == 3
    report = evoforge("report", summary["run"], "--out", "rep", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    data = json.loads((tmp_path / "rep" / "evidence.json").read_text())
    (session,) = data["throughput"]["sessions"]
    assert session["slots"] == 2 and session["evaluations"] == summary["evaluated"]
    assert set(data["throughput"]["per_slot"]) == {"cpu#0", "cpu#1"}
    assert all(r["evaluations"] > 0 and r["device_name"].startswith("CPU")
               for r in data["throughput"]["per_slot"].values())
    assert "<h2>throughput</h2>" in (tmp_path / "rep" / "report.html").read_text()
    assert all(r["where"]["slot"] in ("cpu#0", "cpu#1") for r in data["candidates"])
    hashes = [r["hash"] for r in data["candidates"]]
    assert len(hashes) == len(set(hashes)) and all(r["status"] != "pending" for r in data["candidates"])


def test_bad_executor_settings_are_refused_before_a_run_exists(tmp_path: Path) -> None:
    proc = evoforge("run", "--executor", "slurm", *FAST, cwd=tmp_path)
    assert proc.returncode == 2 and "unknown executor 'slurm'" in proc.stderr
    proc = evoforge("run", "--address", "auto", *FAST, cwd=tmp_path)
    assert proc.returncode == 2 and "--address is for --executor ray" in proc.stderr
    runs = evoforge("runs", "--json", cwd=tmp_path)
    assert runs.returncode == 0 and json.loads(runs.stdout) == []
