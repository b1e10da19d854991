"""The ``evoforge`` command line (typer + rich).

Exit codes: 0 success; 1 the job ran but did not succeed (no sweep variant beat the baselines, the
evaluated candidate is not correct); 2 bad input (a task or candidate that can't be used); 3 the
evaluator itself failed. Errors are one line; ``--verbose`` adds the traceback.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich import box
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
    from evoforge.evolve import Terminated
    from evoforge.store import StoreError
    from evoforge.task import TaskError

    try:
        return fn()
    except _Fail as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(exc.code) from None
    except (TaskError, StoreError) as exc:
        if verbose:
            traceback.print_exc()
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from None
    except EvaluatorError as exc:
        if verbose:
            traceback.print_exc()
        err.print(f"[red]evaluator error:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(3) from None
    except KeyboardInterrupt:
        err.print("interrupted")
        raise typer.Exit(130) from None
    except Terminated as exc:
        err.print(f"terminated ({exc.signame})", highlight=False)
        raise typer.Exit(143 if exc.signame == "SIGTERM" else 129) from None


def _with_elapsed(message: str, seconds: float) -> str:
    """The live line's step with how long it has been running, once that is long enough to wonder."""
    return message if seconds < 3 else f"{message} ({seconds:.0f} s)"


_CHATTY = ("timing ", "checking ", "rechecking ", "loaded and checked ")  # steps a log need not keep


@contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[str], None]]:
    """A spinner with the evaluator's latest step on stderr (stdout stays clean for --json). On a terminal
    the step shows how long it has been running, ticking every second, so a long one (a first run's
    compiles, a worker that hangs until its time limit) never looks stuck without saying for how long."""
    if not enabled or not err.is_terminal:
        def plain(message: str) -> None:
            if enabled and not any(word in message for word in _CHATTY):
                err.print(f"  {message}", highlight=False)
        yield plain
        return
    import threading

    step = {"message": "starting", "since": time.monotonic()}
    done = threading.Event()
    with err.status("starting") as status:
        def tick() -> None:
            while not done.wait(1.0):
                status.update(_with_elapsed(step["message"], time.monotonic() - step["since"]))

        def say(message: str) -> None:
            step.update(message=message, since=time.monotonic())
            status.update(message)

        ticker = threading.Thread(target=tick, name="evoforge-live-line", daemon=True)
        ticker.start()
        try:
            yield say
        finally:
            done.set()
            ticker.join()


def _eval_config(device: str, timeout: float, budget_ms: float, seed: int | None, memory_mb: int | None,
                 sandbox: str) -> Any:
    from evoforge.evaluator import EvalConfig
    from evoforge.evolve import check_device
    from evoforge.timing import TimingConfig

    check_device(device)  # a device this machine lacks is bad input: one line, exit 2
    timing = TimingConfig(budget_ms=budget_ms)
    cfg = EvalConfig(device=device, timeout_s=timeout, timing=timing, seed=seed, sandbox=sandbox)
    if memory_mb:
        cfg.memory_limit_mb = memory_mb
    return cfg


