"""The guarded attention export (issue 21) on the CPU: a real run's `best --export` imports and runs its
verified class, falls back (warning once) or raises with strict outside it, works as a custom op under
torch.compile and through `evoforge.use`, and passes its own --selftest; a wrong kernel fails it."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import evoforge
from evoforge.candidate import Candidate
from evoforge.export import ExportError, load, render_module
from evoforge.kernels.flash_attention import FlashGenome, render
from evoforge.report import evidence
from evoforge.store import RunStore

FAST = ["--budget-ms", "5", "--device", "cpu", "--population", "3"]


def evoforge_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "evoforge.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600, check=False)


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
              scale: float | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
    q, k, v = q.double(), k.double(), v.double()
    if k.shape[1] != q.shape[1]:
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    scores = q @ k.transpose(-2, -1) * (scale if scale is not None else 1 / math.sqrt(q.shape[-1]))
    if causal:
        keep = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).tril()
        scores = scores.masked_fill(~keep, float("-inf"))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def qkv(b: int = 1, h: int = 2, s: int = 64, d: int = 32, dtype: torch.dtype = torch.float16, kv_heads: int = 0,
        kv_len: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    kv_heads, kv_len = kv_heads or h, kv_len or s
    return (torch.randn(b, h, s, d).to(dtype), torch.randn(b, kv_heads, kv_len, d).to(dtype),
            torch.randn(b, kv_heads, kv_len, d).to(dtype))


def close(got: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(got.double(), expected, atol=2e-3, rtol=2e-3)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    cwd = tmp_path_factory.mktemp("export")
    proc = evoforge_cli("run", "--generations", "1", "--json", *FAST, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return cwd, json.loads(proc.stdout)["run"]


@pytest.fixture(scope="module")
def exported(run_dir: tuple[Path, str]) -> Path:
    """`evoforge best RUN --export kernel.py` of a real run on attention-tiny (B1 H2 S64 D32 fp16)."""
    cwd, run_id = run_dir
    proc = evoforge_cli("best", run_id, "--export", "kernel.py", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return cwd / "kernel.py"


@pytest.fixture(scope="module")
def triton_export(run_dir: tuple[Path, str]) -> Path:
    """The run's Triton candidate, exported the same way (the best may be a PyTorch path)."""
    cwd, run_id = run_dir
    store = RunStore(cwd / ".evoforge" / "runs.db")
    data = evidence(store, run_id)
    cand = next(c for c, _ in store.candidates(data["run"]["id"]) if c.language == "triton")
    path = cwd / "triton_kernel.py"
    path.write_text(render_module(cand, {"fitness": 1.0}, data, '"""The run\'s Triton kernel."""'))
    return path


def synthetic_export(tmp: Path, name: str, source: str, *, causal: bool = False, genome: dict[str, Any] | None = None,
                     kv_heads: int = 2) -> Path:
    """An export of ``source`` as if a run on B1 H2 S64 D32 fp16 (causal as given) had verified it."""
    cand = Candidate(name=name, source=source, genome=genome)
    data = {"task": {"name": f"attention_test_{name}", "params": {
        "family": "attention", "batch": 1, "heads": 2, "kv_heads": kv_heads, "seq_len": 64, "head_dim": 32,
        "causal": causal, "q_len": None, "dtype": "fp16"}}, "run": {"id": "test"},
        "device": {"device_type": "cpu", "device_name": "CPU"}}
    path = tmp / f"{name}.py"
    path.write_text(render_module(cand, {"fitness": 1.0}, data, f'"""{name}"""'))
    return path


def causal_triton(tmp: Path) -> Path:
    g = FlashGenome(block_m=16, block_n=16, num_warps=1, num_stages=1, mask_diagonal=True)
    return synthetic_export(tmp, "causal_flash", render(g, causal=True, head_dim=32), causal=True,
                            genome=g.to_dict())


@pytest.fixture(params=["best", "triton"])
def kernel(request: pytest.FixtureRequest, exported: Path, triton_export: Path) -> Iterator[ModuleType]:
    module = load(exported if request.param == "best" else triton_export)
    module.reset_stats()
    module._state["warned"] = False
    module.set_strict(False)
    # these tests exercise the kernel where it is verified; on a CPU the real run's Triton kernel (interpreted)
    # measured far slower than SDPA, where the export leaves its calls to SDPA by default (tested below)
    module.set_only_faster(False)
    yield module
    module.set_strict(False)
    module.set_only_faster(True)


