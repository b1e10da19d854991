"""End to end on the CPU: `evoforge run --mutator llm` against the scripted OpenAI-compatible server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from evoforge.llm.replay import ScriptedServer
from evoforge.store import RunStore
from tests.llm.replies import CHEAT, NO_CODE, SYNTAX, VALID, VALID_2

TOKENS = [1000, 100]
CONFIG = """
[run]
task = "attention-tiny"
device = "cpu"
mutator = "llm"
llm_model = "scripted@1/2"
llm_base_url = "{url}"
llm_concurrency = 1
llm_timeout_s = 2
llm_retries = 2
llm_seed_candidates = 3
llm_max_tokens = 5000
generations = 5
population = 2
budget_ms = 5
"""


def evoforge(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "evoforge.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=900, check=False)


@pytest.fixture(scope="module")
def llm_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, list[dict]]:
    cwd = tmp_path_factory.mktemp("llm-run")
    script = [
        # generation 0: three candidates from scratch, the first after a 429
        {"status": 429, "retry_after": 0}, {"content": VALID, "tokens": TOKENS},
        {"content": SYNTAX, "tokens": TOKENS}, {"content": CHEAT, "tokens": TOKENS},
        # generation 1: a hang past the client's timeout, then a malformed body, each retried
        {"delay": 4, "content": VALID}, {"content": VALID_2, "tokens": TOKENS},
        {"raw": "{this is not json"}, {"content": NO_CODE, "tokens": TOKENS},
    ]
    with ScriptedServer(script, default={"content": VALID, "tokens": TOKENS}) as server:
        (cwd / "evoforge.toml").write_text(CONFIG.format(url=server.url))
        proc = evoforge("run", "--json", cwd=cwd)
        requests = list(server.requests)
    assert proc.returncode == 0, proc.stderr
    return cwd, json.loads(proc.stdout), requests


def test_the_run_stops_cleanly_when_the_token_budget_is_spent(llm_run: tuple[Path, dict, list[dict]]) -> None:
    _, summary, requests = llm_run
    assert summary["stop_reason"] == "LLM token budget spent (5500 of 5000 tokens)"
    assert summary["generations"] == 3  # 0 and 1 evaluated; the budget stops the third before it asks
    assert len(requests) == 8  # the script exactly: no request after the budget ran out
    assert summary["llm"] == {"calls": 5, "with_code": 4, "tokens_in": 5000, "tokens_out": 500,
                              "cost": pytest.approx((5000 * 1 + 500 * 2) / 1e6), "retries": 3}


def test_statuses_retries_and_tokens_are_recorded(llm_run: tuple[Path, dict, list[dict]]) -> None:
    cwd, summary, _ = llm_run
    store = RunStore(cwd / ".evoforge/runs.db")
    results = {r.name: r for r, _ in store.evaluations(summary["run"])}
    assert results["reference-model"].status == "ok"
    assert results["llm-fp32-math"].status == "ok"
    assert results["llm-fp32-math-2"].status == "ok"
    assert results["llm-broken"].status == "compile_error"
    assert results["llm-cheat"].status == "rejected" and "reuse" in results["llm-cheat"].detail
    calls = store.llm_calls(summary["run"])
    assert [c["status"] for c in calls] == ["ok", "ok", "ok", "ok", "no_code"]
    assert [c["retried"] for c in calls][:4] == [["HTTP 429"], [], [], ["timeout"]]
    assert calls[4]["retried"][0].startswith("malformed reply")
    assert all((c["tokens_in"], c["tokens_out"]) == tuple(TOKENS) for c in calls)
    assert [c["generation"] for c in calls] == [0, 0, 0, 1, 1]
    assert calls[1]["candidate_hash"] == results["llm-broken"].hash
    assert calls[4]["error"] == "the reply contains no code block"


def test_a_failed_candidate_is_an_insight_in_the_next_generations_prompts(
        llm_run: tuple[Path, dict, list[dict]]) -> None:
    _, _, requests = llm_run
    first, later = requests[1]["messages"][1]["content"], requests[4]["messages"][1]["content"]
    assert "llm-broken" not in first
    assert "broke: llm-broken -> compile_error: syntax error" in later
    assert "broke: llm-cheat -> rejected" in later
    assert "## Best solutions so far" in later  # the default guide is `full`


def test_the_report_breaks_the_llm_work_down(llm_run: tuple[Path, dict, list[dict]]) -> None:
    cwd, summary, _ = llm_run
    proc = evoforge("report", summary["run"], cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    llm = json.loads((cwd / f"evidence/run-{summary['run']}/evidence.json").read_text())["llm"]
    assert llm["calls"] == 5 and llm["replies"] == 5 and llm["with_code"] == 4
    assert llm["valid"] == 2 and llm["validity"] == pytest.approx(2 / 5)
    assert llm["tokens_in"] == 5000 and llm["tokens_out"] == 500
    assert llm["tokens_per_valid"] == pytest.approx(5500 / 2)
    by_op = llm["by_operation"]
    assert by_op["generate"]["calls"] == 3 and by_op["generate"]["valid"] == 1
    assert llm["by_guide"]["full"]["calls"] == 5
    assert len(llm["speedups"]) == 2


def test_a_missing_model_or_sdk_setting_is_a_clear_error(tmp_path: Path) -> None:
    proc = evoforge("run", "--mutator", "llm", "--device", "cpu", "--task", "attention-tiny", cwd=tmp_path)
    assert proc.returncode == 2 and "needs --model" in proc.stderr and "Traceback" not in proc.stderr
    proc = evoforge("run", "--mutator", "llm", "--model", "m", "--guide", "wild", "--device", "cpu",
                    "--task", "attention-tiny", cwd=tmp_path)
    assert proc.returncode == 2 and "unknown LLM guide 'wild'" in proc.stderr


def test_a_model_that_repeats_itself_is_recorded_and_the_run_goes_on(tmp_path: Path) -> None:
    # Issue 23: the same reply twice (same `name:` and code) used to end the run with
    # "ValueError: entry names must be unique", a traceback and the run left `running`.
    config = CONFIG.replace("llm_seed_candidates = 3", "llm_seed_candidates = 2").replace(
        "generations = 5", "generations = 3").replace("llm_max_tokens = 5000", "llm_max_tokens = 50000")
    with ScriptedServer([], default={"content": VALID, "tokens": TOKENS}) as server:
        (tmp_path / "evoforge.toml").write_text(config.format(url=server.url))
        proc = evoforge("run", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["evaluated"] == 2  # the reference and the one reply, once
    assert summary["stop_reason"].startswith("the mutator has nothing new to propose")
    assert "repeated a candidate it already had" in summary["stop_reason"]
    store = RunStore(tmp_path / ".evoforge/runs.db")
    calls = store.llm_calls(summary["run"])
    assert [c["status"] for c in calls][:2] == ["ok", "duplicate"]
    assert {c["status"] for c in calls[2:]} == {"duplicate"}
    record = store.run(summary["run"])
    assert record.status == "finished" and record.lease is None
