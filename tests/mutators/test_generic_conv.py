"""The generic mutator's conv2d template: which Models it claims (and which it doesn't), and that its candidates
compute the Model's output (on the CPU, in Triton's interpreter) for every tile, for strides, padding, dilation,
per-channel epilogue tensors and a fused max-pool."""

from __future__ import annotations

import random

import pytest
import torch

from evoforge.mutators.generic import GenericMutator
from evoforge.mutators.generic_conv import DEFAULT_TILE, MAX_OPERAND
from evoforge.task import import_source
from tests.mutators.test_generic_triton import _check, _source, _traits

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the interpreter, on masked-off lanes


def _conv(forward: str, conv: str, shape: tuple[int, ...] = (2, 3, 9, 11), extra: str = "") -> str:
    return _source(forward, shape, init=f"self.conv = {conv}\n{extra}")


@pytest.mark.parametrize(("conv", "shape"), [
    ("nn.Conv2d(3, 5, 3, padding=1)", (2, 3, 9, 11)),
    ("nn.Conv2d(3, 20, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2))", (2, 3, 9, 11)),
    ("nn.Conv2d(4, 6, 3, padding='same', bias=False)", (1, 4, 7, 5)),
    ("nn.Conv2d(3, 8, 1)", (3, 3, 4, 4)),
])
def test_a_plain_convolution_for_any_stride_padding_and_dilation(conv: str, shape: tuple[int, ...]) -> None:
    src = _conv("return self.conv(x)", conv, shape)
    traits = _traits(src)
    assert traits.expr == [] and traits.params == [] and traits.conv and traits.conv["pool"] is None
    gpu = GenericMutator(random.Random(0), traits, src, "cuda")
    _check(src, "conv2d_epilogue", [{"tile": list(t)} for t in (gpu.tiles[1], gpu.tiles[-1])], randomise=True)


def test_the_epilogue_reads_per_channel_tensors_and_scalars() -> None:
    """KernelBench's Conv2D_ReLU_BiasAdd (a (C, 1, 1) parameter added after the ReLU), with a scalar and a
    (1, C, 1, 1) buffer too."""
    src = _conv("""\
        x = torch.relu(self.conv(x))
        x = x + self.bias
        return x * self.scale - 0.5 * torch.sigmoid(x)""", "nn.Conv2d(3, 6, 3)",
                extra="self.bias = nn.Parameter(torch.randn(6, 1, 1))\n"
                      "self.register_buffer('scale', torch.rand(1, 6, 1, 1))")
    traits = _traits(src)
    assert traits.params == ["bias", "scale"] and traits.expr[-1].startswith("y = ")
    _check(src, "conv2d_epilogue", [{"tile": [32, 16, 16, 2]}], randomise=True)


def test_a_max_pool_after_the_epilogue_is_fused() -> None:
    src = _conv("return self.pool(torch.relu(self.conv(x)))", "nn.Conv2d(3, 8, 3, padding=1)", (2, 3, 10, 9),
                extra="self.pool = nn.MaxPool2d(2)")
    traits = _traits(src)
    assert traits.conv and traits.conv["pool"] == {"kind": "max", "kernel": [2, 2], "stride": [2, 2]}
    _check(src, "conv2d_epilogue", [], randomise=True)
    overlapping = _conv("return self.pool(self.conv(x))", "nn.Conv2d(3, 8, 3)", (1, 3, 9, 9),
                        extra="self.pool = nn.MaxPool2d(3, stride=2)")
    _check(overlapping, "conv2d_epilogue", [])


def test_the_pool_propagates_nan_as_pytorch_does() -> None:
    src = _conv("return self.pool(torch.log(self.conv(x)))", "nn.Conv2d(2, 4, 3, padding=1)", (1, 2, 6, 6),
                extra="self.pool = nn.MaxPool2d(2)")
    m = GenericMutator(random.Random(0), _traits(src), src, "cpu", triton_on_cpu=True)
    module = import_source(m.build(m.genome(triton="conv2d_epilogue"), {}).source, "conv_nan_probe", "<candidate>")
    new = module.ModelNew()
    x = torch.randn(1, 2, 6, 6)
    ref, out = new.model(x), new(x)
    assert ref.isnan().any() and torch.equal(ref.isnan(), out.isnan())
    torch.testing.assert_close(out, ref, equal_nan=True, atol=2e-5, rtol=2e-5)


