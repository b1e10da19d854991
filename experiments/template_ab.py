"""The template as it is against an older version of it: the same genomes rendered by both, timed
through the evaluator (isolated worker, correctness checks, eager and graph timing) in the same worker
beside SDPA's backends, so a refactor of the kernel's source is measured, not assumed neutral.

The older template is a file: ``git show REV:src/evoforge/kernels/flash_attention.py > old_flash.py``.
Genomes are rendered by the old template with the fields it knows (a newer field must be at its default).

Usage: python experiments/template_ab.py --old old_flash.py [--repeats 2] [--out results.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from dataclasses import fields
from pathlib import Path

from evaluate_sources import print_rows, time_sources

from evoforge.kernels.flash_attention import FlashGenome, render
from evoforge.resolve import resolve_task

# Generation 0's kernels for the seed shape, long sequences at D=64, D=128 (causal and not), and the
# 64x64 D=128 alternative.
CASES = [
    ("attention", [FlashGenome(block_m=64, block_n=128, num_stages=3, k_layout="trans")]),
    ("attention-long", [FlashGenome(block_m=64, block_n=64, num_stages=3, k_layout="trans", loop="tl.range",
                                    scale_fma=True)]),
    ("attention-d128", [
        FlashGenome(block_m=128, block_n=128, num_warps=8, num_stages=3, k_layout="trans", loop="tl.range",
                    scale_fma=True),
        FlashGenome(block_m=64, block_n=64, num_stages=3, k_layout="trans", loop="tl.range", scale_fma=True)]),
    ("attention-d128:causal=true", [
        FlashGenome(block_m=128, block_n=64, num_warps=8, num_stages=3, k_layout="trans", loop="tl.range",
                    scale_fma=True, causal_split=True)]),
]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--old", type=Path, required=True, help="an older flash_attention.py")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--new-first", action="store_true", help="time the current template's kernels first "
                        "(the evaluator times candidates in order: a check for an effect of the order)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    spec_old = importlib.util.spec_from_file_location("old_flash_attention", args.old)
    if spec_old is None or spec_old.loader is None:
        print(f"template_ab: cannot import {args.old}", file=sys.stderr)
        return 2
    old = importlib.util.module_from_spec(spec_old)
    sys.modules[spec_old.name] = old  # dataclasses look their module up by name
    spec_old.loader.exec_module(old)
    known = {f.name for f in fields(old.FlashGenome)}
    out = {}
    for task, genomes in CASES:
        spec = resolve_task(task)
        causal, head_dim = spec.params["causal"], spec.params["head_dim"]
        sources = {}
        for i, g in enumerate(genomes):
            extra = {k: v for k, v in g.to_dict().items() if k not in known and k != "kind"}
            if extra != {f: FlashGenome.__dataclass_fields__[f].default for f in extra}:
                print(f"template_ab: the old template has no {sorted(extra)}", file=sys.stderr)
                return 2
            pair = {f"old{i}": old.render(old.FlashGenome(**{k: v for k, v in g.to_dict().items() if k in known}),
                                          causal=causal, head_dim=head_dim),
                    f"new{i}": render(g, causal=causal, head_dim=head_dim)}
            sources.update(reversed(pair.items()) if args.new_first else pair.items())
        _, rows = time_sources(spec, sources, args.repeats)
        print(task)
        print_rows(rows)
        out[task] = {"genomes": [g.to_dict() for g in genomes], "rows": rows}
    if args.out:
        args.out.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
