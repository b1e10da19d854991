"""The SQLite run store: round trip, durability of committed writes, and schema checks."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from evoforge.candidate import Candidate
from evoforge.evaluator.result import CaseCheck, EvalResult
from evoforge.store import RunStore, StoreError
from evoforge.timing import summarize


def test_round_trip(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    run_id = store.create_run({"name": "t"}, {"generations": 3})
    cand = Candidate(name="c", source="X = 1\n", genome={"kind": "x"}, lineage={"parents": ["p"], "generation": 1})
    store.add_candidate(run_id, cand, 1)
    result = EvalResult(name="c", hash=cand.hash, status="ok", fitness=1.5, fitness_mode="graph",
                        checks=[CaseCheck(case="random seed=1", ok=True, max_abs_err=1e-4)])
    result.timing["graph"] = summarize([1.0, 2.0, 3.0], mode="graph", clock="cuda_event", device="cuda:0",
                                       flush_bytes=8)
    store.add_evaluation(run_id, result, 1)
    store.add_event(run_id, "generation", generation=1)
    store.update_run(run_id, generation=1, rng=[3, [1, 2], None], env={"device_name": "X"})
    store.close()

    again = RunStore(tmp_path / "runs.db")
    record = again.run(run_id[:10])  # a unique prefix is enough
    assert record.id == run_id and record.generation == 1 and record.rng == [3, [1, 2], None]
    assert record.env == {"device_name": "X"} and record.config == {"generations": 3}
    (loaded, gen), = again.candidates(run_id)
    assert loaded == cand and gen == 1
    (back, _), = again.evaluations(run_id)
    assert back == result
    assert again.events(run_id, "generation")[0]["generation"] == 1


def test_wal_mode(tmp_path: Path) -> None:
    RunStore(tmp_path / "runs.db")
    mode = sqlite3.connect(tmp_path / "runs.db").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_committed_writes_are_visible_to_another_connection_at_once(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    run_id = store.create_run({"name": "t"}, {})
    store.add_event(run_id, "x")
    other = sqlite3.connect(tmp_path / "runs.db")
    assert other.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 1


def test_failed_transaction_writes_nothing(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    run_id = store.create_run({"name": "t"}, {})
    with pytest.raises(RuntimeError), store.transaction():
        store.add_event(run_id, "half")
        raise RuntimeError("killed mid-way")
    assert store.events(run_id) == []


def test_other_schema_version_is_refused_clearly(tmp_path: Path) -> None:
    RunStore(tmp_path / "runs.db").close()
    db = sqlite3.connect(tmp_path / "runs.db")
    db.execute("UPDATE meta SET value='0' WHERE key='schema_version'")
    db.commit()
    with pytest.raises(StoreError, match="schema version 0"):
        RunStore(tmp_path / "runs.db")


def test_foreign_sqlite_file_is_refused(tmp_path: Path) -> None:
    sqlite3.connect(tmp_path / "other.db").execute("CREATE TABLE t (x)")
    with pytest.raises(StoreError, match="not an evoforge run store"):
        RunStore(tmp_path / "other.db")


def test_unknown_run(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no run"):
        RunStore(tmp_path / "runs.db").run("nope")


def test_latest_is_the_newest_run(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    with pytest.raises(StoreError, match="no runs"):
        store.run("latest")
    store.create_run({"name": "a"}, {})
    newest = store.create_run({"name": "b"}, {})
    assert store.run("latest").id == newest


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    RunStore(tmp_path / "runs.db").close()
    db = sqlite3.connect(tmp_path / "runs.db")
    db.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    db.commit()
    with pytest.raises(StoreError, match="schema version 99, this evoforge reads versions 1 to"):
        RunStore(tmp_path / "runs.db")


def test_a_version_1_store_is_upgraded_by_adding_tables_only(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    store = RunStore(tmp_path / "runs.db")
    run_id = store.create_run({"name": "t"}, {"generations": 2})
    store.close()
    db = sqlite3.connect(tmp_path / "runs.db")  # what a version-1 evoforge wrote: no llm_calls table
    db.execute("DROP TABLE llm_calls")
    db.execute("UPDATE meta SET value='1' WHERE key='schema_version'")
    db.commit()
    db.close()
    store = RunStore(tmp_path / "runs.db")
    assert "upgraded" in capsys.readouterr().err
    assert store.run(run_id).config == {"generations": 2}
    assert store.llm_calls(run_id) == []


def test_llm_calls_round_trip(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    run_id = store.create_run({"name": "t"}, {})
    call = {"generation": 1, "model": "m", "guide": "full", "operation": "repair", "status": "ok",
            "prompt": [{"role": "user", "content": "fix it"}], "reply": "```python\n```", "tokens_in": 10,
            "tokens_out": 3, "cost": 0.5, "latency_s": 1.25, "attempts": 2, "error": None,
            "retried": ["HTTP 429"], "candidate_hash": "abc", "thought": "a colon"}
    store.add_llm_call(run_id, call)
    (back,) = RunStore(tmp_path / "runs.db").llm_calls(run_id)
    assert {k: back[k] for k in call} == call
