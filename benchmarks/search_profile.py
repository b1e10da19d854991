"""Where a search's time goes: one short `evoforge run` in a fresh directory, then, per generation, the
timing worker's seconds in each stage (startup, load = task, inputs and reference outputs, check =
compiling and checking every entry, time, recheck) beside the separate compile process's seconds, and
the run's evaluations per minute. The work is `evoforge bench throughput` (evoforge.bench.throughput);
this script keeps its flags.

Usage: python benchmarks/search_profile.py [--task attention-long] [--generations 3] [--population 8]
       [--seed 0] [--budget 120] [--out results.json] [-- more evoforge run flags]

Worker stages summed over a generation's workers include ``worker.ready`` (waiting for a worker to come
up: about zero for one started ahead as a spare), ``worker.load`` and ``check``; ``spares_taken`` counts
the candidates that ran in spare workers and ``spares.wait`` the judge's wait for the next spares.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from evoforge.bench.throughput import profile_lines, search_profile


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
    try:
        out = search_profile(args.task, args.generations, args.population, args.seed, args.budget, args.extra)
    except RuntimeError as exc:
        print(f"search_profile: {exc}", file=sys.stderr)
        return 1
    for line in profile_lines(out):
        print(line)
    if args.out:
        args.out.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
