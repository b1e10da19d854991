"""The commands around a run: `evoforge sweep`, `tasks`, `eval`, `capture` and `doctor`.

- ``sweep``: the attention sweep (``evoforge.sweep``): every variant checked and timed against PyTorch's
  paths in fresh workers, ``--repeats`` times; its evidence JSON, and a table (``print_sweep``); exit 0 only
  when some variant beat every other PyTorch path beyond noise in every repeat.
- ``tasks``: the built-in tasks (``evoforge.tasks.BUILTINS``), and the names of any other task kind registered
  (``registry.TASK_KINDS``, a plugin's).
- ``eval``: one candidate file through the evaluator (``evoforge.evaluator.Evaluator``) beside the task's
  baselines, as a table (``print_eval``) or JSON; exit 0 when it is correct.
- ``capture``: runs a program with ``evoforge.capture_hook`` on its path and writes the attention calls it
  made as a task file (``evoforge.workload``); ends with the program's exit code.
- ``doctor``: the environment report of ``evoforge.doctor.diagnose``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from evoforge.cli import output
from evoforge.cli.common import (
    BudgetOpt,
    DeviceOpt,
    Fail,
    JsonOpt,
    MemoryOpt,
    SandboxOpt,
    SeedOpt,
    TimeoutOpt,
    VerboseOpt,
    eval_config,
    guarded,
)
from evoforge.cli.output import fmt_range, fmt_us, plural

DEFAULT_SWEEP_OUT = Path("evidence/evo_attention_sweep.json")


def sweep(
    task: str = typer.Option("attention", "--task", "-t", help="A built-in attention task (see `evoforge tasks`)."),
    repeats: int = typer.Option(3, "--repeats", "-r", min=1, help="Independent runs, each in a fresh worker."),
    variants: str = typer.Option("", "--variants", help="Comma-separated subset of variants (default: all)."),
    out_path: Path = typer.Option(DEFAULT_SWEEP_OUT, "--out", "-o", help="Where to write the evidence JSON."),
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
        config = eval_config(device, timeout, budget_ms, seed, memory_mb, sandbox)
        output.err.print(f"sweep: {spec.name}, {plural(len(chosen), 'variant')}, {plural(repeats, 'repeat')}",
                         highlight=False)
        with output.progress(True) as say:
            outcome = run_sweep(spec, chosen, repeats=repeats, config=config, progress=say)
        path = write_evidence(outcome.evidence, out_path)
        if as_json:
            output.out.print_json(json.dumps({k: v for k, v in outcome.evidence.items() if k != "runs"}, default=str))
        else:
            print_sweep(outcome.evidence)
            output.out.print(f"evidence: {path}", highlight=False)
        return 0 if outcome.success else 1

    raise typer.Exit(guarded(body, verbose))


def print_sweep(evidence: dict[str, Any]) -> None:
    """The sweep's table, best fitness first, then the fitness rule and the verdict."""
    out = output.out
    dev = evidence["device"]
    versions = dev.get("versions", {})
    table = Table(title=f"{evidence['task']['name']} on {dev.get('device_name', '?')} "
                        f"(torch {versions.get('torch')}, {plural(evidence['repeats'], 'repeat')})")
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
        table.add_row(row["name"], status, err_txt, escape(fmt_range(row["latency_us"].get("eager", []))),
                      escape(fmt_range(row["latency_us"].get("graph", []))), escape(fitness), vs,
                      escape("; ".join(n for n in notes if n)))
    out.print(table)
    out.print("latency: median [min–max across repeats]; " + evidence["fitness_rule"], highlight=False, markup=False)
    if evidence["success"]:
        out.print(f"[green]success:[/green] {', '.join(evidence['winners'])} beat every other PyTorch path "
                  "in every repeat, beyond noise")
    else:
        out.print("no variant beat every other PyTorch path beyond noise in every repeat (exit 1): "
                  "the baseline is real now")


