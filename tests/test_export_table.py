"""One export for a model's several shapes (issue 21): a dispatch table of evolved kernels, each verified on its
class. A call runs the entry that covers it (the nearest verified shape where several do), SDPA where none does;
a multi-shape run's kernel covers every shape it was verified on; `evoforge best A B --export` builds the table
from real runs and refuses what it can't combine."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from evoforge.candidate import Candidate
from evoforge.export import Entry, ExportError, candidate_sources, load, render_table, spec_for
from evoforge.kernels.flash_attention import FlashGenome, render
from tests.test_export import FAST, close, evoforge_cli, qkv, reference

SDPA_SOURCE = '''import torch.nn as nn
import torch.nn.functional as F


class ModelNew(nn.Module):
    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v, enable_gqa=q.shape[1] != k.shape[1])
'''

MATMUL_SOURCE = '''import math

import torch
import torch.nn as nn


class ModelNew(nn.Module):
    def forward(self, q, k, v):
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
        scores = (q.float() @ k.float().transpose(-2, -1)) / math.sqrt(q.shape[-1])
        return (torch.softmax(scores, dim=-1) @ v.float()).to(q.dtype)
'''

RAISING_SOURCE = '''import torch.nn as nn


class ModelNew(nn.Module):
    def forward(self, q, k, v):
        raise RuntimeError("out of resources: shared memory")
'''


def entry(name: str, source: str, *, shapes: list[dict[str, int]] | None = None, causal: bool = False,
          head_dim: int = 32, dtype: str = "fp16", general: bool = True, run: str = "") -> Entry:
    """A run's best as the export reads it: ``source`` verified on ``shapes`` (B1 H2 S64 by default) on the CPU."""
    shapes = shapes or [{"batch": 1, "heads": 2, "kv_heads": 2, "q_len": 64, "seq_len": 64}]
    params = [{"family": "attention", "head_dim": head_dim, "causal": causal, "dtype": dtype, **s} for s in shapes]
    task: dict[str, Any] = {"name": name, "params": dict(params[0])}
    if len(shapes) > 1:
        task["params"]["shapes"] = [{"name": f"{name}_{i}", "params": p} for i, p in enumerate(params)]
    genome = {"kind": "torch", "variant": name} if general else None
    data = {"task": task, "run": {"id": run or f"run-{name}"}, "device": {"device_type": "cpu", "device_name": "CPU"}}
    return Candidate(name=name, source=source, genome=genome), {"fitness": 1.2}, data


def table(tmp: Path, entries: list[Entry], name: str = "table") -> Any:
    path = tmp / f"{name}.py"
    path.write_text(render_table(entries, f'"""{name}"""'))
    module = load(path)
    module.reset_stats()
    module._state["warned"] = False
    return module


def ran(module: Any) -> list[str]:
    """The entries that ran since the last reset_stats()."""
    return [name for name, calls in module.stats()["entries"].items() if calls]


def causal_flash() -> Entry:
    """The template's causal Triton kernel (run by Triton's interpreter on the CPU) as an entry."""
    g = FlashGenome(block_m=16, block_n=16, num_warps=1, num_stages=1, mask_diagonal=True)
    cand, best, data = entry("causal", render(g, causal=True, head_dim=32), causal=True)
    cand.genome = g.to_dict()
    return cand, best, data


def test_each_call_runs_the_entry_verified_for_its_class(tmp_path: Path) -> None:
    module = table(tmp_path, [entry("plain", SDPA_SOURCE), causal_flash(), entry("d64", MATMUL_SOURCE, head_dim=64)])
    assert [s["name"] for s in module.TABLE] == ["plain", "causal", "d64"]
    q, k, v = qkv(s=40)
    close(module.attention(q, k, v), reference(q, k, v))
    assert ran(module) == ["plain"]
    module.reset_stats()
    close(module.attention(q, k, v, is_causal=True), reference(q, k, v, causal=True))
    assert ran(module) == ["causal"]
    module.reset_stats()
    q, k, v = qkv(d=64, s=33)
    close(module.attention(q, k, v), reference(q, k, v))
    assert ran(module) == ["d64"] and module.stats()["fallback"] == 0


