"""Re-time one exported kernel in fresh evaluator processes beside every baseline of a task, as
evolve_attention.py does after its search (for a row whose re-time must be repeated on its own).

Usage: python benchmarks/retime_kernel.py --task attention-d128 --kernel K.py [--entry 1] [--repeats 3] --out OUT.json

A guarded attention export is re-timed as the evolved candidate it carries (``--entry N``: a table's Nth kernel),
as its run evaluated it; the module's checks and fallback are not part of the timing (see export_overhead.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from evoforge.candidate import Candidate
from evoforge.evaluator import EvalConfig, Evaluator
from evoforge.export import candidate_sources
from evoforge.resolve import resolve_task
from evoforge.tasks import baselines_for


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", required=True)
    parser.add_argument("--kernel", type=Path, required=True)
    parser.add_argument("--entry", type=int, default=1, help="a dispatch table's entry to re-time (1-based)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    spec = resolve_task(args.task)
    sources = candidate_sources(args.kernel.read_text())
    if not 1 <= args.entry <= len(sources):
        parser.error(f"--entry {args.entry}: {args.kernel} carries {len(sources)} kernel(s)")
    cand = Candidate(name="evolved", source=sources[args.entry - 1])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    reports = [Evaluator(spec, EvalConfig(device=device)).evaluate([cand], baselines_for(spec)).to_dict()
               for _ in range(args.repeats)]
    evolved = [r["results"][0] for r in reports]
    retime = {
        "statuses": [e["status"] for e in evolved],
        "fitness": [e["fitness"] for e in evolved],
        "best_baseline": [e["best_baseline"] for e in evolved],
        "latency_us": {m: [(e.get("timing") or {}).get(m, {}).get("median_us") for e in evolved]
                       for m in ("eager", "graph")},
        "speedup_vs_each_baseline": [e["speedup"] for e in evolved],
        "baselines_us": [{r["name"]: {m: s["median_us"] for m, s in (r.get("timing") or {}).items()
                                      if isinstance(s, dict)} for r in rep["results"][1:]} for rep in reports],
    }
    args.out.write_text(json.dumps({"task": spec.name, "kernel": args.kernel.name, "device": reports[0]["env"],
                                    "retime": retime}, indent=2, default=str))
    print(json.dumps(retime["fitness"]), json.dumps(retime["latency_us"]))
    for b in retime["baselines_us"]:
        print({n: {m: round(v, 1) for m, v in t.items()} for n, t in b.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
