"""`evoforge bench`: every command's help, one tiny CPU run of each (attention-tiny, Triton's interpreter, one
candidate, one repeat, SDPA's default path as the re-time's only baseline), and the recorded exported kernels of
benchmarks/results re-rendered byte for byte from their genome and template version."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from evoforge.bench import app
from evoforge.bench.records import has_commit, render_file, repo_of
from evoforge.bench.retime import summary_lines
from evoforge.bench.sources import choose_baselines, retime_record
from evoforge.evaluator.config import EvalReport
from evoforge.evaluator.result import EvalResult
from evoforge.resolve import resolve_task

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
COMMANDS = ("evolve", "suite", "retime", "timing", "throughput", "render")
TINY = ["--device", "cpu", "--budget-ms", "5"]


def invoke(*args: str) -> str:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_every_command_has_help() -> None:
    listed = invoke("--help")
    for command in COMMANDS:
        assert command in listed
        assert "Usage:" in invoke(command, "--help")


def test_evoforge_bench_is_a_command_of_the_cli() -> None:
    from evoforge.cli import app as cli_app

    result = CliRunner().invoke(cli_app, ["bench", "--help"], catch_exceptions=False)
    assert result.exit_code == 0 and all(command in result.output for command in COMMANDS), result.output


@pytest.fixture(scope="module")
def suite_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One suite row on the CPU, run as a user runs it (each row in a process of its own)."""
    out = tmp_path_factory.mktemp("suite")
    proc = subprocess.run([sys.executable, "-m", "evoforge.bench", "suite", "--rows", "attention-tiny", "--budget",
                           "5m", "--generations", "1", "--population", "1", "--repeats", "1", "--baselines",
                           "sdpa_default", *TINY, "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "graph" in proc.stdout and "eager" in proc.stdout, proc.stdout  # the row's line
    # the row's search and re-time show what they are doing while they run (a long row takes minutes)
    assert "attention-tiny: [" in proc.stdout and "re-time 1/1: done in" in proc.stdout, proc.stdout
    return out


def test_suite_writes_a_row_the_record_and_the_kernel(suite_run: Path) -> None:
    table = json.loads((suite_run / "attention-suite-cpu.json").read_text())
    [row] = table["rows"]
    assert row["task"] == "attention-tiny" and row["status"] == "ok", row.get("detail")
    assert row["retime_statuses"] == ["ok"] and row["budget"] == "5m" and row["repeats"] == 1
    assert row["eager"]["fastest_torch"] == "sdpa_default" and row["eager"]["speedup_vs_fastest"] > 0
    assert row["eager"]["tflops"]["evolved"] > 0 and row["best_genome"]["kind"]
    record = json.loads((suite_run / "suite-attention-tiny-cpu.json").read_text())
    assert record["search"]["evaluated"] >= 1 and set(record["retime"]["baselines_us"][0]) == {"sdpa_default"}
    assert (suite_run / "suite-attention-tiny-cpu-kernel.py").is_file()


def test_retime_an_exported_kernel(suite_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "retime.json"
    kernel = suite_run / "suite-attention-tiny-cpu-kernel.py"
    printed = invoke("retime", "--task", "attention-tiny", "--kernel", str(kernel), "--repeats", "1", "--baselines",
                     "sdpa_default", *TINY, "--out", str(out))
    record = json.loads(out.read_text())
    assert record["task"] == resolve_task("attention-tiny").name
    assert record["retime"]["statuses"] == ["ok"] and record["retime"]["fitness"][0] > 0
    assert record["retime"]["latency_us"]["eager"][0] > 0 and "sdpa_default" in printed
    assert record["retime"]["baselines_failed"] == [{}]
    # where the re-time's time went, per repeat; and its steps shown on stderr as they happen
    assert record["retime"]["profile"][0]["wall"] > 0
    assert "re-time 1/1: computing reference outputs" in printed and "re-time 1/1: done in" in printed


def test_a_retime_says_why_a_baseline_has_no_latency() -> None:
    """On an H200 two materialising baselines of B1 H16 S16384 left no latency in a re-time, and its record did
    not say why: now each failed baseline's status and detail are kept, per repeat, and printed."""
    results = [EvalResult(name="evolved", hash="a", status="ok", fitness=1.0),
               EvalResult(name="sdpa_default", hash="b", status="ok"),
               EvalResult(name="sdpa_math_only", hash="c", status="runtime_error",
                          detail="CUDA out of memory. Tried to allocate 16.00 GiB")]
    record = retime_record([EvalReport(results=results, env={}, seeds=[0], workers=3)])
    assert record["baselines_failed"] == [{"sdpa_math_only": "runtime_error: CUDA out of memory. Tried to allocate "
                                                             "16.00 GiB"}]
    lines = summary_lines({"retime": record})
    assert lines[-1] == "baseline sdpa_math_only failed: runtime_error: CUDA out of memory. Tried to allocate 16.00 GiB"


def test_throughput_profiles_a_stored_run(suite_run: Path, tmp_path: Path) -> None:
    search = json.loads((suite_run / "suite-attention-tiny-cpu.json").read_text())["search"]
    out = tmp_path / "profile.json"
    printed = invoke("throughput", "--run", search["run"], "--db", search["store"], "--out", str(out))
    profile = json.loads(out.read_text())
    assert profile["run"] == search["run"] and profile["evaluations"] == search["evaluated"]
    [gen] = profile["generations"]
    assert gen["generation"] == 0 and gen["seconds"] > 0 and gen["worker_stages"]
    assert "evaluations" in printed and "/min" in printed


def test_timing_calibration_on_a_cpu(tmp_path: Path) -> None:
    out = tmp_path / "timing.json"
    invoke("timing", str(out), "--device", "cpu", "--shape", "1,2,32,16", "--budget-ms", "10", "--rounds", "2",
           "--calls", "5")
    record = json.loads(out.read_text())
    assert set(record["methods"]) == {"sdpa_default", "seed_3kernel"}
    for row in record["methods"].values():
        assert row["evoforge_eager_us"] > 0 and row["back_to_back_us"] > 0 and row["host_call_us"] > 0
        assert row["evoforge_graph_us"] is None and row["do_bench_us"] is None  # CUDA's methods only


def test_unknown_baselines_are_named() -> None:
    spec = resolve_task("attention-tiny")
    assert [b.name for b in choose_baselines(spec, "cpu", ["sdpa_default"])] == ["sdpa_default"]
    with pytest.raises(ValueError, match="no baseline nope"):
        choose_baselines(spec, "cpu", ["nope"])


RECORDS = sorted(RESULTS.glob("*-kernel.json"))


@pytest.mark.parametrize("path", RECORDS, ids=[p.name for p in RECORDS])
def test_recorded_kernels_render_byte_for_byte(path: Path) -> None:
    record = json.loads(path.read_text())
    if not has_commit(repo_of(path), record["template"]["commit"]):
        pytest.skip(f"template commit {record['template']['commit'][:12]} not in this clone's history (shallow)")
    text = render_file(path)
    assert hashlib.sha256(text.encode()).hexdigest() == record["sha256"]
    kept = path.with_suffix(".py")
    if kept.exists():  # the copy kept for the scripts that read it: the same bytes
        assert kept.read_text() == text


def test_render_writes_the_kernel(tmp_path: Path) -> None:
    path = RESULTS / "evolve-persistent-h100-kernel.json"
    record = json.loads(path.read_text())
    if not has_commit(repo_of(path), record["template"]["commit"]):
        pytest.skip("template commit not in this clone's history (shallow)")
    out = tmp_path / "kernel.py"
    invoke("render", str(path), "--out", str(out))
    assert out.read_bytes() == (RESULTS / "evolve-persistent-h100-kernel.py").read_bytes()