def test_half_inputs() -> None:
    src = _conv("return F.gelu(self.conv(x))", "nn.Conv2d(3, 16, 3, padding=1)", (1, 3, 8, 8))
    src = src.replace("return [torch.randn(1, 3, 8, 8)]", "return [torch.randn(1, 3, 8, 8, dtype=torch.float16)]")
    src = src.replace("self.conv = nn.Conv2d(3, 16, 3, padding=1)",
                      "self.conv = nn.Conv2d(3, 16, 3, padding=1).half()")
    _check(src, "conv2d_epilogue", [], dtype=torch.float16)


@pytest.mark.parametrize(("forward", "conv", "extra"), [
    ("return self.conv(x)", "nn.Conv2d(4, 4, 3, groups=2)", ""),
    ("return self.conv(x)", "nn.Conv2d(3, 4, 3, padding=1, padding_mode='reflect')", ""),
    ("return self.conv(x) + x.mean()", "nn.Conv2d(3, 4, 3)", ""),  # reads the input again
    ("return self.conv(x) + self.w", "nn.Conv2d(3, 4, 3)", "self.w = nn.Parameter(torch.randn(4))"),  # over W
    ("return self.pool(self.pool(self.conv(x)))", "nn.Conv2d(3, 4, 3)", "self.pool = nn.MaxPool2d(2)"),
    ("return self.pool(self.conv(x)) + self.conv(x).mean()", "nn.Conv2d(3, 4, 3)", "self.pool = nn.MaxPool2d(2)"),
    ("return self.pool(self.conv(x))", "nn.Conv2d(3, 4, 3)", "self.pool = nn.AvgPool2d(2, divisor_override=3)"),
    ("return self.pool(self.conv(x))", "nn.Conv2d(3, 4, 3)", "self.pool = nn.AdaptiveAvgPool2d(1)"),
    ("return self.pool(self.conv(x))", "nn.Conv2d(3, 4, 3)", "self.pool = nn.MaxPool2d(2, dilation=2)"),
    ("return self.pool(self.conv(x))", "nn.Conv2d(3, 4, 3)", "self.pool = nn.MaxPool2d(2, padding=1)"),
    ("return self.pool(self.conv(x))", "nn.Conv2d(3, 4, 3)", "self.pool = nn.MaxPool2d(2, ceil_mode=True)"),
])
def test_not_claimed(forward: str, conv: str, extra: str) -> None:
    assert _traits(_conv(forward, conv, (1, 3, 8, 8) if "groups" not in conv else (1, 4, 8, 8),
                         extra=extra)).pattern is None


def test_the_gpu_genes_and_labels() -> None:
    src = _conv("return torch.relu(self.conv(x))", "nn.Conv2d(3, 24, 3)")
    traits = _traits(src)
    gpu = GenericMutator(random.Random(0), traits, src, "cuda")
    # 24 channels out, 3 x 3 x 3 = 27 reduced: no channel or reduction block past 32; operands bounded
    assert gpu.tiles[0] == DEFAULT_TILE and len(set(gpu.tiles)) == len(gpu.tiles) > 20
    assert all(n <= 32 and k <= 32 and m * k <= MAX_OPERAND for m, n, k, _ in gpu.tiles)
    assert {m for m, *_ in gpu.tiles} == {16, 32, 64, 128}
    assert not any(m == 128 and w == 2 for m, _, _, w in gpu.tiles)  # miscompiled once on an H200; slow anyway
    # mutating the tile steps along one axis
    rng_m = GenericMutator(random.Random(3), traits, src, "cuda")
    start = rng_m.genome(triton="conv2d_epilogue")
    steps = []
    for _ in range(60):
        new, what, _ = rng_m.mutate(start)
        if what.startswith("tile"):
            steps.append(sum(a != b for a, b in zip(new["tile"], start["tile"], strict=True)))
    assert steps and set(steps) == {1}
    # the matmul templates' few tiles are not a product of axes: any tile stays one mutation away
    mm_src = _source("return torch.relu(self.linear(x))", (8, 16), init="self.linear = nn.Linear(16, 24)")
    mm = GenericMutator(random.Random(1), _traits(mm_src), mm_src, "cuda")
    reached = set()
    for _ in range(200):
        new, what, _ = mm.mutate(mm.genome(triton="linear_epilogue", tile=[64, 64, 32, 4]))
        if what.startswith("tile"):
            reached.add(tuple(new["tile"]))
    assert reached == {tuple(t) for t in mm.tiles} - {(64, 64, 32, 4)}
    g = gpu.genome(triton="conv2d_epilogue")
    assert {"tile", "stages", "precision"} <= set(gpu._options(g))
    tf32 = gpu.build(gpu.genome(triton="conv2d_epilogue", precision="high"), {})
    assert tf32.labels == ["tf32"] and "dot = 'tf32'\n" in tf32.source
    seeds = {c.genome.get("triton") for c in gpu.seed()}
    assert "conv2d_epilogue" in seeds


