"""A parameterised Triton flash-attention forward kernel, rendered from a genome.

The genome is the template mutator's search space. Every genome renders a complete KernelBench
candidate (``class ModelNew``) with: online softmax, fp32 accumulation, optional exp2 with the scale
folded in (applied to each score, to Q once, or to the row maxima with one FMA per score), GQA (each
program reads its K/V head), causal masking with block skipping and, optionally, the causal loop
split into unmasked full blocks and masked diagonal blocks (two loops), or one loop that masks only the
blocks crossing the diagonal (``mask_diagonal``: a branch per block, one software pipeline). With
``split_kv`` > 1 the keys are split across that many programs per (row block, head), for short or
few-head problems that would leave most of the GPU idle, and their partial results are combined
either by a second kernel or, with
``fused_combine``, by whichever program of a row block finishes last (an atomic counter per row block
tells it; one launch instead of two). With ``pack_gqa``, a program's rows are the query heads of one
K/V head's group (times the query positions), so a grouped-query or decode problem loads each K/V
block once per group instead of once per query head. On Hopper, the kernel may be launched as a
programmatic dependent launch (``pdl``): it can be scheduled while the kernel before it in the stream
drains, and waits (``griddepcontrol.wait``) for that kernel's memory before its first load or store. With
``persistent`` = k, k programs per SM each walk the tiles (row block, head) with a stride of the grid,
column by column so that the tiles in flight share a few heads' K/V in L2, and causal row blocks
heaviest first. K and V
may be read through device-side TMA tensor descriptors (``tma``); warp specialisation of the key loop
(``warp_spec``) renders too but is offered only where it compiles (``HardwareLimits``).

With fp32 inputs the kernel's dot products are IEEE fp32 (``input_precision="ieee"``): Triton's default
for fp32 is TF32, outside fp32's tolerance.

This module holds the genome, the hardware filter (``fits``) and ``render()``; the kernel's source is
``flash_attention.tmpl.py`` beside it, Python with holes and blocks (``evoforge.kernels.holes``) that
``render()`` fills from the genome and the task, and that ruff lints as the kernel it is.

The call path is fixed at render time: no autotuning. After the first call for an input layout,
``ModelNew`` calls the compiled kernel's launcher directly with prepared arguments, so a call costs
an output allocation and one launch (see ``ModelNew``'s docstring).
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from evoforge.kernels import holes

BLOCKS = (16, 32, 64, 128)  # BLOCK_M
BLOCKS_N = (16, 32, 64, 128, 256)  # BLOCK_N: 256 halves the serial key loop of short sequences
WARPS = (1, 2, 4, 8)
STAGES = (1, 2, 3, 4, 5)
K_LAYOUTS = ("direct", "trans")  # load K as [D, N] through strides, or [N, D] then tl.trans
LOOPS = ("range", "tl.range")  # plain Python range, or tl.range(num_stages=...) software pipelining
SPLITS = (1, 2, 4, 8)  # split-KV: programs per (row block, head), combined by a second kernel
PERSISTENT = (0, 1, 2, 4)  # persistent programs per SM (0: one program per tile, the hardware schedules them)
HOPPER = (9, 0)  # compute capability from which device-side TMA descriptors are offered
# Warp specialisation of this kernel's loop: on an H100 with Triton 3.6 every genome tried failed to
# compile ("PassManager::run failed", benchmarks/results/genomes-h100.json), so it is offered from
# Blackwell on, where Triton's own attention tutorial uses it.
WARP_SPEC = (10, 0)
TRITON_FOR_HOPPER = (3, 4)  # tl.make_tensor_descriptor and tl.range(warp_specialize=...) are stable from here
TEMPLATE = "flash_attention.tmpl.py"  # the kernel's source, beside this file, with the holes render() fills


@dataclass(frozen=True)
class FlashGenome:
    """One point of the Triton kernel's search space (hashable; JSON both ways)."""

    block_m: int = 64
    block_n: int = 64
    num_warps: int = 4
    num_stages: int = 2
    exp2: bool = True
    k_layout: str = "direct"
    loop: str = "range"
    causal_split: bool = False
    split_kv: int = 1
    prescale_q: bool = False  # fold the softmax scale into Q once (rounded to Q's dtype) instead of per score
    tma: bool = False  # load K and V through device-side TMA tensor descriptors (Hopper)
    warp_spec: bool = False  # tl.range(warp_specialize=True): producer/consumer warps (Hopper, tl.range only)
    fused_combine: bool = False  # split-KV: the last program of a row block combines the partials (no 2nd launch)
    pack_gqa: bool = False  # rows = (query head of a K/V group, position): one K/V load serves the whole group
    scale_fma: bool = False  # scale the row max, fold the scores' scale into exp's argument (one FMA per score)
    exp_half: bool = False  # exp2 in fp16/bf16, two per instruction (P is rounded to that type anyway)
    pdl: bool = False  # programmatic dependent launch (Hopper): overlap the launch with the previous kernel's tail
    mask_diagonal: bool = False  # causal, one loop: mask only the blocks that cross the diagonal (vs every block)
    persistent: int = 0  # programs per SM that walk the tiles, heaviest causal row blocks first (0: one per tile)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "triton_flash", **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FlashGenome:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]

    def with_(self, **changes: Any) -> FlashGenome:
        return replace(self, **changes)


