"""Evaluations per minute with the local executor, with and without compilation overlapped with timing.

Runs the same short evolution (same seed) three times, each in a fresh directory with an empty Triton
cache (TRITON_CACHE_DIR), so no configuration profits from another's compiled kernels:

- ``serial``: ``--no-precompile --prefetch 0`` (compile inside the timing worker, as before executors);
- ``precompile``: ``--precompile --prefetch 0`` (a separate process compiles the batch while the
  timing worker starts up and computes reference outputs);
- ``overlap``: ``--precompile --prefetch 1`` (the next batch compiles while the current one is timed).

For each it records evaluations per minute (overall and per slot), idle share per slot, and the mean
seconds per batch in each worker stage (``check`` includes compiling), from the run's events. The work is
`evoforge bench throughput --configs ...` (evoforge.bench.throughput); this script keeps its flags.

    python benchmarks/executor_throughput.py results/executor-throughput-<device>.json [--generations 6] \
        [-- extra run flags]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from evoforge.bench.throughput import CONFIGS, config_lines, executor_configs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--generations", type=int, default=6)
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default=",".join(CONFIGS), help="comma-separated subset of " + ", ".join(CONFIGS))
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    try:
        record = executor_configs(args.only.split(","), generations=args.generations, population=args.population,
                                  seed=args.seed, extra=extra)
    except RuntimeError as exc:
        sys.exit(str(exc))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2, default=str))
    for line in config_lines(record):
        print(line)


if __name__ == "__main__":
    main()
