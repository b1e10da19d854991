"""How fast this GPU can read the decode row's K and V at all, beside the kernels that must read them.

Issue 5's decode row (B=8, 32 query heads, 8 K/V heads, one query, KV length 8192, D=128, fp16) moves
268 MB of K and V per call and does almost no arithmetic, so its time is bounded below by the time to
read those bytes from HBM. This script times, with evoforge's clock (``timing.measure``: CUDA graphs, L2
flushed before every rep), in one process:

- ``read-*``: a Triton kernel that only reads K and V (each program sums a contiguous chunk, one float
  out), over a few grid and block sizes: the best of them is the read floor on this GPU;
- ``kernel``: the template's generation-0 decode genome (GQA packed, 16x128), or with ``--genomes`` each
  genome of a JSON list (FlashGenome fields) as ``kernel-<i>``, each checked against an fp32 SDPA;
- SDPA's flash, cuDNN and default paths (``enable_gqa=True``).

It prints each row's time and effective bandwidth (K and V bytes over the time), and the time a kernel
would need for 1.2x over the fastest SDPA path, against the read floor.

Usage: python experiments/bandwidth.py [--dtype fp16|bf16] [--genomes FILE.json] [--out results.json]
(CUDA only)
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

DECODE = FlashGenome(block_m=16, block_n=128, num_stages=3, k_layout="trans", loop="tl.range", pack_gqa=True)
READS = [(1024, 8, 4), (2048, 16, 4), (4096, 8, 8), (8192, 4, 8), (8192, 8, 8)]  # (BLOCK, ITERS, warps)


@triton.jit
def _read(X, Partial, BLOCK: tl.constexpr, ITERS: tl.constexpr):
    # Program p sums elements [p * BLOCK * ITERS, (p + 1) * BLOCK * ITERS) of X (the grid covers X exactly).
    base = tl.program_id(0).to(tl.int64) * BLOCK * ITERS
    offs = tl.arange(0, BLOCK)
    acc = tl.zeros([BLOCK], tl.float32)
    for i in range(ITERS):
        acc += tl.load(X + base + i * BLOCK + offs).to(tl.float32)
    tl.store(Partial + tl.program_id(0), tl.sum(acc, 0))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path)
    parser.add_argument("--dtype", choices=("fp16", "bf16"), default="fp16")
    parser.add_argument("--genomes", type=Path, help="a JSON list of genomes to time (default: generation 0's)")
    args = parser.parse_args()
    genomes = ([FlashGenome.from_dict(d) for d in json.loads(args.genomes.read_text())] if args.genomes
               else [DECODE])
    if not torch.cuda.is_available():
        print("bandwidth: needs a CUDA GPU", file=sys.stderr)
        return 2
    from evoforge.timing import TimingConfig, measure

    batch, heads, kv_heads, n_k, d = 8, 32, 8, 8192, 128
    gen = torch.Generator(device="cuda").manual_seed(0)
    dtype = torch.float16 if args.dtype == "fp16" else torch.bfloat16
    q = torch.randn(batch, heads, 1, d, device="cuda", generator=gen).to(dtype)
    k, v = (torch.randn(batch, kv_heads, n_k, d, device="cuda", generator=gen).to(dtype) for _ in range(2))
    kv_bytes = 2 * k.numel() * k.element_size()
    fns = {}
    for block, iters, warps in READS:
        chunk = block * iters
        assert k.numel() % chunk == 0
        partial = torch.empty(2 * (k.numel() // chunk), device="cuda")

        def read(block=block, iters=iters, warps=warps, chunk=chunk, partial=partial) -> torch.Tensor:
            half = k.numel() // chunk
            _read[(half,)](k, partial, block, iters, num_warps=warps)
            _read[(half,)](v, partial[half:], block, iters, num_warps=warps)
            return partial
        fns[f"read-{block}x{iters}-w{warps}"] = read
    ref = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float(), enable_gqa=True)
    errs: dict[str, float | str] = {}
    for i, genome in enumerate(genomes):
        name = "kernel" if len(genomes) == 1 else f"kernel-{i}"
        try:
            kernel = load_model(render(genome, causal=False, head_dim=d), f"decode_kernel_{i}")
            errs[name] = (kernel(q, k, v).float() - ref).abs().max().item()
        except Exception as exc:  # a genome that fails to compile is recorded, the rest still run
            errs[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            continue
        fns[name] = lambda kernel=kernel: kernel(q, k, v)
    fns.update(sdpa_paths(q, k, v, enable_gqa=True))
    usable = {}
    for name, fn in fns.items():  # compile everything before the clock starts; drop paths this build lacks
        try:
            fn()
            usable[name] = fn
        except RuntimeError as exc:
            print(f"{name}: not available ({str(exc).splitlines()[0][:120]})")
    torch.cuda.synchronize()
    timed = measure(usable, device="cuda", modes=("graph",), config=TimingConfig(budget_ms=400.0))
    rows = {}
    for name, modes in timed.items():
        s = modes["graph"]
        if isinstance(s, str):
            rows[name] = {"error": s}
            print(f"{name:20} {s}")
            continue
        rows[name] = {"graph_us": s.median_us, "iqr_us": s.iqr_us, "tb_per_s": kv_bytes / s.median_us / 1e6}
        print(f"{name:20} {s.median_us:8.1f} us  {rows[name]['tb_per_s']:.2f} TB/s")
    reads = [r["graph_us"] for n, r in rows.items() if n.startswith("read-") and "graph_us" in r]
    sdpas = [r["graph_us"] for n, r in rows.items() if n.startswith("sdpa") and "graph_us" in r]
    summary = {}
    if reads and sdpas:
        summary = {"read_floor_us": min(reads), "fastest_sdpa_us": min(sdpas),
                   "target_1_2x_us": min(sdpas) / 1.2, "best_possible_ratio": min(sdpas) / min(reads)}
        print(f"read floor {min(reads):.1f} us; 1.2x over the fastest SDPA path needs {min(sdpas) / 1.2:.1f} us; "
              f"a kernel at the read floor would be {min(sdpas) / min(reads):.3f}x")
    for name, err in errs.items():
        print(f"{name} max abs err vs fp32 SDPA: {err:.2e}" if isinstance(err, float) else f"{name}: {err}")
    record = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": {"name": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
                   "cuda": torch.version.cuda},
        "shape": {"batch": batch, "heads": heads, "kv_heads": kv_heads, "q_len": 1, "kv_len": n_k, "head_dim": d,
                  "dtype": args.dtype, "kv_bytes": kv_bytes},
        "genomes": {("kernel" if len(genomes) == 1 else f"kernel-{i}"): g.to_dict() for i, g in enumerate(genomes)},
        "kernel_max_abs_err": errs, "rows": rows, "summary": summary,
    }
    if args.out:
        args.out.write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