@dataclass(frozen=True)
class HardwareLimits:
    """What a genome must fit in. ``interpreter`` means Triton's CPU interpreter (small blocks keep
    it fast; warps and stages mean nothing there)."""

    shared_memory_bytes: int = 227 * 1024
    max_registers_per_thread: int = 255
    interpreter: bool = False
    capability: tuple[int, int] = (0, 0)  # the GPU's compute capability; (0, 0) = unknown: no Hopper options
    triton_version: tuple[int, int] = (0, 0)
    sm_count: int = 0  # streaming multiprocessors; 0 = unknown (generation 0 then splits no keys)

    @classmethod
    def for_device(cls, props: Any | None) -> HardwareLimits:
        if props is None:
            return cls(interpreter=True, triton_version=installed_triton())
        smem = int(getattr(props, "shared_memory_per_block_optin", 0) or 99 * 1024)
        capability = (int(getattr(props, "major", 0)), int(getattr(props, "minor", 0)))
        return cls(shared_memory_bytes=smem, capability=capability, triton_version=installed_triton(),
                   sm_count=int(getattr(props, "multi_processor_count", 0) or 0))

    @property
    def hopper(self) -> bool:
        """Device-side TMA descriptors compile and run here."""
        return not self.interpreter and self.capability >= HOPPER and self.triton_version >= TRITON_FOR_HOPPER

    @property
    def warp_spec(self) -> bool:
        """Warp specialisation of the pipelined key loop compiles here (see WARP_SPEC)."""
        return self.hopper and self.capability >= WARP_SPEC


def installed_triton() -> tuple[int, int]:
    """(major, minor) of the installed Triton, (0, 0) when it is missing or unreadable."""
    try:
        import triton
    except ImportError:
        return (0, 0)
    try:
        major, minor = triton.__version__.split(".")[:2]
        return (int(major), int(minor))
    except ValueError:
        return (0, 0)


