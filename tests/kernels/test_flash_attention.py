"""The Triton flash-attention template: every genome renders valid source; the hardware filter;
and a few genomes computed for real on tiny shapes (compiled on a GPU, interpreted on a CPU)."""

from __future__ import annotations

import ast
import itertools
import random
from pathlib import Path

import pytest
import torch

from evoforge.kernels.flash_attention import (
    BLOCKS,
    K_LAYOUTS,
    LOOPS,
    PERSISTENT,
    SPLITS,
    STAGES,
    WARPS,
    FlashGenome,
    HardwareLimits,
    fits,
    render,
    splits_to_fill,
)
from evoforge.task import import_source, load_task, make_inputs
from evoforge.tasks import builtin_task
from tests.conftest import triton_device

H100 = HardwareLimits(shared_memory_bytes=227 * 1024, capability=(9, 0), triton_version=(3, 6))


def sample_genomes(n: int, seed: int = 0) -> list[FlashGenome]:
    rng = random.Random(seed)
    return [FlashGenome(block_m=rng.choice(BLOCKS), block_n=rng.choice(BLOCKS), num_warps=rng.choice(WARPS),
                        num_stages=rng.choice(STAGES), exp2=rng.random() < 0.5, k_layout=rng.choice(K_LAYOUTS),
                        loop=rng.choice(LOOPS), causal_split=rng.random() < 0.5, split_kv=rng.choice(SPLITS),
                        prescale_q=rng.random() < 0.5, tma=rng.random() < 0.5, warp_spec=rng.random() < 0.3,
                        fused_combine=rng.random() < 0.3, pack_gqa=rng.random() < 0.3, pdl=rng.random() < 0.3,
                        scale_fma=rng.random() < 0.3, exp_half=rng.random() < 0.3, mask_diagonal=rng.random() < 0.3,
                        persistent=rng.choice(PERSISTENT))
            for _ in range(n)]


@pytest.mark.parametrize(("causal", "head_dim"), [(False, 64), (True, 128), (True, 48)])
def test_every_sampled_genome_renders_valid_python(causal: bool, head_dim: int) -> None:
    for g in sample_genomes(150):
        tree = ast.parse(render(g, causal=causal, head_dim=head_dim))
        assert any(isinstance(n, ast.ClassDef) and n.name == "ModelNew" for n in tree.body)


def test_genome_round_trips_and_keys_differ() -> None:
    genomes = sample_genomes(50)
    assert all(FlashGenome.from_dict(g.to_dict()) == g for g in genomes)
    assert len({g.key() for g in set(genomes)}) == len(set(genomes))


def test_hardware_filter_rejects_what_does_not_fit() -> None:
    assert fits(FlashGenome(), 64, 2, H100) is None
    too_big = FlashGenome(block_m=128, block_n=128, num_stages=5)
    assert "shared memory" in fits(too_big, 128, 2, H100)
    assert "registers" in fits(FlashGenome(block_m=128, block_n=128, num_warps=1, num_stages=1), 128, 2, H100)
    interpreter = HardwareLimits(interpreter=True)
    assert fits(FlashGenome(block_m=128), 64, 2, interpreter) is not None
    assert fits(FlashGenome(block_m=32, block_n=32), 64, 2, interpreter) is None
    assert "folded into Q" in (fits(FlashGenome(scale_fma=True, prescale_q=True), 64, 2, H100) or "")
    assert "no split-KV" in (fits(FlashGenome(persistent=1, split_kv=2), 64, 2, H100) or "")
    assert "must be one of" in (fits(FlashGenome(persistent=3), 64, 2, H100) or "")
    assert fits(FlashGenome(persistent=2), 64, 2, H100) is None


