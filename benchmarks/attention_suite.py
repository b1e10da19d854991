"""Issue 5's table: for each shape, evolve an attention kernel (a budgeted `evoforge run`, the best kernel
exported, re-timed in fresh processes against every PyTorch baseline), then collect one row per shape: speedups
over the fastest PyTorch path and over FlashAttention-2 (SDPA's flash backend) in graph and eager mode, and
TFLOP/s of each. The work is `evoforge bench suite` (evoforge.bench.suite); this script keeps its flags.

Usage: python benchmarks/attention_suite.py [--rows attention-causal,attention-long] [--budget 2m]
       [--repeats 3] [--out benchmarks/results]
Writes <out>/attention-suite-<device>.json (rows already there are kept; a task measured again replaces
its row) and attention-suite-<device>.png (TFLOP/s per shape, the
evolved kernel beside every SDPA backend and FlexAttention), plus each row's evolve files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from evoforge.bench.suite import DEFAULT_ROWS, ROWS, SHOWN, plot, row, split_rows, suite

ROOT = Path(__file__).resolve().parents[1]
__all__ = ["ROWS", "SHOWN", "plot", "row", "split_rows"]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", default=",".join(DEFAULT_ROWS),
                        help="built-in tasks with their overrides, separated by ',' or ';' "
                             "(a ',' piece with '=' and no ':' belongs to the row before it)")
    parser.add_argument("--budget", default="2m")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    suite(split_rows(args.rows), args.budget, args.repeats, out=args.out, echo=lambda line: print(line, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
