"""The Gluon (sm_90) flash-attention family: genomes, the hardware filter, rendering, the mutator offering it
only on sm_90, an ahead-of-time compile for sm_90 where Triton 3.6 is installed, and (``-m gpu``, on an
sm_90 GPU) correctness against a float64 reference and through the evaluator."""

from __future__ import annotations

import ast
import functools
import itertools
import json
import os
import random
import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import torch

from evoforge.candidate import Candidate
from evoforge.evaluator.result import EvalResult
from evoforge.kernels import gluon_flash as gf
from evoforge.kernels.flash_attention import FlashGenome, HardwareLimits, fits
from evoforge.mutators import Individual, TemplateMutator
from evoforge.tasks.attention import AttentionParams

ROOT = Path(__file__).resolve().parents[2]
H200 = HardwareLimits(shared_memory_bytes=227 * 1024, capability=(9, 0), triton_version=(3, 6))
SPACE: dict[str, tuple[Any, ...]] = {
    "block_m": gf.BLOCKS_M, "block_n": gf.BLOCKS_N, "num_stages": gf.STAGES, "warp_spec": (True, False),
    "consumers": gf.CONSUMERS, "consumer_warps": gf.CONSUMER_WARPS, "producer_regs": gf.PRODUCER_REGS,
    "consumer_regs": gf.CONSUMER_REGS, "causal_split": (True, False), "tma_store": (True, False),
    "schedule": gf.SCHEDULES, "realloc_regs": (True, False), "flat_workers": (True, False),
    "persistent": (True, False)}


@pytest.fixture
def gluon_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """Gluon counts as importable (whatever Triton this machine has)."""
    monkeypatch.setattr(gf, "gluon_importable", lambda: True)


def every_genome() -> list[gf.GluonGenome]:
    return [gf.GluonGenome(**dict(zip(SPACE, values, strict=True))) for values in itertools.product(*SPACE.values())]


def ind(c: Candidate, fitness: float = 1.0) -> Individual:
    return Individual(c, EvalResult(name=c.name, hash=c.hash, status="ok", fitness=fitness))


def test_the_gene_space_is_the_genome() -> None:
    assert set(SPACE) == {f.name for f in fields(gf.GluonGenome)}
    g = gf.GluonGenome(block_n=128, consumers=2, consumer_warps=4, block_m=64)
    assert gf.GluonGenome.from_dict(g.to_dict()) == g and g.to_dict()["kind"] == gf.KIND
    assert g.key() != gf.GluonGenome().key()