GENOMES = [
    FlashGenome(block_m=16, block_n=16, num_stages=1),
    FlashGenome(block_m=32, block_n=16, exp2=False, k_layout="trans", loop="tl.range", causal_split=True),
    FlashGenome(block_m=16, block_n=32, causal_split=True),
    FlashGenome(block_m=16, block_n=16, split_kv=2),
    FlashGenome(block_m=32, block_n=16, split_kv=4, exp2=False, k_layout="trans"),
    FlashGenome(block_m=16, block_n=32, split_kv=8),  # more splits than key blocks: empty partials
    # The last program of a row block combines the partials (atomic counter): no second kernel.
    FlashGenome(block_m=16, block_n=16, split_kv=2, fused_combine=True),
    FlashGenome(block_m=16, block_n=32, split_kv=8, fused_combine=True, exp2=False),
    # The query heads of a K/V group packed into a program's rows (a no-op mapping without GQA).
    FlashGenome(block_m=16, block_n=16, pack_gqa=True),
    FlashGenome(block_m=32, block_n=16, pack_gqa=True, split_kv=2, fused_combine=True, causal_split=True),
    FlashGenome(block_m=16, block_n=32, pack_gqa=True, split_kv=4, tma=True),
    FlashGenome(block_m=32, block_n=32, prescale_q=True, exp2=True),
    # The scale applied to the row maxima and folded into exp's argument, with and without exp2, and with
    # split-KV's empty rows (a row max of -inf scaled stays -inf).
    FlashGenome(block_m=16, block_n=16, scale_fma=True),
    FlashGenome(block_m=16, block_n=32, scale_fma=True, exp2=False, split_kv=8, fused_combine=True),
    # exp2 in half precision (PTX ex2.approx.f16x2 on a GPU; fp32 exp2 in the interpreter), with empty rows.
    FlashGenome(block_m=16, block_n=16, exp_half=True, scale_fma=True, split_kv=4, fused_combine=True,
                causal_split=True),
    # TMA descriptors: on a CPU the interpreter runs the descriptor path (where the head size allows it).
    FlashGenome(block_m=16, block_n=16, tma=True, causal_split=True),
    FlashGenome(block_m=32, block_n=16, tma=True, split_kv=2, loop="tl.range"),
    # Programmatic dependent launch: on a GPU the kernel waits for the previous one before its first load;
    # the interpreter launches it plainly.
    FlashGenome(block_m=16, block_n=32, pdl=True, split_kv=2, fused_combine=True, causal_split=True),
    FlashGenome(block_m=32, block_n=16, pdl=True, split_kv=2),
    # One causal loop that masks only the blocks crossing the diagonal: with padded key blocks, split-KV's
    # empty rows, and packed query heads (whose rows start at different positions).
    FlashGenome(block_m=16, block_n=16, mask_diagonal=True, loop="tl.range", scale_fma=True),
    FlashGenome(block_m=32, block_n=16, mask_diagonal=True, split_kv=4, fused_combine=True, pack_gqa=True),
    # Persistent programs walking the tiles (3 programs in the interpreter, for the tiny shapes' 4-16 tiles;
    # one or two per SM on a GPU), causal row blocks heaviest first: with the one-loop diagonal mask and
    # packed query heads, and with the split causal loop and TMA descriptors.
    FlashGenome(block_m=16, block_n=16, persistent=1),
    FlashGenome(block_m=16, block_n=32, persistent=2, pack_gqa=True, mask_diagonal=True, scale_fma=True),
    FlashGenome(block_m=32, block_n=16, persistent=1, causal_split=True, tma=True, loop="tl.range"),
]
SHAPES = ["", "causal=1", "kv_heads=1,causal=1,q_len=16", "q_len=1,kv_heads=1", "seq_len=50,d=32",
          "heads=4,kv_heads=2,q_len=5,causal=1"]


# No NaN on the way either, not even in rows past the end whose stores are masked: the interpreter's numpy
# warns on an invalid operation (-inf - -inf, 0 / 0), and here that fails the test.
@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize(("genome", "shape"), list(itertools.product(GENOMES, SHAPES)))
def test_genome_matches_the_reference(genome: FlashGenome, shape: str, tmp_path: Path) -> None:
    pytest.importorskip("triton")
    device = triton_device()  # the compiled kernel on a GPU, the interpreter on a CPU
    spec = builtin_task("attention-tiny" + (":" + shape if shape else ""))
    task = load_task(spec)
    params = spec.params
    source = render(genome, causal=params["causal"], head_dim=params["head_dim"])
    name = f"flash_{genome.key()}_{abs(hash(shape))}"
    model = import_source(source, name, name, tmp_path).ModelNew()
    q, k, v = make_inputs(task, 0)
    expected = task.model_cls()(q.double(), k.double(), v.double())
    got = model(q.to(device), k.to(device), v.to(device)).double().cpu()
    torch.testing.assert_close(got, expected, atol=2e-3, rtol=2e-3)


