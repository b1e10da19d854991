"""report.html and the evidence JSON: where each generation's time went (issue 23, item 10)."""

from __future__ import annotations

from pathlib import Path

from evoforge.candidate import Candidate
from evoforge.evaluator.result import EvalResult
from evoforge.report import evidence, time_by_generation, write_report
from evoforge.store import RunStore

# Two profiles of generation 0 (sent as two batches) and one of generation 1, as the judge records them.
PROFILES = [
    (0, {"load": 0.5, "startup": 20.0, "worker.ready": 6.0, "worker.load": 9.0, "check": 7.0, "time": 3.0,
         "time.worker": 2.5, "recheck": 0.5, "wall": 25.0, "slot": "cpu"}),
    (0, {"load": 0.5, "startup": 10.0, "check": 3.0, "time": 2.0, "recheck": 0.5, "wall": 14.0, "slot": "cpu"}),
    (1, {"load": 0.25, "startup": 8.0, "check": 1.5, "time": 5.0, "recheck": 0.25, "wall": 14.0, "slot": "cpu",
         "spares.wait": 1.25}),
]


def run_with_profiles(tmp_path: Path) -> tuple[RunStore, str]:
    store = RunStore(tmp_path / "runs.db")
    run_id = store.create_run({"name": "attention-tiny", "params": {"family": "other"}}, {})
    cand = Candidate(name="kernel", source="import torch\nclass ModelNew(torch.nn.Module):\n    pass\n")
    for gen in (0, 1):
        store.add_candidate(run_id, cand if gen == 0 else Candidate(name="k1", source=cand.source + "x = 1\n"), gen)
    store.add_evaluation(run_id, EvalResult(name="kernel", hash=cand.hash, status="incorrect"), 0)
    for gen, seconds in PROFILES:
        store.add_event(run_id, "profile", generation=gen, seconds=seconds)
    store.update_run(run_id, status="finished", note="reached 2 generations")
    return store, run_id


def test_time_split_sums_a_generations_batches_and_keeps_numbers_only() -> None:
    split = time_by_generation([{"generation": g, "seconds": s} for g, s in PROFILES])
    assert split[0]["batches"] == 2 and split[0]["wall"] == 39.0 and split[0]["startup"] == 30.0
    assert split[0]["check"] == 10.0 and "slot" not in split[0]
    assert split[1] == {"batches": 1, "load": 0.25, "startup": 8.0, "check": 1.5, "time": 5.0, "recheck": 0.25,
                        "wall": 14.0, "spares.wait": 1.25}


def test_report_shows_each_generations_time_split(tmp_path: Path) -> None:
    store, run_id = run_with_profiles(tmp_path)
    assert evidence(store, run_id)["time_by_generation"][1]["time"] == 5.0
    write_report(store, run_id, tmp_path / "rep")
    page = (tmp_path / "rep" / "report.html").read_text()
    table = page.split("<h2>time per generation</h2>")[1].split("</table>")[0]
    for label in ("reference outputs", "workers: start, load, check", "timing", "recheck", "other", "checks"):
        assert f"<th>{label}</th>" in table
    # generation 0: two batches, 39 s of wall time, 30 s starting workers; "other" is what no stage claimed
    assert "<tr><td>0</td><td>2</td><td>39.0</td><td>1.0</td><td>30.0</td><td>5.0</td><td>1.0</td><td>2.0</td>" in table
    assert "timing: in the workers 2.5" in table  # a part of the timing stage, named
    assert "spares.wait 1.25" in table  # a stage the report has no column for is shown by its name
