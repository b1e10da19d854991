"""End to end: the real `evoforge` CLI in a subprocess, on the CPU, with tiny shapes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CANDIDATES, TASKS

FAST = ["--budget-ms", "5", "--device", "cpu"]


def evoforge(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "evoforge.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], dict]:
    out = tmp_path_factory.mktemp("sweep") / "evidence" / "sweep.json"
    proc = evoforge("sweep", "--task", "attention-tiny", "--repeats", "2", "--out", str(out),
                    "--variants", "math_baseline,sdpa_flash,sdpa_default,flash_bf16,sdpa_cudnn", *FAST)
    assert out.exists(), proc.stderr
    return proc, json.loads(out.read_text())


def test_sweep_writes_evidence_with_device_versions_and_date(sweep_run: tuple) -> None:
    _, evidence = sweep_run
    assert evidence["task"]["name"] == "attention_b1_h2_s64_d32_fp16"
    assert evidence["device"]["device_type"] == "cpu"
    assert evidence["device"]["versions"]["torch"]
    assert evidence["date"].startswith("20")
    assert evidence["repeats"] == 2 and len(evidence["runs"]) == 2


def test_sweep_records_every_variant_per_repeat(sweep_run: tuple) -> None:
    _, evidence = sweep_run
    rows = {row["name"]: row for row in evidence["variants"]}
    assert set(rows) == {"math_baseline", "sdpa_flash", "sdpa_default", "flash_bf16", "sdpa_cudnn"}
    for row in rows.values():
        assert len(row["statuses"]) == 2 and len(row["fitness"]) == 2
    flash = rows["sdpa_flash"]
    assert flash["statuses"] == ["ok", "ok"]
    assert len(flash["latency_us"]["eager"]) == 2 and all(x > 0 for x in flash["latency_us"]["eager"])
    assert flash["fitness_spread"]["min"] > 0
    assert flash["max_abs_err"] < 2e-3
    assert rows["sdpa_cudnn"]["statuses"] == ["runtime_error", "runtime_error"]  # no cuDNN on a CPU
    assert rows["flash_bf16"]["labels"] == ["bf16 compute"] and not rows["flash_bf16"]["baseline"]


def test_sweep_fitness_is_measured_against_the_other_baselines(sweep_run: tuple) -> None:
    _, evidence = sweep_run
    run = evidence["runs"][0]
    results = {r["name"]: r for r in run["results"]}
    default, flash = results["sdpa_default"], results["sdpa_flash"]
    if default["status"] == "ok" and flash["status"] == "ok":
        ratio = flash["timing"]["eager"]["median_us"] / default["timing"]["eager"]["median_us"]
        assert default["speedup"]["eager"]["sdpa_flash"] == pytest.approx(ratio)
        assert "sdpa_default" not in default["speedup"]["eager"]  # never compared with itself
        assert default["fitness"] == pytest.approx(min(default["speedup"]["eager"].values()))


def test_sweep_exit_code_follows_the_success_criterion(sweep_run: tuple) -> None:
    proc, evidence = sweep_run
    winners = [r["name"] for r in evidence["variants"]
               if r["correct_all"] and all(f > 1 for f in r["fitness"]) and all(r["significant"])]
    assert evidence["winners"] == winners
    assert proc.returncode == (0 if winners else 1), proc.stderr
    assert "sdpa_flash" in proc.stdout  # the table


@pytest.mark.slow
def test_sweep_runs_every_variant_on_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "all.json"
    proc = evoforge("sweep", "--task", "attention-tiny", "--repeats", "1", "--out", str(out), *FAST)
    assert proc.returncode in (0, 1), proc.stderr
    rows = {row["name"]: row for row in json.loads(out.read_text())["variants"]}
    assert len(rows) == 11
    for name in ("math_baseline", "sdpa_flash", "sdpa_math_only", "sdpa_default", "flex_attention",
                 "compile_3kernel", "flash_tf32", "flash_benchmark"):
        assert rows[name]["statuses"] == ["ok"], (name, rows[name]["details"])


def test_eval_prints_json_for_a_correct_candidate() -> None:
    proc = evoforge("eval", str(CANDIDATES / "good.py"), "--task", str(TASKS / "tanh_matmul.py"), "--json", *FAST)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    names = [r["name"] for r in data["results"]]
    assert names == ["good", "task_model", "task_model_compiled"]  # a generic task: its Model, eager and compiled
    good = data["results"][0]
    assert good["status"] == "ok" and good["fitness"] > 0 and good["best_baseline"] == "task_model"


def test_eval_exits_1_for_an_incorrect_candidate() -> None:
    proc = evoforge("eval", str(CANDIDATES / "wrong_answer.py"), "--task", str(TASKS / "tanh_matmul.py"),
                    "--no-baselines", *FAST)
    assert proc.returncode == 1
    assert "incorrect" in proc.stdout


@pytest.mark.parametrize(("task", "message"), [
    ("no_model.py", "no `Model` class"),
    ("inputs_raise.py", "`get_inputs()` raised"),
    ("inputs_wrong_type.py", "must return a list or tuple"),
    ("missing.py", "no such task file"),
])
def test_eval_with_a_broken_task_is_one_line_and_exit_2(task: str, message: str) -> None:
    proc = evoforge("eval", str(CANDIDATES / "good.py"), "--task", str(TASKS / task), *FAST)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_eval_when_the_tasks_model_fails_on_its_inputs() -> None:
    proc = evoforge("eval", str(CANDIDATES / "good.py"), "--task", str(TASKS / "model_raises.py"), *FAST)
    assert proc.returncode == 2
    assert "Model raised on its own inputs" in proc.stderr and "Traceback" not in proc.stderr


def test_eval_refuses_a_nondeterministic_model_with_exit_2() -> None:
    proc = evoforge("eval", str(CANDIDATES / "good.py"), "--task", str(TASKS / "nondeterministic.py"), *FAST)
    assert proc.returncode == 2 and "Model is nondeterministic" in proc.stderr and "Traceback" not in proc.stderr


def test_eval_missing_candidate_file() -> None:
    proc = evoforge("eval", "nope.py", "--task", "attention-tiny", *FAST)
    assert proc.returncode == 2 and "no such candidate file" in proc.stderr


def test_sweep_refuses_a_non_attention_task() -> None:
    proc = evoforge("sweep", "--task", str(TASKS / "tanh_matmul.py"), *FAST)
    assert proc.returncode == 2 and "built-in attention task" in proc.stderr


def test_tasks_lists_the_builtins_as_json() -> None:
    proc = evoforge("tasks", "--json")
    assert proc.returncode == 0
    names = [row["name"] for row in json.loads(proc.stdout)]
    assert names[0] == "attention" and "attention-decode" in names


def test_doctor_reports_device_and_backends() -> None:
    proc = evoforge("doctor", "--json", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["env"]["versions"]["torch"]
    assert data["backends"]["sdpa_math"] == "runs"
    assert data["backends"]["sdpa_cudnn"].startswith("unavailable")
    from evoforge.cache import bytecode_status

    assert data["worker_bytecode"] == bytecode_status()  # the same environment as this test's
    text = evoforge("doctor", "--device", "cpu")
    assert text.returncode == 0 and "workers' Python bytecode: " in text.stdout
