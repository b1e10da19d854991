"""The built-in attention family: rendering, and every variant's semantics on tiny CPU shapes."""

from __future__ import annotations

import ast
import sys

import pytest
import torch

from evoforge.task import import_source, load_task, make_inputs
from evoforge.tasks import BUILTINS, baselines_for, builtin_task
from evoforge.tasks.attention import VARIANT_NAMES, AttentionParams, variants

SEED_SEVEN = {"math_baseline", "sdpa_flash", "sdpa_math_only", "sdpa_mem_eff", "flash_bf16", "flash_tf32",
              "flash_benchmark"}


def test_sweep_variants_include_the_seeds_seven_and_the_modern_paths() -> None:
    assert SEED_SEVEN | {"sdpa_cudnn", "sdpa_default", "flex_attention", "compile_3kernel"} == set(VARIANT_NAMES)


def test_semantic_changes_are_labelled_and_not_baselines() -> None:
    by_name = {v.name: v for v in variants(AttentionParams())}
    assert by_name["flash_bf16"].labels == ["bf16 compute"]
    assert by_name["flash_tf32"].labels == ["tf32"]
    assert not by_name["flash_bf16"].lineage["baseline"]
    assert by_name["sdpa_cudnn"].lineage["baseline"]


def test_every_builtin_renders_a_loadable_task() -> None:
    for name in BUILTINS:
        spec = builtin_task(name)
        ast.parse(spec.source)
        task = load_task(spec, check_inputs=False)
        assert task.flops and task.bytes_moved


def test_flops_halve_for_causal_prefill() -> None:
    assert AttentionParams(causal=True).flops * 2 == AttentionParams().flops


def test_baselines_include_the_task_model_and_every_pytorch_path() -> None:
    names = [b.name for b in baselines_for(builtin_task("attention"), "cuda")]
    assert names[0] == "task_model"
    assert {"sdpa_flash", "sdpa_cudnn", "sdpa_mem_eff", "sdpa_default", "flex_attention", "math_baseline"} <= set(names)
    assert "flash_bf16" not in names


def test_a_cpu_is_not_offered_the_sdpa_backends_only_cuda_has() -> None:
    cpu = [b.name for b in baselines_for(builtin_task("attention"), "cpu")]
    cuda = [b.name for b in baselines_for(builtin_task("attention"), "cuda:1")]
    assert [n for n in cuda if n not in cpu] == ["sdpa_mem_eff", "sdpa_cudnn"]
    assert {"task_model", "sdpa_flash", "sdpa_math_only", "sdpa_default", "compile_3kernel"} <= set(cpu)


CPU_VARIANTS = ["math_baseline", "sdpa_flash", "sdpa_math_only", "flash_tf32", "flash_benchmark", "sdpa_default"]


@pytest.mark.parametrize("overrides", ["", "causal=1", "kv_heads=1", "q_len=1", "q_len=16,causal=1"])
@pytest.mark.parametrize("variant", CPU_VARIANTS)
def test_variant_matches_the_model_in_float64(variant: str, overrides: str) -> None:
    spec = builtin_task("attention-tiny:dtype=fp32" + ("," + overrides if overrides else ""))
    task = load_task(spec)
    params = AttentionParams(**{k: v for k, v in spec.params.items() if k != "family"})
    source = next(v.source for v in variants(params) if v.name == variant)
    module = import_source(source, f"variant_{variant}", variant)
    q, k, v = make_inputs(task, 0)
    expected = task.model_cls()(q.double(), k.double(), v.double())
    got = module.ModelNew()(q, k, v)
    torch.testing.assert_close(got.double(), expected, atol=2e-5, rtol=2e-5)


def test_flag_variants_restore_the_global_flags() -> None:
    params = AttentionParams(batch=1, heads=2, seq_len=16, head_dim=16, dtype="fp32")
    before = (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32)
    for name in ("flash_tf32", "flash_benchmark"):
        source = next(v.source for v in variants(params) if v.name == name)
        model = import_source(source, f"flags_{name}", name).ModelNew()
        x = torch.randn(1, 2, 16, 16)
        model(x, x, x)
    assert (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32) == before


@pytest.mark.parametrize("overrides", ["", "causal=1", "kv_heads=1", "q_len=16,causal=1"])
def test_the_model_attends_a_head_at_a_time_past_its_scores_limit(overrides: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Past SCORES_AT_ONCE bytes of scores the Model loops over (batch, head): the same values as all at once."""
    spec = builtin_task("attention-tiny:dtype=fp32" + ("," + overrides if overrides else ""))
    task = load_task(spec)
    q, k, v = (x.double() for x in make_inputs(task, 0))
    whole = task.model_cls()(q, k, v)
    calls: list[int] = []
    attend = task.model_cls.attend
    monkeypatch.setattr(task.model_cls, "attend", staticmethod(lambda *a: calls.append(a[0].dim()) or attend(*a)))
    monkeypatch.setitem(sys.modules[task.model_cls.__module__].__dict__, "SCORES_AT_ONCE", 0)
    per_head = task.model_cls()(q, k, v)
    assert calls and set(calls) == {2} and len(calls) == q.shape[0] * q.shape[1]
    torch.testing.assert_close(per_head, whole, atol=0, rtol=0)


def test_a_long_row_plans_every_baseline_on_an_h200() -> None:
    """B1 H16 S16384 D128 bf16: the Model's working set is one head's scores (its whole scores would be 16 GiB
    per worker), so the judge and ten baselines plan in an H200's free memory."""
    from evoforge.evaluator import EvalConfig, memory

    spec = builtin_task("attention:batch=1,heads=16,seq_len=16384,head_dim=128,dtype=bf16")
    fp = memory.measure_task(spec)
    assert fp is not None and fp.measured
    assert fp.working < 2 * 2**30, fp
    free = int(139.2 * 2**30)  # what the H200 reported free (2026-12-01)
    config = EvalConfig()
    cases = memory.cases_of(config.n_random, config.edge_cases)
    assert memory.entries_that_fit(fp, free=free, cases=cases, parallel=16) >= 10 + 1
