"""Issue 5's table: for each shape, evolve an attention kernel (benchmarks/evolve_attention.py: a
budgeted `evoforge run`, the best kernel exported, re-timed in fresh processes against every PyTorch
baseline), then collect one row per shape: speedups over the fastest PyTorch path and over
FlashAttention-2 (SDPA's flash backend) in graph and eager mode, and TFLOP/s of each.

Usage: python benchmarks/attention_suite.py [--rows attention-causal,attention-long] [--budget 2m]
       [--repeats 3] [--out benchmarks/results]
Writes <out>/attention-suite-<device>.json (rows already there are kept; a task measured again replaces
its row) and attention-suite-<device>.png (TFLOP/s per shape, the
evolved kernel beside every SDPA backend and FlexAttention), plus each row's evolve files.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import torch

from evoforge import envinfo
from evoforge.tasks import attention_params, builtin_task

ROOT = Path(__file__).resolve().parents[1]
ROWS = ["attention", "attention-causal", "attention-bf16", "attention-long", "attention-d128",
        "attention-d128:causal=true", "attention:batch=1,heads=16,seq_len=16384,head_dim=128", "attention-decode"]
SHOWN = ("evolved", "sdpa_default", "sdpa_flash", "sdpa_cudnn", "sdpa_mem_eff", "flex_attention")


def _median(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.median(kept) if kept else None


def row(task: str, budget: str, repeats: int, out: Path, slug: str) -> dict:
    prefix = "suite-" + task.replace(":", "-").replace(",", "-").replace("=", "")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "evolve_attention.py"), "--task", task,
                           "--budget", budget, "--repeats", str(repeats), "--out", str(out), "--prefix", prefix],
                          capture_output=True, text=True, check=False)
    path = out / f"{prefix}-{slug}.json"
    if proc.returncode != 0 or not path.exists():
        return {"task": task, "status": "failed", "detail": (proc.stderr or proc.stdout)[-1500:]}
    data = json.loads(path.read_text())
    params = attention_params(builtin_task(task))
    flops = params.flops if params is not None else None
    retime = data["retime"]
    rowdata: dict = {"task": task, "name": data["task"]["name"], "status": "ok", "flops": flops,
                     "retime_statuses": retime["statuses"], "search": {k: data["search"][k] for k in (
                         "budget", "evaluated", "valid", "evals_per_min")},
                     "best_genome": data["search"]["best"]["genome"] if data["search"]["best"] else None}
    for mode in ("graph", "eager"):
        lat: dict[str, float | None] = {"evolved": _median(retime["latency_us"][mode])}
        for name in (*SHOWN[1:], "fa4", "compile_3kernel", "math_baseline", "task_model", "sdpa_math_only"):
            lat[name] = _median([b.get(name, {}).get(mode) for b in retime["baselines_us"]])
        torch_paths = {n: v for n, v in lat.items() if n != "evolved" and v}
        fastest = min(torch_paths, key=lambda n: torch_paths[n]) if torch_paths else None
        ev = lat["evolved"]
        rowdata[mode] = {
            "latency_us": lat,
            "fastest_torch": fastest,
            "speedup_vs_fastest": (torch_paths[fastest] / ev) if ev and fastest else None,
            "speedup_vs_flash2": (lat["sdpa_flash"] / ev) if ev and lat.get("sdpa_flash") else None,
            # FlashAttention-4, where it is installed (evoforge[fa4]); it is also one of the torch paths above
            "speedup_vs_fa4": (lat["fa4"] / ev) if ev and lat.get("fa4") else None,
            "tflops": {n: flops / (v * 1e-6) / 1e12 for n, v in lat.items() if v and flops},
        }
    return rowdata


def plot(rows: list[dict], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        return
    fig, ax = plt.subplots(figsize=(max(6, 2.2 * len(ok)), 4))
    width = 0.8 / len(SHOWN)
    for i, name in enumerate(SHOWN):
        ax.bar([j + i * width for j in range(len(ok))], [r["graph"]["tflops"].get(name, 0) for r in ok], width,
               label=name)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(ok))], [r["name"] for r in ok], rotation=15, fontsize=7)
    ax.set_ylabel("TFLOP/s (graph mode, median)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def split_rows(text: str) -> list[str]:
    """Rows separated by ';' or ','; with commas, a piece with '=' and no ':' continues the row before it
    ("attention:batch=1,heads=16" is one row, "attention-long,attention-d128:causal=true" two)."""
    if ";" in text:
        return [t for t in text.split(";") if t]
    rows: list[str] = []
    for piece in (t for t in text.split(",") if t):
        if rows and "=" in piece and ":" not in piece:
            rows[-1] += "," + piece
        else:
            rows.append(piece)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", default=",".join(ROWS[1:5]),
                        help="built-in tasks with their overrides, separated by ',' or ';' "
                             "(a ',' piece with '=' and no ':' belongs to the row before it)")
    parser.add_argument("--budget", default="2m")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    args.out = args.out.resolve()  # the runs work in a temporary folder
    tasks = split_rows(args.rows)
    slug = envinfo.device_slug(torch.cuda.get_device_name(0)) if torch.cuda.is_available() else "cpu"
    args.out.mkdir(parents=True, exist_ok=True)
    result_path = args.out / f"attention-suite-{slug}.json"
    # Rows of earlier calls stay (so the table can be measured in several calls); a task measured
    # again replaces its row. Each row records its own budget and repeats.
    rows = json.loads(result_path.read_text())["rows"] if result_path.exists() else []
    for task in tasks:
        r = {**row(task, args.budget, args.repeats, args.out, slug), "budget": args.budget, "repeats": args.repeats}
        rows = [old for old in rows if old["task"] != task] + [r]
        result_path.write_text(json.dumps({"device": slug, "rows": rows}, indent=2))
        if r["status"] != "ok":
            print(f"{task:40} failed: {r['detail'][-300:]}", flush=True)
            continue
        g, e = r["graph"], r["eager"]
        print(f"{r['name']:40} graph {g['speedup_vs_fastest'] or 0:5.2f}x vs {g['fastest_torch']} "
              f"({g['latency_us']['evolved'] or 0:.1f} us, {g['tflops'].get('evolved', 0):.0f} TFLOP/s), "
              f"{g['speedup_vs_flash2'] or 0:.2f}x vs FA2; eager {e['speedup_vs_fastest'] or 0:5.2f}x vs "
              f"{e['fastest_torch']}", flush=True)
    plot(rows, args.out / f"attention-suite-{slug}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
