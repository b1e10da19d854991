"""The up-front memory check of a run (issue 22): before any work, a batch larger than what fits in GPU memory
beside the baselines is capped (the search sends a generation as several batches), and the note says why."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from evoforge import evolve
from evoforge.evaluator import memory
from evoforge.evaluator.config import EvalConfig
from evoforge.store import RunStore
from evoforge.task import TaskSpec
from tests.test_budget import TimedExecutor
from tests.test_search import StepMutator


def _prepared(cap: int | None) -> evolve.Prepared:
    rng = random.Random(0)
    return evolve.Prepared(TaskSpec("t", "", "t.py"), StepMutator(rng), None, rng, "cuda", cap,  # type: ignore[arg-type]
                           "memory: ..." if cap else "")


@pytest.mark.parametrize(("asked", "cap", "expected"), [(None, 2, 2), (5, 2, 2), (1, 2, 1), (None, None, None)])
def test_the_search_caps_its_batches_at_what_fits(tmp_path: Path, asked: int | None, cap: int | None,
                                                 expected: int | None) -> None:
    store = RunStore(tmp_path / "runs.db")
    config = evolve.RunConfig(batch_size=asked)
    run_id = store.create_run({"name": "t"}, config.to_dict())
    search = evolve.search_for(store, run_id, _prepared(cap), config, executor=TimedExecutor(0.01))
    assert search.config.batch_size == expected


def test_the_check_runs_only_where_this_machine_runs_the_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[str, int, int]] = []

    def upfront(spec: TaskSpec, config: EvalConfig, device: str, baselines: int, batch: int) -> tuple[int, str]:
        asked.append((device, baselines, batch))
        return 3, "note"

    monkeypatch.setattr(memory, "upfront", upfront)
    spec, eval_config = TaskSpec("t", "", "t.py"), EvalConfig()
    assert evolve._fit_memory(evolve.RunConfig(), spec, eval_config, "cpu", 2) == (None, "")
    assert evolve._fit_memory(evolve.RunConfig(executor="ray"), spec, eval_config, "cuda", 2) == (None, "")
    assert evolve._fit_memory(evolve.RunConfig(population=8), spec, eval_config, "cuda", 2) == (3, "note")
    assert evolve._fit_memory(evolve.RunConfig(batch_size=4), spec, eval_config, "cuda:1", 2) == (3, "note")
    assert asked == [("cuda", 2, 8), ("cuda:1", 2, 4)]


def test_problems_at_once_leave_the_memory_plan_to_the_process_that_searches(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch running problems at once starts each run in its own process, while the other lanes' problems fill
    the GPUs it sees: a plan made there would read their memory as taken. The child that searches the run plans
    against its one GPU; the starting process makes none."""
    from evoforge import batch
    from evoforge.batch import ProblemOutcome
    from evoforge.batch_store import BatchRecord
    from evoforge.task import TaskError
    from tests.test_cli_run import TASKS

    planned: list[str] = []

    def full(config: evolve.RunConfig, *args: object) -> tuple[int | None, str]:
        planned.append(str(config.task))
        raise TaskError("does not fit: the other lanes' problems hold the GPU")

    monkeypatch.setattr(evolve, "_fit_memory", full)
    problem = tmp_path / "tanh.py"
    problem.write_text((TASKS / "tanh_matmul.py").read_text())
    store = RunStore(tmp_path / "runs.db")
    config = evolve.RunConfig(device="cpu", generations=1, population=1)
    record = BatchRecord.create(store.path, tmp_path, None, config.to_dict(), [(problem, None)])
    searched: list[str] = []

    def search(run_id: str, *args: object) -> None:
        searched.append(run_id)

    import threading

    row = batch._run_problem(store, config, record, problem, None, search, None, threading.Lock())
    assert planned == [] and searched == [row.run] and row.status != "error", row  # started, no plan made here
    assert isinstance(row, ProblemOutcome) and record.run_of(problem) == row.run
    again = batch._run_problem(store, config, record, problem, None, search, None)  # in turn: planned here
    assert again.status == "error" and "does not fit" in again.detail and planned == [str(problem)]


HUGE = '''
import torch
import torch.nn as nn

class Model(nn.Module):
    def forward(self, x):
        return x * 2

def get_inputs():
    return [torch.randn(1 << 20, 1 << 20)]  # 4 TiB: checked on the meta device, never made
'''


def test_a_task_is_checked_on_the_meta_device_and_for_real_where_it_must_be() -> None:
    from evoforge.task import TaskError, load_task

    load_task(TaskSpec("huge", HUGE, "huge.py"), module_name="evoforge_test_huge")
    numpy = HUGE.replace("torch.randn(1 << 20, 1 << 20)", "torch.from_numpy(torch.randn(4, 4).numpy())")
    load_task(TaskSpec("numpy", numpy, "numpy.py"), module_name="evoforge_test_numpy")  # no meta: made for real
    broken = HUGE.replace("torch.randn(1 << 20, 1 << 20)", "torch.randn(4) @ torch.randn(5)")
    with pytest.raises(TaskError, match=r"broken.py: `get_inputs\(\)` raised RuntimeError"):
        load_task(TaskSpec("broken", broken, "broken.py"), module_name="evoforge_test_broken")