def test_the_example_conv_relu_pool_passes_the_evaluator_on_cpu() -> None:
    """Through the judge (float64 reference, edge-case inputs, the worker's checks), at two tiles."""
    from pathlib import Path

    from evoforge.evaluator import EvalConfig, Evaluator
    from evoforge.task import task_from_file
    from evoforge.timing import TimingConfig

    spec = task_from_file(Path(__file__).parents[2] / "examples" / "problems" / "level2" / "conv_relu_pool.py")
    m = GenericMutator.for_task(random.Random(0), spec, "cpu", triton_on_cpu=True)
    cands = [m.build(m.genome(triton="conv2d_epilogue"), {}),
             m.build(m.genome(triton="conv2d_epilogue", tile=[64, 16, 16, 4]), {})]
    config = EvalConfig(device="cpu", timeout_s=300, n_random=1, timing=TimingConfig(budget_ms=1, rounds=1, min_reps=1))
    report = Evaluator(spec, config).evaluate(cands)
    assert [r.status for r in report.results] == ["ok", "ok"], [(r.detail, r.logs[-1500:]) for r in report.results]


def test_the_pool_window_in_parallel_is_a_gene_where_the_window_is_a_power_of_two() -> None:
    src = _conv("return self.pool(F.silu(self.conv(x)))", "nn.Conv2d(3, 8, 3, padding=1)", (2, 3, 10, 9),
                extra="self.pool = nn.MaxPool2d(2)")
    m = _check(src, "conv2d_epilogue", [{"pool_par": False}, {"pool_par": True, "tile": [16, 16, 32, 2]}],
               randomise=True)
    g = m.genome(triton="conv2d_epilogue", pool_par=True)
    assert g["pool_par"] is True and "pool_par" in m._options(g)
    assert m.build(g, {}).name.endswith("+ppool")
    assert "pool_par" not in m.genome()  # a gene only of the conv template: other genomes keep their hashes
    log = src.replace("F.silu(", "torch.log(")  # NaN where the convolution is negative: pooled as PyTorch does
    m_log = GenericMutator(random.Random(0), _traits(log), log, "cpu", triton_on_cpu=True)
    mod = import_source(m_log.build(m_log.genome(triton="conv2d_epilogue", pool_par=True), {}).source,
                        "conv_nan_par", "<candidate>")
    new, x = mod.ModelNew(), torch.randn(2, 3, 10, 9)
    ref, out = new.model(x), new(x)
    assert ref.isnan().any() and torch.equal(ref.isnan(), out.isnan())
    odd = _conv("return self.pool(self.conv(x))", "nn.Conv2d(3, 8, 3)", (1, 3, 9, 9),
                extra="self.pool = nn.MaxPool2d(3, stride=2)")
    m3 = GenericMutator(random.Random(0), _traits(odd), odd, "cuda")
    assert "pool_par" not in m3.genome(triton="conv2d_epilogue", pool_par=True)  # a window of 9: not a gene


