"""The Ray executor on a local Ray cluster started here (CPU only): a tiny end-to-end evolution of the
attention-tiny task in which a Ray worker is killed mid-run; its batch is re-queued, the run goes on,
and every candidate is evaluated exactly once. Skipped where Ray is not installed."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from evoforge import evolve
from evoforge.store import RunStore

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def _evaluating_ray_workers() -> list[int]:
    """Ray worker processes running a batch right now (Ray names them after the task's function)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if entry.read_bytes().startswith(b"ray::_ray_evaluate"):
                found.append(int(entry.parent.name))
        except OSError:
            continue
    return found


def test_ray_evolution_survives_a_killed_worker(tmp_path: Path, cluster: None) -> None:
    store = RunStore(tmp_path / "runs.db")
    config = evolve.RunConfig(task="attention-tiny", generations=3, population=2, device="cpu", budget_ms=5,
                              executor="ray", timeout_s=120)
    run_id, prepared = evolve.start(config, store)
    executor = evolve.make_executor(config, prepared)
    assert executor.name == "ray" and len(executor.slot_names) == 2
    killed: list[int] = []
    stop = threading.Event()

    def kill_one_after_generation_zero() -> None:
        db = sqlite3.connect(tmp_path / "runs.db", timeout=30)
        while not stop.is_set():
            time.sleep(0.3)
            try:
                done = db.execute("SELECT COUNT(*) FROM events WHERE kind='generation'").fetchone()[0]
            except sqlite3.OperationalError:
                continue
            workers = _evaluating_ray_workers()
            if done >= 1 and workers:
                time.sleep(1.0)  # mid-batch: its evaluation worker is running
                os.kill(workers[0], signal.SIGKILL)
                killed.append(workers[0])
                return

    killer = threading.Thread(target=kill_one_after_generation_zero, daemon=True)
    killer.start()
    try:
        final = evolve.search_for(store, run_id, prepared, config, None, executor).run()
    finally:
        stop.set()
        killer.join(timeout=5)
    assert killed, "no Ray worker was caught evaluating"
    assert final.stop_reason == "reached 3 generations"
    requeued = store.events(run_id, "requeue")
    assert len(requeued) >= 1 and requeued[0]["error"]
    results = store.evaluations(run_id)
    hashes = [r.hash for r, _ in results]
    assert len(hashes) == len(set(hashes))  # each candidate evaluated once
    assert set(hashes) == {c.hash for c, _ in store.candidates(run_id)}  # and none left behind
    assert sorted({g for _, g in results}) == [0, 1, 2]
    for result, _ in results + store.evaluations(run_id, role="baseline"):  # which node and device timed it
        assert result.where["host"] and result.where["device_name"].startswith("CPU")
    generations = store.events(run_id, "generation")
    assert any(e["attempts"] == 2 for e in generations)  # the re-queued batch, stored once
    (summary,) = store.events(run_id, "throughput")
    assert summary["executor"] == "ray" and summary["evaluations"] == len(hashes)
