"""Host-side cost of one call: how many microseconds of Python and driver work each way of computing
the seed's attention costs per call, measured back to back (the GPU queue stays full, so this is the
host's issue rate, not latency). Separates what a user's eager call pays on the host from kernel time.

Usage: python experiments/launch_overhead.py [--task attention] [--genome JSON] [--calls 3000] [--guard]

--guard measures every row twice: as a user's process runs it, then with the evaluator's sandbox audit
hook installed (as the worker times candidates and baselines), to show what the hook costs per call.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from evoforge.kernels.flash_attention import FlashGenome, render
from evoforge.resolve import resolve_task
from evoforge.task import import_source, load_task, make_inputs
from evoforge.tasks import attention_params

JIT_ONLY = ("        if fast is not None and", "        if False and fast is not None and")


def per_call_us(fn, calls: int) -> float:
    for _ in range(20):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / calls * 1e6


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", default="attention")
    parser.add_argument("--genome", default=json.dumps(FlashGenome(block_m=64, block_n=128, num_stages=3,
                                                                   loop="tl.range").to_dict()))
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--guard", action="store_true", help="also measure with the sandbox's audit hook")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("launch_overhead: needs a CUDA device", file=sys.stderr)
        return 2
    spec = resolve_task(args.task)
    params = attention_params(spec)
    q, k, v = (t.cuda() for t in make_inputs(load_task(spec), 0))
    source = render(FlashGenome.from_dict(json.loads(args.genome)), causal=params.causal, head_dim=params.head_dim)
    tmp = Path(tempfile.mkdtemp())
    fast = import_source(source, "fast", "fast", tmp).ModelNew()
    jit = import_source(source.replace(*JIT_ONLY), "jit", "jit", tmp).ModelNew()
    ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=params.causal)
    for name, m in (("fast", fast), ("jit", jit)):
        err = (m(q, k, v).float() - ref).abs().max().item()
        assert err < 2e-2, f"{name}: max error {err}"
    rows = {
        "torch.empty_like": lambda: torch.empty_like(q),
        "sdpa_default": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=params.causal),
        "triton, cached direct launcher": lambda: fast(q, k, v),
        "triton, JIT kernel[grid](...)": lambda: jit(q, k, v),
    }
    for name, fn in rows.items():
        print(f"{name:34} {per_call_us(fn, args.calls):8.2f} us/call (host issue rate)")
    if args.guard:
        from evoforge.evaluator import guards

        guards.install_audit_guard()  # for the rest of this process, as in the evaluator's worker
        for name, fn in rows.items():
            print(f"{name:34} {per_call_us(fn, args.calls):8.2f} us/call (audit hook installed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