def test_the_filter_refuses_what_the_gpu_cannot_run(gluon_here: None) -> None:
    ok = gf.GluonGenome()
    assert gf.fits(ok, 64, 2, H200) is None and gf.fits(ok, 128, 2, H200) is None
    assert "fp16/bf16" in gf.fits(ok, 64, 4, H200)
    for head_dim in (8, 48, 96, 80, 512):
        assert "head size" in gf.fits(ok, head_dim, 2, H200)
    assert "16 rows per warp" in gf.fits(ok.with_(block_m=64, consumer_warps=8), 64, 2, H200)
    assert "warp-specialised" in gf.fits(ok.with_(warp_spec=False, consumers=2), 64, 2, H200)
    # The loop without warp specialisation: offered since its H200 crash was fixed and re-run on a GPU; with
    # the switch off it is refused unless asked for (the compile check, the GPU test and the benchmark).
    pipe = ok.with_(warp_spec=False, block_m=64, consumer_warps=4)
    assert gf.PIPELINED_VERIFIED and gf.fits(pipe, 64, 2, H200) is None
    with pytest.MonkeyPatch.context() as switch:
        switch.setattr(gf, "PIPELINED_VERIFIED", False)
        assert "switched off" in gf.fits(pipe, 64, 2, H200)
        assert gf.fits(pipe, 64, 2, H200, allow_pipelined=True) is None
    assert "two consumer warpgroups" in gf.fits(ok.with_(consumers=2), 64, 2, H200)
    assert "shared memory" in gf.fits(ok.with_(block_n=256, num_stages=4), 128, 2, H200)
    assert "registers" in gf.fits(ok.with_(consumer_warps=4, block_n=128, num_stages=1), 128, 2, H200)
    assert "outside" in gf.fits(ok.with_(block_n=48), 64, 2, H200)
    # The overlapped schedules are the consumer partitions' (warp_spec); ping-pong takes two consumers.
    assert gf.fits(ok.with_(schedule="overlap"), 64, 2, H200) is None
    assert "schedule" in gf.fits(ok.with_(schedule="fast"), 64, 2, H200)
    assert "consumer partitions" in gf.fits(pipe.with_(schedule="overlap"), 64, 2, H200)
    assert "two consumers" in gf.fits(ok.with_(block_m=64, consumer_warps=4, schedule="pingpong"), 64, 2, H200)
    # Ping-pong: offered since flat workers keep its wgmmas in flight; with the switch off, only when asked for.
    pingpong = ok.with_(block_m=64, consumers=2, consumer_warps=4, block_n=128, schedule="pingpong")
    assert gf.PINGPONG_OFFERED and gf.fits(pingpong, 128, 2, H200) is None
    with pytest.MonkeyPatch.context() as switch:
        switch.setattr(gf, "PINGPONG_OFFERED", False)
        assert "not offered" in gf.fits(pingpong, 128, 2, H200)
        assert gf.fits(pingpong, 128, 2, H200, allow_pingpong=True, allow_persistent=True) is None
    # Overlapped, block j's scores and P are live beside block j-1's P: a tighter register bound.
    tight = ok.with_(block_m=64, consumers=2, consumer_warps=4, block_n=128, consumer_regs=216)
    assert gf.fits(tight, 128, 2, H200) is None
    assert "registers" in gf.fits(tight.with_(schedule="overlap"), 128, 2, H200)
    # Registers kept where the launch put them: 12 warps get 168 each, whatever the consumer_regs gene says.
    kept = tight.with_(block_n=64, schedule="overlap", realloc_regs=False)
    assert gf.fits(kept, 128, 2, H200) is None
    assert "budget is 168" in gf.fits(kept.with_(block_n=128), 128, 2, H200)
    # A persistent launch: the warp-specialised kernel's, offered since it ran on a GPU; with the switch off, only
    # when asked for.
    persistent = gf.DEFAULTS[0].with_(persistent=True)
    assert gf.PERSISTENT_OFFERED and gf.fits(persistent, 128, 2, H200) is None
    with pytest.MonkeyPatch.context() as switch:
        switch.setattr(gf, "PERSISTENT_OFFERED", False)
        assert "not offered" in gf.fits(persistent, 128, 2, H200)
        assert gf.fits(persistent, 128, 2, H200, allow_persistent=True) is None
    assert "warp-specialised" in gf.fits(pipe.with_(persistent=True), 64, 2, H200, allow_persistent=True)
    # Anywhere but sm_90 with Triton 3.6: not offered at all.
    for limits in (HardwareLimits(capability=(8, 0), triton_version=(3, 6)),
                   HardwareLimits(capability=(10, 0), triton_version=(3, 6)),
                   HardwareLimits(capability=(9, 0), triton_version=(3, 9)),
                   HardwareLimits(interpreter=True, triton_version=(3, 6))):
        assert "sm_90" in gf.fits(ok, 64, 2, limits)
        assert gf.fits(ok, 64, 2, limits, check_device=False) is None


def test_shared_memory_estimate_and_launch_registers() -> None:
    g = gf.GluonGenome()  # Q 128x64, two stages of 64x64 K and V, fp16
    # mbarriers: Q's, each stage's K and V ready and empty, ping-pong's two.
    assert gf.shared_bytes(g, 64) == 2 * (128 * 64 + 2 * 2 * 64 * 64) + 8 * (1 + 4 * 2 + 2) + 1024
    # 8 consumer warps + a producer warpgroup = 384 threads: 65536 registers / 384 = 170, rounded down to 8.
    assert gf.warps_total(g) == 12 and gf.max_regs(g) == 168
    assert gf.max_regs(g.with_(consumer_warps=4, block_m=64)) == 0  # 256 threads x 255 registers fit
    assert gf.max_regs(g.with_(warp_spec=False)) == 0