def test_a_call_no_entry_covers_falls_back_naming_every_entrys_reason(tmp_path: Path) -> None:
    module = table(tmp_path, [entry("plain", SDPA_SOURCE), entry("d64", MATMUL_SOURCE, head_dim=64)])
    q, k, v = qkv(d=48)
    reason = module.check(q, k, v)
    assert "plain: head dim 48" in reason and "d64: head dim 48" in reason and "\n" not in reason
    with pytest.warns(RuntimeWarning, match="falling back"):
        close(module.attention(q, k, v), reference(q, k, v))
    assert module.stats()["fallback"] == 1 and module.stats()["kernel"] == 0
    with pytest.raises(module.UnsupportedCall, match="no evolved kernel of the table covers"):
        module.attention(q, k, v, strict=True)
    q, k, v = qkv()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a mask is covered by no entry; the warning was given once already
        close(module.attention(q, k, v, attn_mask=torch.ones(64, 64, dtype=torch.bool)), reference(q, k, v))


def test_where_several_entries_cover_a_call_the_nearest_verified_shape_runs_it(tmp_path: Path) -> None:
    decode = [{"batch": 1, "heads": 2, "kv_heads": 2, "q_len": 1, "seq_len": 512}]
    module = table(tmp_path, [entry("prefill", SDPA_SOURCE), entry("decode", MATMUL_SOURCE, shapes=decode)])
    q, k, v = qkv(s=1, kv_len=300)  # a decode step over a cache
    close(module.attention(q, k, v), reference(q, k, v))
    assert ran(module) == ["decode"]
    module.reset_stats()
    q, k, v = qkv(s=100)
    close(module.attention(q, k, v), reference(q, k, v))
    assert ran(module) == ["prefill"]
    assert module.select(q, k, v) == (0, None)


def test_an_entry_that_fails_is_dropped_and_the_next_covering_entry_runs(tmp_path: Path) -> None:
    module = table(tmp_path, [entry("raising", RAISING_SOURCE), entry("plain", SDPA_SOURCE, run="r2")])
    q, k, v = qkv()
    close(module.attention(q, k, v), reference(q, k, v))
    assert ran(module) == ["plain"]
    assert "raising: inputs the kernel failed on (RuntimeError: out of resources" in module.check(*qkv(d=48))
    with pytest.raises(RuntimeError, match="out of resources"):  # strict surfaces a kernel's own failure
        table(tmp_path, [entry("raising", RAISING_SOURCE)], "strict").attention(q, k, v, strict=True)


def test_a_multi_shape_runs_kernel_covers_every_shape_and_ratio_it_was_verified_on(tmp_path: Path) -> None:
    shapes = [{"batch": 1, "heads": 4, "kv_heads": 2, "q_len": 64, "seq_len": 64},
              {"batch": 2, "heads": 4, "kv_heads": 1, "q_len": 1, "seq_len": 100}]
    cand, best, data = entry("multi", SDPA_SOURCE, shapes=shapes, general=False)
    spec = spec_for(cand, best, data)
    assert spec["gqa_ratios"] == [2, 4] and not spec["general"]
    assert spec["verified_shapes"] == [{"batch": 1, "heads": 4, "kv_heads": 2, "q_len": 64, "kv_len": 64},
                                       {"batch": 2, "heads": 4, "kv_heads": 1, "q_len": 1, "kv_len": 100}]
    module = table(tmp_path, [(cand, best, data)])
    for q, k, v in (qkv(h=4, kv_heads=2), qkv(b=2, h=4, kv_heads=1, s=1, kv_len=100)):
        assert module.check(q, k, v, enable_gqa=True) is None
        close(module.attention(q, k, v, enable_gqa=True), reference(q, k, v))
    assert "exact shapes only" in module.check(*qkv(h=4, kv_heads=2, s=63), enable_gqa=True)
    assert "grouped-query ratio 4:4" in module.check(*qkv(h=4))


