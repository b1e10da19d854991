"""The ``evoforge`` command line (typer + rich): the top of the data flow, where a user's flags come in.

Layout, one concern per module, each command a plain function registered on ``app`` below (in the order
``evoforge --help`` lists them):

- ``run.py``: `run`, `resume`, `runs`, `report`, `best` (a run's life; ``evoforge.evolve`` does the work).
- ``batch.py``: `run --task-dir` and `resume batch-...` on the terminal (``evoforge.batch.run_batch`` does it).
- ``tools.py``: `sweep`, `tasks`, `eval`, `capture`, `doctor`.
- ``live.py``: one run's search with its live line and its last lines (shared by run, resume and batches).
- ``common.py``: the shared options, ``Fail`` and ``guarded`` (errors to one line and an exit code).
- ``output.py``: the stdout/stderr consoles, number formats, the live line's spinner and lines.

Exit codes: 0 success; 1 the job ran but did not succeed (no sweep variant beat the baselines, the
evaluated candidate is not correct); 2 bad input (a task or candidate that can't be used); 3 the
evaluator itself failed. Errors are one line; ``--verbose`` adds the traceback.

``main`` is the console script (``evoforge = "evoforge.cli:main"``); ``python -m evoforge.cli`` runs it too.
"""

from __future__ import annotations

import sys

import typer

from evoforge import __version__
from evoforge.bench import app as bench_app
from evoforge.cli import output, run, tools

app = typer.Typer(
    add_completion=False, no_args_is_help=True, rich_markup_mode=None,
    help="evoforge: evolve fast GPU kernels for PyTorch operations, measured honestly.",
)

# ---- commands, in the order `evoforge --help` lists them
app.command()(tools.sweep)
app.command()(tools.tasks)
app.command("eval")(tools.eval_cmd)
app.command()(run.run)
app.command()(run.resume)
app.command()(run.runs)
app.command()(run.report)
app.command()(run.best)
app.command(context_settings={"ignore_unknown_options": True})(tools.capture)  # its program's flags pass through
app.command()(tools.doctor)

# ---- sub-apps (groups of commands) are added here, after the commands
app.add_typer(bench_app, name="bench", help="Benchmarks: the attention suite, re-timing an exported kernel, timing "
                                            "calibration, search throughput, re-rendering a recorded kernel.")


@app.callback(invoke_without_command=True)
def _root(version: bool = typer.Option(False, "--version", help="Print the version and exit.")) -> None:
    if version:
        output.out.print(f"evoforge {__version__}")
        raise typer.Exit(0)


def main() -> None:
    try:
        app()
    except BrokenPipeError:
        sys.exit(1)