def test_the_pool_window_in_parallel_only_where_the_tile_times_the_window_fits() -> None:
    # a tile's rows x the window are the rows of the convolution's operand: (128, 16, 64) with a 2x2 window asked
    # more shared memory than an H200 has (OutOfResources); such a tile pools in sequence
    src = _conv("return self.pool(torch.relu(self.conv(x)))", "nn.Conv2d(16, 32, 3)", (2, 16, 18, 18),
                extra="self.pool = nn.MaxPool2d(2)")
    m = GenericMutator(random.Random(0), _traits(src), src, "cuda")
    big = m.genome(triton="conv2d_epilogue", tile=[128, 16, 64, 4], stages=3, pool_par=True)
    assert big["pool_par"] is False and "pool_par" not in m._options(big)
    assert not m.build(big, {}).name.endswith("+ppool")
    small = m.genome(triton="conv2d_epilogue", tile=[32, 16, 64, 4], pool_par=True)
    assert small["pool_par"] is True and "pool_par" in m._options(small)
    seen = set()
    for t in m.tiles:  # every tile the search may reach: in parallel only within the operand bound
        g = m.genome(triton="conv2d_epilogue", tile=list(t))
        seen.add(g["pool_par"])
        assert g["pool_par"] == (t[0] * 4 * t[2] <= MAX_OPERAND)
    assert seen == {False, True}
    rng, g = random.Random(1), m.genome(triton="conv2d_epilogue")
    for _ in range(300):  # nor does mutation reach a tile that doesn't fit with the window in parallel
        g = m.mutate(g)[0]
        if g.get("triton") == "conv2d_epilogue" and g["pool_par"]:
            assert g["tile"][0] * 4 * g["tile"][2] <= MAX_OPERAND
        if rng.random() < 0.1:
            g = m.genome(triton="conv2d_epilogue", pool_par=True)


def test_the_dot_precision_gene_only_for_float32_inputs() -> None:
    # on half inputs tl.dot's input precision does nothing: no gene (two genomes of one program), no 3xTF32 seed
    src = _conv("return torch.relu(self.conv(x))", "nn.Conv2d(8, 16, 3)", (2, 8, 9, 11))
    half = src.replace("torch.randn(2, 8, 9, 11)", "torch.randn(2, 8, 9, 11, dtype=torch.half)")
    assert half != src
    m32 = GenericMutator(random.Random(0), _traits(src), src, "cuda")
    m16 = GenericMutator(random.Random(0), _traits(half), half, "cuda")
    assert m32.traits.float32 and not m16.traits.float32
    assert m32.seed()[1].genome["precision"] == "tf32x3" and m16.seed()[1].genome["precision"] == "highest"
    g16 = m16.genome(triton="conv2d_epilogue", precision="tf32x3")
    assert g16["precision"] == "highest" and not m16.build(g16, {}).labels and "precision" not in m16._options(g16)
    assert "precision" in m32._options(m32.genome(triton="conv2d_epilogue"))
    assert not GenericMutator(random.Random(0), _traits(src), src, "cpu", triton_on_cpu=True).seed()[-1].labels


def test_3xtf32_dots_for_the_conv_and_matmul_templates() -> None:
    """3xTF32 (three TF32 products per float32 product, near float32 accuracy) is a precision value of the
    templates with dots, labelled; it is no torch setting, so a plain genome never keeps it."""
    src = _conv("return torch.relu(self.conv(x))", "nn.Conv2d(3, 24, 3)")
    m = _check(src, "conv2d_epilogue", [{"precision": "tf32x3"}], randomise=True)
    gpu = GenericMutator(random.Random(0), m.traits, src, "cuda")
    g = gpu.genome(triton="conv2d_epilogue")
    assert "tf32x3" in gpu._options(g)["precision"][0]
    cand = gpu.build(gpu.genome(triton="conv2d_epilogue", precision="tf32x3"), {})
    assert cand.labels == ["3xtf32"] and "dot = 'tf32x3'\n" in cand.source and "3xtf32-dot" in cand.name
    mm_src = _source("return F.gelu(self.linear(x))", (8, 16), init="self.linear = nn.Linear(16, 24)")
    _check(mm_src, "linear_epilogue", [{"precision": "tf32x3"}])
    mm = GenericMutator(random.Random(0), _traits(mm_src), mm_src, "cuda")
    mm_cand = mm.build(mm.genome(triton="linear_epilogue", precision="tf32x3"), {})
    assert mm_cand.labels == ["3xtf32"] and "input_precision='tf32x3'" in mm_cand.source
    plain = mm.genome(precision="tf32x3")  # e.g. from a crossover with a template genome
    assert plain["precision"] == "highest" and "set_float32_matmul_precision" not in mm.build(plain, {}).source