def _fmt_us(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if value < 1000 else f"{value / 1000:.2f} ms"


def _fmt_latency(value: float | None) -> str:
    """A latency in microseconds with its unit: "47.5 µs", or "15.09 ms" from a millisecond on (one unit only)."""
    if value is None:
        return "-"
    return f"{value:.1f} µs" if value < 1000 else f"{value / 1000:.2f} ms"


def _plural(n: int, word: str) -> str:
    """ "1 repeat", "3 repeats"."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


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
SandboxOpt = typer.Option("basic", "--sandbox", help="none | basic (scrubbed env, static pre-check, audit hook; "
                          "no network and writes only to scratch/caches where the OS allows) | strict "
                          "(basic, or refuse).")
JsonOpt = typer.Option(False, "--json", help="Print JSON on stdout instead of a table.")


@app.command()
def sweep(
    task: str = typer.Option("attention", "--task", "-t", help="A built-in attention task (see `evoforge tasks`)."),
    repeats: int = typer.Option(3, "--repeats", "-r", min=1, help="Independent runs, each in a fresh worker."),
    variants: str = typer.Option("", "--variants", help="Comma-separated subset of variants (default: all)."),
    output: Path = typer.Option(DEFAULT_SWEEP_OUT, "--out", "-o", help="Where to write the evidence JSON."),
    device: str = DeviceOpt, timeout: float = TimeoutOpt, budget_ms: float = BudgetOpt,
    seed: int | None = SeedOpt, memory_mb: int | None = MemoryOpt, sandbox: str = SandboxOpt,
    as_json: bool = JsonOpt, verbose: bool = VerboseOpt,
) -> None:
    """The seed's attention sweep, done right: every variant checked and timed live against PyTorch."""
    from evoforge.resolve import resolve_task
    from evoforge.sweep import run_sweep, select_variants, write_evidence

    def body() -> int:
        spec = resolve_task(task)
        chosen = select_variants(spec, [v.strip() for v in variants.split(",") if v.strip()] or None)
        config = _eval_config(device, timeout, budget_ms, seed, memory_mb, sandbox)
        err.print(f"sweep: {spec.name}, {_plural(len(chosen), 'variant')}, {_plural(repeats, 'repeat')}",
                  highlight=False)
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
                        f"(torch {versions.get('torch')}, {_plural(evidence['repeats'], 'repeat')})")
    for col in ("variant", "status", "max err", "eager µs", "graph µs", "fitness", "vs", "notes"):
        table.add_column(col, justify="right" if col in ("max err", "eager µs", "graph µs", "fitness") else "left",
                         overflow="fold")  # notes wrap whole, never cut mid-word
    for row in sorted(evidence["variants"], key=lambda r: -(r["fitness_spread"] or {"median": 0})["median"]):
        statuses = row["statuses"]
        status = statuses[0] if len(set(statuses)) == 1 else "/".join(statuses)
        status = f"[green]{status}[/green]" if row["correct_all"] else f"[red]{status}[/red]"
        fit = row["fitness_spread"]
        fitness = "-" if not fit or fit["max"] == 0 else (
            f"{fit['median']:.2f}×" + (f" [{fit['min']:.2f}–{fit['max']:.2f}]" if fit["min"] != fit["max"] else ""))
        notes = list(row["labels"])
        if not row["correct_all"]:
            notes.append(next((d for d in row["details"] if d), ""))
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
    seed: int | None = SeedOpt, memory_mb: int | None = MemoryOpt, sandbox: str = SandboxOpt,
    as_json: bool = JsonOpt, verbose: bool = VerboseOpt,
) -> None:
    """Evaluate one candidate file: correctness, guards, latency, speedup over every baseline."""
    from evoforge.candidate import Candidate
    from evoforge.evaluator import Evaluator
    from evoforge.evolve import resolve_device
    from evoforge.resolve import resolve_task
    from evoforge.task import load_task
    from evoforge.tasks import baselines_for

    def body() -> int:
        if candidate.is_dir():
            raise _Fail(f"{candidate}: is a directory; give the candidate's .py file (it defines class ModelNew)", 2)
        if not candidate.is_file():
            raise _Fail(f"{candidate}: no such candidate file", 2)
        try:
            source = candidate.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise _Fail(f"{candidate}: cannot read it ({exc})", 2) from None
        spec = resolve_task(task)
        load_task(spec)  # a broken task is reported before any worker starts
        cand = Candidate(name=candidate.stem, source=source)
        base = baselines_for(spec, resolve_device(device)) if baselines else []
        base = [b for b in base if b.name != cand.name]
        config = _eval_config(device, timeout, budget_ms, seed, memory_mb, sandbox)
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
        table.add_column(col, overflow="fold")  # details wrap whole, never cut mid-word
    for r in report.results:
        status = f"[green]{r.status}[/green]" if r.ok else f"[red]{r.status}[/red]"
        err_txt = "-" if r.max_abs_err is None else f"{r.max_abs_err:.1e}"
        fit = f"{r.fitness:.2f}× vs {r.best_baseline}" if r.role == "candidate" and r.ok and r.best_baseline else ""
        if fit and r.fitness > 1.0 and not r.significant:
            fit += " (not significant)"
        table.add_row(r.name, r.role, status, err_txt, _fmt_us(r.latency("eager")), _fmt_us(r.latency("graph")),
                      escape(fit), escape(r.detail))
    out.print(table)
    cand = report.results[0]
    if cand.logs and not cand.ok:
        out.print(f"[dim]{escape(cand.name)} logs (tail):[/dim]", highlight=False)
        out.print(cand.logs[-1500:], highlight=False, markup=False)


DbOpt = typer.Option(Path(".evoforge/runs.db"), "--db", help="The run store (SQLite).")


def _open_store(db: Path) -> Any:
    from evoforge.store import RunStore

    return RunStore(db)


