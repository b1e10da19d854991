"""Kernel ideas outside the genome, tried as edits of a rendered genome's source and timed through the
evaluator (isolated worker, correctness checks, eager and graph timing) beside SDPA's backends.

An idea that wins here becomes a genome field (and so a mutation operator); one that loses stays
recorded here with its numbers. Sets of edits:

- ``loop``: the key loop unrolled by two inside the pipeliner (``loop_unroll_factor=2``), without
  loop-invariant code motion, with the task's key count as constant bounds (the pipeliner knows the
  trip count, as in Triton's tutorial, where N_CTX is a constexpr), or, up to 512 keys, fully unrolled
  with ``tl.static_range`` (which gives up the software pipeline). Non-causal tasks only.
- ``causal``: one pipelined loop whose mask is applied only to blocks that cross a row's diagonal
  (a runtime branch, uniform per program), against masking every block and against the loop split in
  two (``causal_split``, two pipelines). It won on the causal seed shape and is now the genome's
  ``mask_diagonal``; the set renders it from the genome (the recorded runs carry their edited sources).
- ``rowsum``: half-precision exp2 with the row sum in half precision or on the tensor cores
  (``tl.dot(p, ones)``), and the fp32 path with the row sum on the tensor cores: fewer MUFU and
  conversion instructions per score, if the softmax were bound by them.

- ``exp``: part of the exp2s on the FMA units (a cubic for 2**f on [-0.5, 0.5], relative error 7.5e-5,
  and the exponent added to the bits, as FlashAttention-4 does), so the MUFU unit computes fewer:
  the odd key columns (the tile split in two by ``tl.split``), or every column.

Usage: python experiments/source_variants.py --set loop|causal|rowsum|exp [--task attention] [--genome JSON]
       [--repeats 2] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from evaluate_sources import print_rows, time_sources

from evoforge.kernels.flash_attention import FlashGenome, render
from evoforge.resolve import resolve_task
from evoforge.tasks import attention_params

LOOP = "tl.range(lo, hi, BLOCK_N, num_stages=NUM_STAGES)"
UNROLL2 = "tl.range(lo, hi, BLOCK_N, num_stages=NUM_STAGES, loop_unroll_factor=2)"
HALF_SUM = "            p_sum = tl.sum(p.to(tl.float32), 1)"
F32_SUM = "            p = tl.math.exp2(s)\n            p_sum = tl.sum(p, 1)"
DOT_SUM = "tl.max(tl.dot(p.to(v_base.dtype.element_ty), tl.full([BLOCK_N, 16], 1.0, v_base.dtype.element_ty)), 1)"
EXP_F32 = "            p = tl.math.exp2(s)\n"
POLY = '''@triton.jit
def _exp2_poly(x):
    # 2**x on the FMA units: x = j + f with j an integer (rounded by the 1.5 * 2**23 trick) and f in
    # [-0.5, 0.5]; a cubic for 2**f; j added to its exponent bits. x below -126 gives about 2**-126.
    x = tl.maximum(x, -126.0)
    j_plus = x + 12582912.0
    f = x - (j_plus - 12582912.0)
    poly = ((0.0551716648042202 * f + 0.2426111251115799) * f + 0.6932609677314758) * f + 0.9999280571937561
    bits = poly.to(tl.int32, bitcast=True) + (j_plus.to(tl.int32, bitcast=True) << 23)
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _attn_inner('''
SPLIT_EXP = ("            halves = tl.reshape(s, (s.shape[0], BLOCK_N // 2, 2))\n"
             "            even, odd = tl.split(halves)\n"
             "            p = tl.reshape(tl.join(tl.math.exp2(even), _exp2_poly(odd)), (s.shape[0], BLOCK_N))\n")
SEED = FlashGenome(block_m=64, block_n=128, num_stages=3, loop="tl.range", scale_fma=True)


def variants(which: str, g: FlashGenome, causal: bool, head_dim: int, n_keys: int = 512) -> dict[str, str]:
    out: dict[str, str] = {}

    def add(name: str, genome: FlashGenome, *edits: tuple[str, str]) -> None:
        src = render(genome, causal=causal, head_dim=head_dim)
        for old, new in edits:
            if old not in src:
                raise SystemExit(f"source_variants: {name}: the rendered kernel has no {old!r}")
            src = src.replace(old, new)
        out[name] = src

    # The causal set's base masks every block, whatever the given genome does.
    base = g.with_(causal_split=False, mask_diagonal=False) if which == "causal" else g
    add("base", base)
    if which == "loop":
        add("stages+1", g.with_(num_stages=g.num_stages + 1))
        add("unroll2", g, (LOOP, UNROLL2))
        add("nolicm", g, (LOOP, "tl.range(lo, hi, BLOCK_N, num_stages=NUM_STAGES, disable_licm=True)"))
        const = f"tl.range(0, {n_keys}, BLOCK_N, num_stages=NUM_STAGES)"
        add("const-bounds", g, (LOOP, const))
        add("const-bounds-stages+1", g.with_(num_stages=g.num_stages + 1), (LOOP, const))
        if n_keys <= 512:
            add(f"static{n_keys}", g, (LOOP, f"tl.static_range(0, {n_keys}, BLOCK_N)"))
            add(f"static{n_keys}-bn64", g.with_(block_n=64), (LOOP, f"tl.static_range(0, {n_keys}, BLOCK_N)"))
    elif which == "exp":
        inner = ("@triton.jit\ndef _attn_inner(", POLY)
        add("poly-odd-columns", g, inner, (EXP_F32, SPLIT_EXP))
        add("poly-all", g, inner, (EXP_F32, "            p = _exp2_poly(s)\n"))
        add("split-only", g, (EXP_F32, SPLIT_EXP.replace("_exp2_poly(odd)", "tl.math.exp2(odd)")))
    elif which == "causal":
        add("split", base.with_(causal_split=True))
        add("diagonal-only", base.with_(mask_diagonal=True))
        add("diagonal-only-s4", base.with_(mask_diagonal=True, num_stages=g.num_stages + 1))
    else:
        add("half", g.with_(exp_half=True))
        add("half-sum16", g.with_(exp_half=True), (HALF_SUM, "            p_sum = tl.sum(p, 1).to(tl.float32)"))
        add("half-dotsum", g.with_(exp_half=True), (HALF_SUM, "            p_sum = " + DOT_SUM))
        add("f32-dotsum", g, (F32_SUM, "            p = tl.math.exp2(s)\n            p_sum = " + DOT_SUM))
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--set", choices=("loop", "causal", "rowsum", "exp"), required=True)
    parser.add_argument("--task", default="attention")
    parser.add_argument("--genome", default=json.dumps(SEED.to_dict()), help="the genome to edit (JSON)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    spec = resolve_task(args.task)
    params = attention_params(spec)
    if params is None:
        print("source_variants: the task is not an attention task", file=sys.stderr)
        return 2
    if args.set == "loop" and params.causal:
        print("source_variants: the loop set's constant bounds cover every key: non-causal tasks only",
              file=sys.stderr)
        return 2
    if args.set == "causal" and not params.causal:
        print("source_variants: the causal set needs a causal task", file=sys.stderr)
        return 2
    genome = FlashGenome.from_dict(json.loads(args.genome))
    if args.set == "loop" and genome.split_kv > 1:
        print("source_variants: the loop set's constant bounds cover every key: split_kv 1 only", file=sys.stderr)
        return 2
    sources = variants(args.set, genome, params.causal, params.head_dim, params.seq_len)
    if not torch.cuda.is_available():
        print("source_variants: needs a CUDA device", file=sys.stderr)
        return 2
    env, rows = time_sources(spec, sources, args.repeats)
    print_rows(rows)
    if args.out:
        args.out.write_text(json.dumps({"env": env, "task": spec.name, "set": args.set, "genome": genome.to_dict(),
                                        "sources": sources, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