def splits_to_fill(programs: int, sm_count: int) -> int:
    """Split-KV count for a launch of ``programs`` tiles on ``sm_count`` SMs, by FlashAttention's heuristic:
    each split count's wave efficiency (waves / whole waves), and the smallest count within 85% of the best.
    1 where the tiles fill the GPU already or the SM count is unknown. On the H200's decode row (64 tiles, 132
    SMs) it picks 2: measured 72.7 us against 85.1 without a split (results/bandwidth-decode-bf16-h200.json)."""
    if sm_count <= 0 or programs >= sm_count:
        return 1
    efficiency = {s: programs * s / sm_count / -(-programs * s // sm_count) for s in SPLITS}
    best = max(efficiency.values())
    return min(s for s in SPLITS if efficiency[s] >= 0.85 * best)


def next_pow2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def fits(g: FlashGenome, head_dim: int, elem_bytes: int, limits: HardwareLimits) -> str | None:
    """Why the genome can't run well on this hardware, or None if it fits."""
    d = next_pow2(head_dim)
    if g.fused_combine and g.split_kv == 1:
        return "the fused combine is a split-KV option"
    if g.exp_half and not g.exp2:
        return "half-precision exp is an exp2"
    if g.exp_half and (elem_bytes > 2 or limits.interpreter or limits.capability < HOPPER):
        return "half-precision exp2 needs fp16/bf16 inputs on a Hopper GPU (sm_90+)"
    if g.scale_fma and g.prescale_q:
        return "the scale is folded into Q already"
    if g.mask_diagonal and g.causal_split:
        return "the split causal loop masks only its diagonal blocks already"
    if g.persistent and g.split_kv > 1:
        return "persistent programs walk whole row blocks (no split-KV)"
    if g.persistent not in PERSISTENT:
        return f"persistent programs per SM must be one of {PERSISTENT}"
    if g.warp_spec and g.loop != "tl.range":
        return "warp specialisation needs the tl.range loop"
    if g.tma and not limits.hopper:
        return "TMA descriptors need a Hopper GPU (sm_90+) and Triton >= 3.4"
    if g.pdl and not limits.hopper:
        return "programmatic dependent launch needs a Hopper GPU (sm_90+) and Triton >= 3.4"
    if g.warp_spec and not limits.warp_spec:
        return "warp specialisation of this kernel needs sm_100+ (it fails to compile on sm_90 with Triton 3.6)"
    if g.tma and d != head_dim:
        return "TMA descriptors need a power-of-two head size (the block is the whole row)"
    if limits.interpreter:
        return None if g.block_m <= 64 and g.block_n <= 64 else "blocks over 64 are slow in the interpreter"
    # Q tile once, K and V tiles per pipeline stage.
    smem = elem_bytes * (g.block_m * d + g.num_stages * 2 * g.block_n * d)
    if smem > limits.shared_memory_bytes:
        return f"needs {smem} B of shared memory, the GPU has {limits.shared_memory_bytes}"
    threads = g.num_warps * 32
    # fp32 accumulator + scores tile per thread, a rough lower bound on registers.
    regs = (g.block_m * d + g.block_m * g.block_n) / threads
    if regs > limits.max_registers_per_thread:
        return f"needs about {regs:.0f} registers per thread for its tiles"
    if g.block_m * g.block_n < 16 * 16 * g.num_warps // 2:
        return "too many warps for such small tiles"
    return None


def render(g: FlashGenome, *, causal: bool, head_dim: int) -> str:
    """ModelNew source for genome ``g`` on an attention task with this causality and head size."""
    if g.loop == "tl.range":
        extra = ", warp_specialize=True" if g.warp_spec else ""
        loop = f"tl.range(lo, hi, BLOCK_N, num_stages=NUM_STAGES{extra})"
    else:
        loop = "range(lo, hi, BLOCK_N)"
    # One program per tile renders the tile's code as the kernel itself (measured: the same code behind a
    # function call ran 3-4% slower on 64x64 tiles with Triton 3.6, benchmarks/results/template-ab-*).
    persistent = g.persistent if g.split_kv == 1 else 0
    return holes.fill(_template(), {
        "genome_json": json.dumps(g.to_dict(), sort_keys=True),
        "causal": bool(causal), "head_dim": head_dim, "block_m": g.block_m, "block_n": g.block_n,
        "block_d": max(next_pow2(head_dim), 16), "num_warps": g.num_warps, "num_stages": g.num_stages,
        "exp2": bool(g.exp2), "loop": loop, "causal_split": bool(g.causal_split and causal),
        "mask_diagonal": bool(g.mask_diagonal and causal and not g.causal_split),
        "k_trans": g.k_layout == "trans", "split_kv": g.split_kv, "tma": bool(g.tma),
        "scale_mode": 1 if g.prescale_q else 2 if g.scale_fma else 0, "exp_half": bool(g.exp_half and g.exp2),
        "fused_combine": bool(g.fused_combine and g.split_kv > 1), "pack_gqa": bool(g.pack_gqa), "pdl": bool(g.pdl),
        "persistent": persistent, "tile": "_attn_tile" if persistent else "_attn_fwd",
        "tile_params": "start_m, bh, split" if persistent else "",
    })


@functools.cache
def _template() -> str:
    # Beside this file rather than through the package: a copy of an older version of this module
    # (experiments/template_ab.py imports one from a file) then reads its own template, or fails.
    return Path(__file__).with_name(TEMPLATE).read_text(encoding="utf-8")
