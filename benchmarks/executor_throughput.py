"""Evaluations per minute with the local executor, with and without compilation overlapped with timing.

Runs the same short evolution (same seed) three times, each in a fresh directory with an empty Triton
cache (TRITON_CACHE_DIR), so no configuration profits from another's compiled kernels:

- ``serial``: ``--no-precompile --prefetch 0`` (compile inside the timing worker, as before executors);
- ``precompile``: ``--precompile --prefetch 0`` (a separate process compiles the batch while the
  timing worker starts up and computes reference outputs);
- ``overlap``: ``--precompile --prefetch 1`` (the next batch compiles while the current one is timed).

For each it records evaluations per minute (overall and per slot), idle share per slot, and the mean
seconds per batch in each worker stage (``check`` includes compiling), from the run's events.

    python benchmarks/executor_throughput.py results/executor-throughput-<device>.json [--generations 6] \
        [-- extra run flags]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from statistics import mean
from typing import Any

CONFIGS = {
    "serial": ["--no-precompile", "--prefetch", "0"],
    "precompile": ["--precompile", "--prefetch", "0"],
    "overlap": ["--precompile", "--prefetch", "1"],
}


def one(name: str, flags: list[str], args: argparse.Namespace, extra: list[str]) -> dict[str, Any]:
    from evoforge.store import RunStore

    with tempfile.TemporaryDirectory(prefix=f"evoforge-bench-{name}-") as tmp:
        env = {**os.environ, "TRITON_CACHE_DIR": str(Path(tmp) / "triton-cache")}
        cmd = [sys.executable, "-m", "evoforge.cli", "run", "--json", "--generations", str(args.generations),
               "--population", str(args.population), "--seed", str(args.seed), *flags, *extra]
        proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, check=False)
        if proc.returncode not in (0, 1):
            raise SystemExit(f"{name}: evoforge run failed ({proc.returncode}): {proc.stderr[-2000:]}")
        summary = json.loads(proc.stdout)
        store = RunStore(Path(tmp) / ".evoforge" / "runs.db")
        (throughput,) = store.events(summary["run"], "throughput")
        profiles = [e["seconds"] for e in store.events(summary["run"], "profile")]
        stages = sorted({k for p in profiles for k in p if k != "slot"})
        precompiled = store.events(summary["run"], "precompile")
        record = store.run(summary["run"])
        return {
            "config": name, "flags": flags, "summary": summary, "device": record.env,
            "evals_per_min": throughput["evals_per_min"],
            "evals_per_min_per_slot": throughput["evals_per_min_per_slot"],
            "elapsed_s": throughput["elapsed_s"], "per_slot": throughput["per_slot"],
            "stage_seconds_mean_per_batch": {k: round(mean(p.get(k, 0.0) for p in profiles), 3) for k in stages},
            "precompiled_batches": len(precompiled),
            "precompiled_kernels": sum(e.get("kernels", 0) for e in precompiled),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--generations", type=int, default=6)
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default=",".join(CONFIGS), help="comma-separated subset of " + ", ".join(CONFIGS))
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    results = [one(name, CONFIGS[name], args, extra) for name in args.only.split(",") if name]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"kind": "executor-throughput", "generations": args.generations,
                                    "population": args.population, "seed": args.seed, "extra_flags": extra,
                                    "results": results}, indent=2, default=str))
    for r in results:
        print(f"{r['config']:>10}: {r['evals_per_min']:.1f} evals/min ({r['evals_per_min_per_slot']:.1f} per slot), "
              f"stages per batch {r['stage_seconds_mean_per_batch']}, precompiled kernels {r['precompiled_kernels']}")


if __name__ == "__main__":
    main()
