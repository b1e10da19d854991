"""Where a kernel's time goes on a short problem: the same rendered genome timed (graph mode, cold L2,
as the evaluator times) with the seed's queries and 128 to 1024 keys, beside SDPA and a plain
``q.clone()`` (one launch that reads and writes Q: the harness's floor for a kernel touching that data).
The slope is the key loop's cost per block, the intercept everything outside the loop.

Usage: python experiments/keys_scaling.py [--genome JSON] [--budget-ms 300]     (prints to stdout)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from evoforge import timing
from evoforge.kernels.flash_attention import FlashGenome, render
from evoforge.task import import_source

SEED = FlashGenome(block_m=64, block_n=128, num_stages=3, loop="tl.range", scale_fma=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--genome", default=json.dumps(SEED.to_dict()))
    parser.add_argument("--budget-ms", type=float, default=300.0)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("keys_scaling: needs a CUDA device", file=sys.stderr)
        return 2
    genome = FlashGenome.from_dict(json.loads(args.genome))
    model = import_source(render(genome, causal=False, head_dim=64), "k", "k", Path(tempfile.mkdtemp())).ModelNew()
    torch.manual_seed(0)
    q = torch.randn(1, 8, 512, 64, device="cuda", dtype=torch.float16)
    kv = {n: (torch.randn(1, 8, n, 64, device="cuda", dtype=torch.float16),
              torch.randn(1, 8, n, 64, device="cuda", dtype=torch.float16)) for n in (128, 256, 384, 512, 1024)}
    fns = {f"kernel n_k={n}": (lambda n=n: model(q, *kv[n])) for n in kv}
    fns.update({f"sdpa n_k={n}": (lambda n=n: F.scaled_dot_product_attention(q, *kv[n])) for n in (128, 512)})
    fns["q.clone()"] = lambda: q.clone()
    fns["empty_like"] = lambda: torch.empty_like(q)
    for fn in fns.values():
        fn()
    results = timing.measure(fns, device="cuda", modes=("graph",), config=timing.TimingConfig(budget_ms=args.budget_ms))
    for name, result in results.items():
        stats = result["graph"]
        if isinstance(stats, str):
            print(f"{name:16} {stats}")
        else:
            print(f"{name:16} {stats.median_us:7.2f} us (q1 {stats.q1_us:.2f}, q3 {stats.q3_us:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