@pytest.mark.parametrize("shape", ["dtype=bf16", "dtype=bf16,causal=1,kv_heads=1", "dtype=fp32"])
def test_half_precision_exp_follows_the_input_dtype(shape: str, tmp_path: Path) -> None:
    """bf16 inputs take the bf16x2 instruction (within bf16's tolerance); fp32 inputs take the fp32 exp2,
    so the kernel computes exactly what the same genome without half-precision exp computes."""
    pytest.importorskip("triton")
    device = triton_device()
    if device != "cuda" and "bf16" in shape:
        # Measured with Triton 3.9: the interpreter's tl.dot of two bf16 tiles is wrong by orders of magnitude.
        pytest.skip("Triton's interpreter computes bf16 tl.dot wrongly")
    spec = builtin_task("attention-tiny:" + shape)
    task = load_task(spec)
    q, k, v = (t.to(device) for t in make_inputs(task, 0))
    outs = []
    plain = FlashGenome(block_m=16, block_n=16)
    for i, genome in enumerate([plain.with_(exp_half=True), plain]):
        source = render(genome, causal=spec.params["causal"], head_dim=spec.params["head_dim"])
        outs.append(import_source(source, f"half_{i}_{abs(hash(shape))}", "half", tmp_path).ModelNew()(q, k, v))
    if q.dtype == torch.float32:
        assert torch.equal(outs[0], outs[1])
    else:
        expected = task.model_cls()(q.double().cpu(), k.double().cpu(), v.double().cpu())
        atol, rtol = task.tolerance(q.dtype)
        torch.testing.assert_close(outs[0].double().cpu(), expected, atol=atol, rtol=rtol)


@pytest.mark.parametrize("genome", [FlashGenome(block_m=16, block_n=16, scale_fma=True),
                                    FlashGenome(block_m=32, block_n=16, k_layout="trans", loop="tl.range",
                                                causal_split=True, split_kv=2, fused_combine=True)])
@pytest.mark.parametrize("shape", ["dtype=fp32", "dtype=fp32,causal=1,kv_heads=1"])
def test_fp32_inputs_meet_the_fp32_tolerance(genome: FlashGenome, shape: str, tmp_path: Path) -> None:
    """fp32 inputs keep fp32 products: on a GPU a plain tl.dot would round them to TF32 (10-bit
    mantissa), far outside fp32's tolerance, and every template candidate of an fp32 task would fail."""
    pytest.importorskip("triton")
    device = triton_device()
    spec = builtin_task("attention-tiny:" + shape)
    task = load_task(spec)
    q, k, v = (t.to(device) for t in make_inputs(task, 0))
    assert q.dtype == torch.float32
    source = render(genome, causal=spec.params["causal"], head_dim=spec.params["head_dim"])
    name = f"fp32_{genome.key()}_{abs(hash(shape))}"
    got = import_source(source, name, name, tmp_path).ModelNew()(q, k, v)
    expected = task.model_cls()(q.double().cpu(), k.double().cpu(), v.double().cpu())
    atol, rtol = task.tolerance(q.dtype)
    torch.testing.assert_close(got.double().cpu(), expected, atol=atol, rtol=rtol)


def test_hopper_options_are_offered_only_where_they_compile() -> None:
    tma = FlashGenome(tma=True, loop="tl.range")
    spec = FlashGenome(warp_spec=True, loop="tl.range")
    assert fits(tma, 64, 2, H100) is None
    assert "Hopper" in (fits(tma, 64, 2, HardwareLimits()) or "")  # capability unknown
    assert "Hopper" in (fits(tma, 64, 2, HardwareLimits(capability=(8, 0), triton_version=(3, 6))) or "")
    assert "Hopper" in (fits(tma, 64, 2, HardwareLimits(capability=(9, 0), triton_version=(3, 2))) or "")
    assert "power-of-two" in (fits(tma, 48, 2, H100) or "")
    assert fits(tma, 64, 2, HardwareLimits(interpreter=True, capability=(9, 0), triton_version=(3, 6))) is not None
    half = FlashGenome(exp_half=True)
    assert fits(half, 64, 2, H100) is None
    assert "fp16/bf16" in (fits(half, 64, 4, H100) or "")  # fp32 inputs
    assert "Hopper" in (fits(half, 64, 2, HardwareLimits(capability=(8, 0), triton_version=(3, 6))) or "")
    assert "exp2" in (fits(half.with_(exp2=False), 64, 2, H100) or "")
    pdl = FlashGenome(pdl=True)
    assert fits(pdl, 64, 2, H100) is None
    assert "Hopper" in (fits(pdl, 64, 2, HardwareLimits(capability=(8, 9), triton_version=(3, 6))) or "")
    assert fits(pdl, 64, 2, HardwareLimits(interpreter=True, capability=(9, 0), triton_version=(3, 6))) is not None
    # Warp specialisation failed to compile on sm_90 with Triton 3.6: offered from sm_100 on, on tl.range only.
    assert "sm_100" in (fits(spec, 64, 2, H100) or "")
    blackwell = HardwareLimits(capability=(10, 0), triton_version=(3, 6))
    assert fits(spec, 64, 2, blackwell) is None
    assert "tl.range" in (fits(spec.with_(loop="range"), 64, 2, blackwell) or "")


