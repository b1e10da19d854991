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
    again.db.execute("UPDATE candidates SET hash = 'stored-hash' WHERE run_id = ?", (run_id,))
    (loaded, _), = again.candidates(run_id)
    assert loaded.hash == "stored-hash"  # the hash it was added under, not recomputed (reports stay fast)
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


def test_latest_is_the_newest_run_with_an_evaluated_candidate(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    with pytest.raises(StoreError, match="no runs"):
        store.run("latest")
    first = store.create_run({"name": "a"}, {})
    with pytest.raises(StoreError, match=r"no run in .* has evaluated a candidate yet"):
        store.run("latest")
    store.add_evaluation(first, EvalResult(name="c", hash="h", status="ok", fitness=1.0), 0)
    store.add_evaluation(store.create_run({"name": "b"}, {}), EvalResult(name="base", hash="b", status="ok",
                                                                         role="baseline", fitness=1.0), 0)
    empty = store.create_run({"name": "c"}, {})  # a ghost: a failed start, a run killed in generation 0
    assert store.run("latest").id == first  # what `report latest` shows: runs without candidates are skipped
    assert store.run("latest", skip_empty=False).id == empty  # what `resume latest` continues


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


# ---------------------------------------------------------------- a damaged store (issue 23)
def _damaged_store(tmp_path: Path) -> Path:
    path = tmp_path / "runs.db"
    store = RunStore(path)
    run_id = store.create_run({"name": "t"}, {})
    for i in range(400):  # enough rows for many pages
        store.add_event(run_id, "filler", i=i, text="x" * 200)
    store.close()
    data = bytearray(path.read_bytes())
    page = 4096
    assert len(data) > 8 * page
    middle = len(data) // page // 2 * page
    data[middle:middle + 2 * page] = b"\xde\xad\xbe\xef" * (page // 2)  # junk over two middle pages
    path.write_bytes(bytes(data))
    return path


def test_a_damaged_store_is_refused_on_open_and_not_written(tmp_path: Path) -> None:
    path = _damaged_store(tmp_path)
    before = path.read_bytes()
    with pytest.raises(StoreError, match=r"damaged store, nothing written to it .SQLite quick_check") as info:
        RunStore(path)
    assert "\n" not in str(info.value) and ".recover" in str(info.value)
    assert path.read_bytes() == before


# ---------------------------------------------------------------- the run lifecycle (issue 23)
def _lease_for(store: RunStore, run_id: str, pid: int, host: str | None = None, age: float = 0.0) -> None:
    """Make ``pid`` (on ``host``, this one by default) the holder of ``run_id``'s lease."""
    import socket
    import time

    from evoforge.store import _proc_start

    now = time.time()
    store.db.execute("INSERT OR REPLACE INTO leases VALUES (?,?,?,?,?,?)",
                     (run_id, pid, host or socket.gethostname(), _proc_start(pid), now - age, now - age))


def test_a_new_run_is_held_by_its_process_and_reads_as_running(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    run_id = store.create_run({"name": "t"}, {})
    record = store.run(run_id)
    assert record.status == "running" and record.lease is not None and record.lease.mine
    store.claim(run_id)  # its own process may claim it again
    store.release(run_id, status="finished", note="done")
    record = store.run(run_id)
    assert record.status == "finished" and record.note == "done" and record.lease is None


def test_a_run_whose_process_is_gone_reads_as_interrupted(tmp_path: Path) -> None:
    import subprocess
    import sys

    store = RunStore(tmp_path / "runs.db")
    run_id = store.create_run({"name": "t"}, {})
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    _lease_for(store, run_id, gone.pid)  # as after a kill -9: the row says running, nobody holds it
    assert store.run(run_id).status == "interrupted"
    store.claim(run_id)  # and it can be resumed
    assert store.run(run_id).status == "running"


def test_a_lease_on_another_host_is_live_until_its_heartbeat_goes_stale(tmp_path: Path) -> None:
    from evoforge.store import STALE_S

    store = RunStore(tmp_path / "runs.db")
    run_id = store.create_run({"name": "t"}, {})
    _lease_for(store, run_id, 1, host="elsewhere", age=1.0)
    assert store.run(run_id).status == "running"
    with pytest.raises(StoreError, match=r"already running .process 1 on elsewhere"):
        store.claim(run_id)
    _lease_for(store, run_id, 1, host="elsewhere", age=STALE_S + 1)
    assert store.run(run_id).status == "interrupted"


def test_a_live_run_can_not_be_claimed_twice(tmp_path: Path) -> None:
    import subprocess
    import sys

    store = RunStore(tmp_path / "runs.db")
    run_id = store.create_run({"name": "t"}, {})
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _lease_for(store, run_id, holder.pid)
        with pytest.raises(StoreError, match=f"run {run_id} is already running .process {holder.pid} on ") as info:
            RunStore(tmp_path / "runs.db").claim(run_id)
        assert "\n" not in str(info.value)
        assert store.lease(run_id).pid == holder.pid  # the refused claim changed nothing
    finally:
        holder.kill()
        holder.wait()
    store.claim(run_id)


def test_the_heartbeat_refreshes_the_lease(tmp_path: Path) -> None:
    import time

    store = RunStore(tmp_path / "runs.db")
    run_id = store.create_run({"name": "t"}, {})
    first = store.lease(run_id).heartbeat
    beat = store.heartbeat(run_id, interval=0.05)
    try:
        deadline = time.monotonic() + 10
        while store.lease(run_id).heartbeat == first and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        beat.stop()
    assert store.lease(run_id).heartbeat > first