def _progress_line(p: Any, total: int) -> str:
    best = f"{p.best_fitness:.2f}×" if p.best_fitness else "-"
    if p.best_fitness > 1.0 and not getattr(p, "best_significant", True):
        best += " (not significant)"
    lat = f" ({_fmt_latency(p.best_latency_us)})" if p.best_latency_us else ""
    eta = f", ETA {p.eta_s / 60:.1f} min" if p.eta_s else ""
    # executor throughput: per slot (GPU or CPU worker), batches waiting for a slot, share of slot time idle
    slots = (f" ({p.evals_per_min_per_slot:.1f}/min per slot × {p.slots}, queue {p.queue}, idle {p.idle_frac:.0%})"
             if getattr(p, "slots", 1) > 1 else f" (queue {p.queue}, idle {p.idle_frac:.0%})")
    return (f"gen {p.generation + 1}/{total}: best {best}{lat} {p.best_name or ''}, valid {p.valid}/{p.evaluated}, "
            f"{p.evals_per_min:.1f} evals/min{slots}{eta}")


def _search(store: Any, run_id: str, prepared: Any, config: Any, as_json: bool, started: float | None = None) -> int:
    from evoforge import evolve

    if prepared.device == "cpu":
        err.print("no CUDA device: timings are CPU timings, Triton kernels run in Triton's interpreter",
                  highlight=False)
    err.print(f"run {run_id}: {prepared.spec.name}, mutator {prepared.mutator.name}, up to {config.generations} "
              f"generations of {config.population}; store {store.path}", highlight=False)
    if prepared.memory_note:  # issue 22: batches capped so the judge and every worker fit in GPU memory
        err.print(prepared.memory_note, highlight=False, markup=False)
    shapes = prepared.spec.params.get("shapes") or []
    if shapes:
        floor = float(prepared.spec.params.get("floor", 0.0))
        err.print(f"{len(shapes)} shapes: fitness is the geometric mean of the per-shape speedups"
                  + (f", 0 where a shape falls below {floor:g}×" if floor else "")
                  + "; latencies shown are the first shape's", highlight=False)
    state = {"line": "starting"}
    with _progress(True) as say:
        prepared.evaluate.progress = lambda m: say(f"{state['line']} · {m}")
        prepared.mutator.set_progress(lambda m: say(f"{state['line']} · {m}"))

        def on_progress(p: Any) -> None:
            state["line"] = _progress_line(p, config.generations)
            err.print(state["line"], highlight=False)

        # the run's lease, heartbeat and how the session ended (issue 23)
        with evolve.session(store, run_id):
            # ---- executor (issue 7): where batches run
            executor = evolve.make_executor(config, prepared)
            err.print(f"executor {executor.name}: {len(executor.slot_names)} slot(s) "
                      f"({', '.join(executor.slot_names)})", highlight=False)
            final = evolve.search_for(store, run_id, prepared, config, on_progress, executor, started).run()
    summary = {"run": run_id, "stop_reason": final.stop_reason, "generations": final.generation + 1,
               "evaluated": final.evaluated, "valid": final.valid, "best": final.best_name,
               "best_fitness": final.best_fitness, "best_baseline": final.best_baseline,
               "best_latency_us": final.best_latency_us, "best_significant": final.best_significant,
               "best_claim": final.best_claim}
    calls = store.llm_calls(run_id)
    if calls:
        from evoforge.report import llm_bucket

        totals = llm_bucket(calls, {})  # what the requests cost; `evoforge report` adds what they were worth
        summary["llm"] = {key: totals[key] for key in ("calls", "with_code", "tokens_in", "tokens_out", "retries")}
        summary["llm"]["cost"] = round(totals["cost"], 6)
    if as_json:
        out.print_json(json.dumps(summary))
    else:
        out.print(f"stopped: {escape(str(final.stop_reason))}", highlight=False)
        out.print(_best_line(final), highlight=False, markup=False)
        if calls:
            llm = summary["llm"]
            out.print(f"llm: {llm['calls']} requests, {llm['with_code']} with code, {llm['tokens_in']} tokens in, "
                      f"{llm['tokens_out']} out, cost {llm['cost']:g}, {llm['retries']} retries", highlight=False)
        out.print(f"next: evoforge report {run_id}   ·   evoforge best {run_id} --export kernel.py", highlight=False)
    return 0 if final.valid else 1


