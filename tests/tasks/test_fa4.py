"""FlashAttention-4 as a baseline: offered on CUDA where ``flash_attn.cute.interface`` is installed, computing the
task's attention when it runs, and absent (nothing of flash_attn imported) everywhere else.

FA4 itself needs a Hopper or Blackwell GPU, so these tests use a stand-in package of the same name and
layout (no ``flash_attn/__init__.py``, as flash-attn-4 ships it) whose ``flash_attn_func`` is SDPA on
B·S·H·D tensors and returns ``(out, lse)`` as flash-attn-4 4.0 does.
"""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest

from evoforge.evaluator import EvalConfig, Evaluator
from evoforge.tasks import CUDA_ONLY_BASELINES, attention_params, baselines_for, builtin_task
from evoforge.tasks.attention import FA4_BASELINE, fa4_variant, offers_fa4
from evoforge.timing import TimingConfig

FAKE_INTERFACE = '''
import torch
import torch.nn.functional as F


def flash_attn_func(q, k, v, softmax_scale=None, causal=False, **kwargs):
    """SDPA on FA4's layout: q [B, Sq, H, D], k and v [B, Sk, Hkv, D]; causal aligned to the bottom right."""
    assert q.dim() == 4 and k.shape[2] <= q.shape[2] and q.shape[2] % k.shape[2] == 0, "not B·S·H·D"
    qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    group = qt.shape[1] // kt.shape[1]
    kt, vt = kt.repeat_interleave(group, dim=1), vt.repeat_interleave(group, dim=1)
    scores = (qt.float() @ kt.float().transpose(-2, -1)) * softmax_scale
    if causal:
        n_q, n_k = scores.shape[-2:]
        keep = torch.ones(n_q, n_k, dtype=torch.bool, device=q.device).tril(n_k - n_q)
        scores = scores.masked_fill(~keep, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    out = (torch.softmax(scores, dim=-1) @ vt.float()).to(q.dtype)
    return out.transpose(1, 2).contiguous(), lse
'''


@pytest.fixture
def fake_fa4(tmp_path: Path) -> Path:
    """A directory holding the stand-in ``flash_attn`` (a namespace package, like flash-attn-4's)."""
    root = tmp_path / "fa4-site"
    cute = root / "flash_attn" / "cute"
    cute.mkdir(parents=True)
    (cute / "__init__.py").write_text("from .interface import flash_attn_func\n")
    (cute / "interface.py").write_text(textwrap.dedent(FAKE_INTERFACE))
    return root


@pytest.fixture
def fa4_on_path(fake_fa4: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The stand-in importable here, and in every worker the evaluator starts (they inherit PYTHONPATH)."""
    monkeypatch.syspath_prepend(str(fake_fa4))
    old = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", str(fake_fa4) + (os.pathsep + old if old else ""))
    yield fake_fa4
    for name in [m for m in sys.modules if m == "flash_attn" or m.startswith("flash_attn.")]:
        del sys.modules[name]


def _config() -> EvalConfig:
    # No baseline worker kept past its evaluation: one kept with the stand-in on its path would serve the
    # next test's evaluation of the same source.
    return EvalConfig(device="cpu", timeout_s=60, cpu_time_limit_s=600, keep_baselines=False,
                      timing=TimingConfig(budget_ms=5, rounds=2, warmup=1, min_reps=3, max_reps=10))


def _names(task: str, device: str) -> list[str]:
    return [b.name for b in baselines_for(builtin_task(task), device)]


def test_fa4_is_a_baseline_on_cuda_when_it_imports(fa4_on_path: Path) -> None:
    for device in ("cuda", "cuda:1"):
        base = {b.name: b for b in baselines_for(builtin_task("attention"), device)}
        assert FA4_BASELINE in base
        assert base[FA4_BASELINE].lineage["baseline"]
    for task in ("attention-bf16", "attention-causal", "attention-gqa", "attention-decode", "attention-d128"):
        assert FA4_BASELINE in _names(task, "cuda"), task


def test_offering_fa4_does_not_import_flash_attn(fa4_on_path: Path) -> None:
    assert offers_fa4(attention_params(builtin_task("attention")), "cuda")
    assert "flash_attn" not in sys.modules


def test_fa4_is_never_a_baseline_on_a_cpu_run(fa4_on_path: Path) -> None:
    assert FA4_BASELINE not in _names("attention", "cpu")
    assert FA4_BASELINE not in _names("attention", "auto")  # callers resolve auto before asking
    assert FA4_BASELINE not in [b.name for b in baselines_for(builtin_task("attention"))]
    assert "flash_attn" not in sys.modules


def test_fa4_is_not_offered_for_what_its_interface_refuses(fa4_on_path: Path) -> None:
    assert FA4_BASELINE not in _names("attention:dtype=fp32", "cuda")
    assert FA4_BASELINE not in _names("attention:head_dim=60", "cuda")  # not a multiple of 8
    assert FA4_BASELINE not in _names("attention:head_dim=512", "cuda")  # over 256


def test_without_flash_attn_the_baselines_are_unchanged() -> None:
    assert "flash_attn" not in sys.modules
    for task in ("attention", "attention-bf16", "attention-gqa"):
        # the same as a CPU's but for the SDPA backends only CUDA has
        assert [n for n in _names(task, "cuda") if n not in CUDA_ONLY_BASELINES] == _names(task, "cpu")
        assert FA4_BASELINE not in _names(task, "cuda")
    assert "flash_attn" not in sys.modules


def test_a_namespace_flash_attn_without_cute_is_not_fa4(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "flash_attn").mkdir()
    (tmp_path / "flash_attn" / "flash_attn_interface.py").write_text("")  # FlashAttention-2/3's, not 4's
    monkeypatch.syspath_prepend(str(tmp_path))
    assert FA4_BASELINE not in _names("attention", "cuda")


@pytest.mark.parametrize("overrides", ["", "kv_heads=1,q_len=16,causal=1"])
def test_fa4_source_computes_the_task_through_the_evaluator(fa4_on_path: Path, overrides: str) -> None:
    spec = builtin_task("attention-tiny" + (":" + overrides if overrides else ""))
    fa4 = fa4_variant(attention_params(spec))
    config = _config()
    result = Evaluator(spec, config).evaluate([], [fa4]).by_name()[FA4_BASELINE]
    assert result.status == "ok", f"{result.status}: {result.detail}"
    assert result.role == "baseline"


def test_fa4_source_fails_as_a_baseline_where_flash_attn_is_missing() -> None:
    spec = builtin_task("attention-tiny")
    config = _config()
    result = Evaluator(spec, config).evaluate([], [fa4_variant(attention_params(spec))]).by_name()[FA4_BASELINE]
    assert result.status != "ok"
    assert "flash_attn" in result.detail
