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
    SPLITS,
    STAGES,
    WARPS,
    FlashGenome,
    HardwareLimits,
    fits,
    render,
)
from evoforge.task import import_source, load_task, make_inputs
from evoforge.tasks import builtin_task
from tests.conftest import triton_device

H100 = HardwareLimits(shared_memory_bytes=227 * 1024)


def sample_genomes(n: int, seed: int = 0) -> list[FlashGenome]:
    rng = random.Random(seed)
    return [FlashGenome(block_m=rng.choice(BLOCKS), block_n=rng.choice(BLOCKS), num_warps=rng.choice(WARPS),
                        num_stages=rng.choice(STAGES), exp2=rng.random() < 0.5, k_layout=rng.choice(K_LAYOUTS),
                        loop=rng.choice(LOOPS), causal_split=rng.random() < 0.5, split_kv=rng.choice(SPLITS),
                        prescale_q=rng.random() < 0.5)
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


GENOMES = [
    FlashGenome(block_m=16, block_n=16, num_stages=1),
    FlashGenome(block_m=32, block_n=16, exp2=False, k_layout="trans", loop="tl.range", causal_split=True),
    FlashGenome(block_m=16, block_n=32, causal_split=True),
    FlashGenome(block_m=16, block_n=16, split_kv=2),
    FlashGenome(block_m=32, block_n=16, split_kv=4, exp2=False, k_layout="trans"),
    FlashGenome(block_m=16, block_n=32, split_kv=8),  # more splits than key blocks: empty partials
    FlashGenome(block_m=32, block_n=32, prescale_q=True, exp2=True),
]
SHAPES = ["", "causal=1", "kv_heads=1,causal=1,q_len=16", "q_len=1,kv_heads=1", "seq_len=50,d=32"]


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