def _best_line(final: Any) -> str:
    """The run's headline: the crowned (evolved) candidate, and whether its speedup is beyond noise."""
    from evoforge.claims import PYTORCH_PATH

    tail = f"{final.valid}/{final.evaluated} valid"
    if not final.best_name:
        return f"best: no valid candidate; {tail}"
    line = (f"best: {final.best_name} at {final.best_fitness:.3f}× over {final.best_baseline or '-'}, the "
            f"fastest other PyTorch path in its generation ({_fmt_latency(final.best_latency_us)}): "
            f"{final.best_claim}; {tail}")
    if final.best_claim == PYTORCH_PATH:
        line += "; no evolved kernel was valid"
    elif final.best_fitness > 1.0 and not final.best_significant:
        line += "; nothing beat PyTorch beyond noise"
    return line


# ---- executor options (issue 7)
ExecutorOpt = typer.Option(None, "--executor", help="local (default: this machine's GPUs, or CPU workers) | ray.")
AddressOpt = typer.Option(None, "--address", help="Ray cluster: auto (default) or HOST:PORT.")
WorkersOpt = typer.Option(None, "--workers", min=1, help="Slots: CPU workers without a GPU (default 1); at most "
                          "this many GPUs or Ray tasks.")
PrefetchOpt = typer.Option(None, "--prefetch", min=0, help="Batches proposed ahead of a free slot, so their "
                           "compile overlaps the current timing (default 0).")
PrecompileOpt = typer.Option(None, "--precompile/--no-precompile", help="Compile Triton kernels in a separate "
                             "process before timing (default: on with CUDA, off where one input set is over "
                             "256 MiB).")
BatchSizeOpt = typer.Option(None, "--batch-size", min=1, help="Candidates per batch (default: a whole generation); "
                            "smaller batches let --budget stop between them, each re-timing the baselines.")


@app.command()
def run(
    task: str | None = typer.Option(None, "--task", "-t", help="Built-in task or a KernelBench-format file "
                                    "(default: attention with a GPU, attention-tiny without)."),
    task_dir: Path | None = typer.Option(None, "--task-dir", help="Batch: one run per problem file in this folder."),
    level: int | None = typer.Option(None, "--level", help="Batch: only problems of this level (LEVEL = N in the "
                                     "file, else its levelN/ folder)."),
    generations: int | None = typer.Option(None, "--generations", "-g", min=1, help="Generations, counting 0."),
    population: int | None = typer.Option(None, "--population", "-p", min=1, help="New candidates per generation."),
    elites: int | None = typer.Option(None, "--elites", min=1, help="Elites kept (top-K)."),
    budget: str | None = typer.Option(None, "--budget", help="Wall-clock budget: 90s, 10m, 1h."),
    max_evals: int | None = typer.Option(None, "--max-evals", min=1, help="Stop after this many evaluations."),
    target: float | None = typer.Option(None, "--target", help="Stop once an evolved candidate's fitness reaches "
                                        "this (above 1: beyond noise)."),
    plateau: int | None = typer.Option(None, "--plateau", min=1, help="Stop after N generations without 1% gain "
                                       "of the best evolved fitness (wins above 1 counted beyond noise only)."),
    mutator: str | None = typer.Option(None, "--mutator", help="template (built in, no network: the attention "
                                       "template for attention tasks, generic otherwise), generic, llm, or mixed."),
    model: str | None = typer.Option(None, "--model", help="LLM model(s): name[:weight][@in/out price], a,b."),
    base_url: str | None = typer.Option(None, "--base-url", help="OpenAI-compatible endpoint (vLLM, a gateway)."),
    guide: str | None = typer.Option(None, "--guide", help="LLM guidance: free | insight | full (default)."),
    language: str | None = typer.Option(None, "--language", help="What the LLM writes: triton, cuda, torch, any."),
    llm_share: float | None = typer.Option(None, "--llm-share", help="With --mutator mixed: the LLM's share."),
    llm_max_tokens: int | None = typer.Option(None, "--llm-max-tokens", min=1, help="LLM token budget."),
    llm_max_cost: float | None = typer.Option(None, "--llm-max-cost", help="LLM money budget (by model prices)."),
    prompts: str | None = typer.Option(None, "--prompts", help="Directory of prompt templates overriding ours."),
    seed: int | None = typer.Option(None, "--seed", help="Search RNG seed (default 0)."),
    device: str | None = typer.Option(None, "--device", help="auto, cuda, cuda:N or cpu."),
    timeout: float | None = typer.Option(None, "--timeout", help="Seconds one stage of one candidate may take."),
    budget_ms: float | None = typer.Option(None, "--budget-ms", help="Timing budget per entry and mode, ms."),
    sandbox: str | None = typer.Option(None, "--sandbox", help="none | basic (default) | strict."),
    config_file: Path | None = typer.Option(None, "--config", help="TOML config (default: ./evoforge.toml)."),
    executor: str | None = ExecutorOpt, address: str | None = AddressOpt, workers: int | None = WorkersOpt,
    prefetch: int | None = PrefetchOpt, precompile: bool | None = PrecompileOpt,
    batch_size: int | None = BatchSizeOpt,
    db: Path = DbOpt, as_json: bool = JsonOpt, verbose: bool = VerboseOpt,
) -> None:
    """Evolve a kernel for a task: generate -> measure -> select -> mutate, stored as it goes."""
    started = time.monotonic()  # --budget counts from here: loading the task, the baselines, generation 0
    from evoforge import evolve

    flags = {"task": task, "generations": generations, "population": population, "elites": elites,
             "budget": budget, "max_evals": max_evals, "target_fitness": target, "plateau": plateau,
             "mutator": mutator, "seed": seed, "device": device, "timeout_s": timeout, "budget_ms": budget_ms,
             "sandbox": sandbox, "llm_model": model, "llm_base_url": base_url, "llm_guide": guide,
             "llm_language": language, "llm_share": llm_share, "llm_max_tokens": llm_max_tokens,
             "llm_max_cost": llm_max_cost, "llm_prompts": prompts}
    flags.update({"executor": executor, "address": address, "workers": workers, "prefetch": prefetch,
                  "precompile": precompile})  # executor flags (issue 7)
    flags["batch_size"] = batch_size  # issue 22

    def body() -> int:
        settings = evolve.load_config_file(config_file)
        settings.update({k: v for k, v in flags.items() if v is not None})
        config = evolve.RunConfig.from_dict(settings)
        if config.budget:
            evolve.parse_duration(config.budget)
        evolve.check_device(config.device, local=config.executor != "ray")  # before any run is recorded
        store = _open_store(db)
        if task_dir is not None or level is not None:  # batch mode (issue 6)
            if task_dir is None or task is not None:
                raise _Fail("--level goes with --task-dir, and --task-dir replaces --task", 2)
            return _batch(store, config, task_dir, level, as_json, verbose)
        run_id, prepared = evolve.start(config, store)
        config = evolve.RunConfig.from_dict(store.run(run_id).config)
        return _search(store, run_id, prepared, config, as_json, started)

    raise typer.Exit(_guarded(body, verbose))


