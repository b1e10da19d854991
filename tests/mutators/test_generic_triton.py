"""The generic mutator's axis and elementwise Triton templates: which KernelBench-style Models they claim (and which
they don't), and that the rendered candidates compute the Model's output (on the CPU, in Triton's interpreter)
for every kind of genome: a row held in registers, a row walked in chunks, a strided axis."""

from __future__ import annotations

import random
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch

from evoforge.mutators.generic import GenericMutator, TaskTraits, analyse
from evoforge.task import TaskSpec, import_source, load_task

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the interpreter, on masked-off lanes
_COUNTER = iter(range(10**6))


def _source(forward: str, shape: tuple[int, ...], init: str = "", init_inputs: str = "[]",
            inputs: str | None = None, params: str = "x") -> str:
    """A KernelBench-style task: ``forward``'s body on one input of ``shape`` (or ``inputs``)."""
    body = textwrap.indent(textwrap.dedent(forward), " " * 8)
    setup = textwrap.indent(textwrap.dedent(init) or "pass", " " * 8)
    return (
        "import math\nimport torch\nimport torch.nn as nn\nimport torch.nn.functional as F\n\n\n"
        "class Model(nn.Module):\n"
        "    def __init__(self, *args):\n"
        "        super().__init__()\n"
        f"{setup}\n\n"
        f"    def forward(self, {params}):\n"
        f"{body}\n\n\n"
        f"def get_inputs():\n    return {inputs or f'[torch.randn{shape}]'}\n\n\n"
        f"def get_init_inputs():\n    return {init_inputs}\n"
    )


def _traits(source: str) -> TaskTraits:
    spec = TaskSpec(name="probe", source=source, origin="<test>")
    return analyse(load_task(spec, module_name=f"generic_triton_probe_{next(_COUNTER)}"))


def _check(source: str, pattern: str, genomes: list[dict[str, Any]], randomise: bool = False,
           dtype: torch.dtype = torch.float32) -> GenericMutator:
    """analyse() claims ``pattern`` and each genome's candidate matches the Model on the task's inputs."""
    traits = _traits(source)
    assert traits.pattern == pattern, traits
    m = GenericMutator(random.Random(0), traits, source, "cpu", triton_on_cpu=True)
    assert pattern in m.templates
    for changes in [{}, *genomes]:
        cand = m.build(m.genome(triton=pattern, **changes), {})
        assert cand.language == "triton"
        module = import_source(cand.source, f"generic_triton_cand_{next(_COUNTER)}", "<candidate>")
        torch.manual_seed(1)
        inputs = [x.to(dtype) if x.is_floating_point() else x for x in module.get_inputs()]
        new = module.ModelNew(*module.get_init_inputs())
        if randomise:
            with torch.no_grad():
                for p in new.model.parameters():
                    p.copy_(torch.randn_like(p))
        ref = new.model(*inputs)
        out = new(*inputs)
        tol = {torch.float32: 2e-5, torch.float16: 2e-3}[dtype]
        assert out.dtype == ref.dtype and out.shape == ref.shape, (cand.genome, out.shape, ref.shape)
        torch.testing.assert_close(out, ref, atol=tol, rtol=tol, msg=lambda s, g=cand.genome: f"{g}: {s}")
    return m


# ---------------------------------------------------------------------------------------------- row reductions
def test_softmax_rows_held_or_walked_and_any_length() -> None:
    src = _source("return torch.softmax(x, dim=1)", (4, 300))
    # split 4 over 300 columns in chunks of 64: segments of 128, the last program's empty
    m = _check(src, "row_softmax", [{"block": 64}, {"block": 128, "warps": 2}, {"block": 64, "split": 4}])
    assert m.blocks == [64, 128, 256, 512] and m.genome()["block"] == 512  # 512: the whole row, read once
    assert m.splits == [1, 2, 4]
    assert m.genome(triton="row_softmax", block=512, split=4)["split"] == 1  # a row read once: one program
    # KernelBench's published size: rows far longer than registers hold are still claimed, walked in chunks
    big = _traits(_source("return torch.softmax(x, dim=1)", (4096, 393216)))
    assert big.pattern == "row_softmax" and big.n_cols == 393216 and big.inner == 1
    big_m = GenericMutator(random.Random(0), big, "", "cuda")
    assert big_m.genome(triton="row_softmax")["block"] == 4096 and max(big_m.blocks) == 16384
    assert "stages" in big_m._options(big_m.genome(triton="row_softmax"))
    assert big_m.genome(triton="row_softmax")["split"] == 1 and big_m.splits == [1]  # 4096 rows fill the GPU


