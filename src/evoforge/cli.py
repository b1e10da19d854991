"""The ``evoforge`` command line (typer + rich).

Exit codes: 0 success; 1 the job ran but did not succeed (no sweep variant beat the baselines, the
evaluated candidate is not correct); 2 bad input (a task or candidate that can't be used); 3 the
evaluator itself failed. Errors are one line; ``--verbose`` adds the traceback.
"""

from __future__ import annotations

import json
import statistics
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from evoforge import __version__

app = typer.Typer(
    add_completion=False, no_args_is_help=True, rich_markup_mode=None,
    help="evoforge: evolve fast GPU kernels for PyTorch operations, measured honestly.",
)
out = Console()
if not out.is_terminal:
    out = Console(width=160)  # a log or a pipe: don't squeeze tables into 80 columns
err = Console(stderr=True, soft_wrap=True)  # one error, one line, whatever the width
T = TypeVar("T")

DEFAULT_SWEEP_OUT = Path("evidence/evo_attention_sweep.json")


class _Fail(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _guarded(fn: Callable[[], T], verbose: bool) -> T:
    """Run a command body: known errors become one line and an exit code, never a bare traceback."""
    from evoforge.evaluator import EvaluatorError
    from evoforge.task import TaskError

    try:
        return fn()
    except _Fail as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(exc.code) from None
    except TaskError as exc:
        if verbose:
            traceback.print_exc()
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    except EvaluatorError as exc:
        if verbose:
            traceback.print_exc()
        err.print(f"[red]evaluator error:[/red] {exc}", highlight=False)
        raise typer.Exit(3) from None
    except KeyboardInterrupt:
        err.print("interrupted")
        raise typer.Exit(130) from None


@contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[str], None]]:
    """A spinner with the evaluator's latest step on stderr (stdout stays clean for --json)."""
    if not enabled or not err.is_terminal:
        def plain(message: str) -> None:
            if enabled and not any(word in message for word in ("timing ", "checking ", "rechecking ")):
                err.print(f"  {message}", highlight=False)
        yield plain
        return
    with err.status("starting") as status:
        yield lambda message: status.update(message)


def _eval_config(device: str, timeout: float, budget_ms: float, seed: int | None,
                 memory_mb: int | None, repeats_rounds: int | None = None) -> Any:
    from evoforge.evaluator import EvalConfig
    from evoforge.timing import TimingConfig

    timing = TimingConfig(budget_ms=budget_ms)
    if repeats_rounds:
        timing.rounds = repeats_rounds
    cfg = EvalConfig(device=device, timeout_s=timeout, timing=timing, seed=seed)
    if memory_mb:
        cfg.memory_limit_mb = memory_mb
    return cfg


