"""What fresh inputs cost a graph-mode latency on the seed shape: SDPA's default path and the exported
seed-shape kernel (``benchmarks/results/evolve-persistent-h100-kernel.py``), each timed by evoforge's graph clock in
one plain process (no judge, no other process on the GPU), three ways:

- ``same_inputs``: a graph of 10 [L2 flush, call] pairs that all read one input set (how evoforge timed
  graphs before the judge);
- ``fresh_inputs``: the same graph over 10 input sets, one per call (how the judge's workers time: every
  timed call gets inputs of its own, so no call can reuse an earlier result);
- ``fresh_inputs_after_copy``: as fresh_inputs, each replay right after the 10 input sets were copied in
  from host memory (as a worker stages a block's slots).

Writes JSON (device, versions, date, medians in us, and each kernel's ratio to SDPA per way) to the path
given, or prints it."""

from __future__ import annotations

import importlib.util
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from evoforge import envinfo, timing

KERNEL = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "evolve-persistent-h100-kernel.py"
SHAPE = (1, 8, 512, 64)
CALLS, REPS = 10, 200


def _kernel() -> Any:
    spec = importlib.util.spec_from_file_location("exported_seed_kernel", KERNEL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ModelNew().cuda().eval()


def _graph(clock: Any, fn: Any, sets: list[list[torch.Tensor]]) -> torch.cuda.CUDAGraph:
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for args in sets * 2:
            fn(*args)
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for args in sets:
            clock.flush_buffer.zero_()
            fn(*args)
    return graph


def main() -> None:
    device = torch.device("cuda")
    clock = timing.make_clock(device)
    flushes = torch.cuda.CUDAGraph()
    with torch.cuda.graph(flushes):
        for _ in range(CALLS):
            clock.flush_buffer.zero_()
    fresh = [[torch.randn(SHAPE, device=device, dtype=torch.float16) for _ in range(3)] for _ in range(CALLS)]
    host = [[t.cpu().pin_memory() for t in s] for s in fresh]
    kernels = {"sdpa_default": F.scaled_dot_product_attention, "exported_kernel": _kernel()}
    rows: dict[str, dict[str, float]] = {}
    with torch.no_grad():
        for name, fn in kernels.items():
            graphs = {"same_inputs": _graph(clock, fn, [fresh[0]] * CALLS), "fresh_inputs": _graph(clock, fn, fresh)}

            def per_call(graph: torch.cuda.CUDAGraph, copy: bool = False) -> float:
                if copy:
                    for dst, src in zip(fresh, host, strict=True):
                        for d, s in zip(dst, src, strict=True):
                            d.copy_(s, non_blocking=True)
                    torch.cuda.synchronize()
                flush = clock.elapsed_us(flushes.replay)
                return (clock.elapsed_us(graph.replay) - flush) / CALLS

            rows[name] = {}
            for way, graph in graphs.items():
                rows[name][way] = statistics.median(per_call(graph) for _ in range(REPS))
            rows[name]["fresh_inputs_after_copy"] = statistics.median(per_call(graphs["fresh_inputs"], True)
                                                                      for _ in range(REPS))
    ratios = {way: rows["sdpa_default"][way] / rows["exported_kernel"][way] for way in rows["sdpa_default"]}
    out = {"env": envinfo.collect(device), "shape": list(SHAPE), "calls_per_graph": CALLS, "reps": REPS,
           "median_us": rows, "speedup_over_sdpa": ratios}
    text = json.dumps(out, indent=1)
    if len(sys.argv) > 1:
        Path(sys.argv[1]).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
