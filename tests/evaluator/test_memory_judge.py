"""The judge's memory checks (issue 22): an evaluation that can't fit is refused before any worker starts, in one
line with the numbers and what to change; the pool gets the slots that fit."""

from __future__ import annotations

import types

import pytest
import torch
import torch.nn as nn

from evoforge.evaluator import judge, memory
from evoforge.evaluator.config import EvalConfig
from evoforge.task import TaskError, TaskSpec
from tests.evaluator.test_memory import GIB, SOFTMAX, fake_cuda


class _Softmax(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x, dim=1)


session_spec = TaskSpec("softmax", SOFTMAX, "softmax.py")


def _session(entries: int, baselines: int = 2, keep: bool = False) -> judge._Session:
    session = judge._Session.__new__(judge._Session)
    session.cfg = EvalConfig(device="cuda", parallel_workers=4, memory_limit_mb=32 * 1024, keep_baselines=keep)
    session.ev = types.SimpleNamespace(task=session_spec)
    session.init, session.template = [], []
    session.device = torch.device("cuda")
    session.ref_dtype = torch.float32
    session.task = types.SimpleNamespace(spec=TaskSpec("softmax", SOFTMAX, "softmax.py"))
    session.entries = [types.SimpleNamespace(role="baseline" if i < baselines else "candidate",
                                             keeps_worker=i < baselines,
                                             candidate=types.SimpleNamespace(hash=f"h{i}", source=f"s{i}"))
                       for i in range(entries)]
    return session


def test_the_judge_refuses_an_evaluation_that_cannot_fit_before_any_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_cuda(monkeypatch, int(139.8 * GIB))
    x = torch.empty(4096, 393216, device="meta")
    session = _session(entries=10)
    with pytest.raises(TaskError, match=r"softmax.py: the task does not fit in GPU memory: 8 candidate\(s\) beside "
                                         r"2 baseline\(s\) need .* run with --batch-size \d+$"):
        session._check_memory([x], _Softmax())
    small = _session(entries=3)
    small._check_memory([x], _Softmax())  # one candidate beside two baselines fits
    assert small.footprint.inputs == x.numel() * 4


def test_the_judge_picks_the_slots_that_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_cuda(monkeypatch, 80 * GIB)
    session = _session(entries=4)
    shape = (256, 1024 * 1024)  # 1 GiB in float32
    session.footprint = memory.measure(_Softmax(), [torch.empty(shape, device="meta")], torch.float32)
    case = {"inputs": [torch.empty(shape, device="meta")], "ref": [torch.empty(shape, device="meta")]}
    session.cases = [case] * 4
    spec = [(shape, torch.float32)]
    slots = session._pool_slots(spec, spec)
    fp = session.footprint
    assert 1 <= slots < session.cfg.pool_slots
    assert memory.plan(fp, slots=slots, workers=4, cases=5, parallel=4).device <= 80 * GIB * (1 - memory.HEADROOM)
    small = [((64, 64), torch.float32)]
    session.footprint = memory.measure(_Softmax(), [torch.empty(64, 64)], torch.float32)
    session.cases = [{"inputs": [torch.empty(64, 64)], "ref": [torch.empty(64, 64)]}] * 4
    assert session._pool_slots(small, small) == session.cfg.pool_slots  # small problems keep every slot


class _Worker:
    alive = True

    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_kept_baseline_workers_are_counted_and_other_tasks_ones_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_cuda(monkeypatch, 1000 * GIB)
    monkeypatch.setattr(judge.KEPT, "workers", {})
    session = _session(entries=4, keep=True)
    mine, other = _Worker(), _Worker()
    judge.KEPT.workers.update({session._keep_key(session.entries[0]): mine, "another task's": other})
    assert judge._kept_here(session) == 1
    assert judge._kept_here(_session(entries=4, keep=False)) == 0  # not kept: nothing to count
    assert judge._close_other_kept(session) and other.closed and not mine.closed
    assert list(judge.KEPT.workers) == [session._keep_key(session.entries[0])]
    session._check_memory([torch.empty(64, 64)], _Softmax())  # fits: nothing more is closed
    assert not mine.closed