@pytest.mark.parametrize("head_dim", [64, 128])
def test_every_valid_genome_renders_python_with_its_genes(head_dim: int) -> None:
    valid = [g for g in every_genome()
             if gf.fits(g, head_dim, 2, H200, check_device=False, allow_pipelined=True,
                    allow_pingpong=True, allow_persistent=True) is None]
    assert any(not g.warp_spec for g in valid)
    assert len(valid) > 100
    for g in random.Random(head_dim).sample(valid, 24):
        for causal in (False, True):
            source = gf.render(g, causal=causal, head_dim=head_dim)
            ast.parse(source)
            assert "__" + "block_m__" not in source and "evoforge:" not in source
            assert f"BLOCK_M, BLOCK_N, NUM_STAGES = {g.block_m}, {g.block_n}, {g.num_stages}" in source
            assert f"WARP_SPEC = {g.warp_spec}" in source and f"HEAD_DIM = {head_dim}" in source
            assert f"CONSUMERS = {g.consumers if g.warp_spec else 1}" in source
            assert f"CAUSAL_SPLIT = {g.causal_split and causal}" in source
            assert f"MAX_REGS = {gf.max_regs(g)}" in source
            assert f"OVERLAP = {g.schedule != 'serial'}" in source
            assert f"PINGPONG = {g.schedule == 'pingpong'}" in source
            assert f"REALLOC_REGS = {g.realloc_regs or not g.warp_spec}" in source
            assert f"FLAT_WORKERS = {g.flat_workers and g.warp_spec}" in source
            assert f"PERSISTENT = {g.persistent and g.warp_spec}" in source
            assert "class ModelNew" in source and "gl.warp_specialize" in source


def test_the_defaults_fit_every_head_size_the_kernel_takes(gluon_here: None) -> None:
    for head_dim in gf.HEAD_DIMS:
        assert any(gf.fits(g, head_dim, 2, H200) is None for g in gf.DEFAULTS), head_dim
    assert gf.fits(gf.DEFAULTS[0], 64, 2, H200) is None and gf.fits(gf.DEFAULTS[0], 128, 2, H200) is None


@pytest.mark.parametrize("limits", [HardwareLimits(capability=(8, 0), triton_version=(3, 6)),
                                    HardwareLimits(capability=(10, 0), triton_version=(3, 6)),
                                    HardwareLimits(capability=(12, 0), triton_version=(3, 6)),
                                    HardwareLimits(capability=(9, 0), triton_version=(3, 7)),
                                    HardwareLimits(interpreter=True, triton_version=(3, 6))])
def test_the_mutator_offers_gluon_only_on_sm90(gluon_here: None, limits: HardwareLimits) -> None:
    m = TemplateMutator(random.Random(0), AttentionParams(), limits)
    kinds = [c.genome["kind"] for c in m.seed()]
    assert not m.gluon and kinds[:2] == ["torch", "triton_flash"] and set(kinds[1:]) == {"triton_flash"}
    history = [ind(c) for c in m.seed()]
    for _ in range(5):
        out = m.propose(history, history, 8)
        assert all(c.genome["kind"] != gf.KIND for c in out)
        history += [ind(c) for c in out]


def test_no_gluon_without_gluon_even_on_sm90(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gf, "gluon_importable", lambda: False)
    assert not TemplateMutator(random.Random(0), AttentionParams(), H200).gluon


def test_no_gluon_for_fp32_or_odd_head_sizes(gluon_here: None) -> None:
    assert not TemplateMutator(random.Random(0), AttentionParams(dtype="fp32"), H200).gluon
    assert not TemplateMutator(random.Random(0), AttentionParams(head_dim=96), H200).gluon
    assert TemplateMutator(random.Random(0), AttentionParams(dtype="bf16", head_dim=128), H200).gluon


@pytest.mark.parametrize("params", [AttentionParams(), AttentionParams(head_dim=128, causal=True, dtype="bf16"),
                                    AttentionParams(batch=2, heads=16, seq_len=4096, head_dim=128)])
def test_generation_zero_is_shape_neutral(gluon_here: None, params: AttentionParams) -> None:
    m = TemplateMutator(random.Random(0), params, H200)
    seeds = m.seed()
    starters = m.starter_genomes()
    # the math path, the first Triton starter, the one Gluon kernel, the other Triton starters
    assert [c.genome["kind"] for c in seeds] == ["torch", "triton_flash", gf.KIND] + ["triton_flash"] * 3
    assert [FlashGenome.from_dict(c.genome) for c in (seeds[1], *seeds[3:])] == starters
    assert [(g.block_m, g.block_n) for g in starters] == [(64, 128), (128, 128), (64, 64), (16, 128)]
    assert gf.GluonGenome.from_dict(seeds[2].genome) == gf.DEFAULTS[0]
    assert seeds[2].language == "triton" and seeds[2].name.startswith("gluon-")