def test_softmax_over_a_strided_axis() -> None:
    src = _source("return F.softmax(x, dim=1)", (2, 9, 5))
    traits = _traits(src)
    assert (traits.dim, traits.n_cols, traits.inner) == (1, 9, 5)
    _check(src, "row_softmax", [{"block": 4, "block_inner": 16}])


def test_log_softmax_kernelbench() -> None:
    src = _source("return torch.log_softmax(x, dim=self.dim)", (4, 300), init="self.dim = args[0]",
                  init_inputs="[1]")
    _check(src, "log_softmax", [{"block": 64}, {"block": 64, "split": 2}])
    _check(_source("return x.log_softmax(0)", (7, 3)), "log_softmax", [{"block": 4, "block_inner": 16}])


def test_rmsnorm_kernelbench_over_dim_1_of_4d() -> None:
    src = _source("""\
        rms = torch.sqrt(torch.mean(x ** 2, dim=1, keepdim=True) + self.eps)
        return x / rms""", (2, 6, 3, 5), init="self.num_features = args[0]\nself.eps = 1e-5", init_inputs="[6]")
    traits = _traits(src)
    assert (traits.dim, traits.n_cols, traits.inner, traits.eps) == (1, 6, 15, 1e-5)
    _check(src, "rmsnorm", [{"block": 4, "block_inner": 16}])
    _check(src, "rmsnorm", [], dtype=torch.float16)
    # over the last dim: rows
    _check(_source("return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)", (3, 200)), "rmsnorm",
           [{"block": 64}, {"block": 64, "split": 2}])
    src = _source("return self.norm(x)", (3, 2, 100), init="self.norm = nn.RMSNorm([2, 100], eps=1e-4)")
    traits = _traits(src)
    assert (traits.n_cols, traits.inner, traits.eps, traits.module) == (200, 1, 1e-4, "norm")
    _check(src, "rmsnorm", [{"block": 64, "split": 2}], randomise=True)


def test_layernorm_over_several_trailing_dims_with_weights() -> None:
    src = _source("return self.ln(x)", (2, 4, 6, 8), init="self.ln = nn.LayerNorm(normalized_shape=args[0])",
                  init_inputs="[(4, 6, 8)]")
    traits = _traits(src)
    assert (traits.pattern, traits.n_cols, traits.module, traits.outer) == ("layernorm", 192, "ln", 2)
    _check(src, "layernorm", [{"block": 64}, {"block": 64, "split": 2}], randomise=True)
    # KernelBench's: 16 rows of 64*256*256, walked in 4096-wide chunks by 64 programs per row
    big = _traits(_source("return self.ln(x)", (16, 64, 256, 256), init="self.ln = nn.LayerNorm((64, 256, 256))"))
    big_m = GenericMutator(random.Random(0), big, "", "cuda")
    assert (big_m.genome(triton="layernorm")["block"], big_m.genome(triton="layernorm")["split"]) == (4096, 64)
    src = _source("return self.ln(x)", (3, 200), init="self.ln = nn.LayerNorm(200, eps=1e-3, elementwise_affine=False)")
    _check(src, "layernorm", [{"block": 64}])


@pytest.mark.parametrize(("forward", "pattern", "shape", "keep"), [
    ("return torch.sum(x, dim=self.dim, keepdim=True)", "reduce_sum", (3, 7, 5), True),
    ("return torch.mean(x, dim=self.dim)", "reduce_mean", (3, 7, 5), False),
    ("return torch.max(x, dim=self.dim)[0]", "reduce_max", (3, 7, 5), False),
    ("return torch.min(x, dim=self.dim)[0]", "reduce_min", (3, 7, 5), False),
    ("return x.amax(dim=-1)", "reduce_max", (4, 300), False),
    ("return x.sum(2, keepdim=True)", "reduce_sum", (2, 3, 300), True),
    ("return torch.mean(x, -1)", "reduce_mean", (3, 300), False),
    ("return x.min(dim=1)[0]", "reduce_min", (3, 300), False),
    ("return torch.max(x, 0).values", "reduce_max", (6, 5), False),
])
def test_sum_mean_max_min_over_a_dim(forward: str, pattern: str, shape: tuple[int, ...], keep: bool) -> None:
    src = _source(forward, shape, init="self.dim = args[0]", init_inputs="[1]")
    traits = _traits(src)
    assert traits.keepdim == keep
    walked = [{"block": 4, "block_inner": 16}] if traits.inner > 1 else [{"block": 64}, {"block": 64, "split": 4}]
    _check(src, pattern, walked)


