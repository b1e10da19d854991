"""The template mutator: seeds, the three levels of operators, crossover, hardware filtering."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

from evoforge.candidate import Candidate
from evoforge.evaluator.result import EvalResult
from evoforge.kernels.flash_attention import FlashGenome, HardwareLimits, fits
from evoforge.mutators import Individual, TemplateMutator
from evoforge.tasks.attention import AttentionParams

PARAMS = AttentionParams(causal=True, head_dim=128)
LIMITS = HardwareLimits(shared_memory_bytes=100 * 1024)


def ind(c: Candidate, fitness: float = 1.0) -> Individual:
    return Individual(c, EvalResult(name=c.name, hash=c.hash, status="ok", fitness=fitness))


def test_generation_zero_is_the_seeds_3kernel_and_the_triton_starters() -> None:
    m = TemplateMutator(random.Random(0), PARAMS, LIMITS)
    seeds = m.seed()
    assert [c.genome["kind"] for c in seeds] == ["torch"] + ["triton_flash"] * len(m.starter_genomes())
    assert seeds[0].genome["variant"] == "math_baseline" and all(c.language == "triton" for c in seeds[1:])
    assert [FlashGenome.from_dict(c.genome) for c in seeds[1:]] == m.starter_genomes()


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
        out = m.propose(history, history, 120)  # generation 0's several starters share them
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


def test_generation_0_is_one_starter_set_for_every_shape() -> None:
    """Issue 20: no table of measured winners per kind of shape; the search picks among one set of starters."""
    h200 = HardwareLimits(shared_memory_bytes=227 * 1024, capability=(9, 0), triton_version=(3, 6), sm_count=132)

    def starters(**shape: Any) -> list[FlashGenome]:
        return TemplateMutator(random.Random(0), AttentionParams(**shape), h200).starter_genomes()

    shapes = [dict(batch=1, heads=8, seq_len=512, head_dim=64), dict(batch=2, heads=16, seq_len=4096, head_dim=128),
              dict(batch=4, heads=32, seq_len=2048, head_dim=64), dict(batch=1, heads=16, seq_len=16384, head_dim=128),
              dict(batch=3, heads=5, seq_len=1000, head_dim=96)]
    sets = [starters(**s) for s in shapes]
    assert all(s == sets[0] for s in sets)  # the same kernels, whatever the shape
    assert [(g.block_m, g.block_n, g.num_warps) for g in sets[0]] == [(64, 128, 4), (128, 128, 8), (64, 64, 4),
                                                                         (16, 128, 4)]
    for shape, found in zip(shapes, sets, strict=True):
        assert all(fits(g, shape["head_dim"], 2, h200) is None for g in found)
    # causal: each starter masks only the blocks that cross the diagonal; the search may change that
    causal = starters(batch=2, heads=16, seq_len=4096, head_dim=128, causal=True)
    assert all(g.mask_diagonal and not g.causal_split for g in causal)
    assert [g.with_(mask_diagonal=False) for g in causal] == sets[1]
    # the split-KV starter's split count comes from the launch's tiles and the SM count (a rule, not a measurement)
    decode = starters(batch=8, heads=32, kv_heads=8, q_len=1, seq_len=8192, head_dim=128)[-1]
    assert (decode.block_m, decode.split_kv, decode.fused_combine, decode.pack_gqa) == (16, 2, True, True)
    assert starters(batch=1, heads=8, q_len=1, seq_len=256, head_dim=64)[-1].split_kv == 1  # too few keys to split
    decode_shape = AttentionParams(batch=8, heads=32, kv_heads=8, q_len=1, seq_len=8192, head_dim=128)
    unknown_sms = TemplateMutator(random.Random(0), decode_shape, replace(h200, sm_count=0))
    assert unknown_sms.starter_genomes()[-1].split_kv == 1
    # generation 0 evaluates them all (after PyTorch's math path); a small population keeps the first ones
    m = TemplateMutator(random.Random(0), AttentionParams(**shapes[1]), h200)
    genomes = [c.genome for c in m.seed()]
    assert genomes[0] == {"kind": "torch", "variant": "math_baseline"}
    assert [FlashGenome.from_dict(g) for g in genomes[1:] if g["kind"] == "triton_flash"] == sets[1]
    assert m.default_genome() == sets[1][0]


def test_a_small_gpu_gets_the_starters_that_fit_or_a_smaller_fallback() -> None:
    tight = HardwareLimits(shared_memory_bytes=48 * 1024)
    found = TemplateMutator(random.Random(0), AttentionParams(head_dim=128), tight).starter_genomes()
    assert found and all(fits(g, 128, 2, tight) is None for g in found)
    roomy = HardwareLimits(shared_memory_bytes=227 * 1024)
    assert len(TemplateMutator(random.Random(0), AttentionParams(head_dim=128), roomy).starter_genomes()) > len(found)
    # an A100's 163 KiB: every starter, each at the most pipeline stages that fit
    a100 = HardwareLimits(shared_memory_bytes=163 * 1024, capability=(8, 0), triton_version=(3, 6), sm_count=108)
    mid = TemplateMutator(random.Random(0), AttentionParams(head_dim=128), a100).starter_genomes()
    assert [(g.block_m, g.block_n, g.num_stages) for g in mid] == [(64, 128, 2), (128, 128, 2), (64, 64, 3),
                                                                    (16, 128, 2)]
    assert all(fits(g, 128, 2, a100) is None and fits(g.with_(num_stages=g.num_stages + 1), 128, 2, a100)
               for g in mid if g.num_stages < 3)


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


def test_split_kv_is_not_offered_where_the_tiles_fill_the_gpu() -> None:
    h200 = HardwareLimits(shared_memory_bytes=227 * 1024, capability=(9, 0), triton_version=(3, 6), sm_count=132)

    def splits(params: AttentionParams, start: FlashGenome, limits: HardwareLimits = h200) -> set[tuple[int, int]]:
        m = TemplateMutator(random.Random(12), params, limits)
        children = (m.mutate(start.to_dict()) for _ in range(400))
        return {(start.split_kv, g["split_kv"]) for g, what, _ in children
                if what.startswith("split-KV") and " -> " in what}

    long_rows = AttentionParams(batch=4, heads=32, seq_len=2048, head_dim=64)  # 4096 tiles of 64 rows: 31 waves
    assert splits(long_rows, FlashGenome(block_m=64, block_n=64)) == set()
    assert splits(long_rows, FlashGenome(block_m=64, block_n=64, split_kv=4)) == {(4, 2)}  # only back down
    decode = AttentionParams(batch=8, heads=32, kv_heads=8, q_len=1, seq_len=8192, head_dim=128)  # 64 packed tiles
    assert splits(decode, FlashGenome(block_m=16, block_n=128, pack_gqa=True)) == {(1, 2)}
    assert splits(decode, FlashGenome(block_m=16, block_n=128, pack_gqa=True, split_kv=2)) == {(2, 1), (2, 4)}
    # the SM count unknown: every split is offered, as before
    assert splits(long_rows, FlashGenome(block_m=64, block_n=64), replace(h200, sm_count=0)) == {(1, 2)}
