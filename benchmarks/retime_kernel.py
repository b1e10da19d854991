"""Re-time one exported kernel in fresh evaluator processes beside every baseline of a task, as
evolve_attention.py does after its search (for a row whose re-time must be repeated on its own).
The work is `evoforge bench retime` (evoforge.bench.retime); this script keeps its flags.

Usage: python benchmarks/retime_kernel.py --task attention-d128 --kernel K.py [--entry 1] [--repeats 3] --out OUT.json

A guarded attention export is re-timed as the evolved candidate it carries (``--entry N``: a table's Nth kernel),
as its run evaluated it; the module's checks and fallback are not part of the timing (see export_overhead.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from evoforge.bench.retime import retime, summary_lines


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", required=True)
    parser.add_argument("--kernel", type=Path, required=True)
    parser.add_argument("--entry", type=int, default=1, help="a dispatch table's entry to re-time (1-based)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    try:
        record = retime(args.task, args.kernel, entry=args.entry, repeats=args.repeats)
    except ValueError as exc:
        parser.error(str(exc))
    args.out.write_text(json.dumps(record, indent=2, default=str))
    for line in summary_lines(record):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