@pytest.mark.parametrize("params", [AttentionParams(causal=True), AttentionParams(head_dim=128),
                                    AttentionParams(head_dim=256, kv_heads=2, dtype="bf16")])
def test_every_proposed_genome_is_valid_and_families_stay_apart(gluon_here: None, params: AttentionParams) -> None:
    m = TemplateMutator(random.Random(11), params, H200)
    assert m.gluon
    history = [ind(c) for c in m.seed()]
    kinds: set[str] = set()
    for generation in range(8):
        out = m.propose(history[-8:], history, 8)
        assert out, generation
        for c in out:
            kind = c.genome["kind"]
            kinds.add(kind)
            if kind == gf.KIND:
                assert gf.fits(gf.GluonGenome.from_dict(c.genome), params.head_dim, 2, H200) is None
                assert c.name.startswith("gluon-") and "gl.warp_specialize" in c.source
            elif kind == "triton_flash":
                assert fits(FlashGenome.from_dict(c.genome), params.head_dim, 2, H200) is None
            if c.lineage["mutation"] == "crossover":
                parents = {i.candidate.hash: i.candidate.genome["kind"] for i in history}
                assert {parents[h] for h in c.lineage["parents"]} == {kind}
        history += [ind(c) for c in out]
    assert gf.KIND in kinds and "triton_flash" in kinds


def test_gluon_mutations_stay_in_the_family_unless_they_say_so(gluon_here: None) -> None:
    m = TemplateMutator(random.Random(3), AttentionParams(causal=True), H200)
    levels, flat = set(), []
    for _ in range(300):
        genome, what, level = m.mutate(gf.DEFAULTS[0].to_dict())
        levels.add(level)
        if genome["kind"] != gf.KIND:
            assert what.startswith(("switch family", "replace the kernel")), what
        if what.startswith("worker warps"):
            flat.append(genome)
    assert levels == {"algorithmic", "implementation", "hardware"}
    # The worker warps' exit is a gene of the warp-specialised kernel, flipped alone.
    flipped = {**gf.DEFAULTS[0].to_dict(), "flat_workers": not gf.DEFAULTS[0].flat_workers}
    assert flat and all(g == flipped for g in flat)
    pipe = gf.GluonGenome(warp_spec=False, block_m=64, consumer_warps=4).to_dict()
    assert not any(m.mutate(pipe)[1].startswith("worker warps") for _ in range(200))
    a, b = gf.GluonGenome().to_dict(), gf.DEFAULTS[1].to_dict()  # 128 and 64 rows
    children = [m.crossover(a, b) for _ in range(40)]
    assert {c["block_m"] for c in children} == {64, 128} and all(c["kind"] == gf.KIND for c in children)
    assert m.crossover(a, FlashGenome().to_dict()) == a  # no cross-family children


