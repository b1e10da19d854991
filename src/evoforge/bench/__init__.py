"""``evoforge bench``: the benchmarks a user runs, as commands on one public function.

Every command here is built on ``evaluate_sources`` (``bench/sources.py``): kernel sources through the evaluator
beside chosen PyTorch baselines, one evaluation per repeat. The commands, one module each:

- ``evolve`` and ``suite`` (``suite.py``): a budgeted search, its best kernel exported and re-timed in fresh
  workers; per shape of issue 5's table, one row of speedups and TFLOP/s.
- ``retime`` (``retime.py``): an exported kernel re-timed beside a task's baselines.
- ``timing`` (``calibrate.py``): evoforge's eager and graph medians beside ``do_bench``, ``do_bench_cudagraph``,
  back-to-back calls and the host time of a call: what the numbers mean on this machine.
- ``throughput`` (``throughput.py``): a short run's seconds per judge stage and evaluations per minute, or the
  executor configurations side by side.
- ``render`` (``records.py``): an exported kernel kept as genome + template version, written back as the file.

The scripts under ``benchmarks/`` that ran these before (``attention_suite.py``, ``evolve_attention.py``,
``retime_kernel.py``, ``timing_methods.py``, ``search_profile.py``, ``executor_throughput.py``) are thin wrappers
that keep their flags. ``python -m evoforge.bench`` runs this app on its own (the suite runs each row that way).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

__all__ = ["app", "evaluate_sources"]


def __getattr__(name: str) -> Any:
    # evaluate_sources imports the evaluator (and torch): only when asked for, so `evoforge --help` stays fast
    if name == "evaluate_sources":
        from evoforge.bench.sources import evaluate_sources

        return evaluate_sources
    raise AttributeError(name)

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Benchmarks: the attention suite, re-timing an exported kernel, timing calibration, search "
                       "throughput, and re-rendering a recorded kernel.")

OUT_DEFAULT = Path("bench-results")


def _names(text: str | None) -> list[str] | None:
    return [n for n in text.split(",") if n] if text else None


def _config(device: str | None, budget_ms: float | None):  # type: ignore[no-untyped-def]
    from evoforge.evaluator import EvalConfig
    from evoforge.timing import TimingConfig

    config = EvalConfig(**({"device": device} if device else {}))
    if budget_ms:
        config.timing = TimingConfig(budget_ms=budget_ms)
    return config


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


DeviceOpt = typer.Option(None, "--device", help="auto (default), cuda, cuda:N or cpu.")
BudgetMsOpt = typer.Option(None, "--budget-ms", help="Timing budget per entry and mode, ms (default: the evaluator's).")
BaselinesOpt = typer.Option(None, "--baselines", help="Comma-separated baselines to re-time beside (default: every "
                                                      "one the task offers on the device).")


def _evolve_flags(generations: int | None, population: int | None, device: str | None, budget_ms: float | None,
                  baselines: str | None) -> list[str]:
    flags = [("--generations", generations), ("--population", population), ("--device", device),
             ("--budget-ms", budget_ms), ("--baselines", baselines)]
    return [str(x) for name, value in flags if value is not None for x in (name, value)]


@app.command("evolve")
def evolve_cmd(
    task: str = typer.Option("attention", "--task", "-t", help="The task to evolve (built-in name or file)."),
    budget: str = typer.Option("8m", "--budget", help="The search's wall-clock budget."),
    repeats: int = typer.Option(3, "--repeats", min=1, help="Re-times of the exported kernel, each in fresh workers."),
    generations: int = typer.Option(40, "--generations", "-g", min=1),
    population: int = typer.Option(8, "--population", "-p", min=1),
    out: Path = typer.Option(OUT_DEFAULT, "--out", "-o", help="Folder for the record, kernel and plot."),
    prefix: str = typer.Option("evolve", "--prefix", help="Output names: <prefix>-<device>.json, ..."),
    device: str | None = DeviceOpt,
    budget_ms: float | None = BudgetMsOpt,
    baselines: str | None = BaselinesOpt,
) -> None:
    """Evolve a kernel with `evoforge run`, export the best, re-time it in fresh workers beside every baseline."""
    import evoforge.bench.suite as suite

    try:
        result = suite.evolve(task, budget, out=out, prefix=prefix, repeats=repeats, generations=generations,
                              population=population, device=device, budget_ms=budget_ms, baselines=_names(baselines))
    except (RuntimeError, ValueError) as exc:
        raise _fail(str(exc), 1) from None
    for line in suite.evolve_summary(result):
        typer.echo(line)


@app.command("suite")
def suite_cmd(
    rows: str = typer.Option(",".join(["attention-causal", "attention-bf16", "attention-long", "attention-d128"]),
                             "--rows", help="Built-in tasks with their overrides, separated by ',' or ';' (a ',' "
                                            "piece with '=' and no ':' belongs to the row before it)."),
    budget: str = typer.Option("2m", "--budget", help="Each row's search budget."),
    repeats: int = typer.Option(3, "--repeats", min=1),
    out: Path = typer.Option(OUT_DEFAULT, "--out", "-o", help="Folder for attention-suite-<device>.json and rows."),
    generations: int | None = typer.Option(None, "--generations", "-g", min=1, help="Per row (default 40)."),
    population: int | None = typer.Option(None, "--population", "-p", min=1, help="Per row (default 8)."),
    device: str | None = DeviceOpt,
    budget_ms: float | None = BudgetMsOpt,
    baselines: str | None = BaselinesOpt,
) -> None:
    """Issue 5's table: per shape, a search, its export re-timed, one row of speedups and TFLOP/s."""
    import evoforge.bench.suite as suite

    flags = _evolve_flags(generations, population, device, budget_ms, baselines)
    suite.suite(suite.split_rows(rows), budget, repeats, out=out, evolve_flags=flags,
                echo=lambda line: typer.echo(line))


