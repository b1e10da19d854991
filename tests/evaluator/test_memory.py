"""Memory-bounded evaluation (issue 22): footprints traced on the meta device, plans, the judge's slot choice
and refusals, the up-front batch cap, and comparisons chunk by chunk."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from evoforge.evaluator import compare as compare_mod
from evoforge.evaluator import memory
from evoforge.evaluator.config import EvalConfig
from evoforge.task import TaskError, TaskSpec

GIB = 2**30
SOFTMAX = '''
import torch
import torch.nn as nn

class Model(nn.Module):
    def forward(self, x):
        return torch.softmax(x, dim=1)

def get_inputs():
    return [torch.randn(4096, 393216)]  # KernelBench level 1's published size: 6.4 GB

def get_init_inputs():
    return []
'''


class _Softmax(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x, dim=1)


def test_footprint_of_a_kernelbench_size_problem_is_traced_without_allocating_it() -> None:
    fp = memory.measure_task(TaskSpec("softmax", SOFTMAX, "softmax.py"))
    assert fp is not None and fp.measured
    assert fp.inputs == fp.outputs == fp.ref_outputs == 4096 * 393216 * 4
    assert fp.working == fp.outputs and fp.weights == 0


def test_views_of_weights_and_inputs_are_not_counted_and_temporaries_are() -> None:
    linear = nn.Linear(256, 512)
    fp = memory.measure(linear, [torch.randn(8, 256)], torch.float32)
    assert fp.weights == (256 * 512 + 512) * 4
    assert fp.outputs == fp.working == 8 * 512 * 4  # the transposed weight is a view

    class Rms(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x / torch.sqrt(torch.mean(x ** 2, dim=1, keepdim=True) + 1e-5)

    x = torch.empty(16, 64, 32, device="meta")
    fp = memory.measure(Rms(), [x], torch.float32)
    assert fp.outputs == x.numel() * 4
    assert fp.working > fp.outputs  # x ** 2 lives while the mean is taken


def test_half_precision_references_count_in_float32_and_untraceable_models_fall_back() -> None:
    fp = memory.measure(_Softmax(), [torch.empty(64, 128, dtype=torch.float16, device="meta")], torch.float32)
    assert fp.ref_outputs == 2 * fp.outputs and fp.ref_inputs == 64 * 128 * 2

    class Item(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * x.sum().item()

    fp = memory.measure(Item(), [torch.randn(4, 4)], torch.float32)
    assert not fp.measured and fp.outputs == fp.inputs == 64
    assert "could not be traced" in memory.describe(memory.plan(fp, slots=1, workers=1, cases=5))


def _fp(gib: float) -> memory.Footprint:
    n = int(gib * GIB)
    return memory.Footprint(inputs=n, outputs=n, ref_outputs=n, ref_inputs=0, weights=0, working=n)


def test_plans_grow_with_slots_and_workers_and_fit_stays_inside_the_room() -> None:
    fp = _fp(1.0)
    a = memory.plan(fp, slots=1, workers=4, cases=5)
    b = memory.plan(fp, slots=2, workers=4, cases=5)
    assert b.device > a.device and b.pool == 2 * a.pool
    assert memory.plan(fp, slots=1, workers=5, cases=5).device == a.device + a.worker_device
    free = 80 * GIB
    slots = memory.fit(fp, free=free, workers=4, cases=5, wanted=48)
    assert slots >= 1
    assert memory.plan(fp, slots=slots, workers=4, cases=5).device <= free * (1 - memory.HEADROOM)
    assert memory.plan(fp, slots=slots + 1, workers=4, cases=5).device > free * (1 - memory.HEADROOM)
    # a worker maps the whole pool: its memory limit bounds the slots too
    assert memory.fit(fp, free=10**15, workers=1, cases=5, wanted=48, worker_limit=8 * GIB) == 3
    assert memory.fit(_fp(100.0), free=free, workers=1, cases=5, wanted=48) == 0


def test_entries_that_fit_and_the_refusal_say_what_to_change() -> None:
    fp = _fp(6.0)  # the softmax of the H200 report
    free = int(139.8 * GIB)
    fits = memory.entries_that_fit(fp, free=free, cases=5)
    p = memory.plan(fp, slots=1, workers=fits, cases=5)
    assert p.device <= free * (1 - memory.HEADROOM)
    assert memory.plan(fp, slots=1, workers=fits + 1, cases=5).device > free * (1 - memory.HEADROOM)
    line = memory.refusal("softmax.py", memory.plan(fp, slots=1, workers=10, cases=5), free, "NVIDIA H200", 2)
    assert line.startswith("softmax.py: the task does not fit in GPU memory: 8 candidate(s) beside 2 baseline(s)")
    assert f"run with --batch-size {fits - 2}" in line and "\n" not in line
    big = memory.refusal("big.py", memory.plan(_fp(60.0), slots=1, workers=3, cases=5), free, "GPU", 2, 1)
    assert "make get_inputs() smaller" in big
    host = memory.host_refusal("t.py", memory.plan(_fp(20.0), slots=1, workers=3, cases=5), 32 * GIB)
    assert host is not None and "--memory-mb 32768" in host
    assert memory.host_refusal("t.py", memory.plan(_fp(1.0), slots=1, workers=3, cases=5), 32 * GIB) is None
    # host memory bounds the slots (it is no reason to refuse: on some machines it grows as it is used)
    # 0.2 GiB sets: five references (1 GiB) and 0.4 GiB per slot within 90% of 4 GiB: 6 slots
    assert memory.fit(_fp(0.2), free=10**15, workers=1, cases=5, wanted=48, host_free=4 * GIB) == 6
    # 1 GiB sets are re-drawn, their references computed again on the device, none on the host: 2 GiB per slot
    # within 90% of 20 GiB: 9 slots
    assert memory.fit(_fp(1.0), free=10**15, workers=1, cases=5, wanted=48, host_free=20 * GIB) == 9
    assert memory.fit(_fp(1.0), free=10**15, workers=1, cases=5, wanted=48, host_free=GIB) == 0


def fake_cuda(monkeypatch: pytest.MonkeyPatch, free: int) -> None:
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free, free))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(memory, "host_available", lambda: 120 * GIB)  # an H200 machine's, not this one's


def test_upfront_caps_batches_or_refuses_before_any_work(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_cuda(monkeypatch, int(139.8 * GIB))
    spec = TaskSpec("softmax", SOFTMAX, "softmax.py")
    config = EvalConfig(device="cuda", parallel_workers=4, memory_limit_mb=32 * 1024)
    cap, note = memory.upfront(spec, config, "cuda", baselines=2, batch=8)
    assert cap is not None and 1 <= cap < 8
    assert f"at most {cap} candidate(s) beside 2 baseline(s)" in note
    # kept baseline workers would hold their last slots beside their new ones: not kept for this problem
    assert not config.keep_baselines and "baseline workers are not kept" in note
    assert memory.upfront(spec, config, "cuda", baselines=2, batch=cap) == (None, "")
    roomy = EvalConfig(device="cuda", parallel_workers=4, memory_limit_mb=32 * 1024)
    fake_cuda(monkeypatch, 1000 * GIB)
    assert memory.upfront(spec, roomy, "cuda", baselines=2, batch=8) == (None, "") and roomy.keep_baselines
    fake_cuda(monkeypatch, 40 * GIB)
    with pytest.raises(TaskError, match=r"softmax.py: the task does not fit in GPU memory: 1 candidate\(s\) beside "
                                         r"2 baseline\(s\) .*make get_inputs\(\) smaller"):
        memory.upfront(spec, config, "cuda", baselines=2, batch=8)
    assert memory.upfront(spec, config, "cpu", baselines=2, batch=8) == (None, "")


def test_kept_baseline_workers_count_their_last_slots_too() -> None:
    fp = _fp(6.0)
    plain = memory.plan(fp, slots=1, workers=4, cases=5)
    kept = memory.plan(fp, slots=1, workers=4, cases=5, kept=2)
    assert kept.device == plain.device + 2 * fp.slot and "kept baselines 24.00 GiB" in memory.describe(kept)
    free = int(139.8 * GIB)
    assert memory.entries_that_fit(fp, free=free, cases=5, kept=2) < memory.entries_that_fit(fp, free=free, cases=5)


def test_chunked_comparison_agrees_with_the_whole_tensor(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    ref = torch.randn(1000, dtype=torch.float64)
    good = ref.to(torch.float32)
    bad = good.clone()
    bad[[3, 517, 998]] += 1.0
    nan = good.clone()
    nan[[10, 700]] = float("nan")
    ints = torch.arange(1000)
    tol = lambda dtype: (1e-5, 1e-5)  # noqa: E731
    case = {"name": "c", "ref": [ref, ints], "expect": [(tuple(ref.shape), torch.float32), ((1000,), ints.dtype)]}
    whole = [compare_mod.compare(outs, case, tol) for outs in ([good, ints], [bad, ints], [nan, ints],
                                                                [good, ints.flip(0)])]
    monkeypatch.setattr(compare_mod, "CHUNK", 64)
    chunked = [compare_mod.compare(outs, case, tol) for outs in ([good, ints], [bad, ints], [nan, ints],
                                                                  [good, ints.flip(0)])]
    assert chunked == whole
    assert chunked[1]["detail"].startswith("output 0: 3/1000 values off") and "2 NaN/Inf" in chunked[2]["detail"]
    other = ref.clone()
    other[[5, 900]] += 1.0
    assert compare_mod.nondeterminism([ref], [other], [good], tol) == "output 0: 2/1000 values, max difference 1"
    assert compare_mod.nondeterminism([ref], [ref.clone()], [good], tol) is None
