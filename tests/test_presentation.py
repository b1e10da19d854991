"""What the console prints (issue 23, item 10): markup rendered, not shown; text wrapped, never cut mid-word;
run ids whole; plurals right; a directory named as one."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from evoforge import cli
from evoforge.cli import batch, output, tools
from evoforge.evaluator.result import EvalResult
from evoforge.timing import TimingStats


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    buf = io.StringIO()
    monkeypatch.setattr(output, "out", Console(file=buf, width=100, color_system=None))
    return buf


def test_batch_table_keeps_run_ids_and_details_whole(captured: io.StringIO) -> None:
    run_id = "20261130-072403-d5b7"
    detail = "baseline task_model_compiled rejected: sandbox: refused at run time: walks the call stack"
    problem = {"problem": "tanh_matmul", "level": 1, "status": "ok", "best": "generic-compile-max-autotune",
               "vs_eager": 1.2, "vs_compile": 1.1, "fitness": 1.1, "significant": False, "pytorch_path": False,
               "valid": 3, "evaluated": 3, "run": run_id, "detail": detail}
    summary = {"problems": 1, "correct": 1, "fast_1_vs_eager": 0.0, "fast_1.5_vs_eager": 0.0,
               "fast_1_vs_best": 0.0, "fast_1.5_vs_best": 0.0, "geomean_vs_eager": 1.2, "geomean_vs_best": 1.1}
    batch.print_batch({"problems": [problem], "summary": summary}, Path("problems"))
    text = captured.getvalue()
    assert run_id in text  # copyable in full
    assert f"[1] tanh_matmul: {detail}" in " ".join(text.split())  # the note whole, under the table
    assert "significant)" in text.split() and "beyond noise" in text  # "(not significant)", never folded


def test_batch_table_names_a_problem_past_its_budget_and_margin(captured: io.StringIO) -> None:
    """The stated margin is a promise: a row past budget + margin is named under the table, one inside it is
    not, and a batch recorded before fast_1.05 was measured still prints."""
    def row(name: str, wall: float) -> dict[str, Any]:
        return {"problem": name, "level": 1, "status": "nothing evaluated", "best": None, "vs_eager": None,
                "vs_compile": None, "fitness": None, "valid": 0, "evaluated": 0, "run": None, "detail": "",
                "wall_s": wall, "budget_s": 50.0}
    summary = {"problems": 2, "correct": 0, "fast_1_vs_eager": 0.0, "fast_1.5_vs_eager": 0.0,
               "fast_1_vs_best": 0.0, "fast_1.5_vs_best": 0.0, "geomean_vs_eager": None, "geomean_vs_best": None}
    batch.print_batch({"problems": [row("relu", 75.4), row("gelu", 57.0)], "summary": summary}, Path("problems"))
    text = " ".join(captured.getvalue().split())
    assert "relu ran 75 s on a 50 s budget, past the 10 s margin" in text and "gelu ran" not in text
    assert "fast_1.05" not in text


def test_eval_logs_heading_is_markup_not_text(captured: io.StringIO) -> None:
    stats = TimingStats("eager", "perf_counter", "cpu", 5, 10.0, 9.0, 9.5, 10.5, 1.0, 10.0, 0)
    cand = EvalResult(name="mine", hash="h", status="runtime_error", detail="x " * 80 + "the end",
                      logs="[red]not markup[/red] Traceback...")
    base = EvalResult(name="sdpa_flash", hash="b", status="ok", role="baseline", timing={"eager": stats})
    report: Any = type("R", (), {"env": {"device_name": "CPU"}, "results": [cand, base]})()
    tools.print_eval(report, "attention-tiny")
    text = captured.getvalue()
    assert "[dim]" not in text and "mine logs (tail):" in text
    assert "[red]not markup[/red]" in text  # the candidate's own output, verbatim
    assert "the end" in text  # the detail wraps, it is not cut


def test_eval_of_a_directory_says_it_is_one(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli.app, ["eval", str(tmp_path), "--device", "cpu"])
    assert result.exit_code == 2
    assert "is a directory" in result.output and "no such candidate file" not in result.output


def test_plural() -> None:
    assert output.plural(1, "repeat") == "1 repeat" and output.plural(3, "repeat") == "3 repeats"


def test_doctor_keeps_an_error_line_whole() -> None:
    from evoforge.doctor import _try

    long = "backend unavailable because " + "reason " * 40 + "end"

    def fail() -> None:
        raise RuntimeError(long + "\nsecond line")

    assert _try(fail) == "unavailable: " + long
