"""Time chosen template genomes through the evaluator (isolated worker, correctness checks, eager and
graph timing) beside PyTorch's SDPA backends, in one process per repeat.

Each genome is timed twice: as rendered (the cached direct launcher after the first call) and with
the launcher cache switched off (every call through Triton's JIT ``kernel[grid](...)``), so the
launcher's effect on the eager number is measured, not assumed.

Usage: python experiments/genome_bench.py [--task attention] [--genomes FILE.json] [--repeats 1]
       [--out results.json]
FILE.json holds a list of genome dicts (FlashGenome fields); without it a built-in list is used.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from evoforge.candidate import Candidate
from evoforge.evaluator import EvalConfig, Evaluator
from evoforge.kernels.flash_attention import FlashGenome, render
from evoforge.resolve import resolve_task
from evoforge.tasks import attention_params, baselines_for

DEFAULT = [
    FlashGenome(block_m=64, block_n=128, num_stages=3, loop="tl.range"),
    FlashGenome(block_m=64, block_n=128, num_stages=3, loop="tl.range", tma=True),
    FlashGenome(block_m=64, block_n=128, num_stages=3, loop="tl.range", warp_spec=True),
    FlashGenome(block_m=64, block_n=128, num_stages=3, loop="tl.range", tma=True, warp_spec=True),
    FlashGenome(block_m=128, block_n=64, num_warps=8, num_stages=3, loop="tl.range", tma=True),
    FlashGenome(block_m=128, block_n=128, num_warps=8, num_stages=2, loop="tl.range", tma=True, warp_spec=True),
]
SDPA = ("sdpa_default", "sdpa_flash", "sdpa_cudnn", "sdpa_mem_eff")
JIT_ONLY = ("        if fast is not None and", "        if False and fast is not None and")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", default="attention")
    parser.add_argument("--genomes", type=Path)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--no-jit", action="store_true", help="skip the launcher-off copies")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    spec = resolve_task(args.task)
    params = attention_params(spec)
    if params is None:
        print("genome_bench: the task is not an attention task", file=sys.stderr)
        return 2
    genomes = [FlashGenome.from_dict(d) for d in json.loads(args.genomes.read_text())] if args.genomes else DEFAULT
    cands = []
    for g in genomes:
        source = render(g, causal=params.causal, head_dim=params.head_dim)
        cands.append(Candidate(name=f"flash-{g.key()[:6]}", source=source, language="triton", genome=g.to_dict()))
        if not args.no_jit:
            assert JIT_ONLY[0] in source
            cands.append(Candidate(name=f"flash-{g.key()[:6]}-jit", source=source.replace(*JIT_ONLY),
                                   language="triton", genome=g.to_dict()))
    baselines = [b for b in baselines_for(spec) if b.name in SDPA]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows: dict[str, list[dict[str, object]]] = {}
    env: dict[str, object] = {}
    for _ in range(args.repeats):
        report = Evaluator(spec, EvalConfig(device=device)).evaluate(cands, baselines).to_dict()
        env = report["env"]
        for r in report["results"]:
            timing = r.get("timing") or {}
            rows.setdefault(r["name"], []).append({
                "status": r["status"], "detail": (r.get("detail") or "")[:300], "fitness": r.get("fitness"),
                "eager_us": (timing.get("eager") or {}).get("median_us"),
                "graph_us": (timing.get("graph") or {}).get("median_us"),
                })
    print(f"{'name':28} {'status':8} {'eager us':>9} {'graph us':>9} {'fitness':>8}")
    for name, reps in rows.items():
        for rep in reps:
            fit = rep["fitness"]
            print(f"{name:28} {rep['status']:8} {rep['eager_us'] or float('nan'):9.2f} "
                  f"{rep['graph_us'] or float('nan'):9.2f} {fit if fit is not None else float('nan'):8.3f}"
                  + ("" if rep["status"] == "ok" else f"  {rep['detail'][:120]}"))
    if args.out:
        args.out.write_text(json.dumps({"date": env.get("date"), "device": env, "task": spec.name,
                                        "genomes": [g.to_dict() for g in genomes], "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