def _fmt_us(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if value < 1000 else f"{value / 1000:.2f} ms"


def _fmt_range(values: list[float | None]) -> str:
    xs = [v for v in values if v is not None]
    if not xs:
        return "-"
    med = statistics.median(xs)
    if len(xs) == 1:
        return _fmt_us(med)
    return f"{_fmt_us(med)} [{_fmt_us(min(xs))}–{_fmt_us(max(xs))}]"


DeviceOpt = typer.Option("auto", "--device", help="auto (CUDA if present), cuda, cuda:N or cpu.")
TimeoutOpt = typer.Option(300.0, "--timeout", help="Seconds one stage of one candidate may take.")
# typer's idiom is Option objects as defaults; they are immutable descriptions, so sharing them is safe.
BudgetOpt = typer.Option(100.0, "--budget-ms", help="Timing budget per entry and mode, milliseconds.")
SeedOpt = typer.Option(None, "--seed", help="Input seed (default: a fresh random seed each run).")
MemoryOpt = typer.Option(None, "--memory-mb", help="Worker memory cap, MiB (default: 75% of RAM, at most 32 GiB).")
VerboseOpt = typer.Option(False, "--verbose", "-v", help="Show tracebacks.")
JsonOpt = typer.Option(False, "--json", help="Print JSON on stdout instead of a table.")


@app.command()
def sweep(
    task: str = typer.Option("attention", "--task", "-t", help="A built-in attention task (see `evoforge tasks`)."),
    repeats: int = typer.Option(3, "--repeats", "-r", min=1, help="Independent runs, each in a fresh worker."),
    variants: str = typer.Option("", "--variants", help="Comma-separated subset of variants (default: all)."),
    output: Path = typer.Option(DEFAULT_SWEEP_OUT, "--out", "-o", help="Where to write the evidence JSON."),
    device: str = DeviceOpt, timeout: float = TimeoutOpt, budget_ms: float = BudgetOpt,
    seed: int | None = SeedOpt, memory_mb: int | None = MemoryOpt,
    as_json: bool = JsonOpt, verbose: bool = VerboseOpt,
) -> None:
    """The seed's attention sweep, done right: every variant checked and timed live against PyTorch."""
    from evoforge.sweep import run_sweep, select_variants, write_evidence
    from evoforge.task import resolve_task

    def body() -> int:
        spec = resolve_task(task)
        chosen = select_variants(spec, [v.strip() for v in variants.split(",") if v.strip()] or None)
        config = _eval_config(device, timeout, budget_ms, seed, memory_mb)
        err.print(f"sweep: {spec.name}, {len(chosen)} variants, {repeats} repeat(s)", highlight=False)
        with _progress(True) as say:
            outcome = run_sweep(spec, chosen, repeats=repeats, config=config, progress=say)
        path = write_evidence(outcome.evidence, output)
        if as_json:
            out.print_json(json.dumps({k: v for k, v in outcome.evidence.items() if k != "runs"}, default=str))
        else:
            _print_sweep(outcome.evidence)
            out.print(f"evidence: {path}", highlight=False)
        return 0 if outcome.success else 1

    raise typer.Exit(_guarded(body, verbose))


def _print_sweep(evidence: dict[str, Any]) -> None:
    dev = evidence["device"]
    versions = dev.get("versions", {})
    table = Table(title=f"{evidence['task']['name']} on {dev.get('device_name', '?')} "
                        f"(torch {versions.get('torch')}, {evidence['repeats']} repeats)")
    for col in ("variant", "status", "max err", "eager µs", "graph µs", "fitness", "vs", "notes"):
        table.add_column(col, justify="right" if col in ("max err", "eager µs", "graph µs", "fitness") else "left")
    for row in sorted(evidence["variants"], key=lambda r: -(r["fitness_spread"] or {"median": 0})["median"]):
        statuses = row["statuses"]
        status = statuses[0] if len(set(statuses)) == 1 else "/".join(statuses)
        status = f"[green]{status}[/green]" if row["correct_all"] else f"[red]{status}[/red]"
        fit = row["fitness_spread"]
        fitness = "-" if not fit or fit["max"] == 0 else (
            f"{fit['median']:.2f}×" + (f" [{fit['min']:.2f}–{fit['max']:.2f}]" if fit["min"] != fit["max"] else ""))
        notes = list(row["labels"])
        if not row["correct_all"]:
            notes.append(next((d for d in row["details"] if d), "")[:70])
        vs = next((b for b in row["best_baseline"] if b), "-")
        err_txt = "-" if row["max_abs_err"] is None else f"{row['max_abs_err']:.1e}"
        table.add_row(row["name"], status, err_txt, escape(_fmt_range(row["latency_us"].get("eager", []))),
                      escape(_fmt_range(row["latency_us"].get("graph", []))), escape(fitness), vs,
                      escape("; ".join(n for n in notes if n)))
    out.print(table)
    out.print("latency: median [min–max across repeats]; " + evidence["fitness_rule"], highlight=False, markup=False)
    if evidence["success"]:
        out.print(f"[green]success:[/green] {', '.join(evidence['winners'])} beat every other PyTorch path "
                  "in every repeat, beyond noise")
    else:
        out.print("no variant beat every other PyTorch path beyond noise in every repeat (exit 1): "
                  "the baseline is real now")


@app.command()
def tasks(as_json: bool = JsonOpt) -> None:
    """List the built-in tasks."""
    from evoforge.tasks import BUILTINS

    rows = [{"name": b.name, "description": b.description, **b.params.to_dict()} for b in BUILTINS.values()]
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table(title="built-in tasks (add :key=value,... to change a parameter, e.g. attention:seq_len=1024)")
    for col in ("name", "B", "H", "KV", "Q", "S", "D", "causal", "dtype", "description"):
        table.add_column(col)
    for b in BUILTINS.values():
        p = b.params
        table.add_row(b.name, str(p.batch), str(p.heads), str(p.n_kv_heads), str(p.n_q), str(p.seq_len),
                      str(p.head_dim), "yes" if p.causal else "no", p.dtype, b.description)
    out.print(table)
    out.print("or give a KernelBench-format file: --task path/to/problem.py (Model, get_inputs, get_init_inputs)",
              highlight=False)


@app.command("eval")
def eval_cmd(
    candidate: Path = typer.Argument(..., help="A Python file that defines class ModelNew(nn.Module)."),
    task: str = typer.Option("attention", "--task", "-t", help="Built-in task name or a KernelBench-format file."),
    baselines: bool = typer.Option(True, "--baselines/--no-baselines", help="Time PyTorch's paths beside it."),
    device: str = DeviceOpt, timeout: float = TimeoutOpt, budget_ms: float = BudgetOpt,
    seed: int | None = SeedOpt, memory_mb: int | None = MemoryOpt,
    as_json: bool = JsonOpt, verbose: bool = VerboseOpt,
) -> None:
    """Evaluate one candidate file: correctness, guards, latency, speedup over every baseline."""
    from evoforge.candidate import Candidate
    from evoforge.evaluator import Evaluator
    from evoforge.task import load_task, resolve_task
    from evoforge.tasks import baselines_for

    def body() -> int:
        if not candidate.is_file():
            raise _Fail(f"{candidate}: no such candidate file", 2)
        try:
            source = candidate.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise _Fail(f"{candidate}: cannot read it ({exc})", 2) from None
        spec = resolve_task(task)
        load_task(spec)  # a broken task is reported before any worker starts
        cand = Candidate(name=candidate.stem, source=source)
        base = baselines_for(spec) if baselines else []
        base = [b for b in base if b.name != cand.name]
        config = _eval_config(device, timeout, budget_ms, seed, memory_mb)
        with _progress(True) as say:
            report = Evaluator(spec, config, progress=say).evaluate([cand], base)
        result = report.results[0]
        if as_json:
            out.print_json(json.dumps({"task": spec.name, **report.to_dict()}, default=str))
        else:
            _print_eval(report, spec.name)
        return 0 if result.ok else 1

    raise typer.Exit(_guarded(body, verbose))


def _print_eval(report: Any, task_name: str) -> None:
    env = report.env
    table = Table(title=f"{task_name} on {env.get('device_name', '?')}")
    for col in ("entry", "role", "status", "max err", "eager µs", "graph µs", "fitness", "detail"):
        table.add_column(col)
    for r in report.results:
        status = f"[green]{r.status}[/green]" if r.ok else f"[red]{r.status}[/red]"
        err_txt = "-" if r.max_abs_err is None else f"{r.max_abs_err:.1e}"
        fit = f"{r.fitness:.2f}× vs {r.best_baseline}" if r.role == "candidate" and r.ok and r.best_baseline else ""
        table.add_row(r.name, r.role, status, err_txt, _fmt_us(r.latency("eager")), _fmt_us(r.latency("graph")),
                      fit, escape(r.detail[:80]))
    out.print(table)
    cand = report.results[0]
    if cand.logs and not cand.ok:
        out.print(f"[dim]{cand.name} logs (tail):[/dim]\n{cand.logs[-1500:]}", highlight=False, markup=False)


@app.command()
def doctor(as_json: bool = JsonOpt, device: str = DeviceOpt) -> None:
    """GPU, driver, versions, and which attention backends run here."""
    from evoforge.doctor import diagnose

    report = diagnose(device)
    if as_json:
        out.print_json(json.dumps(report, default=str))
        return
    env = report["env"]
    out.print(f"device: {env.get('device_name')} ({env.get('device_type')})", highlight=False)
    for key in ("capability", "sm_count", "memory_gib", "l2_bytes", "driver"):
        if env.get(key) is not None:
            out.print(f"  {key}: {env[key]}", highlight=False)
    out.print("versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()), highlight=False)
    out.print("attention paths:")
    for name, state in report["backends"].items():
        mark = "[green]runs[/green]" if state == "runs" else f"[yellow]{state}[/yellow]"
        out.print(f"  {name}: {mark}")
    for note in report["notes"]:
        out.print(f"note: {note}", highlight=False)


@app.callback(invoke_without_command=True)
def _root(version: bool = typer.Option(False, "--version", help="Print the version and exit.")) -> None:
    if version:
        out.print(f"evoforge {__version__}")
        raise typer.Exit(0)


def main() -> None:
    try:
        app()
    except BrokenPipeError:
        sys.exit(1)


if __name__ == "__main__":
    main()
