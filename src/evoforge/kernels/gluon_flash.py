"""A Hopper (sm_90) flash-attention forward in Triton's Gluon dialect, rendered from a genome.

The second kernel family of the template mutator (issue 20), beside the Triton one in
:mod:`evoforge.kernels.flash_attention`. Its kernel, ``gluon_flash.tmpl.py`` beside this file, is an
FA3-style forward written against Triton 3.6's Gluon (``triton.experimental.gluon``):

- Q, K and V reach shared memory by TMA (host-side ``TensorDescriptor``s of the contiguous tensors viewed
  as ``[rows, D]``), K and V through a ring of ``num_stages`` stages, each guarded by mbarriers;
- with ``warp_spec``, a one-warp producer partition (``gl.warp_specialize``) streams the ring and one or
  two consumer partitions (``consumers``, each its own ``block_m`` rows of Q, one or two warpgroups each:
  ``consumer_warps``) hand every stage back on an "empty" mbarrier; without it, the consumer warps issue
  the TMA loads themselves, ``num_stages`` blocks ahead;
- ``warpgroup_mma`` (async wgmma) computes Q·Kᵀ from shared memory and P·V with P in registers;
- ``schedule``: ``serial`` waits for each wgmma before the next step; ``overlap`` (FA3's intra-warpgroup
  overlap) issues block j's Q·Kᵀ together with block j-1's P·V and runs block j's softmax while that P·V is on
  the tensor cores; ``pingpong`` adds FA3's inter-warpgroup schedule to ``overlap``: the two consumers issue
  their wgmmas in turn (a pair of mbarriers), so that one's softmax runs under the other's MMAs;
- online softmax in exp2 with the scale folded in (one FMA per score), fp32 accumulation;
- causal: row tiles heaviest first, key blocks past the tile's diagonal never loaded, and with
  ``causal_split`` the mask only on the blocks that cross the diagonal (else on every block);
- ``realloc_regs``: the partitions trade registers by ``setmaxnreg`` (``producer_regs``, ``consumer_regs``), or
  every warp keeps the launch's (the PTX's ``setmaxnreg`` dropped at compile time): with two overlapped consumer
  partitions the ptxas of Triton 3.6 serialises every wgmma unless the registers stay put, or unless
- ``flat_workers``: the worker warps leave after their partition instead of looping back to Gluon's dispatch
  (a rewrite of the PTX's back edges; the kernel has one ``warp_specialize`` region), which is what the
  serialisation comes from: ptxas then keeps both consumers' wgmmas in flight at ``consumer_regs`` registers;
- the epilogue stores O from registers, or with ``tma_store`` through shared memory by TMA (where the
  query length divides ``block_m``; else the register store);
- ``persistent``: one program per SM, each taking every num_programs-th tile, its partitions' ring, Q barriers
  and ping-pong turns going on from tile to tile (else a program per tile; warp_spec only).

Genomes the GPU can't run are refused by :func:`fits` (shared memory, tile/warp combinations wgmma can't
lay out, head sizes that are not a power of two from 16 to 256, fp32 inputs, and anywhere but sm_90 with
Gluon importable from Triton 3.6): the mutator never proposes them. The loop without ``warp_spec`` is
offered since its H200 crash was fixed and re-run (:data:`PIPELINED_VERIFIED`). Gluon
kernels don't run in Triton's interpreter; on a CPU this family is only rendered (and compiled for sm_90 by
``benchmarks/gluon_compile_check.py``).
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from evoforge.kernels import holes
from evoforge.kernels.flash_attention import HardwareLimits

KIND = "gluon_flash"
BLOCKS_M = (64, 128)  # query rows per consumer
BLOCKS_N = (32, 64, 128, 256)  # keys per block (a wgmma N, and gl.arange wants a power of two)
STAGES = (1, 2, 3, 4)  # K/V ring depth
CONSUMERS = (1, 2)  # consumer partitions (warp_spec only)
CONSUMER_WARPS = (4, 8)  # one or two warpgroups per consumer
PRODUCER_REGS = (24, 32, 40)  # setmaxnreg of the producer warp's partition
CONSUMER_REGS = (216, 232, 240)  # setmaxnreg of the second consumer's partition
HEAD_DIMS = (16, 32, 64, 128, 256)
SCHEDULES = ("serial", "overlap", "pingpong")  # how a consumer orders its wgmmas and softmax (warp_spec only)
CAPABILITY_MAJOR = 9  # sm_90 only: wgmma is Hopper's (Blackwell has tcgen05 instead)
TRITON_VERSIONS = ((3, 6),)  # Gluon's API changes between releases: the versions this template is written for
# The loop without warp specialisation (warp_spec=False, "pipe") was kept out of the search while it crashed:
# on an H200 (Triton 3.6) genome pipe-1x4-m64 raised "CUDA error: an illegal memory access" on B1 H8 S512 D64
# fp16 causal. compute-sanitizer put it at the masked block's second Q·Kᵀ wgmma (an out-of-range shared
# address): ptxas left that copy's wgmma descriptors unwritten. The loop was restructured (one wgmma site per
# loop body, see _pipelined; benchmarks/wgmma_desc_check.py looks for stale descriptors in the SASS), and on an
# H200 (2026-11-30, benchmarks/results/gpu-tests-all-h200-3868854.txt) both pipe genomes of the GPU test are
# correct on all seven shapes, with memcheck clean (gluon-pipe-memcheck-after-fix-h200.txt). Set back to False
# to keep them out again: fits() then refuses them unless asked (allow_pipelined, for the tests and benchmarks).
PIPELINED_VERIFIED = True
# Ping-pong (two consumers taking turns to issue their wgmmas) is correct on an H200 (every GPU test). It was kept
# out of the search while the ptxas of Triton 3.6 serialised every wgmma of a kernel with two overlapped consumer
# partitions (C7512, "insufficient register resources"), and the turns then only added waits: 412 against 534
# TFLOP/s for the same tile without ping-pong on B2 H16 S4096 D128 fp16 (benchmarks/results/
# gluon-bench-schedules-h200.json). With the worker warps out of Gluon's dispatch loop (flat_workers) nothing is
# serialised, and on FA3's tile ping-pong is within 2.2% of overlap: faster on four rows of seven (up to 3.4%, the
# causal seed shape), slower on three (gluon-bench-flat-h200.json), so the search is offered it. Set False to
# keep it out (fits() still admits it with allow_pingpong).
PINGPONG_OFFERED = True
# A persistent launch (one program per SM looping over tiles): on an H200 (2026-12-01, 8f3ccdc) three persistent
# genomes are correct on the seven GPU shapes (benchmarks/results/gluon-gpu-tests-persistent-h200-8f3ccdc.txt),
# and generation 0's genome launched persistent is faster on every row of gluon-bench-persistent-h200.json.
# Set False to keep it out of the search (fits() still admits it with allow_persistent).
PERSISTENT_OFFERED = True
REGISTERS_PER_SM = 65536
MAX_REGS_PER_THREAD = 255
TEMPLATE = "gluon_flash.tmpl.py"


@dataclass(frozen=True)
class GluonGenome:
    """One point of the Gluon kernel's search space (hashable; JSON both ways)."""

    block_m: int = 128
    block_n: int = 64
    num_stages: int = 2
    warp_spec: bool = True
    consumers: int = 1
    consumer_warps: int = 8
    producer_regs: int = 24
    consumer_regs: int = 240
    causal_split: bool = True
    tma_store: bool = False
    schedule: str = "serial"
    realloc_regs: bool = True
    flat_workers: bool = False
    persistent: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"kind": KIND, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GluonGenome:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]

    def with_(self, **changes: Any) -> GluonGenome:
        return replace(self, **changes)


