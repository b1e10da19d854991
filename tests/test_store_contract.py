"""The Store contract (evoforge.store.Store), held by the SQLite store and the in-memory one alike: the same
writes read back the same way, the same run lifecycle, and the same search over either."""

from __future__ import annotations

import datetime as dt
import os
import random
import socket
import time
from pathlib import Path

import pytest

from evoforge.candidate import Candidate
from evoforge.evaluator.result import EvalResult
from evoforge.memory_store import MemoryStore
from evoforge.search import Search, SearchConfig
from evoforge.store import Lease, RunStore, Store, StoreError
from tests.test_search import FakeEvaluator, StepMutator


@pytest.fixture(params=["sqlite", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    return RunStore(tmp_path / "runs.db") if request.param == "sqlite" else MemoryStore()


def _result(name: str, fitness: float, role: str = "candidate") -> EvalResult:
    return EvalResult(name=name, hash=f"h-{name}", status="ok", fitness=fitness, role=role, fitness_mode="graph")


def _foreign_lease(store: Store, run_id: str) -> None:
    """Make another live process (this machine's pid 1) the holder of ``run_id``'s lease."""
    lease = Lease(run_id, 1, socket.gethostname(), None, time.time(), time.time())
    if isinstance(store, RunStore):
        store.db.execute("INSERT OR REPLACE INTO leases VALUES (?,?,?,?,?,?)",
                         (run_id, lease.pid, lease.host, lease.proc_start, lease.started, lease.heartbeat))
    else:
        store._runs[run_id].lease = lease


def test_a_new_run_is_running_and_held_by_this_process(store: Store) -> None:
    run_id = store.create_run({"name": "t"}, {"population": 4})
    record = store.run(run_id)
    assert record.status == "running" and record.task == {"name": "t"} and record.config == {"population": 4}
    assert record.lease is not None and record.lease.mine and record.lease.live
    assert record.generation == 0 and record.env is None and record.rng is None


def test_updates_read_back(store: Store) -> None:
    run_id = store.create_run({"name": "t"}, {})
    store.update_run(run_id, status="finished", env={"device": "cpu"}, rng=[1, [2, 3]], generation=4, note="done",
                     config={"population": 8})
    record = store.run(run_id)
    assert (record.status, record.env, record.rng, record.generation, record.note, record.config) == \
        ("finished", {"device": "cpu"}, [1, [2, 3]], 4, "done", {"population": 8})


def test_latest_prefixes_and_unknown_runs(store: Store) -> None:
    with pytest.raises(StoreError, match="no runs"):
        store.run("latest")
    first = store.create_run({"name": "a"}, {})
    second = store.create_run({"name": "b"}, {})
    with pytest.raises(StoreError, match="evaluated a candidate"):
        store.run("latest")
    assert store.run("latest", skip_empty=False).id == second
    store.add_evaluation(first, _result("x", 1.0), 0)
    assert store.run("latest").id == first  # the newest run with an evaluated candidate
    assert [r.id for r in store.runs()] == [first, second]
    with pytest.raises(StoreError, match="no run"):
        store.run("no-such-run")
    if first[:-4] != second[:-4]:  # ids made in different seconds: a shared prefix is ambiguous otherwise
        assert store.run(first[:-2]).id == first


def test_candidates_are_kept_once_per_role_in_generation_order(store: Store) -> None:
    run_id = store.create_run({}, {})
    a = Candidate(name="a", source="A = 1\n", genome={"x": 1}, lineage={"parents": []})
    b = Candidate(name="b", source="B = 2\n")
    store.add_candidate(run_id, b, 1)
    store.add_candidate(run_id, a, 0)
    store.add_candidate(run_id, a, 3)  # the same candidate again: ignored
    store.add_candidate(run_id, a, 0, role="baseline")
    got = store.candidates(run_id)
    assert [(c.name, g) for c, g in got] == [("a", 0), ("b", 1)]
    assert got[0][0].hash == a.hash and got[0][0].genome == {"x": 1} and got[0][0].lineage == {"parents": []}
    assert [(c.name, g) for c, g in store.candidates(run_id, role="baseline")] == [("a", 0)]


def test_evaluations_round_trip_by_role_in_order(store: Store) -> None:
    run_id = store.create_run({}, {})
    store.add_evaluation(run_id, _result("x", 2.0), 0)
    store.add_evaluation(run_id, _result("sdpa", 1.0, role="baseline"), 0)
    store.add_evaluation(run_id, _result("y", 3.0), 1)
    assert [(r.name, r.fitness, g) for r, g in store.evaluations(run_id)] == [("x", 2.0, 0), ("y", 3.0, 1)]
    assert [r.name for r, _ in store.evaluations(run_id, role="baseline")] == ["sdpa"]
    assert [r.name for r, _ in store.evaluations(run_id, role=None)] == ["x", "sdpa", "y"]
    assert store.evaluations(run_id)[0][0].to_dict() == _result("x", 2.0).to_dict()


def test_events_and_llm_calls(store: Store) -> None:
    run_id = store.create_run({}, {})
    store.add_event(run_id, "generation", generation=0, seconds=1.5)
    store.add_event(run_id, "stop", reason="done", when=dt.date(2026, 11, 30))  # not JSON: kept as its str()
    assert [e["kind"] for e in store.events(run_id)] == ["generation", "stop"]
    (stop,) = store.events(run_id, "stop")
    assert stop["reason"] == "done" and stop["when"] == "2026-11-30" and stop["ts"]
    call = {"model": "m", "guide": "g", "operation": "mutate", "status": "ok", "prompt": [{"role": "user"}],
            "reply": "r", "tokens_in": 3, "tokens_out": 4, "cost": 0.5, "latency_s": 1.0, "generation": 2}
    store.add_llm_call(run_id, call)
    (got,) = store.llm_calls(run_id)
    assert {k: got[k] for k in call} == call and got["retried"] == [] and got["attempts"] == 1


def test_a_failed_transaction_leaves_nothing(store: Store) -> None:
    run_id = store.create_run({}, {})
    with pytest.raises(RuntimeError), store.transaction():
        store.add_evaluation(run_id, _result("x", 1.0), 0)
        store.update_run(run_id, generation=5)
        raise RuntimeError("crash mid-generation")
    assert store.evaluations(run_id) == [] and store.run(run_id).generation == 0
    with store.transaction():
        store.add_evaluation(run_id, _result("x", 1.0), 0)
    assert len(store.evaluations(run_id)) == 1


def test_the_run_lifecycle(store: Store) -> None:
    run_id = store.create_run({}, {})
    store.release(run_id, status="finished", note="reached 3 generations")
    record = store.run(run_id)
    assert record.status == "finished" and record.lease is None
    other = store.create_run({}, {})
    store.release(other)  # released while still recorded as running: its process is gone
    assert store.run(other).status == "interrupted"
    store.claim(other)
    assert store.run(other).status == "running"
    beat = store.heartbeat(other, interval=0.05)
    beat.stop()


@pytest.mark.skipif(not os.path.exists("/proc/1"), reason="needs a pid 1 to stand for another process")
def test_a_run_held_by_another_live_process_is_refused(store: Store) -> None:
    run_id = store.create_run({}, {})
    _foreign_lease(store, run_id)
    with pytest.raises(StoreError, match="already running"):
        store.claim(run_id)


def test_the_same_search_over_either_store(tmp_path: Path) -> None:
    def search(store: Store) -> list[tuple[str, float]]:
        config = SearchConfig(generations=4, population=3, seed=5)
        run_id = store.create_run({"name": "fake"}, config.to_dict())
        rng = random.Random(config.seed)
        Search(store, run_id, StepMutator(rng), FakeEvaluator(), config, rng).run()
        return [(r.name, r.fitness) for r, _ in store.evaluations(run_id)]

    assert search(RunStore(tmp_path / "runs.db")) == search(MemoryStore())