def test_the_export_says_what_it_covers_and_runs_its_verified_shape(kernel: ModuleType) -> None:
    spec = kernel.SPEC
    assert (spec["dtype"], spec["head_dim"], spec["causal"], spec["gqa_ratios"]) == ("float16", 32, False, [1])
    assert spec["verified_shapes"] == [{"batch": 1, "heads": 2, "kv_heads": 2, "q_len": 64, "kv_len": 64}]
    assert len(kernel.TABLE) == 1 and kernel.TABLE[0] is spec
    assert spec["device_type"] == "cpu" and spec["general"]
    q, k, v = qkv()
    assert kernel.check(q, k, v) is None
    close(kernel.attention(q, k, v), reference(q, k, v))
    close(kernel.evolved(q, k, v), reference(q, k, v))
    assert isinstance(kernel.EvolvedModel(), torch.nn.Module)
    assert kernel.stats() == {"kernel": 2, "fallback": 0, "reasons": {}}


def test_other_batch_heads_lengths_and_model_layouts_run_the_kernel(kernel: ModuleType) -> None:
    for q, k, v in (qkv(b=2, h=4, s=37), qkv(s=1, kv_len=50), qkv(s=80, kv_len=17)):
        close(kernel.attention(q, k, v), reference(q, k, v))
    q, k, v = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in qkv(b=2, s=20))  # [b, s, h, d] buffers
    close(kernel.attention(q, k, v), reference(q, k, v))
    assert kernel.stats()["kernel"] == 4 and kernel.stats()["fallback"] == 0


def mismatches() -> list[tuple[str, Callable[[], tuple[tuple[torch.Tensor, ...], dict[str, Any]]]]]:
    def grad() -> tuple[tuple[torch.Tensor, ...], dict[str, Any]]:
        q, k, v = qkv()
        return (q.requires_grad_(), k, v), {}

    def unaligned() -> tuple[tuple[torch.Tensor, ...], dict[str, Any]]:
        q, k, v = qkv()
        flat = torch.randn(q.numel() + 1).half()
        return (flat[1:].view_as(q), k, v), {}  # 2 bytes past a 16-byte boundary

    def strided_head_dim() -> tuple[tuple[torch.Tensor, ...], dict[str, Any]]:
        _, k, v = qkv()
        return (torch.randn(1, 2, 64, 64).half()[..., ::2], k, v), {}

    return [
        ("head dim", lambda: (qkv(d=48), {})),
        ("dtype", lambda: (qkv(dtype=torch.float32), {})),
        ("bf16", lambda: (qkv(dtype=torch.bfloat16), {})),
        ("causal", lambda: (qkv(), {"is_causal": True})),
        ("mask", lambda: (qkv(), {"attn_mask": torch.rand(64, 64) > 0.2})),
        ("scale", lambda: (qkv(), {"scale": 0.3})),
        ("gqa ratio", lambda: (qkv(h=4, kv_heads=2), {"enable_gqa": True})),
        ("3-D", lambda: (tuple(t[0] for t in qkv()), {})),
        ("requires grad", grad),
        ("unaligned", unaligned),
        ("strided head dim", strided_head_dim),
    ]


def test_calls_it_was_not_verified_for_fall_back_correctly_with_one_warning(kernel: ModuleType) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for label, make in mismatches():
            (q, k, v), kw = make()
            assert kernel.check(q, k, v, **{key: val for key, val in kw.items()}) is not None or label == \
                "requires grad", label
            got = kernel.attention(q, k, v, **kw)
            expected = F.scaled_dot_product_attention(q.detach().float(), k.float(), v.float(),
                                                      **{**kw, "enable_gqa": kw.get("enable_gqa", False)})
            tol = 2e-2 if q.dtype == torch.bfloat16 else 2e-3
            torch.testing.assert_close(got.float(), expected, atol=tol, rtol=tol, msg=label)
    ours = [w for w in caught if "falling back" in str(w.message)]
    assert len(ours) == 1 and issubclass(ours[0].category, RuntimeWarning)
    assert kernel.stats()["kernel"] == 0 and kernel.stats()["fallback"] == len(mismatches())


def test_strict_raises_a_one_line_error(kernel: ModuleType) -> None:
    for label, make in mismatches():
        (q, k, v), kw = make()
        with pytest.raises(kernel.UnsupportedCall) as info:
            kernel.attention(q, k, v, **kw, strict=True)
        assert "\n" not in str(info.value) and "does not cover" in str(info.value), label
    kernel.set_strict(True)
    with pytest.raises(kernel.UnsupportedCall, match="head dim 48"):
        kernel.attention(*qkv(d=48))
    q, k, v = qkv()
    close(kernel.attention(q, k, v), reference(q, k, v))  # strict does not affect covered calls


