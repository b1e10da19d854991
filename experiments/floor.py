"""Where the seed shape's time goes: the best genome's kernel beside stripped copies of its structure,
timed with evoforge's clock (``timing.measure``: CUDA graphs, L2 flushed before every rep) in one process
with SDPA's backends.

Each stripped kernel has the template's grid (one program per BLOCK_M query rows of a head), its key
loop (BLOCK_N keys per step, ``tl.range`` with the same stages) and its warps, and does less:

- ``launch``: programs that do nothing (the output is allocated, never written): the launch and the
  graph's gap between the flush and the kernel;
- ``copy``: each program loads its Q tile and stores it as O: one read and one write of a tile;
- ``stream``: the attention kernel's loads (Q, then every K and V block of the head) folded into the
  output with adds, no matrix product, no softmax: the memory traffic and its latency chain;
- ``mma``: the same loads and both matrix products (S = Q K^T, O += S V, S rounded to fp16), no softmax:
  what the tensor cores add;
- ``kernel``: the template's kernel for the genome (full online softmax).

The differences between rows are the cost of each stage on the critical path at this shape, which is
what any faster kernel has to cut. Only ``kernel`` computes attention; the others are checked for
nothing but running.

Usage: python experiments/floor.py [--genome JSON] [--out results.json]   (CUDA only)
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import torch
import triton
import triton.language as tl
from evaluate_sources import load_model, sdpa_paths

from evoforge.kernels.flash_attention import FlashGenome, render

BEST = FlashGenome(block_m=64, block_n=128, num_stages=3, k_layout="trans", scale_fma=True)  # evolve-bytecode-h100


@triton.jit
def _stripped(Q, K, V, Out, s_h, s_m, n_k, WORK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
              D: tl.constexpr, NUM_STAGES: tl.constexpr):
    # WORK: 0 nothing, 1 copy Q to O, 2 stream K and V through adds, 3 both matrix products, no softmax.
    if WORK > 0:
        head = tl.program_id(1)
        offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, D)
        q = tl.load(Q + head * s_h + offs_m[:, None] * s_m + offs_d[None, :])
        acc = tl.zeros([BLOCK_M, D], tl.float32)
        if WORK > 1:
            for start_n in tl.range(0, n_k, BLOCK_N, num_stages=NUM_STAGES):
                kv = head * s_h + (start_n + offs_n)[:, None] * s_m + offs_d[None, :]
                k = tl.load(K + kv)
                v = tl.load(V + kv)
                if WORK == 2:
                    acc += tl.sum(k.to(tl.float32) + v.to(tl.float32), 0)[None, :]
                else:
                    s = tl.dot(q, tl.trans(k))
                    acc = tl.dot(s.to(v.dtype), v, acc)
        if WORK < 3:
            acc += q.to(tl.float32)
        tl.store(Out + head * s_h + offs_m[:, None] * s_m + offs_d[None, :], acc.to(Out.dtype.element_ty))


STRIPPED = {"launch": 0, "copy": 1, "stream": 2, "mma": 3}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--genome", type=json.loads, default=None, help="FlashGenome fields as JSON")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("floor: needs a CUDA GPU", file=sys.stderr)
        return 2
    from evoforge.timing import TimingConfig, measure

    g = FlashGenome.from_dict(args.genome) if args.genome else BEST
    batch, heads, n, d = 1, 8, 512, 64  # the seed shape
    gen = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(batch, heads, n, d, device="cuda", dtype=torch.float32, generator=gen).half()
               for _ in range(3))
    kernel = load_model(render(g, causal=False, head_dim=d), "floor_kernel")
    grid = (n // g.block_m, batch * heads)

    def stripped(work: int):
        def run() -> torch.Tensor:
            out = torch.empty_like(q)
            _stripped[grid](q, k, v, out, q.stride(1), q.stride(2), n, work, g.block_m, g.block_n, d, g.num_stages,
                            num_warps=g.num_warps, num_stages=g.num_stages)
            return out
        return run

    fns = {name: stripped(work) for name, work in STRIPPED.items()}
    fns["kernel"] = lambda: kernel(q, k, v)
    ref = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float())
    err = (kernel(q, k, v).float() - ref).abs().max().item()
    fns.update(sdpa_paths(q, k, v))
    for fn in fns.values():  # compile everything before the clock starts
        fn()
    torch.cuda.synchronize()
    timed = measure(fns, device="cuda", modes=("graph", "eager"), config=TimingConfig(budget_ms=300.0))
    rows = {}
    for name, modes in timed.items():
        rows[name] = {mode: (s if isinstance(s, str) else {"median_us": s.median_us, "iqr_us": s.iqr_us})
                      for mode, s in modes.items()}
        shown = " ".join(f"{m}={r if isinstance(r, str) else round(r['median_us'], 2)}" for m, r in rows[name].items())
        print(f"{name:13} {shown}")
    print(f"kernel max abs err vs fp32 SDPA: {err:.2e}")
    record = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": {"name": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
                   "cuda": torch.version.cuda},
        "shape": {"batch": batch, "heads": heads, "seq_len": n, "head_dim": d, "dtype": "fp16"},
        "genome": g.to_dict(), "kernel_max_abs_err": err, "rows": rows,
    }
    if args.out:
        args.out.write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