# Generation 0's Gluon genomes: the same for every shape (no per-shape tuning), the first that fits.
# FA3's shape of kernel for head sizes up to 128: a producer warp, two consumer warpgroups of 64 rows each,
# 128-key blocks, two stages, each consumer's softmax under its own in-flight P·V (overlap) with the worker warps
# out of Gluon's dispatch loop (flat_workers, without which ptxas serialises the overlapped wgmmas), O stored by
# TMA, one program per SM (persistent); then smaller ones for large heads. Measured on an H200, CUDA graphs in one
# process (benchmarks/results/):
# - overlapped with flat workers, against the serial tile it replaced (gluon-bench-flat-h200.json): 478 against
#   491 us on B2 H16 S4096 D128 fp16, causal 279 against 291, bf16 460 against 486, B1 H16 S16384 D128 bf16 3580
#   against 3790; slower on the seed shape (12.8 against 12.2 us) and on B4 H32 S2048 D64 (359 against 346);
# - persistent, against the same genome with a program per tile (gluon-bench-persistent-h200.json, 8f3ccdc):
#   463.8 against 477.7 us, causal 267.7 against 279.3, bf16 452.2 against 462.3, S=16384 bf16 3552 against 3555,
#   B4 H32 S2048 D64 331.6 against 355.6, seed 12.8 against 13.1.
# Before the serial tile: one partition of two warpgroups with 64-key blocks (GluonGenome()), slower on every row
# (gluon-bench-schedules-h200.json).
DEFAULTS = (
    GluonGenome(block_m=64, consumers=2, consumer_warps=4, block_n=128, tma_store=True, schedule="overlap",
                flat_workers=True, persistent=True),
    GluonGenome(block_m=64, consumer_warps=4),
    GluonGenome(block_m=64, block_n=32, consumer_warps=4, num_stages=1),
)


