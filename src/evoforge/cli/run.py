"""The commands of a run's life: `evoforge run`, `resume`, `runs`, `report` and `best`.

- ``run``: reads ``evoforge.toml`` (or ``--config``) and the flags into an ``evolve.RunConfig``, starts the run
  in the store (``evolve.start``) and runs its search with the live line (``cli.live``); with ``--task-dir`` a
  batch instead (``cli.batch``).
- ``resume``: continues a run (``evolve.resume``) or an interrupted batch (an id starting ``batch-``).
- ``runs``: the store's runs as a table or JSON; ``report``: evidence JSON, plots and HTML
  (``evoforge.report``, or ``batch_store.write_batch_report`` for a batch); ``best``: a run's best kernel,
  printed, or exported as a module (``evoforge.report.export_module``).

Each command parses its flags and hands a body to ``common.guarded``, which maps errors to exit codes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from evoforge.cli import live, output
from evoforge.cli.common import (
    AddressOpt,
    BatchSizeOpt,
    DbOpt,
    ExecutorOpt,
    Fail,
    JsonOpt,
    PrecompileOpt,
    PrefetchOpt,
    VerboseOpt,
    WorkersOpt,
    guarded,
    open_store,
)


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
    problems_at_once: int | None = typer.Option(
        None, "--problems-at-once", min=1, help="Batch: run N problems at once, each in a process of its own on "
        "one GPU (at most one per visible GPU; default 1: problems in turn, each run's evaluations over every GPU)."),
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
    flags["problems_at_once"] = problems_at_once

    def body() -> int:
        settings = evolve.load_config_file(config_file)
        settings.update({k: v for k, v in flags.items() if v is not None})
        config = evolve.RunConfig.from_dict(settings)
        if config.budget:
            evolve.parse_duration(config.budget)
        evolve.check_device(config.device, local=config.executor != "ray")  # before any run is recorded
        store = open_store(db)
        if task_dir is not None or level is not None:  # batch mode (issue 6)
            if task_dir is None or task is not None:
                raise Fail("--level goes with --task-dir, and --task-dir replaces --task", 2)
            from evoforge.cli.batch import run_batch

            return run_batch(store, config, task_dir, level, as_json, verbose)
        if problems_at_once is not None:
            raise Fail("--problems-at-once is for a batch (--task-dir)", 2)
        run_id, prepared = evolve.start(config, store)
        config = evolve.RunConfig.from_dict(store.run(run_id).config)
        final = live.search(store, run_id, prepared, config, started)
        return live.summarize(store, run_id, final, as_json)

    raise typer.Exit(guarded(body, verbose))


def resume(
    run_id: str = typer.Argument(..., help="The run to continue (an id or a unique prefix; see `evoforge runs`), "
                                 "or a --task-dir batch's id (batch-...)."),
    generations: int | None = typer.Option(None, "--generations", "-g", min=1,
                                           help="Raise the run's generation limit to N (counting 0)."),
    budget: str | None = typer.Option(None, "--budget", help="Wall-clock budget for this session (an earlier "
                                      "session's budget does not apply again): 90s, 10m, 1h."),
    max_evals: int | None = typer.Option(None, "--max-evals", min=1, help="Raise the evaluation limit."),
    executor: str | None = ExecutorOpt, address: str | None = AddressOpt, workers: int | None = WorkersOpt,
    problems_at_once: int | None = typer.Option(None, "--problems-at-once", min=1, help="A batch: problems at "
                                                "once from here on (default: what the batch was started with)."),
    db: Path = DbOpt, as_json: bool = JsonOpt, verbose: bool = VerboseOpt,
) -> None:
    """Continue a stopped run with its population and RNG state (refused while another process runs it)."""
    from evoforge import evolve

    started = time.monotonic()

    def body() -> int:
        if budget:
            evolve.parse_duration(budget)
        store = open_store(db)
        if run_id.startswith("batch-"):  # an interrupted --task-dir batch (issue 22)
            from evoforge.cli.batch import resume_batch

            return resume_batch(store, run_id, {"generations": generations, "budget": budget,
                                                "max_evals": max_evals, "executor": executor,
                                                "address": address, "workers": workers,
                                                "problems_at_once": problems_at_once}, as_json, verbose)
        if problems_at_once is not None:
            raise Fail("--problems-at-once is for a batch (resume batch-...)", 2)
        config, prepared, full_id = evolve.resume(
            store, run_id, {"generations": generations, "budget": budget, "max_evals": max_evals,
                            "executor": executor, "address": address, "workers": workers})
        final = live.search(store, full_id, prepared, config, started)
        return live.summarize(store, full_id, final, as_json)

    raise typer.Exit(guarded(body, verbose))


def runs(db: Path = DbOpt, as_json: bool = JsonOpt, verbose: bool = VerboseOpt) -> None:
    """List the runs in the store."""
    from evoforge.report import evidence

    def body() -> int:
        if not db.exists():
            raise Fail(f"{db}: no run store here yet (start one with `evoforge run`)", 2)
        store = open_store(db)
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
            output.out.print_json(json.dumps(rows))
            return 0
        table = Table(title=f"runs in {db}")
        for col in ("id", "created", "status", "task", "gens", "valid", "best", "fitness", "stopped"):
            table.add_column(col)
        for r in rows:
            table.add_row(r["id"], r["created"], r["status"], r["task"], str(r["generation"] + 1),
                          f"{r['valid']}/{r['evaluated']}", r["best"] or "-", f"{r['best_fitness']:.3f}",
                          escape(r["stop_reason"] or ""))
        output.out.print(table)
        return 0

    raise typer.Exit(guarded(body, verbose))


def report(
    run_id: str = typer.Argument(..., help="The run to report on, or a --task-dir batch's id (batch-...)."),
    output_dir: Path | None = typer.Option(None, "--out", "-o", help="Folder (default: evidence/run-<id>)."),
    db: Path = DbOpt, verbose: bool = VerboseOpt,
) -> None:
    """Evidence JSON, PNG plots and a self-contained HTML page for a run."""
    from evoforge.report import write_report

    def body() -> int:
        store = open_store(db)
        if run_id.startswith("batch-"):  # a --task-dir batch (issue 22): its table, fast_p curves, geomeans
            from evoforge.batch_store import BatchRecord, write_batch_report
            from evoforge.cli.batch import print_batch

            batch = BatchRecord.load(store.path, run_id)
            data = batch.to_dict()
            print_batch(data, Path(batch.folder))
            for path in write_batch_report(batch, output_dir or Path("evidence") / batch.id):
                output.out.print(str(path), highlight=False)
            return 0
        record = store.run(run_id)
        paths = write_report(store, record.id, output_dir or Path("evidence") / f"run-{record.id}")
        for path in paths:
            output.out.print(str(path), highlight=False)
        if not any(p.suffix == ".png" for p in paths):
            output.err.print("note: plots need matplotlib (pip install 'evoforge[report]')", highlight=False)
        return 0

    raise typer.Exit(guarded(body, verbose))


def best(
    run_ids: list[str] = typer.Argument(..., metavar="RUN...", help="The run whose best kernel to show or export; "
                                        "with --export, several attention runs make one dispatch table."),
    export: Path | None = typer.Option(None, "--export", help="Write a standalone module here."),
    db: Path = DbOpt, verbose: bool = VerboseOpt,
) -> None:
    """Show the best kernel of a run, or export it (or several runs' best, as a dispatch table) as a module."""
    from evoforge.export import ExportError, slower_note
    from evoforge.report import best_candidate, export_module

    def body() -> int:
        store = open_store(db)
        out = output.out
        if export is None:
            if len(run_ids) > 1:
                raise Fail("best shows one run at a time; several runs go with --export (a dispatch table)", 2)
            cand, info, _ = best_candidate(store, run_ids[0])
            out.print(f"# {cand.name}: fitness {info['fitness']:.3f} ({info['fitness_mode']}), "
                      f"latency {info['latency_us']}", highlight=False, markup=False)
            out.print(cand.source, highlight=False, markup=False)
            return 0
        try:
            text = export_module(store, run_ids)
        except ExportError as exc:
            raise Fail(str(exc), 2) from None
        export.parent.mkdir(parents=True, exist_ok=True)
        export.write_text(text)
        out.print(f"wrote {export}", highlight=False)
        for run_id in run_ids:
            note = slower_note(*best_candidate(store, run_id)[1:])
            if note:
                output.err.print(f"note: {note}", highlight=False, markup=False)
        return 0

    raise typer.Exit(guarded(body, verbose))
