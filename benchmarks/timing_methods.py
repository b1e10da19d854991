"""Compare timing methods on the seed's attention shape, to check what evoforge.timing's numbers mean.

Runs on a CUDA GPU. For SDPA default and the seed's 3-kernel path it records:
- evoforge.timing eager and graph (the product's numbers);
- triton.testing.do_bench and do_bench_cudagraph (the field's reference tools);
- back-to-back calls timed with events (launch-bound throughput, what the seed measured);
- the host time of one call (launch cost alone);
- evoforge eager again after a torch.profiler session in the same process (CUPTI's after-effect).
Usage: python benchmarks/timing_methods.py OUT.json
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from evoforge import envinfo
from evoforge.timing import TimingConfig, measure


def seed_3kernel(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    s = torch.matmul(q, k.transpose(-2, -1)) * 0.125
    return torch.matmul(torch.softmax(s, dim=-1), v)


def back_to_back(fn, n: int = 200) -> float:
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(n):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1000 / n


def host_time(fn, n: int = 200) -> float:
    samples = []
    for _ in range(n):
        torch.cuda.synchronize()
        t = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - t) / 1000)
    torch.cuda.synchronize()
    return statistics.median(samples)


def main() -> None:
    import triton.testing as tt

    q, k, v = (torch.randn(1, 8, 512, 64, dtype=torch.float16, device="cuda") for _ in range(3))
    fns = {
        "sdpa_default": lambda: F.scaled_dot_product_attention(q, k, v),
        "seed_3kernel": lambda: seed_3kernel(q, k, v),
    }
    cfg = TimingConfig(budget_ms=200, rounds=5)
    out: dict = {"env": envinfo.collect(torch.device("cuda")), "methods": {}}
    ours = measure(fns, device="cuda", config=cfg)
    for name, fn in fns.items():
        row = {
            "evoforge_eager_us": ours[name]["eager"].median_us,
            "evoforge_graph_us": ours[name]["graph"].median_us,
            "do_bench_us": tt.do_bench(fn, return_mode="median") * 1000,
            "do_bench_cudagraph_us": tt.do_bench_cudagraph(fn, return_mode="median") * 1000,
            "back_to_back_us": back_to_back(fn),
            "host_call_us": host_time(fn),
        }
        out["methods"][name] = row
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]):
        fns["sdpa_default"]()
        torch.cuda.synchronize()
    after = measure(fns, device="cuda", config=cfg)
    for name in fns:
        out["methods"][name]["evoforge_eager_after_profiler_us"] = after[name]["eager"].median_us
        out["methods"][name]["evoforge_graph_after_profiler_us"] = after[name]["graph"].median_us
        out["methods"][name]["host_call_after_profiler_us"] = host_time(fns[name])
    text = json.dumps(out, indent=2, default=str)
    print(text)
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
