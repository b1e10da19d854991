"""Evolve every example problem of a level with the built-in (generic) mutator and record, per problem,
the best candidate's speedup over the task's Model in eager mode and under torch.compile, with the batch
summary (fast_1, fast_1.5, geometric mean).

Usage: python benchmarks/problems_suite.py --level 1 [--budget 90s] [--population 6] [--problems DIR]
                                          [--only softmax,matmul]
Each call runs `evoforge run --task-dir DIR --level N --json` (one run per problem, each with its own
wall-clock budget) and merges that level into benchmarks/results/problems-<device>.json and
problems-<device>.md, so levels can be run in separate calls. ``--db PATH`` keeps the run store (every
candidate's result; an interrupted batch continues with `evoforge resume batch-... --db PATH`), else it is a
temporary one; ``--problems-at-once N`` is passed on to `evoforge run`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from evoforge import envinfo

ROOT = Path(__file__).resolve().parents[1]


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}×"


def markdown(data: dict[str, Any]) -> str:
    env = data["device"]
    versions = ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items())
    lines = [f"# Example problems on {env.get('device_name')} ({versions})", ""]
    for level, block in sorted(data["levels"].items()):
        s = block["batch"]["summary"]
        lines += [f"## Level {level} ({block['date']}, budget {block['budget']} per problem, "
                  f"fitness mode {block['fitness_mode']})", "",
                  "| problem | status | best candidate | vs eager | vs torch.compile | fitness | valid/evaluated |",
                  "|---|---|---|---|---|---|---|"]
        for p in block["batch"]["problems"]:
            status = p["status"] if p["status"] != "error" else f"error: {p['detail'][:80]}"
            if p["status"] != "error" and p.get("detail"):  # a baseline never valid: why its column is "-"
                status += f" ({p['detail'][:120]})"
            lines.append(f"| {p['problem']} | {status} | {p['best'] or '-'} | {_x(p['vs_eager'])} | "
                         f"{_x(p['vs_compile'])} | {_x(p['fitness'])} | {p['valid']}/{p['evaluated']} |")
        lines += ["", f"fast_1 {s['fast_1_vs_eager']:.2f}, fast_1.5 {s['fast_1.5_vs_eager']:.2f} vs eager; "
                  f"{s['fast_1_vs_best']:.2f}, {s['fast_1.5_vs_best']:.2f} vs the faster of eager and compile; "
                  f"geomean {_x(s['geomean_vs_eager'])} vs eager, {_x(s['geomean_vs_best'])} vs the faster.", ""]
    return "\n".join(lines)


def command(args: argparse.Namespace, problems: Path, db: Path) -> list[str]:
    """The `evoforge run` batch of one level."""
    cmd = [sys.executable, "-m", "evoforge.cli", "run", "--task-dir", str(problems), "--level", str(args.level),
           "--budget", args.budget, "--generations", str(args.generations), "--population", str(args.population),
           "--db", str(db), "--json"]
    if args.problems_at_once is not None:
        cmd += ["--problems-at-once", str(args.problems_at_once)]
    return cmd


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--level", type=int, required=True)
    parser.add_argument("--budget", default="90s", help="wall clock per problem")
    parser.add_argument("--population", type=int, default=6)
    parser.add_argument("--generations", type=int, default=50)
    parser.add_argument("--problems", type=Path, default=ROOT / "examples" / "problems")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--only", default="", help="comma-separated problem names (file stems) of the level")
    parser.add_argument("--db", type=Path, default=None, help="keep the run store here (default: a temporary one)")
    parser.add_argument("--problems-at-once", type=int, default=None, help="passed on to evoforge run")
    args = parser.parse_args()

    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    env = envinfo.collect(device)
    slug = envinfo.device_slug(env.get("device_name") or "cpu")
    with tempfile.TemporaryDirectory(prefix="evoforge-suite-") as tmp:
        problems = args.problems
        if args.only:  # a subset of the level: copied into a folder of its own, results merged below
            problems = Path(tmp) / "problems" / f"level{args.level}"
            problems.mkdir(parents=True)
            for name in args.only.split(","):
                matches = sorted(args.problems.rglob(f"{name.strip()}.py"))
                if not matches:
                    print(f"no problem {name!r} under {args.problems}", file=sys.stderr)
                    return 2
                shutil.copy(matches[0], problems / matches[0].name)
            problems = problems.parent
        cmd = command(args, problems, args.db or Path(tmp) / "runs.db")
        print(" ".join(cmd), file=sys.stderr)
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode not in (0, 1):
        print(f"evoforge run exited {proc.returncode}", file=sys.stderr)
        return proc.returncode
    try:
        batch = json.loads(proc.stdout)
    except json.JSONDecodeError:
        print(f"evoforge run exited {proc.returncode} without a JSON summary on stdout; it printed:\n"
              f"{proc.stdout[:3000]!r}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"problems-{slug}.json"
    data = json.loads(path.read_text()) if path.exists() else {"tool": "evoforge", "kind": "problems-suite"}
    data["device"] = env
    levels = data.setdefault("levels", {})
    previous = levels.get(str(args.level), {}).get("batch", {}).get("problems", []) if args.only else []
    ran = {p["problem"] for p in batch["problems"]} | {Path(p["path"]).stem for p in batch["problems"]}
    kept = [p for p in previous if p["problem"] not in ran and Path(p["path"]).stem not in ran]
    if kept:  # problems of this level recorded by an earlier --only call stay, and the summary covers all
        from evoforge.batch import BatchSummary, ProblemOutcome

        merged = BatchSummary([ProblemOutcome(**p) for p in kept + batch["problems"]])
        batch = merged.to_dict()
    levels[str(args.level)] = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "budget": args.budget,
        "population": args.population, "fitness_mode": "graph" if device.type == "cuda" else "eager",
        "command": " ".join(cmd[1:]), "batch": batch,
    }
    path.write_text(json.dumps(data, indent=2) + "\n")
    (args.out / f"problems-{slug}.md").write_text(markdown(data))
    print(markdown(data))
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