def _batch(store: Any, config: Any, folder: Path, level: int | None, as_json: bool, verbose: bool,
           record: Any = None) -> int:
    """One run per problem, then the summary: per problem the best candidate's speedups, and fast_p and the
    geometric mean over all. A problem that can't be used is a line in the table, not the end of the batch.
    Each row is kept as it finishes (a BatchRecord); with ``record``, an interrupted batch continues."""
    from evoforge import evolve
    from evoforge.batch import ProblemOutcome, baseline_failures, crowned, discover, outcome_from_result
    from evoforge.batch_store import BatchRecord
    from evoforge.evaluator import EvaluatorError
    from evoforge.store import StoreError
    from evoforge.task import TaskError

    if record is None:  # issue 22: the batch's rows are kept as each problem finishes
        record = BatchRecord.create(store.path, folder, level, config.to_dict(), discover(folder, level))
    record.claim()
    problems = record.todo()
    err.print(f"batch {record.id}: {len(problems)} problem(s) from {folder}"
              + (f" at level {level}" if level is not None else "")
              + (f" ({len(record.rows)} already finished)" if record.rows else "")
              + f"; rows kept in {record.path} as they finish (`evoforge resume {record.id}` continues it)",
              highlight=False)
    for path, lvl in problems:
        started = time.monotonic()  # --budget is each problem's
        row = ProblemOutcome(problem=path.stem, path=str(path), level=lvl, status="error")
        try:
            earlier = record.run_of(path)  # the run an interrupted session was in: continued, not restarted
            if earlier:
                run_config, prepared, run_id = evolve.resume(store, earlier, {"budget": config.budget})
            else:
                run_config = evolve.RunConfig.from_dict({**config.to_dict(), "task": str(path)})
                run_id, prepared = evolve.start(run_config, store)
                run_config = evolve.RunConfig.from_dict(store.run(run_id).config)
            record.begin(path, run_id)
            row.run, row.problem = run_id, prepared.spec.name
            with _quiet_stdout():
                _search(store, run_id, prepared, run_config, True, started)
            evaluated = store.evaluations(run_id)
            row.evaluated = len(evaluated)
            valid = [(r, g) for r, g in evaluated if r.ok]
            row.valid = len(valid)
            base = store.evaluations(run_id, role="baseline")
            if valid:
                row.status = "ok"
                # the problem's best: its fittest evolved candidate, never an unchanged PyTorch path (claims)
                best, eager, torch_path = crowned(valid, [c for c, _ in store.candidates(run_id)], base)
                for key, value in outcome_from_result(best, eager, torch_path).items():
                    setattr(row, key, value)
            else:
                row.status = "no valid candidate"
            row.detail = baseline_failures([r for r, _ in base])
        except (TaskError, EvaluatorError, StoreError) as exc:
            if verbose:
                traceback.print_exc()
            row.detail = str(exc)
            if row.run:  # the run record says why it ended, as a finished run's does
                store.update_run(row.run, status="failed", note=str(exc)[:500])
            err.print(f"[red]{path}:[/red] {escape(str(exc))}", highlight=False)
        record.finish(row)
    record.close()
    summary = record.summary()
    data = {"batch": record.id, **summary.to_dict()}
    if as_json:
        out.print_json(json.dumps(data))
    else:
        _print_batch(data, folder)
    return 0 if any(p.status == "ok" for p in summary.problems) else 1