@functools.cache
def gluon_importable() -> bool:
    """Gluon's Hopper modules import here (Triton with ``triton.experimental.gluon``)."""
    try:
        from triton.experimental import gluon  # noqa: F401
        from triton.experimental.gluon.language.nvidia import hopper  # noqa: F401
        from triton.experimental.gluon.nvidia.hopper import TensorDescriptor  # noqa: F401
    except Exception:
        return False
    return True


def offered(limits: HardwareLimits) -> bool:
    """Whether this family is offered on this hardware: an sm_90 GPU (compute capability 9.x), Triton of a
    version the template is written for, with Gluon importable."""
    return (not limits.interpreter and limits.capability[0] == CAPABILITY_MAJOR
            and limits.triton_version in TRITON_VERSIONS and gluon_importable())


def warps_total(g: GluonGenome) -> int:
    """Warps a program launches: the consumers', plus a warpgroup for the producer warp (registers are
    allocated by warpgroup)."""
    return g.consumers * g.consumer_warps + (4 if g.warp_spec else 0)


def max_regs(g: GluonGenome) -> int:
    """The launch's maxnreg, so that every thread's registers fit the SM (0: Triton's default, where they
    fit anyway)."""
    threads = warps_total(g) * 32
    if threads * MAX_REGS_PER_THREAD <= REGISTERS_PER_SM:
        return 0
    return REGISTERS_PER_SM // threads // 8 * 8


def shared_bytes(g: GluonGenome, head_dim: int, elem_bytes: int = 2) -> int:
    """Shared memory a program allocates: Q per consumer (and O's tile for a TMA store), K and V per stage,
    the mbarriers (Q's, each stage's K and V ready and empty, ping-pong's two), and 1 KiB for the layout
    conversions' scratch."""
    tiles = g.consumers * g.block_m * head_dim * (2 if g.tma_store else 1) + g.num_stages * 2 * g.block_n * head_dim
    return elem_bytes * tiles + 8 * (g.consumers + 4 * g.num_stages + 2) + 1024