def tasks(as_json: bool = JsonOpt) -> None:
    """List the built-in tasks."""
    from evoforge.tasks import BUILTINS, AttentionKind, task_kinds

    out = output.out
    rows = [{"name": b.name, "description": b.description, **b.params.to_dict()} for b in BUILTINS.values()]
    others = [(name, kind.name) for kind in task_kinds() if kind.name != AttentionKind.name for name in kind.names()]
    if as_json:
        out.print_json(json.dumps(rows + [{"name": name, "kind": kind} for name, kind in others]))
        return
    table = Table(title="built-in tasks (add :key=value,... to change a parameter, e.g. attention:seq_len=1024)")
    for col in ("name", "B", "H", "KV", "Q", "S", "D", "causal", "dtype", "description"):
        table.add_column(col)
    for b in BUILTINS.values():
        p = b.params
        table.add_row(b.name, str(p.batch), str(p.heads), str(p.n_kv_heads), str(p.n_q), str(p.seq_len),
                      str(p.head_dim), "yes" if p.causal else "no", p.dtype, b.description)
    out.print(table)
    if others:
        out.print("other task kinds: " + ", ".join(f"{name} ({kind})" for name, kind in others), highlight=False)
    out.print("or give a KernelBench-format file: --task path/to/problem.py (Model, get_inputs, get_init_inputs)",
              highlight=False)


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
            raise Fail(f"{candidate}: is a directory; give the candidate's .py file (it defines class ModelNew)", 2)
        if not candidate.is_file():
            raise Fail(f"{candidate}: no such candidate file", 2)
        try:
            source = candidate.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise Fail(f"{candidate}: cannot read it ({exc})", 2) from None
        spec = resolve_task(task)
        load_task(spec)  # a broken task is reported before any worker starts
        cand = Candidate(name=candidate.stem, source=source)
        base = baselines_for(spec, resolve_device(device)) if baselines else []
        base = [b for b in base if b.name != cand.name]
        config = eval_config(device, timeout, budget_ms, seed, memory_mb, sandbox)
        with output.progress(True) as say:
            report = Evaluator(spec, config, progress=say).evaluate([cand], base)
        result = report.results[0]
        if as_json:
            output.out.print_json(json.dumps({"task": spec.name, **report.to_dict()}, default=str))
        else:
            print_eval(report, spec.name)
        return 0 if result.ok else 1

    raise typer.Exit(guarded(body, verbose))


def print_eval(report: Any, task_name: str) -> None:
    """The evaluation's table (the candidate first, then each baseline) and, if it failed, its logs' tail."""
    out = output.out
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
        table.add_row(r.name, r.role, status, err_txt, fmt_us(r.latency("eager")), fmt_us(r.latency("graph")),
                      escape(fit), escape(r.detail))
    out.print(table)
    cand = report.results[0]
    if cand.logs and not cand.ok:
        out.print(f"[dim]{escape(cand.name)} logs (tail):[/dim]", highlight=False)
        out.print(cand.logs[-1500:], highlight=False, markup=False)


def capture(
    command: list[str] = typer.Argument(..., metavar="COMMAND", help="The program to run, after `--` "
                                        "(a Python program, or anything that starts one)."),
    out_file: Path = typer.Option(Path("captured.toml"), "--output", "-o", help="The task file to write."),
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
                raise Fail(f"could not start {command[0]!r}: {exc.strerror or exc}", 2) from None
            records = capture_hook.read_records(str(calls))
        source = shlex.join(command)
        if not records:
            raise Fail(f"`{source}` made no torch.nn.functional.scaled_dot_product_attention call (exit code "
                       f"{code}); capture sees Python processes that import torch and call SDPA through that "
                       "attribute (transformers: attn_implementation=\"sdpa\")", 1)
        out_file.parent.mkdir(parents=True, exist_ok=True)
        found = workload.write(records, out_file, f"`{source}`")
        for line in workload.summary_lines(found, str(out_file)):
            output.out.print(line, highlight=False, markup=False)
        output.out.print(f"wrote {out_file}", highlight=False)
        if code:
            output.err.print(f"note: `{source}` exited with code {code}; the calls it made before are recorded",
                             highlight=False, markup=False)
        return code if code >= 0 else 128 - code  # killed by a signal: the shell's convention

    raise typer.Exit(guarded(body, verbose))


def doctor(as_json: bool = JsonOpt, device: str = DeviceOpt) -> None:
    """GPU, driver, versions, and which attention backends run here."""
    from evoforge.doctor import diagnose

    out = output.out
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