# The shape of Gluon's worker dispatch in Triton 3.6's PTX (read from a compiled two-consumer kernel, trimmed):
# workers enter the loop once from its preheader, wait at the CTA barrier, read their partition, branch by table;
# each partition's block ends with a branch back to the head (or falls through into it).
DISPATCH_PTX = """\
	@%p1 bra 	$L__BB0_20;
	bra.uni 	$L__BB0_1;
$L__BB0_20:                             // %default
	setmaxnreg.inc.sync.aligned.u32 	256;
	barrier.sync 	1;
	ret;
$L__BB0_1:                              // %.preheader.preheader
	or.b32 	%r4, %r29, 112;
	bra.uni 	$L__BB0_2;
$L__BB0_18:                             //   in Loop: Header=BB0_2 Depth=1
	setmaxnreg.dec.sync.aligned.u32 	24;
	barrier.sync 	1;
	setmaxnreg.inc.sync.aligned.u32 	120;
$L__BB0_2:                              // %.preheader
                                        // =>This Loop Header: Depth=1
	.loc	1 319 0                         // k.py:319
	setmaxnreg.dec.sync.aligned.u32 	120;
	barrier.sync 	1;
	ld.shared.b8 	%r30, [%r32+196908];
	setp.gt.u32 	%p2, %r30, 2;
	@%p2 bra 	$L__BB0_4;
// %bb.3:                               // %.preheader
                                        //   in Loop: Header=BB0_2 Depth=1
	$L_brx_0: .branchtargets
		$L__BB0_5,
		$L__BB0_18,
		$L__BB0_29;
	brx.idx 	%r30, $L_brx_0;
$L__BB0_5:                              //   in Loop: Header=BB0_2 Depth=1
	setmaxnreg.inc.sync.aligned.u32 	240;
	wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 {%f1}, %rd1, %rd2, 1, 1, 1, 0, 1;
$L__BB0_7:                              //   in Loop: Header=BB0_7 Depth=2
	@%p3 bra 	$L__BB0_7;
$L__BB0_13:                             // %._crit_edge
                                        //   in Loop: Header=BB0_2 Depth=1
	barrier.sync 	1;
	setmaxnreg.dec.sync.aligned.u32 	120;
	bra.uni 	$L__BB0_2;
$L__BB0_4:                              //   in Loop: Header=BB0_2 Depth=1
	barrier.sync 	1;
	bra.uni 	$L__BB0_2;
$L__BB0_29:                             // %common.ret
	.loc	1 0 0                           // k.py:0
	ret;
$L__BB0_20x:                            // %not.in.the.loop
	bra.uni 	$L__BB0_2;
"""


def _workers_leave() -> Any:
    """The template's PTX rewrite, taken out of a rendered kernel (the module imports Gluon, this test must not)."""
    return _template_functions(gf.DEFAULTS[0], "_workers_leave")["_workers_leave"]


def _template_functions(genome: gf.GluonGenome, *names: str) -> dict[str, Any]:
    """Functions of a rendered kernel's module, without importing it (the module imports Gluon)."""
    source = gf.render(genome, causal=False, head_dim=64)
    tree = ast.parse(source)
    keep = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.Assign)) and
            (getattr(n, "name", None) in names or any(getattr(t, "id", None) in ("PERSISTENT", "WARP_SPEC", "_SMS")
                                                       for t in getattr(n, "targets", [])))]
    namespace: dict[str, Any] = {"re": __import__("re"), "torch": torch}
    exec(compile(ast.Module(body=keep, type_ignores=[]), "<template>", "exec"), namespace)
    return namespace


@pytest.mark.parametrize("persistent", [False, True])
def test_a_persistent_launch_is_one_program_per_sm(persistent: bool) -> None:
    ns = _template_functions(gf.DEFAULTS[0].with_(persistent=persistent), "_programs", "_sm_count")
    ns["_SMS"][0] = 132  # an H200's SMs, as _sm_count caches them
    cuda = torch.device("cuda", 0)
    assert ns["_programs"](1024, cuda) == (132 if persistent else 1024)
    assert ns["_programs"](40, cuda) == 40  # fewer tiles than SMs: a program per tile
    assert ns["_programs"](1024, torch.device("cpu")) == 1024  # the CPU compile check launches nothing


def test_worker_warps_leave_instead_of_looping_back() -> None:
    leave = _workers_leave()
    out = leave(DISPATCH_PTX)
    lines = out.splitlines()
    # Every unconditional back edge from a block inside the loop: the head's register move and barrier, then
    # the table's exit block.
    leaving = ["\tsetmaxnreg.dec.sync.aligned.u32 \t120;", "\tbarrier.sync \t1;", "\tbra.uni \t$L__BB0_29;"]
    for label in ("$L__BB0_13:", "$L__BB0_4:"):
        block = lines[lines.index(next(x for x in lines if x.startswith(label))):]
        end = next(i for i, x in enumerate(block) if "bra.uni" in x)
        assert block[end - 2:end + 1] == leaving, (label, block[:end + 1])
    # The preheader still enters the loop, and a branch to the head from outside the loop is left alone; so
    # are the fall-through into the head, the inner loop's back edge and the head itself.
    assert "\tbra.uni \t$L__BB0_2;" in lines[lines.index(next(x for x in lines if x.startswith("$L__BB0_1:"))) + 2]
    assert out.count("bra.uni \t$L__BB0_2;") == 2 and out.count("bra.uni \t$L__BB0_29;") == 2
    assert "@%p3 bra \t$L__BB0_7;" in out and "brx.idx \t%r30, $L_brx_0;" in out
    assert len(lines) == len(DISPATCH_PTX.splitlines()) + 4
    # PTX of another shape comes back unchanged: no dispatch table, no exit block in it, or no barrier at the head.
    assert leave("\tret;\n") == "\tret;\n"
    no_exit = DISPATCH_PTX.replace("\t\t$L__BB0_29;", "\t\t$L__BB0_4;")
    assert leave(no_exit) == no_exit
    no_wait = DISPATCH_PTX.replace("\tbarrier.sync \t1;\n\tld.shared", "\tld.shared")
    assert leave(no_wait) == no_wait