@pytest.mark.parametrize("pool_par", [False, True])
def test_an_average_pool_and_ops_after_the_pool(pool_par: bool) -> None:
    """KernelBench's Conv2d_Subtract_HardSwish_MaxPool_Mish and Conv2d_Subtract_Tanh_Subtract_AvgPool shapes of
    graph: elementwise ops before the pool, the pool (max or average), elementwise ops after it."""
    src = _conv("""\
        x = F.hardswish(self.conv(x) - 0.5)
        x = self.pool(x)
        return x * torch.tanh(F.softplus(x)) + self.bias""", "nn.Conv2d(3, 8, 3, padding=1)", (2, 3, 10, 9),
                extra="self.pool = nn.MaxPool2d(2)\nself.bias = nn.Parameter(torch.randn(8, 1, 1))")
    traits = _traits(src)
    assert traits.conv and traits.conv["pool"]["kind"] == "max" and traits.conv["post"][-1].startswith("y = ")
    _check(src, "conv2d_epilogue", [{"pool_par": pool_par}], randomise=True)
    avg = _conv("""\
        x = torch.tanh(self.conv(x) - 0.25) - 0.1
        return self.pool(x)""", "nn.Conv2d(3, 8, 3)", (2, 3, 12, 11), extra="self.pool = nn.AvgPool2d(2)")
    assert _traits(avg).conv["pool"]["kind"] == "avg"
    _check(avg, "conv2d_epilogue", [{"pool_par": pool_par}], randomise=True)
    strided = _conv("return self.pool(self.conv(x))", "nn.Conv2d(3, 8, 3)", (1, 3, 11, 11),
                    extra="self.pool = nn.AvgPool2d(3, stride=2)")
    _check(strided, "conv2d_epilogue", [])


@pytest.mark.gpu
def test_gpu_pools_ops_after_them_and_3xtf32_are_correct_and_timed() -> None:
    """Through the judge on a GPU: an average pool and a max pool with ops after it, each with the pool window in
    parallel and in sequence, and a 3xTF32 genome."""
    from evoforge.evaluator import EvalConfig, Evaluator
    from evoforge.task import TaskSpec
    from evoforge.timing import TimingConfig

    sources = [_conv("return self.pool(torch.tanh(self.conv(x) - 0.25))", "nn.Conv2d(3, 16, 3)", (8, 3, 32, 32),
                     extra="self.pool = nn.AvgPool2d(2)"),
               _conv("x = self.pool(F.hardswish(self.conv(x) - 0.5))\nreturn x * torch.tanh(F.softplus(x))",
                     "nn.Conv2d(3, 16, 3)", (8, 3, 32, 32), extra="self.pool = nn.MaxPool2d(2)")]
    for src in sources:
        m = GenericMutator(random.Random(0), _traits(src), src, "cuda")
        cands = [m.build(m.genome(triton="conv2d_epilogue", **genes), {})
                 for genes in ({}, {"pool_par": False}, {"precision": "tf32x3"})]
        config = EvalConfig(device="cuda", timeout_s=600, timing=TimingConfig(budget_ms=20))
        report = Evaluator(TaskSpec(name="conv_pool", source=src, origin="<test>"), config).evaluate(cands)
        for cand, result in zip(cands, report.results, strict=True):
            assert result.status == "ok", (cand.name, result.detail, result.logs[-1500:])
            assert "graph" in result.timing, (cand.name, result.timing_errors)
