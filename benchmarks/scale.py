"""Scaling over GPUs (issue 22): evaluations per minute of one run and one batch, on 1 and on 2 GPUs, with the
local and the Ray executor.

Each measurement is one ``evoforge run`` in a fresh directory of its own (its own run store and an empty Triton
cache, so no configuration profits from another's compiled kernels), on the GPUs named by CUDA_VISIBLE_DEVICES
(``--gpus 1``: GPU 0; ``--gpus 2``: GPUs 0 and 1):

- ``--part run``: one run of the seed shape (``--task attention``) for ``--budget`` (150 s, as in the issue's
  56.5 / 30.7 evaluations per minute), with a generation limit (``--generations``, 1000) the budget reaches
  first. The rate is the run's own ``throughput`` event: candidates evaluated
  over the run's wall time, from the executor's start.
- ``--part batch``: one batch over ``--task-dir`` (default examples/problems, level 1 and 2), each problem a run
  of exactly ``--max-evals`` candidates in batches of ``--batch-size``, so the batch does the same work on 1 and
  2 GPUs and its wall time can be compared (the issue's target: 2 GPUs in at most 55% of 1 GPU's time). Its
  rate is the candidates evaluated over the command's wall time. ``--problems-at-once`` runs the batch with
  ``evoforge run --problems-at-once <GPUs>`` (a problem per GPU at a time); its ratio, ``batch_<executor>_at_once``,
  is over the plain 1-GPU batch (on one GPU the two are the same).

The Ray executor gets a local cluster of its own (``--address local``) that sees the same GPUs; where Ray can't
be imported the measurement is recorded as skipped, with why.

One invocation measures one (part, executor, GPUs) and writes it as a part record; ``combine`` merges part
records into the final one and works out the ratios against the targets. A device command may last 10 minutes,
so the parts go in several commands (each prints where its record is)::

    python3 benchmarks/scale.py measure $OUT/run-local-1.json --part run --executor local --gpus 1
    python3 benchmarks/scale.py measure $OUT/run-local-2.json --part run --executor local --gpus 2
    python3 benchmarks/scale.py measure $OUT/batch-local-1.json --part batch --level 1 --max-evals 8 --gpus 1
    python3 benchmarks/scale.py combine benchmarks/results/scale-h200x2.json run-local-1.json run-local-2.json ...
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:  # run from a checkout without evoforge installed (the GPU machines)
    sys.path.insert(0, str(ROOT / "src"))
RUN_TARGET = 1.9  # evaluations per minute on 2 GPUs over 1 GPU, each executor
BATCH_TARGET = 0.55  # a batch's wall time on 2 GPUs over 1 GPU


def _env(gpus: int, tmp: Path) -> dict[str, str]:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in range(gpus)),
           "TRITON_CACHE_DIR": str(tmp / "triton-cache"), "PYTHONPATH": os.pathsep.join(
               filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    # never NVLink multicast on the shared machines (the device README): kept set for every child process
    env.update({"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"})
    return env


def executor_flags(executor: str) -> list[str]:
    return ["--executor", "ray", "--address", "local"] if executor == "ray" else ["--executor", "local"]


def command(args: argparse.Namespace) -> list[str]:
    """The ``evoforge run`` command line of a measurement."""
    base = [sys.executable, "-m", "evoforge.cli", "run", "--json", "--seed", str(args.seed),
            *executor_flags(args.executor)]
    if args.part == "run":
        # the budget, not the default 10 generations, ends the run: a run that runs out of generations first
        # ends with one slot idle while the other finishes the last batch, a drain the rate should not hold
        return [*base, "--task", args.task, "--budget", args.budget, "--generations", str(args.generations)]
    flags = [*base, "--task-dir", str(args.task_dir), "--max-evals", str(args.max_evals),
             "--population", str(args.population), "--batch-size", str(args.batch_size)]
    if getattr(args, "problems_at_once", False):
        flags += ["--problems-at-once", str(args.gpus)]
    return flags + (["--level", str(args.level)] if args.level is not None else [])


def measure(args: argparse.Namespace) -> dict[str, Any]:
    record: dict[str, Any] = {"kind": "scale-part", "part": args.part, "executor": args.executor, "gpus": args.gpus}
    if getattr(args, "problems_at_once", False):
        if args.part != "batch":
            raise SystemExit("--problems-at-once is for --part batch")
        record["problems_at_once"] = True
    if args.executor == "ray" and importlib.util.find_spec("ray") is None:
        return {**record, "skipped": "ray is not importable here (pip install 'evoforge[ray]')"}
    with tempfile.TemporaryDirectory(prefix=f"evoforge-scale-{args.part}-") as name:
        tmp = Path(name)
        cmd = command(args)
        record["command"] = " ".join(cmd[1:])
        started = time.monotonic()
        proc = subprocess.run(cmd, cwd=tmp, env=_env(args.gpus, tmp), capture_output=True, text=True, check=False)
        record["wall_s"] = round(time.monotonic() - started, 2)
        record["returncode"] = proc.returncode
        record["stderr_tail"] = proc.stderr[-4000:]
        try:
            summary = json.loads(proc.stdout)
        except ValueError:
            return {**record, "error": f"no JSON on stdout (exit {proc.returncode})"}
        record["summary"] = summary
        record.update(rates(tmp / ".evoforge" / "runs.db", summary, record["wall_s"]))
    return record


def rates(db: Path, summary: dict[str, Any], wall_s: float) -> dict[str, Any]:
    """Evaluations, their rate and the slots used, from the run store: a run's throughput event, or for a batch
    every problem's run over the command's wall time."""
    from evoforge.store import RunStore

    store = RunStore(db)
    first = summary.get("run") or next((p["run"] for p in summary.get("problems", []) if p.get("run")), None)
    device = {"device": store.run(first).env} if first else {}
    if "run" in summary:
        events = store.events(summary["run"], "throughput")
        if not events:
            return {"error": "the run recorded no throughput"}
        t = events[-1]
        return {**device, "evaluated": summary.get("evaluated"), "evals_per_min": t.get("evals_per_min"),
                "elapsed_s": t.get("elapsed_s"), "slots": len(t.get("per_slot") or {}), "per_slot": t.get("per_slot")}
    runs = [p["run"] for p in summary.get("problems", []) if p.get("run")]
    evaluated = sum(len(store.evaluations(r)) for r in runs)
    slots = set()
    for r in runs:
        for t in store.events(r, "throughput"):
            slots.update((t.get("per_slot") or {}).keys())
    return {**device, "evaluated": evaluated, "problems": len(summary.get("problems", [])), "runs": len(runs),
            "evals_per_min": round(60.0 * evaluated / wall_s, 2) if wall_s > 0 else None, "slots": len(slots),
            "errors": [p["problem"] for p in summary.get("problems", []) if p.get("status") == "error"]}


def combine(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The final record: every part, and per executor the 2-GPU figures over the 1-GPU ones, against the targets."""
    by_key = {(p["part"], p["executor"], p["gpus"]): p for p in parts if not p.get("problems_at_once")}
    at_once = {(p["executor"], p["gpus"]): p for p in parts if p.get("problems_at_once")}
    ratios: dict[str, Any] = {}
    for executor in sorted({p["executor"] for p in parts}):
        one, two = by_key.get(("run", executor, 1)), by_key.get(("run", executor, 2))
        if one and two and one.get("evals_per_min") and two.get("evals_per_min"):
            x = two["evals_per_min"] / one["evals_per_min"]
            ratios[f"run_{executor}"] = {"evals_per_min_1gpu": one["evals_per_min"],
                                         "evals_per_min_2gpu": two["evals_per_min"], "speedup": round(x, 3),
                                         "target": RUN_TARGET, "met": x >= RUN_TARGET}
        one = by_key.get(("batch", executor, 1))
        for name, two in ((f"batch_{executor}", by_key.get(("batch", executor, 2))),
                          (f"batch_{executor}_at_once", at_once.get((executor, 2)))):
            if one and two and one.get("wall_s") and two.get("wall_s") and not one.get("error") \
                    and not two.get("error"):
                x = two["wall_s"] / one["wall_s"]
                ratios[name] = {
                    "wall_s_1gpu": one["wall_s"], "wall_s_2gpu": two["wall_s"], "evaluated_1gpu": one.get("evaluated"),
                    "evaluated_2gpu": two.get("evaluated"), "time_ratio": round(x, 3), "target": BATCH_TARGET,
                    "met": x <= BATCH_TARGET}
    device = next((p["device"] for p in parts if p.get("device")), None)
    return {"kind": "scale", "issue": 22, "device": device, "ratios": ratios,
            "parts": sorted(parts, key=lambda p: (p["part"], p["executor"], p["gpus"],
                                                  bool(p.get("problems_at_once"))))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    m = sub.add_parser("measure", help="one (part, executor, GPUs) measurement, written as a part record")
    m.add_argument("out", type=Path)
    m.add_argument("--part", choices=("run", "batch"), required=True)
    m.add_argument("--executor", choices=("local", "ray"), default="local")
    m.add_argument("--gpus", type=int, choices=(1, 2), default=1)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--task", default="attention", help="run: the task (default the seed shape)")
    m.add_argument("--budget", default="150s", help="run: its wall-clock budget")
    m.add_argument("--generations", type=int, default=1000, help="run: a generation limit (far enough for the "
                   "budget to end the run)")
    m.add_argument("--task-dir", type=Path, default=ROOT / "examples" / "problems", help="batch: its problems")
    m.add_argument("--level", type=int, default=None, help="batch: only this level")
    m.add_argument("--max-evals", type=int, default=12, help="batch: candidates evaluated per problem")
    m.add_argument("--population", type=int, default=4, help="batch: candidates per generation")
    m.add_argument("--problems-at-once", action="store_true", help="batch: a problem per GPU at a time "
                   "(evoforge run --problems-at-once GPUS)")
    m.add_argument("--batch-size", type=int, default=2, help="batch: candidates per batch (two batches of a "
                   "generation run at once on two GPUs)")
    c = sub.add_parser("combine", help="merge part records into the final record")
    c.add_argument("out", type=Path)
    c.add_argument("parts", type=Path, nargs="+")
    args = parser.parse_args()
    if args.action == "measure":
        record = measure(args)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2, default=str))
        figure = f"{record.get('evals_per_min')} evals/min, {record.get('evaluated')} evaluated"
        said = record.get("skipped") or record.get("error") or figure
        print(f"{args.part} {args.executor} {args.gpus} GPU(s): {said} in {record.get('wall_s')} s -> {args.out}")
        return
    parts = []
    for path in args.parts:
        data = json.loads(path.read_text())
        parts.extend(data["parts"] if data.get("kind") == "scale" else [data])
    final = combine(parts)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(final, indent=2, default=str))
    for key, value in final["ratios"].items():
        print(key, value)


if __name__ == "__main__":
    main()