def _triton_36() -> bool:
    try:
        import triton
    except ImportError:
        return False
    return tuple(int(x) for x in triton.__version__.split(".")[:2]) in gf.TRITON_VERSIONS


@pytest.mark.skipif(not _triton_36(), reason="the Gluon template is written for Triton 3.6")
def test_compiles_for_sm90_ahead_of_time(tmp_path: Path) -> None:
    """benchmarks/gluon_compile_check.py in a process of its own (it replaces Triton's launch and driver)."""
    out = tmp_path / "check.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gluon_compile_check.py"), "--out", str(out),
                          "--genomes", "default,ws-2x4-m64,pipe-1x4-m64,overlap-1x4-m64-n128,overlap-2x4-m64-kept,"
                          "serial-2x4-m64-n128-flat",
                          "--shapes", "seed-d64-fp16,d128-bf16-causal"],
                         capture_output=True, text=True, timeout=900, env=env, cwd=ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    records = json.loads(out.read_text())["records"]
    assert len(records) == 12 and all(r["status"] == "compiled" for r in records)
    assert all(r["target"] == "sm_90a" and r["wgmma"] > 0 for r in records)
    # No spill, except a few registers of FA3's overlapped tile at D=128 (240 of 240 registers): 20 bytes, stored
    # before the tile loop and reloaded once per tile (read in the SASS), never inside the key-block loop.
    for r in records:
        tight = r["genome"]["schedule"] != "serial" and r["genome"]["block_n"] == 128 and r["shape"] != "seed-d64-fp16"
        assert r["spill_store_bytes"] <= (32 if tight else 0), (r["label"], r["shape"], r["spill_store_bytes"])
    assert not any(r.get("wgmma_serialized") or r["stale_wgmma_descriptors"] for r in records)
    # The overlapped schedule keeps the whole softmax of a block under the previous block's P·V (ptxas put the
    # wait above the exponentials while it sat in the same basic block), the serial one has nothing there. Two
    # overlapped consumers keep theirs with the registers kept where the launch put them (no setmaxnreg), or with
    # the worker warps out of Gluon's dispatch loop (flat_workers: FA3's tile, 128-key blocks at 240 registers).
    for r in records:
        if r["genome"]["schedule"] != "serial":
            # per thread, a 64-row warpgroup: 64 x block_n scores over 128 threads
            assert r["exp2_under_mma"] and min(r["exp2_under_mma"]) >= r["genome"]["block_n"] // 2, r["exp2_under_mma"]
            assert r["label"] != "overlap-2x4-m64-kept" or r["setmaxnreg"] == [], r["setmaxnreg"]
        else:
            assert not any(r["exp2_under_mma"]), (r["label"], r["exp2_under_mma"])


# ------------------------------------------------------------------ on an sm_90 GPU
def _sm90() -> bool:
    return torch.cuda.is_available() and torch.cuda.get_device_capability()[0] == gf.CAPABILITY_MAJOR