def test_a_causal_kernel_matches_sdpa_semantics(tmp_path: Path) -> None:
    module = load(causal_triton(tmp_path))
    q, k, v = qkv(s=40)
    close(module.attention(q, k, v, is_causal=True), reference(q, k, v, causal=True))
    # SDPA's is_causal with fewer queries than keys is aligned to the top left: the kernel's is not, so SDPA runs.
    q, k, v = qkv(s=3, kv_len=40)
    assert "top left" in module.check(q, k, v, is_causal=True)
    with pytest.warns(RuntimeWarning, match="falling back"):
        close(module.attention(q, k, v, is_causal=True), reference(q, k, v, causal=True))
    # A decode step (one query, every key) is the same with or without the causal mask: the kernel runs it.
    q1 = q[:, :, :1]
    assert module.check(q1, k, v) is None and module.check(q1, k, v, is_causal=True) is not None
    # evolved() is the task's call: causal aligned to the last key, which the kernel computes.
    expected = F.scaled_dot_product_attention(q.float(), k.float(), v.float(),
                                              attn_mask=torch.ones(3, 40, dtype=torch.bool).tril(37))
    torch.testing.assert_close(module.evolved(q, k, v).float(), expected, atol=2e-3, rtol=2e-3)
    assert module.stats()["kernel"] == 2


def test_the_custom_op_works_under_torch_compile(exported: Path, triton_export: Path) -> None:
    for path in (exported, triton_export):
        module = load(path)
        module.set_only_faster(False)  # the CPU run's kernel lost to SDPA: run it all the same (see kernel())
        q, k, v = qkv()
        torch.library.opcheck(module.OP, (q, k, v, None, False, None, False, False, False))
        torch._dynamo.reset()

        def f(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, module: ModuleType = module) -> torch.Tensor:
            return module.attention(q, k, v) * 2

        compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
        module.reset_stats()
        close(compiled(q, k, v) / 2, reference(q, k, v))
        assert module.stats()["kernel"] == 1
        q2, k2, v2 = qkv(d=48)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            close(compiled(q2, k2, v2) / 2, reference(q2, k2, v2))
        assert module.stats()["fallback"] == 1
        module.set_only_faster(True)


def test_use_routes_sdpa_calls_inside_the_block_only(exported: Path) -> None:
    original = F.scaled_dot_product_attention
    q, k, v = qkv()
    with evoforge.use(exported) as module:
        module.set_only_faster(False)  # as in kernel(): the CPU run's kernel lost to SDPA
        module.reset_stats()
        assert F.scaled_dot_product_attention is not original
        close(F.scaled_dot_product_attention(q, k, v), reference(q, k, v))
        compiled = torch.compile(lambda q, k, v: F.scaled_dot_product_attention(q, k, v), backend="aot_eager",
                                 fullgraph=True)
        close(compiled(q, k, v), reference(q, k, v))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            F.scaled_dot_product_attention(q, k, v, None, 0.0, True)  # SDPA's positional order: is_causal
            F.scaled_dot_product_attention(q, k, v, dropout_p=0.5)
        assert module.stats()["kernel"] == 2 and module.stats()["fallback"] == 2
    assert F.scaled_dot_product_attention is original
    with evoforge.use(exported, strict=True), pytest.raises(module.UnsupportedCall):
        F.scaled_dot_product_attention(*qkv(d=48))
    module.set_only_faster(True)
    assert F.scaled_dot_product_attention is original and not module._state["strict"]


def test_use_refuses_a_file_that_is_not_an_export(tmp_path: Path) -> None:
    (tmp_path / "other.py").write_text("X = 1\n")
    with pytest.raises(ExportError, match="not an attention kernel exported"), evoforge.use(tmp_path / "other.py"):
        pass
    with pytest.raises(ExportError, match="no exported kernel"), evoforge.use(tmp_path / "missing.py"):
        pass


