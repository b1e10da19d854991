"""fast_p over several batch records at once: issue 22 asks for fast_1 against eager and fast_1.05 against the
faster of eager and torch.compile over the example problems *and* a KernelBench sample, which are recorded in
separate files (``problems_suite.py`` writes ``problems-<device>.json``; the KernelBench sample's batches are in
the same format). Every problem counts once; nothing is re-measured. A problem (its name and level) in several
records, a re-run, counts from the last record given that holds it; the rows it replaces are listed under
``superseded``.

Usage: python benchmarks/fast_p.py RECORD.json [RECORD.json ...] [--out results/fast-p-<device>.json]
Prints the combined table and summary (only wins beyond noise count, as in a batch's own summary) and, with
``--out``, writes them as JSON with each row's record, level and date.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from evoforge.batch import BatchSummary, ProblemOutcome

TARGETS = {"fast_1_vs_eager": 0.8, "fast_1.05_vs_best": 0.3}  # issue 22's


def combine(paths: list[Path]) -> dict[str, Any]:
    by_problem: dict[tuple[str, str], dict[str, Any]] = {}
    superseded: list[dict[str, Any]] = []
    devices: set[str] = set()
    for path in paths:
        data = json.loads(path.read_text())
        devices.add(data.get("device", {}).get("device_name") or "?")
        for level, block in sorted(data.get("levels", {}).items()):
            for p in block["batch"]["problems"]:
                row = {"record": path.name, "level": level, "date": block.get("date"), "budget": block.get("budget"),
                       "outcome": p}
                if (key := (str(p["problem"]), str(level))) in by_problem:
                    old = by_problem.pop(key)
                    superseded.append({"record": old["record"], "level": level, "problem": key[0],
                                       "by": path.name, "vs_eager": old["outcome"].get("vs_eager"),
                                       "vs_compile": old["outcome"].get("vs_compile")})
                by_problem[key] = row
    rows = list(by_problem.values())
    if not rows:
        raise SystemExit("no problem rows in " + ", ".join(map(str, paths)))
    summary = BatchSummary([ProblemOutcome(**r["outcome"]) for r in rows]).measures()
    return {"tool": "evoforge", "kind": "fast-p-combined", "devices": sorted(devices),
            "records": [p.name for p in paths], "summary": summary, "targets": TARGETS,
            "met": {k: summary[k] >= v for k, v in TARGETS.items()}, "rows": rows, "superseded": superseded}


def table(data: dict[str, Any]) -> str:
    def x(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}x"

    w = max(28, *(len(r["record"]) for r in data["rows"]))
    lines = [f"{'problem':<32} {'record':<{w}} lvl  {'vs eager':>9} {'vs compile':>10}  beyond noise (eager/best)"]
    for r in data["rows"]:
        o = r["outcome"]
        lines.append(f"{o['problem']:<32} {r['record']:<{w}} {r['level']:>3}  {x(o['vs_eager']):>9} "
                     f"{x(o['vs_compile']):>10}  {o['significant_vs_eager']!s:>5}/{o['significant']!s:<5}")
    for r in data.get("superseded", []):
        lines.append(f"  (re-run: {r['problem']} of {r['record']}, {x(r['vs_eager'])} vs eager, replaced by "
                     f"{r['by']})")
    s = data["summary"]
    lines.append(f"{s['problems']} problems: fast_1 vs eager {s['fast_1_vs_eager']:.2f} (target 0.8), "
                 f"fast_1.05 vs the faster of eager and compile {s['fast_1.05_vs_best']:.2f} (target 0.3); "
                 f"geomean {x(s['geomean_vs_eager'])} vs eager, {x(s['geomean_vs_best'])} vs the faster")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("records", nargs="+", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    missing = [p for p in args.records if not p.exists()]
    if missing:
        print("no such record: " + ", ".join(map(str, missing)), file=sys.stderr)
        return 2
    data = combine(args.records)
    print(table(data))
    if args.out:
        args.out.write_text(json.dumps(data, indent=2) + "\n")
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