GPU_GENOMES = {
    "default-persistent-ov-2x4-m64-n128-tma-store-flat": gf.DEFAULTS[0],
    "ws-2x4-m64-n128-tma-store": gf.DEFAULTS[0].with_(schedule="serial", flat_workers=False, persistent=False),
    "ws-1x8": gf.GluonGenome(),
    "ws-2x4-m64": gf.GluonGenome(block_m=64, consumers=2, consumer_warps=4),
    "ws-1x4-n128-s3": gf.GluonGenome(block_m=64, consumer_warps=4, block_n=128, num_stages=3),
    "ws-tma-store-mask-every": gf.GluonGenome(tma_store=True, causal_split=False),
    # The overlapped schedules: one consumer of one and of two warpgroups, two consumers, ping-pong.
    "overlap-1x4-m64-n128": gf.GluonGenome(block_m=64, consumer_warps=4, block_n=128, schedule="overlap"),
    "overlap-1x8-s1": gf.GluonGenome(num_stages=1, schedule="overlap"),
    "overlap-2x4-m64": gf.GluonGenome(block_m=64, consumers=2, consumer_warps=4, schedule="overlap"),
    "pingpong-2x4-m64-n128": gf.GluonGenome(block_m=64, consumers=2, consumer_warps=4, block_n=128,
                                            schedule="pingpong"),
    # Registers kept at the launch's (no setmaxnreg): two overlapped consumers whose wgmmas ptxas keeps in flight.
    "overlap-2x4-m64-kept": gf.GluonGenome(block_m=64, consumers=2, consumer_warps=4, schedule="overlap",
                                           realloc_regs=False),
    "pingpong-2x4-m64-kept": gf.GluonGenome(block_m=64, consumers=2, consumer_warps=4, schedule="pingpong",
                                            realloc_regs=False),
    # Worker warps that leave after their partition (the PTX's back edges rewritten): FA3's tile overlapped.
    "overlap-2x4-m64-n128-flat-regstore": gf.GluonGenome(block_m=64, consumers=2, consumer_warps=4, block_n=128,
                                                         schedule="overlap", flat_workers=True),
    "pingpong-2x4-m64-n128-flat": gf.GluonGenome(block_m=64, consumers=2, consumer_warps=4, block_n=128,
                                                 schedule="pingpong", flat_workers=True),
    "serial-2x4-m64-n128-flat": gf.DEFAULTS[0].with_(schedule="serial", persistent=False),
    # A persistent launch (one program per SM looping over tiles; generation 0's since 8f3ccdc's measurement):
    # ping-pong and serial of one warpgroup; generation 0's tile with a program per tile.
    "ov-2x4-m64-n128-tma-store-flat": gf.DEFAULTS[0].with_(persistent=False),
    "persistent-pp-2x4-m64-n128-flat": gf.DEFAULTS[0].with_(persistent=True, schedule="pingpong"),
    "persistent-ws-1x4-m64": gf.GluonGenome(block_m=64, consumer_warps=4, persistent=True),
    # The loop without warp specialisation: the search is not offered it (gluon_flash.PIPELINED_VERIFIED),
    # it runs here so that a GPU run says whether it still crashes.
    "pipe-1x4-m64": gf.GluonGenome(warp_spec=False, block_m=64, consumer_warps=4),
    "pipe-1x8-s3": gf.GluonGenome(warp_spec=False, num_stages=3),
}
# (batch, heads, kv_heads, n_q, n_k, head_dim, dtype, causal)
GPU_SHAPES = {
    "seed-b1h8s512d64-fp16": (1, 8, 8, 512, 512, 64, "float16", False),
    "b1h8s512d64-fp16-causal": (1, 8, 8, 512, 512, 64, "float16", True),
    "b1h4s1024d128-bf16-causal": (1, 4, 4, 1024, 1024, 128, "bfloat16", True),
    "b2h4s1000d64-fp16": (2, 4, 4, 1000, 1000, 64, "float16", False),
    "b1h4s1000d128-fp16-causal": (1, 4, 4, 1000, 1000, 128, "float16", True),
    "gqa-b2h8kv2s384d128-bf16": (2, 8, 2, 384, 384, 128, "bfloat16", False),
    "q-shorter-b1h4q200s1000d64-fp16-causal": (1, 4, 4, 200, 1000, 64, "float16", True),
}
WORKER = Path(__file__).with_name("gluon_gpu_worker.py")


@functools.cache
def gpu_cases(genome: str, workdir: Path) -> tuple[dict[str, dict[str, str]], str]:
    """Every GPU case of one genome, run by gluon_gpu_worker.py in a process of its own (a kernel's illegal
    memory access poisons its process's CUDA context: here it fails this genome's cases only, never the rest
    of the pytest process). Returns the records by shape, and how the process ended."""
    out = workdir / f"{genome}.jsonl"
    job = {"genome": GPU_GENOMES[genome].to_dict(), "shapes": GPU_SHAPES, "out": str(out)}
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])])
    try:
        run = subprocess.run([sys.executable, str(WORKER), json.dumps(job)], capture_output=True, text=True,
                             timeout=800, env=env, cwd=ROOT)
        ended = f"exit status {run.returncode}; stderr: {run.stderr[-3000:]}"
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
        ended = f"timed out after {exc.timeout} s; stderr: {stderr[-3000:]}"
    records = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    return {r["shape"]: r for r in records}, ended


