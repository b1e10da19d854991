"""The template mutator: seeds, the three levels of operators, crossover, hardware filtering."""

from __future__ import annotations

import random
from dataclasses import replace

from evoforge.candidate import Candidate
from evoforge.evaluator.result import EvalResult
from evoforge.kernels.flash_attention import FlashGenome, HardwareLimits, fits
from evoforge.mutators import Individual, TemplateMutator
from evoforge.tasks.attention import AttentionParams

PARAMS = AttentionParams(causal=True, head_dim=128)
LIMITS = HardwareLimits(shared_memory_bytes=100 * 1024)


def ind(c: Candidate, fitness: float = 1.0) -> Individual:
    return Individual(c, EvalResult(name=c.name, hash=c.hash, status="ok", fitness=fitness))


def test_generation_zero_is_the_seeds_3kernel_and_the_default_kernel() -> None:
    seeds = TemplateMutator(random.Random(0), PARAMS, LIMITS).seed()
    assert [c.genome["kind"] for c in seeds] == ["torch", "triton_flash"]
    assert seeds[0].genome["variant"] == "math_baseline" and seeds[1].language == "triton"


def test_proposals_are_new_valid_and_carry_lineage() -> None:
    m = TemplateMutator(random.Random(1), PARAMS, LIMITS)
    history = [ind(c) for c in m.seed()]
    out = m.propose(history, history, 12)  # about 20 genomes lie one step from the two seeds
    assert len(out) == 12
    hashes = {c.hash for c in out}
    assert len(hashes) == 12 and not hashes & {i.candidate.hash for i in history}
    levels = {c.lineage["level"] for c in out}
    assert {"algorithmic", "implementation", "hardware"} <= levels
    for c in out:
        assert c.lineage["mutator"] == "template" and c.lineage["parents"]
        if c.genome["kind"] == "triton_flash":
            assert fits(FlashGenome.from_dict(c.genome), PARAMS.head_dim, 2, LIMITS) is None


def test_crossover_mixes_two_kernels() -> None:
    m = TemplateMutator(random.Random(2), PARAMS, LIMITS)
    a = FlashGenome(block_m=32, block_n=32, num_warps=2, exp2=False).to_dict()
    b = FlashGenome(block_m=64, block_n=64, num_warps=8, exp2=True).to_dict()
    children = [FlashGenome.from_dict(m.crossover(a, b)) for _ in range(40)]
    assert {c.block_m for c in children} == {32, 64} and {c.exp2 for c in children} == {False, True}


def test_same_rng_same_proposals() -> None:
    def run(seed: int) -> list[str]:
        m = TemplateMutator(random.Random(seed), PARAMS, LIMITS)
        history = [ind(c) for c in m.seed()]
        return [c.hash for c in m.propose(history, history, 10)]

    assert run(5) == run(5) != run(6)


def test_pytorch_paths_are_genomes_and_keep_their_labels() -> None:
    m = TemplateMutator(random.Random(3), PARAMS, LIMITS)
    bf16 = m.build({"kind": "torch", "variant": "flash_bf16"}, {"mutation": "test", "level": "algorithmic"})
    assert bf16.labels == ["bf16 compute"] and bf16.name == "torch-flash_bf16"
    assert set(m.torch_paths) >= {"sdpa_cudnn", "sdpa_flash", "flash_tf32", "math_baseline"}


def test_default_kernel_fits_the_gpu_it_is_proposed_for() -> None:
    roomy = TemplateMutator(random.Random(0), PARAMS, HardwareLimits(shared_memory_bytes=227 * 1024))
    tight = TemplateMutator(random.Random(0), PARAMS, HardwareLimits(shared_memory_bytes=48 * 1024))
    for m in (roomy, tight):
        g = m.default_genome()
        assert fits(g, PARAMS.head_dim, 2, m.limits) is None
    assert roomy.default_genome() != tight.default_genome()


