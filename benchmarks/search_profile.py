"""Where a search's time goes: one short `evoforge run` in a fresh directory, then, per generation, the
timing worker's seconds in each stage (startup, load = task, inputs and reference outputs, check =
compiling and checking every entry, time, recheck) beside the separate compile process's seconds, and
the run's evaluations per minute.

Usage: python benchmarks/search_profile.py [--task attention-long] [--generations 3] [--population 8]
       [--seed 0] [--budget 120] [--out results.json] [-- more evoforge run flags]

Worker stages summed over a generation's workers include ``worker.ready`` (waiting for a worker to come
up: about zero for one started ahead as a spare), ``worker.load`` and ``check``; ``spares_taken`` counts
the candidates that ran in spare workers and ``spares.wait`` the judge's wait for the next spares.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from evoforge.store import RunStore


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="attention-long")
    parser.add_argument("--generations", type=int, default=3)
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget", help="evoforge run --budget (e.g. 120): the run stops at it")
    parser.add_argument("--out", type=Path)
    parser.add_argument("extra", nargs="*", help="more evoforge run flags, after --")
    args = parser.parse_args()
    more = [*(["--budget", args.budget] if args.budget else []), *args.extra]
    with tempfile.TemporaryDirectory(prefix="evoforge-profile-") as tmp:
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "evoforge.cli", "run", "--json", "--task", args.task,
                               "--generations", str(args.generations), "--population", str(args.population),
                               "--seed", str(args.seed), *more], cwd=tmp, capture_output=True, text=True, check=False)
        wall = time.monotonic() - started
        if proc.returncode not in (0, 1):
            print(f"search_profile: evoforge run failed ({proc.returncode}):\n{proc.stderr[-3000:]}", file=sys.stderr)
            return 1
        run_id = json.loads(proc.stdout)["run"]
        store = RunStore(Path(tmp) / ".evoforge" / "runs.db")
        record = store.run(run_id)
        compiles = {e["generation"]: e for e in store.events(run_id, "precompile")}
        profiles: dict[int, dict] = {}
        for e in store.events(run_id, "profile"):
            profiles.setdefault(e["generation"], e["seconds"])  # a generation's first batch, as before
        generations = []
        for gen in store.events(run_id, "generation"):
            profile = profiles.get(gen["generation"], {})
            compiled = compiles.get(gen["generation"], {})
            generations.append({"generation": gen["generation"], "evaluated": gen["evaluated"],
                                "seconds": gen["seconds"],
                                "worker_stages": {k: round(v, 2) for k, v in profile.items() if k != "slot"},
                                "compile_process_seconds": compiled.get("seconds"),
                                "kernels_compiled": compiled.get("compiled")})
        (throughput,) = store.events(run_id, "throughput")
    out = {"date": record.env.get("date"), "device": record.env, "task": args.task, "flags": more,
           "run_wall_s": round(wall, 1),
           "evals_per_min": throughput["evals_per_min"], "evaluations": throughput["evaluations"],
           "generations": generations}
    for g in generations:
        print(f"gen {g['generation']}: {g['evaluated']} evaluated in {g['seconds']:.1f} s, "
              f"worker {g['worker_stages']}, compile process {g['compile_process_seconds']}")
    print(f"{throughput['evaluations']} evaluations, {throughput['evals_per_min']:.1f}/min")
    if args.out:
        args.out.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
