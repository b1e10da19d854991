"""What every command shares: its options, the one rule from error to exit code, and small setup steps.

Exit codes: 0 success; 1 the job ran but did not succeed (no sweep variant beat the baselines, the
evaluated candidate is not correct, a run found no valid candidate); 2 bad input (a task, candidate, store
or flag that can't be used); 3 the evaluator itself failed; 130 Ctrl-C; 143 SIGTERM and 129 SIGHUP.

- ``guarded(body, verbose)`` runs a command's body and turns the known errors (``Fail``, TaskError,
  StoreError, EvaluatorError, an interrupt or a signal) into one line on stderr and an exit code, never a bare
  traceback (``--verbose`` adds it). A command raises ``Fail(message, code)`` for its own one-line errors.
- The typer options several commands take (``DeviceOpt``, ``JsonOpt``, ``DbOpt``, the executor options...).
- ``eval_config`` builds the evaluator's settings from the common options; ``open_store`` opens the run store.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.markup import escape

from evoforge.cli import output

T = TypeVar("T")


class Fail(Exception):
    """A command's own one-line error, with the exit code it ends with."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def guarded(fn: Callable[[], T], verbose: bool) -> T:
    """Run a command body: known errors become one line and an exit code, never a bare traceback."""
    from evoforge.evaluator import EvaluatorError
    from evoforge.evolve import Terminated
    from evoforge.store import StoreError
    from evoforge.task import TaskError

    err = output.err
    try:
        return fn()
    except Fail as exc:
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


def eval_config(device: str, timeout: float, budget_ms: float, seed: int | None, memory_mb: int | None,
                sandbox: str) -> Any:
    """The evaluator's settings (an EvalConfig) from the options of `sweep` and `eval`."""
    from evoforge.evaluator import EvalConfig
    from evoforge.evolve import check_device
    from evoforge.timing import TimingConfig

    check_device(device)  # a device this machine lacks is bad input: one line, exit 2
    timing = TimingConfig(budget_ms=budget_ms)
    cfg = EvalConfig(device=device, timeout_s=timeout, timing=timing, seed=seed, sandbox=sandbox)
    if memory_mb:
        cfg.memory_limit_mb = memory_mb
    return cfg


def open_store(db: Path) -> Any:
    from evoforge.store import RunStore

    return RunStore(db)


# typer's idiom is Option objects as defaults; they are immutable descriptions, so sharing them is safe.
DeviceOpt = typer.Option("auto", "--device", help="auto (CUDA if present), cuda, cuda:N or cpu.")
TimeoutOpt = typer.Option(300.0, "--timeout", help="Seconds one stage of one candidate may take.")
BudgetOpt = typer.Option(100.0, "--budget-ms", help="Timing budget per entry and mode, milliseconds.")
SeedOpt = typer.Option(None, "--seed", help="Input seed (default: a fresh random seed each run).")
MemoryOpt = typer.Option(None, "--memory-mb", help="Worker memory cap, MiB (default: 75% of RAM, at most 32 GiB).")
VerboseOpt = typer.Option(False, "--verbose", "-v", help="Show tracebacks.")
SandboxOpt = typer.Option("basic", "--sandbox", help="none | basic (scrubbed env, static pre-check, audit hook; "
                          "no network and writes only to scratch/caches where the OS allows) | strict "
                          "(basic, or refuse).")
JsonOpt = typer.Option(False, "--json", help="Print JSON on stdout instead of a table.")
DbOpt = typer.Option(Path(".evoforge/runs.db"), "--db", help="The run store (SQLite).")

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