def test_hopper_operators_only_where_the_gpu_has_them() -> None:
    def proposed(limits: HardwareLimits) -> list[FlashGenome]:
        m = TemplateMutator(random.Random(4), PARAMS, limits)
        history = [ind(c) for c in m.seed()]
        out = m.propose(history, history, 40)
        return [FlashGenome.from_dict(c.genome) for c in out if c.genome["kind"] == "triton_flash"]

    h100 = HardwareLimits(shared_memory_bytes=227 * 1024, capability=(9, 0), triton_version=(3, 6))
    hopper = proposed(h100)
    assert any(g.tma for g in hopper) and any(g.pdl for g in hopper) and not any(g.warp_spec for g in hopper)
    assert any(g.exp_half and g.exp2 for g in hopper)
    assert all(fits(g, PARAMS.head_dim, 2, h100) is None for g in hopper)
    older = proposed(HardwareLimits(shared_memory_bytes=227 * 1024, capability=(8, 0), triton_version=(3, 6)))
    assert not any(g.tma or g.warp_spec or g.pdl or g.exp_half for g in older)
    blackwell = proposed(HardwareLimits(shared_memory_bytes=227 * 1024, capability=(10, 0), triton_version=(3, 6)))
    assert any(g.warp_spec and g.loop == "tl.range" for g in blackwell)


def test_fused_combine_is_offered_on_split_kv_kernels_only() -> None:
    m = TemplateMutator(random.Random(6), PARAMS, HardwareLimits(shared_memory_bytes=227 * 1024))
    split = FlashGenome(block_m=64, block_n=64, split_kv=2).to_dict()
    children = [m.mutate(split) for _ in range(200)]
    fused = [FlashGenome.from_dict(g) for g, what, _ in children if "last program" in what]
    assert fused and all(g.fused_combine and g.split_kv == 2 for g in fused)
    unsplit = [m.mutate(FlashGenome(block_m=64, block_n=64).to_dict()) for _ in range(200)]
    assert not any(FlashGenome.from_dict(g).fused_combine for g, _, _ in unsplit if g["kind"] == "triton_flash")
    # Leaving split-KV drops the option with it, so the child still fits.
    back = [FlashGenome.from_dict(g) for g, what, _ in
                             (m.mutate(FlashGenome(split_kv=2, fused_combine=True).to_dict()) for _ in range(300))
                             if what == "split-KV 2 -> 1"]
    assert back and all(not g.fused_combine for g in back)
    assert "split-KV option" in (fits(FlashGenome(fused_combine=True), 64, 2, m.limits) or "")


def test_gqa_packing_is_offered_on_grouped_query_tasks_only() -> None:
    def packed(params: AttentionParams) -> list[FlashGenome]:
        m = TemplateMutator(random.Random(7), params, HardwareLimits(shared_memory_bytes=227 * 1024))
        children = [m.mutate(FlashGenome(block_m=16, block_n=64).to_dict()) for _ in range(300)]
        return [FlashGenome.from_dict(g) for g, what, _ in children if g["kind"] == "triton_flash" and g["pack_gqa"]]

    assert packed(AttentionParams(heads=32, kv_heads=8, q_len=1, seq_len=1024, head_dim=128))
    assert not packed(AttentionParams(heads=8, head_dim=64))


def test_default_kernel_follows_the_kind_of_shape() -> None:
    h100 = HardwareLimits(shared_memory_bytes=227 * 1024, capability=(9, 0), triton_version=(3, 6))

    def default(**shape: int) -> FlashGenome:
        return TemplateMutator(random.Random(0), AttentionParams(**shape), h100).default_genome()

    decode = default(batch=8, heads=32, kv_heads=8, q_len=1, seq_len=8192, head_dim=128)
    assert decode.block_m == 16 and decode.pack_gqa
    assert decode.split_kv == 1  # the SM count is unknown: no split
    h200 = replace(h100, sm_count=132)
    # 64 tiles on 132 SMs: two splits fill the GPU (measured 72.7 us against 85.1 without, H200)
    split = TemplateMutator(random.Random(0), AttentionParams(batch=8, heads=32, kv_heads=8, q_len=1, seq_len=8192,
                                                             head_dim=128), h200).default_genome()
    assert (split.split_kv, split.fused_combine, split.pack_gqa) == (2, True, True)
    assert fits(split, 128, 2, h200) is None
    short = TemplateMutator(random.Random(0), AttentionParams(batch=1, heads=8, q_len=1, seq_len=256, head_dim=64),
                            h200).default_genome()
    assert short.split_kv == 1  # 256 keys: too few to split
    assert not default(heads=8, q_len=1, seq_len=4096, head_dim=64).pack_gqa  # no groups to pack
    long_d128 = default(batch=2, heads=16, seq_len=4096, head_dim=128)
    assert (long_d128.block_m, long_d128.block_n, long_d128.num_warps) == (128, 128, 8)
    causal_d128 = default(batch=2, heads=16, seq_len=4096, head_dim=128, causal=True)
    assert (causal_d128.block_n, causal_d128.causal_split) == (64, True)
    long_d64 = default(batch=4, heads=32, seq_len=2048, head_dim=64)
    assert (long_d64.block_m, long_d64.block_n, long_d64.num_warps, long_d64.causal_split) == (64, 64, 4, False)
    assert default(batch=4, heads=32, seq_len=2048, head_dim=64, causal=True).causal_split
    seed = default(batch=1, heads=8, seq_len=512, head_dim=64)
    assert (seed.block_m, seed.block_n, seed.pack_gqa, seed.scale_fma) == (64, 128, False, True)
    causal_seed = default(batch=1, heads=8, seq_len=512, head_dim=64, causal=True)
    assert causal_seed.mask_diagonal and not causal_seed.causal_split and not seed.mask_diagonal
    for g in (decode, long_d128, long_d64, seed, causal_seed):
        assert fits(g, 128, 2, h100) is None


