"""``evoforge bench evolve`` and ``evoforge bench suite``: issue 5's table of attention shapes.

``evolve`` is one row's work: a budgeted ``evoforge run`` in a scratch folder, the best kernel exported with
``evoforge best --export``, its report's fitness plot, then the export re-timed in fresh evaluator workers beside
every baseline of the task (``repeats`` times), all written as ``<prefix>-<device>.json`` (+ ``-kernel.py``,
``-fitness.png``). ``suite`` runs ``evolve`` per shape, each in a process of its own (``python -m evoforge.bench
evolve``: a row's workers, compiles and GPU memory end with it), and collects one row per shape: speedups over the
fastest PyTorch path, FlashAttention-2 (SDPA's flash backend) and FlashAttention-4 where installed, in graph and
eager mode, and TFLOP/s of each, into ``attention-suite-<device>.json`` (rows of earlier calls kept; a task measured
again replaces its row) and a TFLOP/s plot.
"""

from __future__ import annotations

import collections
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from evoforge import envinfo
from evoforge.bench.sources import evaluate_sources, retime_record, stderr_progress
from evoforge.candidate import Candidate
from evoforge.evaluator import EvalConfig
from evoforge.export import candidate_sources
from evoforge.report import evidence
from evoforge.resolve import resolve_task
from evoforge.store import RunStore
from evoforge.tasks import attention_params, builtin_task

ROWS = ["attention", "attention-causal", "attention-bf16", "attention-long", "attention-d128",
        "attention-d128:causal=true", "attention:batch=1,heads=16,seq_len=16384,head_dim=128", "attention-decode"]
DEFAULT_ROWS = ROWS[1:5]
SHOWN = ("evolved", "sdpa_default", "sdpa_flash", "sdpa_cudnn", "sdpa_mem_eff", "flex_attention")


def device_slug() -> str:
    import torch

    return envinfo.device_slug(torch.cuda.get_device_name(0)) if torch.cuda.is_available() else "cpu"


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "evoforge.cli", *args], cwd=cwd, capture_output=True, text=True,
                          check=False)


def evolve(task: str = "attention", budget: str = "8m", *, out: Path, prefix: str = "evolve", repeats: int = 3,
           generations: int = 40, population: int = 8, device: str | None = None, budget_ms: float | None = None,
           baselines: Iterable[str] | None = None, log: Any = sys.stderr) -> dict[str, Any]:
    """Search, export, re-time; write ``<out>/<prefix>-<device>.json`` (and the kernel and plot beside it) and
    return the record. ``device`` and ``budget_ms`` go to the search and the re-time, ``baselines`` (names)
    narrows the re-time's baselines (default: every one). A failed search raises RuntimeError."""
    out = out.resolve()  # the search works in a scratch folder
    slug = device_slug()
    work = Path(tempfile.mkdtemp(prefix=f"evoforge-{prefix}-"))  # kept after: its store holds the search
    more = [*(["--device", device] if device else []), *(["--budget-ms", str(budget_ms)] if budget_ms else [])]
    started = time.monotonic()
    run = _cli("run", "--task", task, "--budget", budget, "--generations", str(generations), "--population",
               str(population), "--json", *more, cwd=work)
    search_s = time.monotonic() - started
    print(run.stderr[-3000:], file=log)
    if run.returncode not in (0, 1):
        raise RuntimeError(f"evoforge run failed ({run.returncode}):\n{run.stdout}\n{run.stderr[-3000:]}")
    summary = json.loads(run.stdout)
    data = evidence(RunStore(work / ".evoforge" / "runs.db"), summary["run"])
    if not data["evaluated"]:
        raise RuntimeError(f"the search evaluated no candidate within its budget ({budget}; it stopped: "
                           f"{summary['stop_reason']}): generation 0 alone takes longer than that for {task} here, "
                           "so give it a longer --budget")
    out.mkdir(parents=True, exist_ok=True)
    kernel_path = out / f"{prefix}-{slug}-kernel.py"
    exported = _cli("best", summary["run"], "--export", str(kernel_path), cwd=work)
    if exported.returncode != 0:
        raise RuntimeError(f"evoforge best --export failed ({exported.returncode}): {exported.stderr[-2000:]}")
    print(exported.stdout, file=log)
    reported = _cli("report", summary["run"], "--out", str(work / "report"), cwd=work)
    if reported.returncode != 0:
        raise RuntimeError(f"evoforge report failed ({reported.returncode}): {reported.stderr[-2000:]}")

    # Re-time the exported kernel (the candidate the guarded module carries) in fresh worker processes, beside
    # the task's baselines, `repeats` times.
    spec = resolve_task(task)
    cand = Candidate(name="evolved", source=candidate_sources(kernel_path.read_text())[0])
    config = EvalConfig(**({"device": device} if device else {}))
    if budget_ms:
        from evoforge.timing import TimingConfig

        config.timing = TimingConfig(budget_ms=budget_ms)
    reports = evaluate_sources(spec, [cand], baselines=baselines, repeats=repeats, config=config,
                               progress=stderr_progress(stream=log))
    retimes = [r.to_dict() for r in reports]
    result = {
        "date": data["date"], "task": data["task"], "device": retimes[0]["env"],
        "search": {"run": summary["run"], "store": str(work / ".evoforge" / "runs.db"), "budget": budget,
                   "seconds": search_s,
                   "generations": summary["generations"], "evaluated": data["evaluated"], "valid": data["valid"],
                   "valid_fraction": data["valid"] / max(data["evaluated"], 1),
                   "evals_per_min": 60 * data["evaluated"] / search_s, "stop_reason": summary["stop_reason"],
                   "best": data["best"], "best_by_generation": data["generations"]},
        "retime": retime_record(reports),
        "runs": retimes,
    }
    (out / f"{prefix}-{slug}.json").write_text(json.dumps(result, indent=2, default=str))
    if (work / "report" / "fitness.png").exists():
        shutil.copy(work / "report" / "fitness.png", out / f"{prefix}-{slug}-fitness.png")
    return result