@contextmanager
def _quiet_stdout() -> Iterator[None]:
    """Each problem's own summary stays off stdout: the batch prints one table (or one JSON) at the end."""
    global out
    saved, out = out, Console(file=open(os.devnull, "w"))  # noqa: SIM115
    try:
        yield
    finally:
        out.file.close()
        out = saved


def _print_batch(data: dict[str, Any], folder: Path) -> None:
    def x(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}×"

    def fit(p: dict[str, Any]) -> str:
        if p["fitness"] is None:
            return "-"
        if p.get("pytorch_path"):
            return f"{x(p['fitness'])} (PyTorch path)"
        return x(p["fitness"]) + (" (not significant)" if p["fitness"] > 1.0 and not p.get("significant") else "")

    table = Table(title=f"batch over {folder}", box=box.SIMPLE_HEAD, collapse_padding=True)  # room for the run id
    for col in ("problem", "level", "status", "best", "vs eager", "vs compile", "fitness", "valid"):
        # names fold only where one is wider than its column; numbers never wrap
        table.add_column(col, overflow="fold", min_width=12 if col == "fitness" else None)
    # the full id, to copy into `evoforge report` (a column's min_width counts its padding)
    widest = max((len(p["run"] or "-") for p in data["problems"]), default=3)
    table.add_column("run", no_wrap=True, min_width=widest + 2)
    notes: list[str] = []  # errors and baseline notes, in full under the table (a cell would cut or fold them)
    for p in data["problems"]:
        status = p["status"]
        if p["detail"]:  # an error, or a baseline that was never valid: why its column is empty
            notes.append(f"[{len(notes) + 1}] {p['problem']}: {p['detail']}")
            status += f" [{len(notes)}]"
        table.add_row(escape(p["problem"]), str(p["level"] if p["level"] is not None else "-"), escape(status),
                      escape(p["best"] or "-"), x(p["vs_eager"]), x(p["vs_compile"]), fit(p),
                      f"{p['valid']}/{p['evaluated']}", p["run"] or "-")
    out.print(table)
    for note in notes:
        out.print(note, highlight=False, markup=False)
    m = data["summary"]
    out.print(f"{m['correct']}/{m['problems']} problems with a correct candidate "
              "(fast_p counts wins beyond noise only); "
              f"fast_1 {m['fast_1_vs_eager']:.2f} / fast_1.5 {m['fast_1.5_vs_eager']:.2f} vs eager, "
              f"{m['fast_1_vs_best']:.2f} / {m['fast_1.5_vs_best']:.2f} vs the faster of eager and compile; "
              f"geomean {x(m['geomean_vs_eager'])} vs eager, {x(m['geomean_vs_best'])} vs the faster",
              highlight=False)


