"""A ``--task-dir`` batch on the command line: `evoforge run --task-dir`, `evoforge resume batch-...`, and its table.

The orchestration (one run per problem, each row kept as it finishes, an interrupted batch continued) is
``evoforge.batch.run_batch``; the record it keeps is ``evoforge.batch_store.BatchRecord``. This module only
opens or loads that record, runs each problem's search with the live line (``cli.live.search``, whose own
summary stays off stdout), prints a problem's error as one line on stderr, and prints the batch's table
(``print_batch``, also used by `evoforge report batch-...`) or its JSON at the end.

- ``run_batch(store, config, folder, level, as_json, verbose, record=None)``: a new batch, or ``record``'s.
- ``lanes_for(config)``: where ``--problems-at-once N`` runs its problems (one visible GPU each, or the CPU).
- ``resume_batch(store, batch_id, overrides, as_json, verbose)``: continue an interrupted batch.
- ``print_batch(data, folder)``: the table, its notes and the summary line (fast_p, geometric means).
"""

from __future__ import annotations

import json
import traceback
from pathlib import Path
from typing import Any

from rich import box
from rich.markup import escape
from rich.table import Table

from evoforge.cli import live, output


def run_batch(store: Any, config: Any, folder: Path, level: int | None, as_json: bool, verbose: bool,
              record: Any = None) -> int:
    """One run per problem, then the summary: per problem the best candidate's speedups, and fast_p and the
    geometric mean over all. A problem that can't be used is a line in the table, not the end of the batch.
    Each row is kept as it finishes (a BatchRecord); with ``record``, an interrupted batch continues."""
    from evoforge import batch
    from evoforge.batch_store import BatchRecord

    lanes = lanes_for(config)  # before the record: a setting this machine can't honour is refused first
    if record is None:  # issue 22: the batch's rows are kept as each problem finishes
        record = BatchRecord.create(store.path, folder, level, config.to_dict(), batch.discover(folder, level))

    def on_start(problems: list[tuple[Path, int | None]]) -> None:
        output.err.print(f"batch {record.id}: {len(problems)} problem(s) from {folder}"
                         + (f" at level {level}" if level is not None else "")
                         + (f" ({len(record.rows)} already finished)" if record.rows else "")
                         + f"; rows kept in {record.path} as they finish (`evoforge resume {record.id}` continues it)",
                         highlight=False)
        if len(lanes) > 1 and len(problems) > 1:
            where = ", ".join(lane.name for lane in lanes)
            output.err.print(f"{len(lanes)} problems at once, each in a process of its own ({where}); their lines "
                             "are prefixed with where they run", highlight=False)
            if not lanes[0].env:
                output.err.print("note: on the CPU, problems at once share its cores: their timings disturb each "
                                 "other", highlight=False)

    def on_error(path: Path, exc: Exception) -> None:
        if verbose:
            traceback.print_exc()
        output.err.print(f"[red]{path}:[/red] {escape(str(exc))}", highlight=False)

    def search(run_id: str, prepared: Any, run_config: Any, started: float) -> None:
        live.search(store, run_id, prepared, run_config, started)  # its summary stays off stdout: one table at the end

    summary = batch.run_batch(store, config, record, search, on_start, on_error, lanes,
                              lambda line: output.err.print(line, highlight=False, markup=False))
    data = {"batch": record.id, **summary.to_dict()}
    if as_json:
        output.out.print_json(json.dumps(data))
    else:
        print_batch(data, folder)
    return 0 if any(p.status == "ok" for p in summary.problems) else 1


def lanes_for(config: Any) -> list[Any]:
    """Where ``--problems-at-once N`` runs its problems: the first N visible GPUs, one each (a problem in a
    process that sees only its GPU), or N CPU processes. Refused in one line (TaskError) where N can't be
    honoured: more problems than GPUs would time each other on one GPU; a Ray cluster, or one GPU named,
    is not this machine's visible GPUs."""
    import os

    from evoforge import evolve
    from evoforge.batch import Lane
    from evoforge.task import TaskError

    n = config.problems_at_once
    if n < 1:
        raise TaskError(f"--problems-at-once {n}: need at least one")
    if n == 1:
        return []
    if config.executor != "local":
        raise TaskError("--problems-at-once is for the local executor (a Ray cluster spreads each run's "
                        "evaluations over its GPUs)")
    device = evolve.resolve_device(config.device)
    if device == "cpu":
        return [Lane(f"cpu#{i}") for i in range(n)]
    if device != "cuda":
        raise TaskError(f"--problems-at-once spreads problems over the visible GPUs: use --device cuda or auto, "
                        f"not {device}")
    import torch

    count = torch.cuda.device_count()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [v.strip() for v in visible.split(",") if v.strip()][:count] if visible else [str(i) for i in range(count)]
    if n > len(ids):
        raise TaskError(f"--problems-at-once {n}: {len(ids)} GPU(s) visible; problems sharing a GPU would time "
                        "each other (`evoforge resume batch-...` takes --problems-at-once too)")
    return [Lane(f"cuda:{i}", {"CUDA_VISIBLE_DEVICES": ids[i]}) for i in range(n)]


def resume_batch(store: Any, batch_id: str, overrides: dict[str, Any], as_json: bool, verbose: bool) -> int:
    """Continue a batch: problems with a row are not run again; the one it was in continues its run; a
    setting given here (``--budget``: each problem's) replaces the batch's for the problems left."""
    from evoforge import evolve
    from evoforge.batch_store import BatchRecord

    record = BatchRecord.load(store.path, batch_id)
    config = evolve.RunConfig.from_dict({**record.config, **{k: v for k, v in overrides.items() if v is not None}})
    return run_batch(store, config, Path(record.folder), record.level, as_json, verbose, record)


def print_batch(data: dict[str, Any], folder: Path) -> None:
    """The batch's table (one row per problem, the full run id to copy), its notes and its summary line."""
    from evoforge.batch import BUDGET_MARGIN_S, past_budget

    out = output.out

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
    # a batch recorded before fast_1.05 was measured has none
    f105 = f" / fast_1.05 {m['fast_1.05_vs_best']:.2f}" if m.get("fast_1.05_vs_best") is not None else ""
    out.print(f"{m['correct']}/{m['problems']} problems with a correct candidate "
              "(fast_p counts wins beyond noise only); "
              f"fast_1 {m['fast_1_vs_eager']:.2f} / fast_1.5 {m['fast_1.5_vs_eager']:.2f} vs eager, "
              f"{m['fast_1_vs_best']:.2f}{f105} / {m['fast_1.5_vs_best']:.2f} vs the faster of eager and compile; "
              f"geomean {x(m['geomean_vs_eager'])} vs eager, {x(m['geomean_vs_best'])} vs the faster",
              highlight=False)
    for p in data["problems"]:  # the stated margin is a promise: say where it was broken
        if past_budget(p.get("wall_s"), p.get("budget_s")):
            out.print(f"{p['problem']} ran {p['wall_s']:.0f} s on a {p['budget_s']:g} s budget, past the "
                      f"{BUDGET_MARGIN_S:g} s margin", highlight=False, markup=False)