def test_limits_for_a_device_read_its_capability() -> None:
    props = type("Props", (), {"major": 9, "minor": 0, "shared_memory_per_block_optin": 227 * 1024})()
    limits = HardwareLimits.for_device(props)
    assert limits.capability == (9, 0) and not limits.interpreter
    assert limits.hopper == (limits.triton_version >= (3, 4))
    assert not HardwareLimits.for_device(None).hopper


def test_hopper_options_render_into_the_kernel() -> None:
    plain = render(FlashGenome(loop="tl.range"), causal=False, head_dim=64)
    tma = render(FlashGenome(loop="tl.range", tma=True), causal=False, head_dim=64)
    spec = render(FlashGenome(loop="tl.range", warp_spec=True), causal=False, head_dim=64)
    assert "USE_TMA = False" in plain and "USE_TMA = True" in tma
    assert "USE_EXP_HALF = True" in render(FlashGenome(exp_half=True), causal=False, head_dim=64)
    assert "USE_EXP_HALF = False" in render(FlashGenome(exp_half=True, exp2=False), causal=False, head_dim=64)
    assert "USE_PDL = False" in plain and "USE_PDL = True" in render(FlashGenome(pdl=True), causal=False, head_dim=64)
    assert "warp_specialize=True" in spec and "warp_specialize" not in plain
    # warp_spec means nothing on the plain loop: it renders the plain loop.
    assert "warp_specialize" not in render(FlashGenome(warp_spec=True), causal=False, head_dim=64)


def test_repeated_calls_reuse_the_compiled_kernel_and_stay_correct(tmp_path: Path) -> None:
    """The cached direct launcher (CUDA) gives the same results as the JIT launch on fresh inputs of
    the same layout; a new layout gets its own launcher; the interpreter never caches."""
    pytest.importorskip("triton")
    device = triton_device()
    for i, genome in enumerate([FlashGenome(block_m=16, block_n=16, num_stages=1),
                                FlashGenome(block_m=16, block_n=32, split_kv=2, tma=True),
                                # The counters must be back at zero after each call for the next to combine.
                                FlashGenome(block_m=16, block_n=16, split_kv=4, fused_combine=True),
                                FlashGenome(block_m=16, block_n=16, pdl=True)]):
        spec = builtin_task("attention-tiny:causal=1")
        task = load_task(spec)
        source = render(genome, causal=True, head_dim=spec.params["head_dim"])
        model = import_source(source, f"cached_{i}", f"cached_{i}", tmp_path).ModelNew()
        for seed in range(3):
            q, k, v = make_inputs(task, seed)
            expected = task.model_cls()(q.double(), k.double(), v.double())
            got = model(q.to(device), k.to(device), v.to(device)).double().cpu()
            torch.testing.assert_close(got, expected, atol=2e-3, rtol=2e-3)
        assert len(model._fast) == (1 if device == "cuda" else 0)
        q, k, v = (t[:, :, :40].to(device) for t in make_inputs(task, 9))  # another layout
        expected = task.model_cls()(q.double().cpu(), k.double().cpu(), v.double().cpu())
        torch.testing.assert_close(model(q, k, v).double().cpu(), expected, atol=2e-3, rtol=2e-3)
        assert len(model._fast) == (2 if device == "cuda" else 0)


def test_one_program_per_tile_keeps_the_tile_code_in_the_kernel() -> None:
    """Measured with Triton 3.6 on an H100: the tile's code behind a function call ran 3-4% slower on
    64x64 tiles (benchmarks/results/template-ab-a1ca487-h100.json), so only persistent genomes render it
    as a function that the persistent kernel calls per tile."""
    plain = render(FlashGenome(), causal=True, head_dim=64)
    assert "def _attn_fwd(" in plain and "def _attn_tile(" not in plain and "def _attn_fwd_persistent(" not in plain
    persistent = render(FlashGenome(persistent=2), causal=True, head_dim=64)
    assert "def _attn_fwd_persistent(" in persistent and "def _attn_tile(" in persistent
    assert "def _attn_fwd(" not in persistent and "PERSISTENT = 2" in persistent
    # Split-KV leaves persistence out of the rendered kernel (fits() rejects the pair before that).
    assert "PERSISTENT = 0" in render(FlashGenome(persistent=2, split_kv=2), causal=False, head_dim=64)


def test_splits_fill_the_gpu_by_wave_efficiency() -> None:
    assert splits_to_fill(64, 132) == 2  # 0.48 of a wave unsplit; 2, 4 and 8 splits all 0.97: the smallest
    assert splits_to_fill(16, 132) == 8
    assert splits_to_fill(200, 132) == 1  # the tiles fill the GPU already
    assert splits_to_fill(64, 0) == 1  # SM count unknown