def evolve_summary(result: dict[str, Any]) -> list[str]:
    return [json.dumps({k: result["search"][k] for k in ("evaluated", "valid", "evals_per_min", "stop_reason")}),
            f"{json.dumps(result['retime']['fitness'])} {json.dumps(result['retime']['latency_us'])}"]


def _median(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.median(kept) if kept else None


def row_prefix(task: str) -> str:
    return "suite-" + task.replace(":", "-").replace(",", "-").replace("=", "")


def streamed(cmd: list[str], echo: Any, label: str) -> tuple[int, str]:
    """Run ``cmd``, echoing each line of its stderr as it comes (prefixed with ``label``): a row's search and
    re-times take minutes, and the suite shows what they are doing. Returns the exit code and the output's tail
    (stderr, else stdout), kept for a failed row's detail."""
    tail: collections.deque[str] = collections.deque(maxlen=300)
    with tempfile.TemporaryFile("w+") as stdout:
        with subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.PIPE, text=True) as proc:
            assert proc.stderr is not None
            for line in proc.stderr:
                tail.append(line)
                echo(f"  {label}: {line.rstrip()}")
            code = proc.wait()
        stdout.seek(0)
        return code, "".join(tail) or stdout.read()


def row(task: str, budget: str, repeats: int, out: Path, slug: str, evolve_flags: Iterable[str] = (),
        echo: Any = lambda line: None) -> dict:
    """One shape's row: ``evolve`` in a process of its own (its progress echoed), then its record's speedups and
    TFLOP/s."""
    prefix = row_prefix(task)
    code, output = streamed([sys.executable, "-m", "evoforge.bench", "evolve", "--task", task, "--budget", budget,
                             "--repeats", str(repeats), "--out", str(out), "--prefix", prefix, *evolve_flags],
                            echo, task)
    path = out / f"{prefix}-{slug}.json"
    if code != 0 or not path.exists():
        return {"task": task, "status": "failed", "detail": output[-1500:]}
    return row_from_record(task, json.loads(path.read_text()))


def row_from_record(task: str, data: dict[str, Any]) -> dict[str, Any]:
    params = attention_params(builtin_task(task))
    flops = params.flops if params is not None else None
    retime = data["retime"]
    env = data.get("device") or {}
    rowdata: dict = {"task": task, "name": data["task"]["name"], "status": "ok", "flops": flops,
                     # the row stands on its own: where and when it was measured, with what
                     "date": data.get("date"), "device_name": env.get("device_name"), "driver": env.get("driver"),
                     "versions": env.get("versions"),
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


def row_line(r: dict[str, Any]) -> str:
    if r["status"] != "ok":
        said = [line for line in r["detail"].splitlines() if line.strip()]  # its last line says why
        return f"{r['task']:40} failed: {(said[-1] if said else '')[-300:]}"
    g, e = r["graph"], r["eager"]
    return (f"{r['name']:40} graph {g['speedup_vs_fastest'] or 0:5.2f}x vs {g['fastest_torch']} "
            f"({g['latency_us']['evolved'] or 0:.1f} us, {g['tflops'].get('evolved', 0):.0f} TFLOP/s), "
            f"{g['speedup_vs_flash2'] or 0:.2f}x vs FA2; eager {e['speedup_vs_fastest'] or 0:5.2f}x vs "
            f"{e['fastest_torch']}")


def suite(tasks: list[str], budget: str = "2m", repeats: int = 3, *, out: Path,
          evolve_flags: Iterable[str] = (), echo: Any = print) -> list[dict[str, Any]]:
    """Every task's row, merged into ``<out>/attention-suite-<device>.json`` as each finishes, then the plot."""
    out = out.resolve()  # the runs work in a temporary folder
    slug = device_slug()
    out.mkdir(parents=True, exist_ok=True)
    result_path = out / f"attention-suite-{slug}.json"
    # Rows of earlier calls stay (so the table can be measured in several calls); a task measured
    # again replaces its row. Each row records its own budget and repeats.
    rows = json.loads(result_path.read_text())["rows"] if result_path.exists() else []
    for task in tasks:
        r = {**row(task, budget, repeats, out, slug, list(evolve_flags), echo), "budget": budget, "repeats": repeats}
        rows = [old for old in rows if old["task"] != task] + [r]
        result_path.write_text(json.dumps({"device": slug, "rows": rows}, indent=2))
        echo(row_line(r))
    plot(rows, out / f"attention-suite-{slug}.png")
    return rows