def test_cross_entropy_kernelbench() -> None:
    inputs = "[torch.randn(6, 100), torch.randint(0, 100, (6,))]"
    src = _source("return torch.nn.functional.cross_entropy(x, t)", (), inputs=inputs, params="x, t")
    _check(src, "cross_entropy", [{"block": 64}])
    src = _source("return self.loss(x, t)", (), inputs=inputs, params="x, t",
                  init="self.loss = nn.CrossEntropyLoss(reduction='sum', ignore_index=3)")
    traits = _traits(src)
    assert (traits.reduction, traits.ignore_index) == ("sum", 3)
    _check(src, "cross_entropy", [{"block": 64}])


# ---------------------------------------------------------------------------------------------- elementwise
KERNELBENCH_ACTIVATIONS = [
    "return torch.relu(x)",
    "return torch.nn.functional.leaky_relu(x, negative_slope=self.negative_slope)",
    "return torch.sigmoid(x)",
    "return torch.tanh(x)",
    "return x * torch.sigmoid(x)",
    "return torch.nn.functional.gelu(x)",
    "return torch.selu(x)",
    "return torch.nn.functional.hardsigmoid(x)",
    "return torch.nn.functional.softplus(x)",
    "return x / (1 + torch.abs(x))",
    "return F.elu(x, alpha=self.alpha)",
    "return F.hardtanh(x, min_val=-1., max_val=1.)",
    "return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))",
    "return self.act(x)",
    "return F.gelu(x, approximate='tanh') * 2.0 - x.clamp(min=-0.5) + F.hardswish(x) + F.silu(x) + F.mish(x)",
]


def test_elementwise_chains_become_one_kernel() -> None:
    init = "self.negative_slope = 0.02\nself.alpha = 0.7\nself.act = nn.Sequential(nn.Softplus(beta=2.0), nn.ELU(0.5))"
    for forward in KERNELBENCH_ACTIVATIONS:
        src = _source(forward, (5, 70), init=init)
        m = _check(src, "elementwise", [{"block": 256, "warps": 2}])
        assert m.blocks == [256, 512] and "block_inner" not in m._options(m.genome(triton="elementwise"))
    _check(_source(KERNELBENCH_ACTIVATIONS[12], (5, 70)), "elementwise", [], dtype=torch.float16)
    cand = m.build(m.genome(triton="elementwise"), {})
    assert "Triton elementwise, block 512, 4 warps" in cand.source


# ---------------------------------------------------------------------------------------------- not claimed
@pytest.mark.parametrize("forward", [
    "return torch.softmax(x, dim=1, dtype=torch.float64)",  # another dtype
    "return torch.softmax(x, dim=1) * 2.0",  # an extra op
    "return torch.sum(x, dim=(1, 2))",  # two dims
    "return torch.sum(x)",  # everything
    "return torch.max(x, dim=1)[1]",  # the indices
    "return torch.sqrt(torch.mean(x ** 2, dim=1, keepdim=True) + 1e-5)",  # not divided by
    "return x / torch.sqrt(torch.mean(x ** 2, dim=1) + 1e-5)",  # no keepdim
    "return x / torch.sqrt(torch.mean(x ** 3, dim=1, keepdim=True) + 1e-5)",  # not a square
    "return x / torch.sqrt(torch.mean(x ** 2, dim=1, keepdim=True) + 1e-5) + 1.0",  # an extra op
    "return torch.pow(x, 2.5)",  # a power not implemented
    "return F.leaky_relu(x, 0.1, inplace=True)",  # in place
    "return torch.relu(x) + self.w",  # a parameter
    "return x.float()",  # a dtype change
    "return torch.cumsum(x, dim=1)",  # not elementwise
])
def test_not_claimed(forward: str) -> None:
    src = _source(forward, (2, 6, 3), init="self.w = nn.Parameter(torch.ones(3))")
    assert _traits(src).pattern is None