@app.command()
def resume(
    run_id: str = typer.Argument(..., help="The run to continue (an id or a unique prefix; see `evoforge runs`), "
                                 "or a --task-dir batch's id (batch-...)."),
    generations: int | None = typer.Option(None, "--generations", "-g", min=1,
                                           help="Raise the run's generation limit to N (counting 0)."),
    budget: str | None = typer.Option(None, "--budget", help="Wall-clock budget for this session (an earlier "
                                      "session's budget does not apply again): 90s, 10m, 1h."),
    max_evals: int | None = typer.Option(None, "--max-evals", min=1, help="Raise the evaluation limit."),
    executor: str | None = ExecutorOpt, address: str | None = AddressOpt, workers: int | None = WorkersOpt,
    db: Path = DbOpt, as_json: bool = JsonOpt, verbose: bool = VerboseOpt,
) -> None:
    """Continue a stopped run with its population and RNG state (refused while another process runs it)."""
    from evoforge import evolve

    started = time.monotonic()

    def body() -> int:
        if budget:
            evolve.parse_duration(budget)
        store = _open_store(db)
        if run_id.startswith("batch-"):  # an interrupted --task-dir batch (issue 22)
            return _resume_batch(store, run_id, {"generations": generations, "budget": budget,
                                                 "max_evals": max_evals, "executor": executor,
                                                 "address": address, "workers": workers}, as_json, verbose)
        config, prepared, full_id = evolve.resume(
            store, run_id, {"generations": generations, "budget": budget, "max_evals": max_evals,
                            "executor": executor, "address": address, "workers": workers})
        return _search(store, full_id, prepared, config, as_json, started)

    raise typer.Exit(_guarded(body, verbose))


def _resume_batch(store: Any, batch_id: str, overrides: dict[str, Any], as_json: bool, verbose: bool) -> int:
    """Continue a batch: problems with a row are not run again; the one it was in continues its run; a
    setting given here (``--budget``: each problem's) replaces the batch's for the problems left."""
    from evoforge import evolve
    from evoforge.batch_store import BatchRecord

    record = BatchRecord.load(store.path, batch_id)
    config = evolve.RunConfig.from_dict({**record.config, **{k: v for k, v in overrides.items() if v is not None}})
    return _batch(store, config, Path(record.folder), record.level, as_json, verbose, record)


@app.command()
def runs(db: Path = DbOpt, as_json: bool = JsonOpt, verbose: bool = VerboseOpt) -> None:
    """List the runs in the store."""
    from evoforge.report import evidence

    def body() -> int:
        if not db.exists():
            raise _Fail(f"{db}: no run store here yet (start one with `evoforge run`)", 2)
        store = _open_store(db)
        rows = []
        for record in store.runs():
            data = evidence(store, record.id)
            best = data["best"]
            rows.append({"id": record.id, "created": record.created, "status": record.status,
                         "task": record.task.get("name"), "generation": record.generation,
                         "evaluated": data["evaluated"], "valid": data["valid"],
                         "best": best["name"] if best else None, "best_fitness": best["fitness"] if best else 0.0,
                         "stop_reason": record.note})
        if as_json:
            out.print_json(json.dumps(rows))
            return 0
        table = Table(title=f"runs in {db}")
        for col in ("id", "created", "status", "task", "gens", "valid", "best", "fitness", "stopped"):
            table.add_column(col)
        for r in rows:
            table.add_row(r["id"], r["created"], r["status"], r["task"], str(r["generation"] + 1),
                          f"{r['valid']}/{r['evaluated']}", r["best"] or "-", f"{r['best_fitness']:.3f}",
                          escape(r["stop_reason"] or ""))
        out.print(table)
        return 0

    raise typer.Exit(_guarded(body, verbose))


@app.command()
def report(
    run_id: str = typer.Argument(..., help="The run to report on, or a --task-dir batch's id (batch-...)."),
    output: Path | None = typer.Option(None, "--out", "-o", help="Folder (default: evidence/run-<id>)."),
    db: Path = DbOpt, verbose: bool = VerboseOpt,
) -> None:
    """Evidence JSON, PNG plots and a self-contained HTML page for a run."""
    from evoforge.report import write_report

    def body() -> int:
        store = _open_store(db)
        if run_id.startswith("batch-"):  # a --task-dir batch (issue 22): its table, fast_p curves, geomeans
            from evoforge.batch_store import BatchRecord, write_batch_report

            batch = BatchRecord.load(store.path, run_id)
            data = batch.to_dict()
            _print_batch(data, Path(batch.folder))
            for path in write_batch_report(batch, output or Path("evidence") / batch.id):
                out.print(str(path), highlight=False)
            return 0
        record = store.run(run_id)
        paths = write_report(store, record.id, output or Path("evidence") / f"run-{record.id}")
        for path in paths:
            out.print(str(path), highlight=False)
        if not any(p.suffix == ".png" for p in paths):
            err.print("note: plots need matplotlib (pip install 'evoforge[report]')", highlight=False)
        return 0

    raise typer.Exit(_guarded(body, verbose))


