"""Is a worker's unreported time per graph call a property of its code or of its process?

Replicates a judge worker's graph block (issue 19's `op_graph`: stage 4 groups x 10 slots of inputs in from
pinned host memory, replay each group's [flush, call] graph after a replay of the flushes alone, copy the
outputs back, synchronise) for several entries of one problem, each in a process of its own, and times the
block's phases with `perf_counter` beside the CUDA events. "unreported" is the block's wall time less what the
events measured, per call: what the judge's clock check compares between a candidate and the baselines.

Entries: the task's `Model` (with and without `import triton` first), and the generic mutator's Triton
template, the template in a CUDA graph of its own, eager in a graph, and `torch.compile` default. Each
process is started twice (``--reps``).

Usage: python experiments/clock_overhead_per_process.py [--problem examples/problems/level2/matmul_bias_gelu.py]
                                                      [--reps 2] [--out record.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GROUPS, CALLS, BLOCKS, SKIP = 4, 10, 60, 10


def _sources(problem: Path) -> dict[str, str | None]:
    from evoforge.mutators.generic import GenericMutator
    from evoforge.task import task_from_file

    m = GenericMutator.for_task(random.Random(0), task_from_file(problem), "cuda", False)
    genomes = {"triton": m.genome(triton=m.traits.pattern),
               "triton+graph": m.genome(triton=m.traits.pattern, cuda_graph=True),
               "eager+graph": m.genome(cuda_graph=True), "compile": m.genome(compile="default")}
    out: dict[str, str | None] = {"model": None}
    out.update({name: m.build(g, {}).source for name, g in genomes.items()})
    return out


def _load(path: Path, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)  # Triton's @jit needs its source in a file
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def child(problem: Path, name: str, source: str | None, import_triton: bool) -> dict[str, Any]:
    import torch

    if import_triton:
        import triton  # noqa: F401
    task = _load(problem, "task")
    torch.manual_seed(0)
    if source is None:
        model = task.Model(*task.get_init_inputs()).cuda()
    else:
        path = Path(tempfile.mkdtemp()) / "candidate.py"
        path.write_text(source)
        model = _load(path, "candidate").ModelNew(*task.get_init_inputs()).cuda()
    slots = GROUPS * CALLS
    host = [[t.pin_memory() for t in task.get_inputs()] for _ in range(slots)]
    dev = [[t.cuda() for t in h] for h in host]
    flush = torch.empty(100 * 2**20, dtype=torch.uint8, device="cuda")
    with torch.no_grad():
        first = model(*dev[0])
    outs = [torch.empty_like(first) for _ in range(slots)]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side), torch.no_grad():
        for _ in range(2):
            for s in range(slots):
                outs[s].copy_(model(*dev[s]))
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graphs, statics = [], []
    with torch.no_grad():
        for g in range(GROUPS):
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                for s in range(g * CALLS, (g + 1) * CALLS):
                    flush.zero_()
                    statics.append((s, model(*dev[s])))
            graphs.append(graph)
        flushes = torch.cuda.CUDAGraph()
        with torch.cuda.graph(flushes):
            for _ in range(CALLS):
                flush.zero_()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def elapsed_us(run: Any) -> float:
        start.record()
        run()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) * 1000.0

    rows = []
    for _ in range(BLOCKS):
        t0 = time.perf_counter()
        for s in range(slots):
            for d, h in zip(dev[s], host[s], strict=True):
                d.copy_(h)
        torch.cuda.synchronize()
        t1 = time.perf_counter()
        events = sum(elapsed_us(flushes.replay) + elapsed_us(graph.replay) for graph in graphs)
        t2 = time.perf_counter()
        for s, o in statics:
            outs[s].copy_(o)
        torch.cuda.synchronize()
        t3 = time.perf_counter()
        rows.append(((t1 - t0) * 1e6, (t2 - t1) * 1e6 - events, (t3 - t2) * 1e6, (t3 - t0) * 1e6 - events, events))
    rows = rows[SKIP:]
    med = [statistics.median(r[i] for r in rows) / slots for i in range(5)]
    return {"entry": name, "import_triton": import_triton,
            "per_call_us": {"stage_in": med[0], "replay_unreported": med[1], "deliver": med[2],
                            "unreported_total": med[3], "reported": med[4]},
            "max_unreported_per_call": max(r[3] for r in rows) / slots}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--problem", type=Path,
                        default=ROOT / "examples" / "problems" / "level2" / "matmul_bias_gelu.py")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        job = json.loads(args.child)
        print(json.dumps(child(args.problem, job["name"], job["source"], job["import_triton"])))
        return 0
    import torch

    from evoforge import envinfo

    processes = []
    for _ in range(args.reps):
        for name, source in _sources(args.problem).items():
            for import_triton in ([False, True] if source is None else [False]):
                job = json.dumps({"name": name, "source": source, "import_triton": import_triton})
                proc = subprocess.run([sys.executable, __file__, "--problem", str(args.problem), "--child", job],
                                      capture_output=True, text=True, timeout=240, check=False)
                row = json.loads(proc.stdout) if proc.returncode == 0 else {"entry": name, "error": proc.stderr[-800:]}
                print(json.dumps(row), flush=True)
                processes.append(row)
    record = {"kind": "clock-overhead-per-process", "problem": str(args.problem.relative_to(ROOT)),
              "device": envinfo.collect(torch.device("cuda", 0)), "processes": processes}
    if args.out:
        args.out.write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