def test_the_two_ways_of_folding_the_scale_exclude_each_other() -> None:
    m = TemplateMutator(random.Random(8), PARAMS, HardwareLimits(shared_memory_bytes=227 * 1024))
    children = []
    for start in (FlashGenome(prescale_q=True), FlashGenome(scale_fma=True)):
        children += [FlashGenome.from_dict(g) for g, _, _ in (m.mutate(start.to_dict()) for _ in range(300))
                     if g["kind"] == "triton_flash"]
    assert any(g.scale_fma for g in children) and any(g.prescale_q for g in children)
    assert not any(g.scale_fma and g.prescale_q for g in children)


def test_the_causal_mask_operator_moves_between_three_ways_of_masking() -> None:
    m = TemplateMutator(random.Random(9), PARAMS, HardwareLimits(shared_memory_bytes=227 * 1024))
    seen = set()
    for start in (FlashGenome(), FlashGenome(causal_split=True), FlashGenome(mask_diagonal=True)):
        for g, what, level in (m.mutate(start.to_dict()) for _ in range(300)):
            if what.startswith("causal mask"):
                child = FlashGenome.from_dict(g)
                assert level == "algorithmic" and not (child.causal_split and child.mask_diagonal)
                assert (child.causal_split, child.mask_diagonal) != (start.causal_split, start.mask_diagonal)
                seen.add((child.causal_split, child.mask_diagonal))
    assert seen == {(False, False), (True, False), (False, True)}
    assert "diagonal blocks already" in (fits(FlashGenome(causal_split=True, mask_diagonal=True), 64, 2, m.limits)
                                         or "")
    non_causal = TemplateMutator(random.Random(9), AttentionParams(), m.limits)
    assert not any(what.startswith("causal mask") for _, what, _ in
                   (non_causal.mutate(FlashGenome().to_dict()) for _ in range(300)))


def test_persistent_programs_are_a_hardware_step_on_kernels_without_split_kv() -> None:
    m = TemplateMutator(random.Random(10), PARAMS, HardwareLimits(shared_memory_bytes=227 * 1024))
    steps = [(FlashGenome.from_dict(g), what, level) for g, what, level in
             (m.mutate(FlashGenome(block_m=64, block_n=64).to_dict()) for _ in range(300)) if "persistent" in what]
    assert steps and all(level == "hardware" and g.persistent == 1 for g, _, level in steps)
    assert {g["persistent"] for g, _, _ in
            (m.mutate(FlashGenome(persistent=1).to_dict()) for _ in range(300))
            if g["kind"] == "triton_flash"} >= {0, 1, 2}
    split = [m.mutate(FlashGenome(split_kv=2).to_dict()) for _ in range(300)]
    assert not any("persistent" in what for _, what, _ in split)
    # Entering split-KV leaves the persistent programs behind, so the child still fits.
    entered = [FlashGenome.from_dict(g) for g, what, _ in
               (m.mutate(FlashGenome(persistent=2).to_dict()) for _ in range(300)) if what == "split-KV 1 -> 2"]
    assert entered and all(g.persistent == 0 and fits(g, PARAMS.head_dim, 2, m.limits) is None for g in entered)