def test_selftest_passes_on_the_verified_class_and_the_fallbacks(exported: Path, triton_export: Path) -> None:
    for path in (exported, triton_export):
        proc = subprocess.run([sys.executable, str(path), "--selftest"], capture_output=True, text=True,
                              timeout=300, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "self-test passed" in proc.stdout and "FAIL" not in proc.stdout
        assert "kernel" in proc.stdout and "fallback" in proc.stdout


def test_selftest_fails_a_wrong_kernel(tmp_path: Path) -> None:
    source = '''import torch
import torch.nn as nn
import torch.nn.functional as F


class ModelNew(nn.Module):
    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v) * 1.05  # wrong by 5%
'''
    path = synthetic_export(tmp_path, "wrong", source, genome={"kind": "torch", "variant": "wrong"})
    proc = subprocess.run([sys.executable, str(path), "--selftest"], capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 1 and "FAIL" in proc.stdout and "self-test FAILED" in proc.stdout


def test_a_kernel_of_unknown_generality_covers_its_exact_shape_only(tmp_path: Path) -> None:
    source = "import torch.nn as nn\nimport torch.nn.functional as F\n\n\nclass ModelNew(nn.Module):\n" \
             "    def forward(self, q, k, v):\n        return F.scaled_dot_product_attention(q, k, v)\n"
    module = load(synthetic_export(tmp_path, "llm_kernel", source))  # no template genome: an LLM's, say
    assert not module.SPEC["general"]
    assert module.check(*qkv()) is None
    assert "exact shape" in module.check(*qkv(s=63))
    q, k, v = (t.transpose(-1, -2).contiguous().transpose(-1, -2) for t in qkv())
    assert "stride" in module.check(q, k, v)


def test_names_in_the_kernel_do_not_clash_with_the_runtime(exported: Path) -> None:
    text = exported.read_text()
    digest = load(exported).SPEC["hash"]
    assert f"\nKERNEL_SOURCES['{digest}'] = r'''\n" in text or f'\nKERNEL_SOURCES[\'{digest}\'] = r"""\n' in text
    module = load(exported)
    # The built-in PyTorch candidates define their own attention(); the export's is another function.
    assert module.attention.__module__ == module.__name__


def test_transformers_registration(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    module = load(causal_triton(tmp_path))
    assert module.register_transformers()
    def model(attn: str) -> Any:
        cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=2, num_key_value_heads=2, head_dim=32,
                                       max_position_embeddings=128)  # from_config sets the config's attention
        return transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation=attn,
                                                             dtype=torch.float16).eval()

    ours, theirs = model("evoforge"), model("sdpa")
    assert ours.config._attn_implementation == "evoforge"
    theirs.load_state_dict(ours.state_dict())
    ids = torch.randint(0, 64, (2, 24))
    module.reset_stats()
    with torch.no_grad():
        got, expected = ours(ids, use_cache=True), theirs(ids, use_cache=True)
        torch.testing.assert_close(got.logits.float(), expected.logits.float(), atol=2e-2, rtol=2e-2)
        step = torch.randint(0, 64, (2, 1))  # a decode step: one query over the cache (a causal kernel covers it)
        got = ours(step, past_key_values=got.past_key_values, use_cache=True).logits
        expected = theirs(step, past_key_values=expected.past_key_values, use_cache=True).logits
    torch.testing.assert_close(got.float(), expected.float(), atol=2e-2, rtol=2e-2)
    assert module.stats() == {"kernel": 4, "fallback": 0, "reasons": {}}  # one call per layer and step


@pytest.mark.gpu
def test_gpu_the_guarded_export_replays_in_a_cuda_graph_and_under_reduce_overhead(tmp_path: Path) -> None:
    """On a GPU: the exported module's call (checks, dispatch, the Triton kernel) captured in a CUDA graph gives
    the right answer on replay with new inputs, and torch.compile(mode="reduce-overhead") runs it as its custom
    op, with no fallback."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    g = FlashGenome()
    cand = Candidate(name="flash", source=render(g, causal=False, head_dim=64), genome=g.to_dict())
    dev = torch.device("cuda")
    data = {"task": {"name": "attention_gpu", "params": {
        "family": "attention", "batch": 1, "heads": 8, "kv_heads": 8, "seq_len": 512, "head_dim": 64,
        "causal": False, "q_len": None, "dtype": "fp16"}}, "run": {"id": "gpu"},
        "device": {"device_type": "cuda", "device_name": torch.cuda.get_device_name(dev),
                   "capability": ".".join(map(str, torch.cuda.get_device_capability(dev)))}}
    path = tmp_path / "gpu_kernel.py"
    path.write_text(render_module(cand, {"fitness": 1.2}, data, '"""A Triton kernel on this GPU."""'))
    module = load(path)
    module.reset_stats()
    q, k, v = (torch.randn(1, 8, 512, 64, device=dev, dtype=torch.float16) for _ in range(3))
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        module.attention(q, k, v)  # warm-up (compiles the kernel) outside the capture
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = module.attention(q, k, v)
    for t in (q, k, v):
        t.copy_(torch.randn_like(t))
    graph.replay()
    torch.cuda.synchronize()
    expected = F.scaled_dot_product_attention(q.double(), k.double(), v.double())
    torch.testing.assert_close(out.double(), expected, atol=2e-3, rtol=2e-3)
    compiled = torch.compile(lambda q, k, v: module.attention(q, k, v), mode="reduce-overhead", fullgraph=True)
    for _ in range(3):
        got = compiled(q, k, v)
    torch.testing.assert_close(got.double(), expected, atol=2e-3, rtol=2e-3)
    assert module.stats()["fallback"] == 0 and module.stats()["kernel"] >= 3
