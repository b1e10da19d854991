"""One run's search on the terminal: its opening lines, the live line while it runs, and its last lines.

``search(store, run_id, prepared, config, started)`` runs a started (or resumed) run to its end inside its
session (lease, heartbeat, how it ended: ``evolve.session``), on the executor ``evolve.make_executor`` picks,
and prints on stderr what it is about to do and one line per generation (``output.progress_line``) under the
evaluator's live line. It returns the search's final Progress.

``summarize(store, run_id, final, as_json)`` prints the run's outcome on stdout (why it stopped, its best
candidate, what the LLM's requests cost; or the same as one JSON object) and returns the exit code: 0 when
some candidate was valid, else 1.

`evoforge run` and `evoforge resume` call both; a ``--task-dir`` batch (``evoforge.batch.run_batch``) calls
``search`` for each problem and prints one table at the end instead of each run's summary.
"""

from __future__ import annotations

import json
from typing import Any

from rich.markup import escape

from evoforge.cli import output


def search(store: Any, run_id: str, prepared: Any, config: Any, started: float | None = None) -> Any:
    """Run the search of ``run_id`` (prepared by ``evolve.start`` or ``evolve.resume``) with the live line on
    stderr; ``started`` (time.monotonic()) is when its ``--budget`` began. Returns the final Progress."""
    from evoforge import evolve

    err = output.err
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
    with output.progress(True) as say:
        prepared.evaluate.progress = lambda m: say(f"{state['line']} · {m}")
        prepared.mutator.set_progress(lambda m: say(f"{state['line']} · {m}"))

        def on_progress(p: Any) -> None:
            state["line"] = output.progress_line(p, config.generations)
            output.err.print(state["line"], highlight=False)

        # the run's lease, heartbeat and how the session ended (issue 23)
        with evolve.session(store, run_id):
            # ---- executor (issue 7): where batches run
            executor = evolve.make_executor(config, prepared)
            err.print(f"executor {executor.name}: {len(executor.slot_names)} slot(s) "
                      f"({', '.join(executor.slot_names)})", highlight=False)
            return evolve.search_for(store, run_id, prepared, config, on_progress, executor, started).run()


def summarize(store: Any, run_id: str, final: Any, as_json: bool) -> int:
    """Print how the run ended on stdout (a table of lines, or one JSON object); 0 if any candidate was valid."""
    out = output.out
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
        out.print(output.best_line(final), highlight=False, markup=False)
        if calls:
            llm = summary["llm"]
            out.print(f"llm: {llm['calls']} requests, {llm['with_code']} with code, {llm['tokens_in']} tokens in, "
                      f"{llm['tokens_out']} out, cost {llm['cost']:g}, {llm['retries']} retries", highlight=False)
        out.print(f"next: evoforge report {run_id}   ·   evoforge best {run_id} --export kernel.py", highlight=False)
    return 0 if final.valid else 1
