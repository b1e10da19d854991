"""benchmarks/problems_suite.py: the `evoforge run` batch it runs for a level, and, end to end on the CPU, the
record it writes, with the run store kept where --db says."""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.benchmarks import BENCHMARKS, load_script
from tests.test_cli_run import TASKS


def test_the_batch_command_passes_the_store_and_problems_at_once_on() -> None:
    suite = load_script("problems_suite")
    args = argparse.Namespace(level=2, budget="75s", generations=50, population=6, problems_at_once=None)
    cmd = suite.command(args, Path("p"), Path("x/runs.db"))
    assert cmd[1:] == ["-m", "evoforge.cli", "run", "--task-dir", "p", "--level", "2", "--budget", "75s",
                       "--generations", "50", "--population", "6", "--db", "x/runs.db", "--json"]
    args.problems_at_once = 2
    assert suite.command(args, Path("p"), Path("d"))[-2:] == ["--problems-at-once", "2"]


def test_a_level_on_the_cpu_writes_its_record_and_keeps_the_store(tmp_path: Path) -> None:
    level = tmp_path / "problems" / "level1"
    level.mkdir(parents=True)
    (level / "tanh.py").write_text((TASKS / "tanh_matmul.py").read_text())
    db = tmp_path / "kept" / "runs.db"
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "problems_suite.py"), "--level", "1", "--problems",
                           str(tmp_path / "problems"), "--out", str(tmp_path / "out"), "--db", str(db),
                           "--budget", "60s", "--generations", "1", "--population", "1"],
                          capture_output=True, text=True, timeout=600, check=False, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (record,) = (tmp_path / "out").glob("problems-*.json")
    data = json.loads(record.read_text())
    (row,) = data["levels"]["1"]["batch"]["problems"]
    assert row["problem"] == "tanh" and row["status"] == "ok" and data["levels"]["1"]["fitness_mode"] == "eager"
    assert "| tanh | ok |" in record.with_suffix(".md").read_text()
    runs = sqlite3.connect(db).execute("SELECT id FROM runs").fetchall()
    assert [r for (r,) in runs] == [row["run"]]  # the store kept: every candidate's result is in it