def test_the_table_selftest_checks_every_entry(tmp_path: Path) -> None:
    good = tmp_path / "good.py"
    good.write_text(render_table([entry("plain", SDPA_SOURCE), entry("d64", MATMUL_SOURCE, head_dim=64)], '"""t"""'))
    proc = subprocess.run([sys.executable, str(good), "--selftest"], capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "plain: verified shape" in proc.stdout and "d64: verified shape" in proc.stdout
    # d64's "head dim 48" case is no entry's; plain's "head dim 48" is not d64's either: both must fall back.
    assert "FAIL" not in proc.stdout and "self-test passed" in proc.stdout
    wrong = MATMUL_SOURCE.replace("/ math.sqrt(q.shape[-1])", "/ math.sqrt(q.shape[-1]) * 1.1")
    bad = tmp_path / "bad.py"
    bad.write_text(render_table([entry("plain", SDPA_SOURCE), entry("wrong", wrong, head_dim=64)], '"""t"""'))
    proc = subprocess.run([sys.executable, str(bad), "--selftest"], capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 1 and "FAIL wrong: verified shape" in proc.stdout, proc.stdout


def test_a_table_refuses_a_run_given_twice_and_an_empty_table() -> None:
    with pytest.raises(ExportError, match="given twice"):
        render_table([entry("a", SDPA_SOURCE, run="r"), entry("b", MATMUL_SOURCE, run="r")], '"""t"""')
    with pytest.raises(ExportError, match="at least one run"):
        render_table([], '"""t"""')


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """Two real runs on the CPU: attention-tiny, and attention-tiny causal with two shapes (a multi-shape task)."""
    cwd = tmp_path_factory.mktemp("table")
    runs = []
    for task in ("attention-tiny", "attention-tiny:causal=true;attention-tiny:causal=true,q_len=1"):
        proc = evoforge_cli("run", "--task", task, "--generations", "1", "--json", *FAST, cwd=cwd)
        assert proc.returncode == 0, proc.stderr
        runs.append(json.loads(proc.stdout)["run"])
    return cwd, runs


def test_best_exports_several_runs_as_one_dispatch_table(two_runs: tuple[Path, list[str]]) -> None:
    cwd, runs = two_runs
    proc = evoforge_cli("best", *runs, "--export", "table.py", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    text = (cwd / "table.py").read_text()
    assert text.startswith('"""A dispatch table of 2 attention kernels') and all(r in text for r in runs)
    module = load(cwd / "table.py")
    assert [s["causal"] for s in module.TABLE] == [False, True]
    assert module.TABLE[1]["verified_shapes"][1]["q_len"] == 1
    module.set_only_faster(False)  # the CPU runs' kernels lost to SDPA (tested below): run them all the same
    module.reset_stats()
    q, k, v = qkv(s=30)
    close(module.attention(q, k, v), reference(q, k, v))
    close(module.attention(q, k, v, is_causal=True), reference(q, k, v, causal=True))
    assert module.stats()["kernel"] == 2 and module.stats()["fallback"] == 0
    proc = subprocess.run([sys.executable, str(cwd / "table.py"), "--selftest"], capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0 and "self-test passed" in proc.stdout, proc.stdout + proc.stderr


def test_best_refuses_what_it_cannot_combine(two_runs: tuple[Path, list[str]]) -> None:
    cwd, runs = two_runs
    proc = evoforge_cli("best", runs[0], runs[0], "--export", "twice.py", cwd=cwd)
    assert proc.returncode == 2 and "given twice" in proc.stderr and "Traceback" not in proc.stderr
    assert not (cwd / "twice.py").exists()
    proc = evoforge_cli("best", *runs, cwd=cwd)
    assert proc.returncode == 2 and "several runs go with --export" in proc.stderr


def test_the_table_is_one_custom_op_under_torch_compile(tmp_path: Path) -> None:
    module = table(tmp_path, [entry("plain", SDPA_SOURCE), entry("d64", MATMUL_SOURCE, head_dim=64)])
    torch._dynamo.reset()
    compiled = torch.compile(lambda q, k, v: module.attention(q, k, v) + 0, backend="aot_eager", fullgraph=True)
    for d in (32, 64):
        q, k, v = qkv(d=d, s=20)
        close(compiled(q, k, v), reference(q, k, v))
    assert module.stats()["entries"] == {"plain": 1, "d64": 1}


def test_a_retime_reads_the_candidates_an_export_carries(tmp_path: Path) -> None:
    text = render_table([entry("plain", SDPA_SOURCE), entry("d64", MATMUL_SOURCE, head_dim=64)], '"""t"""')
    assert candidate_sources(text) == [SDPA_SOURCE, MATMUL_SOURCE]
    plain = "import torch.nn as nn\n\n\nclass ModelNew(nn.Module):\n    pass\n"
    assert candidate_sources(plain) == [plain]  # a plain export is its own candidate
    old = (tmp_path / "old.py")  # the first guarded format: SPEC and KERNEL_SOURCE
    old.write_text("SPEC: dict = {'hash': 'abc'}\nKERNEL_SOURCE = r'''\n" + SDPA_SOURCE + "'''\n")
    assert candidate_sources(old.read_text()) == [SDPA_SOURCE]


def test_an_entry_leaves_to_sdpa_the_calls_nearest_a_shape_where_it_lost(tmp_path: Path) -> None:
    """A multi-shape run's geometric mean can hide a shape where its kernel lost to PyTorch (decode, say): the
    export keeps each verified shape's measured speedup, and calls nearest a losing shape run SDPA, with the
    reason, unless set_only_faster(False); the export command says so, and the self-test still checks the
    kernel there."""
    prefill = {"batch": 1, "heads": 2, "kv_heads": 2, "q_len": 64, "seq_len": 64}
    decode = {"batch": 1, "heads": 2, "kv_heads": 2, "q_len": 1, "seq_len": 64}
    cand, best, data = entry("mixed", MATMUL_SOURCE, shapes=[prefill, decode])
    best = {"fitness": 1.1, "shapes": [{"task": "mixed_0", "status": "ok", "fitness": 1.5},
                                       {"task": "mixed_1", "status": "ok", "fitness": 0.4}]}
    module = table(tmp_path, [(cand, best, data)])
    assert module.TABLE[0]["shape_speedups"] == [1.5, 0.4]
    q, k, v = qkv(s=50)
    assert module.check(q, k, v) is None  # nearest the prefill shape, where the kernel won
    close(module.attention(q, k, v), reference(q, k, v))
    q1 = q[:, :, :1].contiguous()
    reason = module.check(q1, k, v)
    assert reason is not None and "0.40x" in reason and "SDPA runs this call" in reason
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        close(module.attention(q1, k, v), reference(q1, k, v))
    assert module.stats()["kernel"] == 1 and module.stats()["fallback"] == 1
    module.set_only_faster(False)
    try:
        assert module.check(q1, k, v) is None
    finally:
        module.set_only_faster(True)
    lines: list[str] = []
    assert module.selftest("cpu", out=lines.append), "\n".join(lines)
    assert any("measured slower than PyTorch" in line for line in lines)
    from evoforge.export import slower_note

    note = slower_note(best, data)
    assert note is not None and "1 of 2" in note and "mixed_1 0.40x" in note
    assert slower_note({"fitness": 1.2}, data) is None


def test_an_entry_that_lost_everywhere_runs_nowhere(tmp_path: Path) -> None:
    cand, _, data = entry("slow", MATMUL_SOURCE)
    module = table(tmp_path, [(cand, {"fitness": 0.5}, data)])
    q, k, v = qkv()
    assert "0.50x" in (module.check(q, k, v) or "")
    with pytest.raises(module.UnsupportedCall, match=r"0\.50x"):
        module.attention(q, k, v, strict=True)