def test_cross_entropy_options_not_implemented_are_not_claimed() -> None:
    inputs = "[torch.randn(6, 10), torch.randint(0, 10, (6,))]"
    for forward in ["return F.cross_entropy(x, t, label_smoothing=0.1)",
                    "return F.cross_entropy(x, t, weight=torch.ones(10))"]:
        assert _traits(_source(forward, (), inputs=inputs, params="x, t")).pattern is None
    probs = "[torch.randn(6, 10), torch.randn(6, 10).softmax(1)]"  # class probabilities, not indices
    assert _traits(_source("return F.cross_entropy(x, t)", (), inputs=probs, params="x, t")).pattern is None


# ---------------------------------------------------------------------------------------------- matmul epilogue
def test_matmul_epilogue_takes_any_elementwise_program() -> None:
    """A level-2 'Gemm then elementwise ops' Model: the ops after the matmul run in its epilogue."""
    src = _source("""\
        x = self.linear(x)
        x = x * self.scale
        return F.leaky_relu(x, negative_slope=0.1) + torch.sigmoid(x).clamp(max=0.7)""", (8, 16),
                  init="self.linear = nn.Linear(16, 24)\nself.scale = 1.5")
    traits = _traits(src)
    assert traits.epilogue == [] and traits.expr[-1].startswith("y = ")
    _check(src, "linear_epilogue", [])
    gpu = GenericMutator(random.Random(0), traits, src, "cuda")
    assert {"tile", "stages"} <= set(gpu._options(gpu.genome(triton="linear_epilogue")))
    src = _source("return F.hardtanh(torch.matmul(x, y) * 0.5, -0.25, 0.25)", (), params="x, y",
                  inputs="[torch.randn(8, 16), torch.randn(16, 12)]")
    _check(src, "matmul_epilogue", [])
    # a residual reads the input again: not an epilogue of the matmul alone
    src = _source("return self.linear(x) + x", (8, 16), init="self.linear = nn.Linear(16, 16)")
    assert _traits(src).pattern is None


def test_a_strided_template_passes_the_evaluator_on_cpu() -> None:
    """Through the judge (float64 reference, edge-case inputs, the worker's checks): KernelBench's RMSNorm
    formulation, its axis held in registers and walked in chunks."""
    from evoforge.evaluator import EvalConfig, Evaluator
    from evoforge.timing import TimingConfig

    src = _source("""\
        rms = torch.sqrt(torch.mean(x ** 2, dim=1, keepdim=True) + self.eps)
        return x / rms""", (2, 6, 3, 5), init="self.eps = 1e-5")
    m = GenericMutator(random.Random(0), _traits(src), src, "cpu", triton_on_cpu=True)
    cands = [m.build(m.genome(triton="rmsnorm"), {}), m.build(m.genome(triton="rmsnorm", block=4), {})]
    config = EvalConfig(device="cpu", timeout_s=300, n_random=1, timing=TimingConfig(budget_ms=1, rounds=1, min_reps=1))
    report = Evaluator(TaskSpec(name="rmsnorm", source=src, origin="<test>"), config).evaluate(cands)
    assert [r.status for r in report.results] == ["ok", "ok"], [(r.detail, r.logs[-1500:]) for r in report.results]


# ---------------------------------------------------------------------------------------------- the search
def test_the_search_moves_every_template_gene() -> None:
    """Mutation and crossover reach block, split, warps and stages of a walked row, and never repeat a program."""
    from evoforge.results import EvalResult, Individual

    src = _source("return self.ln(x)", (16, 64, 256, 256), init="self.ln = nn.LayerNorm((64, 256, 256))")
    m = GenericMutator(random.Random(5), _traits(src), src, "cuda")
    seeds = m.seed()
    assert any(c.genome["triton"] == "layernorm" and c.genome["split"] == 64 for c in seeds)
    history = [Individual(c, EvalResult(name=c.name, hash=c.hash, status="ok", fitness=1.0)) for c in seeds]
    moved: set[str] = set()
    for _ in range(6):
        for c in m.propose(history, history, 8):
            history.append(Individual(c, EvalResult(name=c.name, hash=c.hash, status="ok", fitness=1.0)))
            moved.add(c.lineage["mutation"].split(" ")[0])
    assert {"block", "split", "warps", "stages"} <= moved, moved
    assert len({i.candidate.hash for i in history}) == len(history)
    named = [i.candidate for i in history if i.candidate.genome["triton"] == "layernorm"]
    assert all("programs per row" in c.source or c.genome["split"] == 1 for c in named)