@pytest.mark.gpu
@pytest.mark.skipif(not _sm90() or not gf.gluon_importable() or not _triton_36(),
                    reason="needs an sm_90 GPU and Triton 3.6 with Gluon")
@pytest.mark.parametrize("shape", list(GPU_SHAPES))
@pytest.mark.parametrize("genome", list(GPU_GENOMES))
def test_gpu_matches_the_float64_reference(genome: str, shape: str, tmp_path_factory: pytest.TempPathFactory) -> \
        None:
    """The kernel against a float64 reference (the checks are gluon_gpu_worker.py's), each genome's shapes in
    a process of its own."""
    records, ended = gpu_cases(genome, tmp_path_factory.getbasetemp())
    record = records.get(shape)
    if record is None:
        ran = ", ".join(f"{k}: {r['status']}" for k, r in records.items()) or "none"
        record = {"status": "failed",
                  "detail": f"{genome} never reached {shape} (shapes run: {ran}); its process ended: {ended}"}
    if record["status"] == "skipped":
        pytest.skip(record["detail"])
    if record["status"] != "ok" and not GPU_GENOMES[genome].warp_spec and not gf.PIPELINED_VERIFIED:
        # Known to crash (gluon_flash.PIPELINED_VERIFIED) and never proposed: reported, not failed.
        last = record["detail"].strip().splitlines()[-1:] or [""]
        pytest.xfail(f"the loop without warp specialisation, not offered to the search: {last[0][-500:]}")
    assert record["status"] == "ok", record["detail"]


@pytest.mark.gpu
@pytest.mark.skipif(not _sm90() or not gf.gluon_importable() or not _triton_36(),
                    reason="needs an sm_90 GPU and Triton 3.6 with Gluon")
def test_gpu_the_evaluator_judges_gluon_candidates_correct() -> None:
    """The judge's own path (sandboxed worker, precompile on CPU inputs, checks, graph timing) for two genomes
    the search proposes, on the seed shape and its causal twin."""
    from evoforge.evaluator import EvalConfig, Evaluator
    from evoforge.tasks import builtin_task
    from evoforge.timing import TimingConfig

    for task in ("attention", "attention:causal=1"):
        spec = builtin_task(task)
        params = AttentionParams(**{k: v for k, v in spec.params.items() if k in {f.name for f in
                                                                                    fields(AttentionParams)}})
        limits = HardwareLimits.for_device(torch.cuda.get_device_properties(0))
        m = TemplateMutator(random.Random(0), params, limits)
        assert m.gluon, "the family is offered on this GPU"
        cands = [m.build(g.to_dict(), {"mutation": "test", "level": "seed"})
                 for g in (gf.DEFAULTS[0], GPU_GENOMES["ws-2x4-m64"])]
        config = EvalConfig(device="cuda", timeout_s=300, timing=TimingConfig(budget_ms=10, rounds=2))
        report = Evaluator(spec, config).evaluate(cands, [])
        for c in cands:
            result = report.by_name()[c.name]
            assert result.status == "ok", (task, c.name, result.status, result.detail, result.logs)


def test_each_kernel_family_gets_an_even_share_of_the_mutations(gluon_here: None) -> None:
    """Generation 0 holds four Triton starters and one Gluon kernel: parents are drawn family first."""
    m = TemplateMutator(random.Random(5), AttentionParams(batch=2, heads=16, seq_len=4096, head_dim=128), H200)
    parents = [ind(c) for c in m.seed()]
    drawn = [m._pick(parents).candidate.genome["kind"] for _ in range(3000)]
    torch_share, gluon_share = drawn.count("torch") / 3000, drawn.count(gf.KIND) / 3000
    assert abs(torch_share - 1 / 6) < 0.03  # one PyTorch path of six parents: its own share
    assert abs(gluon_share - drawn.count("triton_flash") / 3000) < 0.05  # the kernels' share split evenly