@app.command()
def best(
    run_ids: list[str] = typer.Argument(..., metavar="RUN...", help="The run whose best kernel to show or export; "
                                        "with --export, several attention runs make one dispatch table."),
    export: Path | None = typer.Option(None, "--export", help="Write a standalone module here."),
    db: Path = DbOpt, verbose: bool = VerboseOpt,
) -> None:
    """Show the best kernel of a run, or export it (or several runs' best, as a dispatch table) as a module."""
    from evoforge.export import ExportError
    from evoforge.report import best_candidate, export_module

    def body() -> int:
        store = _open_store(db)
        if export is None:
            if len(run_ids) > 1:
                raise _Fail("best shows one run at a time; several runs go with --export (a dispatch table)", 2)
            cand, info, _ = best_candidate(store, run_ids[0])
            out.print(f"# {cand.name}: fitness {info['fitness']:.3f} ({info['fitness_mode']}), "
                      f"latency {info['latency_us']}", highlight=False, markup=False)
            out.print(cand.source, highlight=False, markup=False)
            return 0
        try:
            text = export_module(store, run_ids)
        except ExportError as exc:
            raise _Fail(str(exc), 2) from None
        export.parent.mkdir(parents=True, exist_ok=True)
        export.write_text(text)
        out.print(f"wrote {export}", highlight=False)
        return 0

    raise typer.Exit(_guarded(body, verbose))


@app.command(context_settings={"ignore_unknown_options": True})
def capture(
    command: list[str] = typer.Argument(..., metavar="COMMAND", help="The program to run, after `--` "
                                        "(a Python program, or anything that starts one)."),
    output: Path = typer.Option(Path("captured.toml"), "--output", "-o", help="The task file to write."),
    verbose: bool = VerboseOpt,
) -> None:
    """Run a program and record the attention calls it makes, as a task file for `evoforge run --task`."""
    import shlex
    import subprocess
    import tempfile

    from evoforge import capture_hook, workload

    def body() -> int:
        with tempfile.TemporaryDirectory(prefix="evoforge-capture-") as tmp:
            hook_dir, calls = Path(tmp) / "hook", Path(tmp) / "calls.jsonl"
            hook_dir.mkdir()
            (hook_dir / "sitecustomize.py").write_text(Path(capture_hook.__file__).read_text())
            env = {**os.environ, capture_hook.ENV_FILE: str(calls),
                   "PYTHONPATH": os.pathsep.join(filter(None, [str(hook_dir), os.environ.get("PYTHONPATH")]))}
            try:
                code = subprocess.run(command, env=env, check=False).returncode
            except OSError as exc:
                raise _Fail(f"could not start {command[0]!r}: {exc.strerror or exc}", 2) from None
            records = capture_hook.read_records(str(calls))
        source = shlex.join(command)
        if not records:
            raise _Fail(f"`{source}` made no torch.nn.functional.scaled_dot_product_attention call (exit code "
                        f"{code}); capture sees Python processes that import torch and call SDPA through that "
                        "attribute (transformers: attn_implementation=\"sdpa\")", 1)
        output.parent.mkdir(parents=True, exist_ok=True)
        found = workload.write(records, output, f"`{source}`")
        for line in workload.summary_lines(found, str(output)):
            out.print(line, highlight=False, markup=False)
        out.print(f"wrote {output}", highlight=False)
        if code:
            err.print(f"note: `{source}` exited with code {code}; the calls it made before are recorded",
                      highlight=False, markup=False)
        return code if code >= 0 else 128 - code  # killed by a signal: the shell's convention

    raise typer.Exit(_guarded(body, verbose))


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
        mark = "[green]runs[/green]" if state == "runs" else f"[yellow]{escape(state)}[/yellow]"
        out.print(f"  {name}: {mark}")
    out.print("sandbox (basic):")
    for line in report["sandbox"]["lines"]:
        out.print(f"  {line}", highlight=False)
    out.print(f"workers' Python bytecode: {report['worker_bytecode']}", highlight=False)
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
