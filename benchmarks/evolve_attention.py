"""Evolve an attention kernel with `evoforge run`, then re-time the exported best kernel in fresh
processes against every baseline, and record the evidence.

Usage: python benchmarks/evolve_attention.py [--budget 8m] [--task attention] [--repeats 3] [--prefix evolve]
Writes benchmarks/results/<prefix>-<device>.json, <prefix>-<device>-fitness.png and the exported kernel.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from evoforge import envinfo
from evoforge.candidate import Candidate
from evoforge.evaluator import EvalConfig, Evaluator
from evoforge.export import candidate_sources
from evoforge.report import evidence
from evoforge.resolve import resolve_task
from evoforge.store import RunStore
from evoforge.tasks import baselines_for

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget", default="8m")
    parser.add_argument("--task", default="attention")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--generations", type=int, default=40)
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--prefix", default="evolve", help="output names: <prefix>-<device>.json, ...")
    args = parser.parse_args()
    args.out = args.out.resolve()  # the runs work in a temporary folder

    slug = envinfo.device_slug(torch.cuda.get_device_name(0)) if torch.cuda.is_available() else "cpu"
    work = Path(f"/tmp/evoforge-{args.prefix}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "evoforge.cli", "run", "--task", args.task, "--budget", args.budget,
         "--generations", str(args.generations), "--population", str(args.population), "--json"],
        cwd=work, capture_output=True, text=True, check=False)
    search_s = time.monotonic() - started
    print(run.stderr[-3000:], file=sys.stderr)
    if run.returncode not in (0, 1):
        print(run.stdout, run.stderr, file=sys.stderr)
        return run.returncode
    summary = json.loads(run.stdout)
    store = RunStore(work / ".evoforge" / "runs.db")
    data = evidence(store, summary["run"])
    best = data["best"]
    args.out.mkdir(parents=True, exist_ok=True)
    kernel_path = args.out / f"{args.prefix}-{slug}-kernel.py"
    exported = subprocess.run([sys.executable, "-m", "evoforge.cli", "best", summary["run"], "--export",
                               str(kernel_path)], cwd=work, capture_output=True, text=True, check=True)
    print(exported.stdout, file=sys.stderr)
    subprocess.run([sys.executable, "-m", "evoforge.cli", "report", summary["run"], "--out", str(work / "report")],
                   cwd=work, check=True, capture_output=True)

    # Re-time the exported kernel (the candidate the guarded module carries) in fresh worker processes, beside
    # every baseline, 3 times.
    spec = resolve_task(args.task)
    cand = Candidate(name="evolved", source=candidate_sources(kernel_path.read_text())[0])
    retimes = []
    device = "cuda" if torch.cuda.is_available() else "cpu"
    for _ in range(args.repeats):
        report = Evaluator(spec, EvalConfig(device=device)).evaluate([cand], baselines_for(spec, device))
        retimes.append(report.to_dict())
    evolved = [r["results"][0] for r in retimes]
    result = {
        "date": data["date"], "task": data["task"], "device": retimes[0]["env"],
        "search": {"run": summary["run"], "budget": args.budget, "seconds": search_s,
                   "generations": summary["generations"], "evaluated": data["evaluated"], "valid": data["valid"],
                   "valid_fraction": data["valid"] / max(data["evaluated"], 1),
                   "evals_per_min": 60 * data["evaluated"] / search_s, "stop_reason": summary["stop_reason"],
                   "best": best, "best_by_generation": data["generations"]},
        "retime": {
            "statuses": [e["status"] for e in evolved],
            "fitness": [e["fitness"] for e in evolved],
            "fitness_mode": [e["fitness_mode"] for e in evolved],
            "significant": [e["significant"] for e in evolved],
            "best_baseline": [e["best_baseline"] for e in evolved],
            "latency_us": {m: [e["timing"].get(m, {}).get("median_us") for e in evolved] for m in ("eager", "graph")},
            "speedup_vs_each_baseline": [e["speedup"] for e in evolved],
            "baselines_us": [{r["name"]: {m: s["median_us"] for m, s in r["timing"].items()}
                              for r in rep["results"][1:]} for rep in retimes],
        },
        "runs": retimes,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"{args.prefix}-{slug}.json"
    out.write_text(json.dumps(result, indent=2, default=str))
    if (work / "report" / "fitness.png").exists():
        shutil.copy(work / "report" / "fitness.png", args.out / f"{args.prefix}-{slug}-fitness.png")
    print(json.dumps({k: result["search"][k] for k in ("evaluated", "valid", "evals_per_min", "stop_reason")}))
    print(json.dumps(result["retime"]["fitness"]), json.dumps(result["retime"]["latency_us"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