@pytest.mark.gpu
@pytest.mark.parametrize("forward", ["return torch.relu(x)", "return torch.clamp(x, -0.5, 0.5)",
                                     "return F.hardtanh(x)", "return F.hardswish(x)", "return F.relu6(x) * 2.0"])
def test_gpu_nan_stays_nan_as_in_torch(forward: str, tmp_path: Path) -> None:
    """On a GPU tl.maximum/tl.minimum return the other operand where one is NaN; the elementwise template's max
    and min keep NaN, as torch's relu, clamp and hardtanh do (the CPU interpreter's numpy keeps it anyway)."""
    src = _source(forward, (4, 257))
    m = GenericMutator(random.Random(0), _traits(src), src, "cuda")
    cand = m.build(m.genome(triton="elementwise"), {})
    assert "propagate_nan=tl.PropagateNan.ALL" in cand.source
    new = _model_new_from_file(cand.source, tmp_path).cuda()
    x = torch.randn(4, 257, device="cuda")
    x[0, ::3] = float("nan")
    x[1, ::5] = float("inf")
    x[2, ::7] = -float("inf")
    torch.testing.assert_close(new(x), new.model(x), equal_nan=True, atol=1e-6, rtol=1e-6)


def _model_new_from_file(source: str, folder: Path) -> Any:
    """The candidate's ModelNew, its module written to ``folder`` (kept for the test) and run from there: on a GPU
    Triton's jit reads a kernel's source from its file."""
    module = import_source(source, f"generic_triton_file_{next(_COUNTER)}", "<candidate>", directory=folder)
    return module.ModelNew()


def _nan_rows(device: str) -> list[tuple[str, dict[str, Any], torch.Tensor]]:
    """max/min reductions, over rows held, walked in chunks, split over programs and strided, with NaN inputs."""
    long = torch.randn(4, 5000, device=device)
    long[1, 4321] = float("nan")
    strided = torch.randn(3, 70, 5, device=device)
    strided[2, 33, 1] = float("nan")
    return [("return x.amax(dim=-1)", {"block": 1024, "split": 1}, long),
            ("return x.amax(dim=-1)", {"block": 1024, "split": 4}, long),
            ("return torch.min(x, dim=-1)[0]", {"block": 8192}, long),
            ("return torch.max(x, dim=1)[0]", {"block": 16}, strided)]


def _nan_check(forward: str, genes: dict[str, Any], x: torch.Tensor, device: str, folder: Path) -> None:
    src = _source(forward, tuple(x.shape))
    traits = _traits(src)
    m = GenericMutator(random.Random(0), traits, src, device, triton_on_cpu=True)
    cand = m.build(m.genome(triton=traits.pattern, **genes), {})
    new = _model_new_from_file(cand.source, folder).to(device)
    ref, out = new.model(x), new(x)
    assert ref.isnan().any(), forward
    torch.testing.assert_close(out, ref, equal_nan=True, msg=lambda s: f"{cand.genome}: {s}")


@pytest.mark.parametrize("case", range(4))
def test_a_max_or_min_with_nan_in_it_is_nan(case: int, tmp_path: Path) -> None:
    forward, genes, x = _nan_rows("cpu")[case]
    _nan_check(forward, genes, x, "cpu", tmp_path)


@pytest.mark.gpu
@pytest.mark.parametrize("case", range(4))
def test_gpu_a_max_or_min_with_nan_in_it_is_nan(case: int, tmp_path: Path) -> None:
    """Where it matters: on a GPU tl.max passes over NaN (the interpreter's numpy does not)."""
    forward, genes, x = _nan_rows("cuda")[case]
    _nan_check(forward, genes, x, "cuda", tmp_path)
