"""Evolve an attention kernel with `evoforge run`, then re-time the exported best kernel in fresh
processes against every baseline, and record the evidence. The work is `evoforge bench evolve`
(evoforge.bench.suite.evolve); this script keeps its flags.

Usage: python benchmarks/evolve_attention.py [--budget 8m] [--task attention] [--repeats 3] [--prefix evolve]
Writes benchmarks/results/<prefix>-<device>.json, <prefix>-<device>-fitness.png and the exported kernel.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from evoforge.bench.suite import evolve, evolve_summary

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
    try:
        result = evolve(args.task, args.budget, out=args.out, prefix=args.prefix, repeats=args.repeats,
                        generations=args.generations, population=args.population)
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 1
    for line in evolve_summary(result):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