@app.command("retime")
def retime_cmd(
    task: str = typer.Option(..., "--task", "-t", help="The task the kernel was evolved for."),
    kernel: Path = typer.Option(..., "--kernel", exists=True, dir_okay=False, help="An exported kernel module."),
    entry: int = typer.Option(1, "--entry", help="A dispatch table's entry to re-time (1-based)."),
    repeats: int = typer.Option(3, "--repeats", min=1),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the record (JSON)."),
    device: str | None = DeviceOpt,
    budget_ms: float | None = BudgetMsOpt,
    baselines: str | None = BaselinesOpt,
) -> None:
    """Re-time one exported kernel in fresh evaluator workers beside the task's baselines."""
    from evoforge.bench.retime import retime as run_retime
    from evoforge.bench.retime import summary_lines
    from evoforge.bench.sources import stderr_progress

    try:
        record = run_retime(task, kernel, entry=entry, repeats=repeats, baselines=_names(baselines),
                            config=_config(device, budget_ms), progress=stderr_progress())
    except ValueError as exc:
        raise _fail(str(exc)) from None
    out.write_text(json.dumps(record, indent=2, default=str))
    for line in summary_lines(record):
        typer.echo(line)


@app.command("timing")
def timing_cmd(
    out: Path | None = typer.Argument(None, help="Where to write the record (JSON); it is printed either way."),
    shape: str = typer.Option("1,8,512,64", "--shape", help="Attention's B,H,S,D (default: the seed's)."),
    device: str = typer.Option("cuda", "--device", help="cuda, cuda:N or cpu."),
    budget_ms: float = typer.Option(200.0, "--budget-ms", help="evoforge's timing budget per entry and mode, ms."),
    rounds: int = typer.Option(5, "--rounds", min=1),
    calls: int = typer.Option(200, "--calls", min=1, help="Calls for back-to-back and host timing."),
) -> None:
    """Timing calibration: evoforge's numbers beside do_bench, do_bench_cudagraph, back-to-back calls, host time."""
    from evoforge.bench.calibrate import timing_methods

    try:
        b, h, s, d = (int(x) for x in shape.split(","))
    except ValueError:
        raise _fail(f"--shape {shape}: give B,H,S,D") from None
    record = timing_methods((b, h, s, d), device=device, budget_ms=budget_ms, rounds=rounds, calls=calls)
    text = json.dumps(record, indent=2, default=str)
    typer.echo(text)
    if out:
        out.write_text(text)


@app.command("throughput", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def throughput_cmd(
    ctx: typer.Context,
    task: str = typer.Option("attention-long", "--task", "-t"),
    generations: int = typer.Option(3, "--generations", "-g", min=1),
    population: int = typer.Option(8, "--population", "-p", min=1),
    seed: int = typer.Option(0, "--seed"),
    budget: str | None = typer.Option(None, "--budget", help="evoforge run --budget: the run stops at it."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Where to write the record (JSON)."),
    configs: str | None = typer.Option(None, "--configs", help="Compare executor configurations instead, each from "
                                                               "an empty Triton cache: serial,precompile,overlap."),
    run: str | None = typer.Option(None, "--run", help="Profile this stored run instead of making one."),
    db: Path = typer.Option(Path(".evoforge/runs.db"), "--db", help="The run store of --run."),
) -> None:
    """Where a search's time goes: one short run's seconds per judge stage and its evaluations per minute.
    Flags after `--` go to `evoforge run`."""
    import evoforge.bench.throughput as tp

    extra = [a for a in ctx.args if a != "--"]
    try:
        if configs:
            unknown = sorted(set(_names(configs) or []) - set(tp.CONFIGS))
            if unknown:
                raise ValueError(f"--configs: unknown {', '.join(unknown)} (known: {', '.join(tp.CONFIGS)})")
            record = tp.executor_configs(_names(configs) or [], generations=generations, population=population,
                                         seed=seed, extra=extra)
            lines = tp.config_lines(record)
        else:
            if run:
                if not db.exists():
                    raise ValueError(f"no run store at {db}")
                record = tp.profile_run(db, run)
            else:
                record = tp.search_profile(task, generations, population, seed, budget, extra)
            lines = tp.profile_lines(record)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    except RuntimeError as exc:
        raise _fail(str(exc), 1) from None
    for line in lines:
        typer.echo(line)
    if out:
        out.write_text(json.dumps(record, indent=1, default=str))


@app.command("render")
def render_cmd(
    record: Path = typer.Argument(..., exists=True, dir_okay=False, help="A kernel record (<name>-kernel.json)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Where to write the kernel (default: stdout)."),
) -> None:
    """Re-render a recorded exported kernel from its genome and template version, byte for byte."""
    from evoforge.bench.records import RecordError, render_file

    try:
        text = render_file(record)
    except (RecordError, KeyError) as exc:
        raise _fail(str(exc)) from None
    if out:
        out.write_text(text)
    else:
        sys.stdout.write(text)