def fits(g: GluonGenome, head_dim: int, elem_bytes: int, limits: HardwareLimits, *, check_device: bool = True,
         allow_pipelined: bool = False, allow_pingpong: bool = False, allow_persistent: bool = False) -> str | None:
    """Why the genome can't run on this hardware and task, or None if it fits. ``check_device=False`` leaves
    out whether the family is offered here (for a compile check on a machine without the GPU);
    ``allow_pipelined=True`` admits the loop without warp specialisation, which the search is not offered
    (:data:`PIPELINED_VERIFIED`), and ``allow_pingpong=True`` the ping-pong schedule (:data:`PINGPONG_OFFERED`),
    and ``allow_persistent=True`` a persistent launch (:data:`PERSISTENT_OFFERED`), for the compile check, the GPU
    test and the benchmark."""
    if check_device and not offered(limits):
        return "the Gluon family needs an sm_90 GPU and Triton 3.6 with Gluon"
    if elem_bytes != 2:
        return "the Gluon kernel takes fp16/bf16 inputs"
    if head_dim not in HEAD_DIMS:
        return f"the Gluon kernel's head size must be one of {HEAD_DIMS}"
    if g.block_m not in BLOCKS_M or g.block_n not in BLOCKS_N or g.num_stages not in STAGES:
        return "tile or stage count outside the gene space"
    if g.consumers not in CONSUMERS or g.consumer_warps not in CONSUMER_WARPS:
        return "consumer count or warps outside the gene space"
    if g.producer_regs not in PRODUCER_REGS or g.consumer_regs not in CONSUMER_REGS:
        return "register budget outside the gene space"
    if g.schedule not in SCHEDULES:
        return f"schedule must be one of {SCHEDULES}"
    if g.consumers > 1 and not g.warp_spec:
        return "two consumers are partitions of a warp-specialised kernel"
    if g.schedule != "serial" and not g.warp_spec:
        return "the overlapped schedules are written for the consumer partitions (warp_spec)"
    if g.schedule == "pingpong" and g.consumers != 2:
        return "ping-pong takes two consumers"
    if g.schedule == "pingpong" and not (allow_pingpong or PINGPONG_OFFERED):
        return "ping-pong is not offered (gluon_flash.PINGPONG_OFFERED is off)"
    if g.persistent and not g.warp_spec:
        return "a persistent launch is the warp-specialised kernel's"
    if g.persistent and not (allow_persistent or PERSISTENT_OFFERED):
        return "a persistent launch is not offered (gluon_flash.PERSISTENT_OFFERED is off)"
    if not g.warp_spec and not (allow_pipelined or PIPELINED_VERIFIED):
        return "the loop without warp specialisation is switched off (gluon_flash.PIPELINED_VERIFIED)"
    if g.block_m < 16 * g.consumer_warps:
        return "wgmma needs 16 rows per warp: 8 warps need 128 rows"
    if g.consumers * g.consumer_warps > 8:
        return "at most two consumer warpgroups (registers)"
    smem = shared_bytes(g, head_dim, elem_bytes)
    if smem > limits.shared_memory_bytes:
        return f"needs {smem} B of shared memory, the GPU has {limits.shared_memory_bytes}"
    # Per consumer thread: the fp32 accumulator, the fp32 scores and P (half of that), plus ~32 for
    # addresses and row statistics. A rough bound: over it, ptxas spills (compiled for sm_90 with Triton 3.6,
    # one warpgroup of 128 rows at D=128 with 64-key blocks, an estimate of 248 with 24, spilled 16-72 bytes:
    # benchmarks/results/gluon-compile-sm90-cpu.json).
    # Overlapped, block j-1's P (in flight) and block j's scores, P and its operand copy are live together.
    rows = g.block_m // (g.consumer_warps // 4)  # rows per warpgroup
    scores = rows * g.block_n * (4 if g.schedule != "serial" else 3) // 2
    regs = (rows * head_dim + scores) // 128 + 32
    budget = max_regs(g) or MAX_REGS_PER_THREAD
    if g.warp_spec and g.realloc_regs:
        budget = min(MAX_REGS_PER_THREAD, g.consumer_regs if g.consumers > 1 else 248)
    if regs > budget:
        return f"needs about {regs} registers per consumer thread, the budget is {budget}"
    return None


def render(g: GluonGenome, *, causal: bool, head_dim: int) -> str:
    """ModelNew source for genome ``g`` on an attention task with this causality and head size."""
    return holes.fill(_template(), {
        "genome_json": json.dumps(g.to_dict(), sort_keys=True),
        "causal": bool(causal), "head_dim": head_dim, "block_m": g.block_m, "block_n": g.block_n,
        "num_stages": g.num_stages, "warp_spec": bool(g.warp_spec),
        "consumers": g.consumers if g.warp_spec else 1, "consumer_warps": g.consumer_warps,
        "producer_regs": g.producer_regs, "consumer_regs": g.consumer_regs,
        "causal_split": bool(g.causal_split and causal), "tma_store": bool(g.tma_store), "max_regs": max_regs(g),
        "overlap": g.schedule != "serial", "pingpong": g.schedule == "pingpong",
        "realloc_regs": bool(g.realloc_regs or not g.warp_spec),
        "flat_workers": bool(g.flat_workers and g.warp_spec),
        "persistent": bool(g.persistent and g.warp_spec),
    })


@functools.cache
def _template() -> str:
    return Path(__file__).with_name(TEMPLATE).read_text(encoding="utf-8")
