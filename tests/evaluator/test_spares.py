"""Spare workers (process.SpareWorkers): the next evaluation's candidate workers, started while this
one's load and check. A spare has run nothing but the worker's own start-up, so taking one still gives
each candidate a process no other candidate has run in."""

from __future__ import annotations

import pytest

from evoforge.candidate import Candidate
from evoforge.evaluator import EvalConfig, Evaluator
from evoforge.evaluator.process import SPARES, SpareWorkers
from evoforge.task import task_from_file
from evoforge.tasks import TASK_MODEL_SOURCE
from evoforge.timing import TimingConfig
from tests.conftest import CANDIDATES, TASKS

JUDGE = CANDIDATES / "judge"


class _Fake:
    """Stands in for a WorkerProcess: started, alive until closed (or told it died)."""

    def __init__(self) -> None:
        self.started = self.closed = False
        self.dead = False

    def start(self) -> None:
        self.started = True

    @property
    def alive(self) -> bool:
        return self.started and not self.closed and not self.dead

    def close(self) -> None:
        self.closed = True


def test_top_up_starts_only_what_is_missing_and_take_hands_out_live_ones() -> None:
    spares = SpareWorkers()
    made: list[_Fake] = []

    def make() -> _Fake:
        made.append(_Fake())
        return made[-1]

    assert len(spares.top_up("a", 3, make)) == 3  # type: ignore[arg-type]
    assert spares.top_up("a", 3, make) == []  # type: ignore[arg-type]
    made[0].dead = True
    assert spares.take("a") is made[1]  # the dead one is skipped, and closed
    assert made[0].closed
    assert spares.take("b") is None  # another config's evaluation gets none of them
    assert len(spares.top_up("a", 3, make)) == 2  # type: ignore[arg-type]
    spares.close_all()
    assert all(w.closed for w in made if w is not made[1])


def test_old_keys_are_closed_beyond_the_limit() -> None:
    spares = SpareWorkers(keys=2)
    first = spares.top_up("a", 1, _Fake)  # type: ignore[arg-type]
    spares.top_up("b", 1, _Fake)  # type: ignore[arg-type]
    spares.top_up("c", 1, _Fake)  # type: ignore[arg-type]
    assert first[0].closed and spares.take("a") is None
    assert spares.take("c") is not None
    spares.close_all()


@pytest.fixture()
def clean_spares():  # type: ignore[no-untyped-def]
    SPARES.close_all()
    yield
    SPARES.close_all()


def test_a_candidate_in_a_spare_finds_no_trace_of_the_last_evaluations_candidates(clean_spares: None) -> None:
    spec = task_from_file(TASKS / "tanh_matmul.py")
    config = EvalConfig(device="cpu", timeout_s=60, sandbox="none", pool_slots=4, spare_workers=None,
                        timing=TimingConfig(budget_ms=20, rounds=2, warmup=1, min_reps=4, max_reps=8))
    baseline = Candidate(name="task_model", source=TASK_MODEL_SOURCE, lineage={"baseline": True})
    good = Candidate(name="good", source=(CANDIDATES / "good.py").read_text())

    def candidate(name: str) -> Candidate:
        return Candidate(name=name, source=(JUDGE / f"{name}.py").read_text())

    first = Evaluator(spec, config).evaluate([candidate("leaves_a_mark"), good], [baseline])
    assert first.by_name()["leaves_a_mark"].ok
    assert "spares_taken" not in first.profile  # nothing was started ahead of the first
    second = Evaluator(spec, config).evaluate([candidate("looks_for_a_mark"), good], [baseline])
    assert second.profile.get("spares_taken") == 2  # both candidates ran in workers started ahead
    result = second.by_name()["looks_for_a_mark"]
    assert result.ok, result.detail  # no module, builtin, variable or file of another candidate there
