"""Reports on a stored run: evidence JSON, PNG plots, a self-contained HTML page, and the best kernel exported.

- ``evidence(store, run_id)``: the run's evidence as data: its config, environment, per-generation fitness,
  every evaluation, the best candidate and its claim (``evoforge.claims``), what LLM calls cost and were
  worth (``llm_bucket``, ``llm_summary``), throughput per executor slot (``throughput``) and time per stage
  (``time_by_generation``).
- ``write_report(store, run_id, folder)``: ``evidence.json``, the plots (with matplotlib, the ``report``
  extra) and ``report.html`` under ``evidence/run-<id>/``: what `evoforge report` writes.
- ``best_candidate`` and ``export_module``: a run's best kernel, as `evoforge best` prints it or exports it as
  a standalone module with its task kind's signature, guarded where the kind says so (attention; several
  attention runs: one dispatch table, ``export_table``, via ``evoforge.export``).
- ``headline(best)``: the one line a report leads with.

A command module: it reads the run store (``evoforge.store``) and never evaluates anything; ``cli.run`` and
``cli.live`` call it.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import statistics
import textwrap
from collections import defaultdict
from pathlib import Path
from typing import Any

from evoforge import __version__, claims
from evoforge.candidate import Candidate
from evoforge.results import EvalResult
from evoforge.store import Store, StoreError


def _mode(result: EvalResult) -> str | None:
    return result.fitness_mode or (next(iter(result.timing), None))


def llm_bucket(calls: list[dict[str, Any]], by_hash: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Totals of LLM calls; ``by_hash`` (evidence rows by candidate hash) gives what their code was worth."""
    replies = [c for c in calls if c["status"] in ("ok", "no_code", "duplicate")]
    with_code = [c for c in calls if c["status"] == "ok"]
    evaluated = [by_hash[c["candidate_hash"]] for c in with_code if c["candidate_hash"] in by_hash]
    valid = [row for row in evaluated if row["status"] == "ok"]
    useful = [row for row in valid if row["fitness"] >= 1.0]
    tokens = sum(c["tokens_in"] + c["tokens_out"] for c in calls)
    cost = sum(c["cost"] for c in calls)
    return {
        "calls": len(calls), "replies": len(replies), "with_code": len(with_code), "valid": len(valid),
        "useful": len(useful), "validity": len(valid) / len(replies) if replies else 0.0,
        "tokens_in": sum(c["tokens_in"] for c in calls), "tokens_out": sum(c["tokens_out"] for c in calls),
        "cost": cost, "tokens_per_valid": tokens / len(valid) if valid else None,
        "cost_per_valid": cost / len(valid) if valid else None,
        "tokens_per_useful": tokens / len(useful) if useful else None,
        "cost_per_useful": cost / len(useful) if useful else None,
        "retries": sum(len(c["retried"]) for c in calls),
        "mean_latency_s": sum(c["latency_s"] for c in calls) / len(calls) if calls else 0.0,
        "statuses": {st: sum(c["status"] == st for c in calls) for st in sorted({c["status"] for c in calls})},
    }


def llm_summary(calls: list[dict[str, Any]], rows: list[dict[str, Any]], task: str) -> dict[str, Any] | None:
    """What the LLM mutator's requests bought: validity (valid candidates / replies, EvoEngineer's
    figure), tokens and cost per valid and per useful (fitness >= 1) candidate, the speedups of its
    valid candidates, broken down by guide (configuration), operation, model and task."""
    if not calls:
        return None
    by_hash = {row["hash"]: row for row in rows if row["status"] != "pending"}
    overall = llm_bucket(calls, by_hash)
    out = dict(overall)
    for key, field in (("by_guide", "guide"), ("by_operation", "operation"), ("by_model", "model")):
        out[key] = {value: llm_bucket([c for c in calls if c[field] == value], by_hash)
                    for value in sorted({c[field] for c in calls})}
    out["by_task"] = {task: overall}
    made = {c["candidate_hash"] for c in calls if c["status"] == "ok"}
    out["speedups"] = sorted((by_hash[h]["fitness"] for h in made if h in by_hash and by_hash[h]["status"] == "ok"),
                             reverse=True)
    return out


def evidence(store: Store, run_id: str) -> dict[str, Any]:
    record = store.run(run_id)
    results = {r.hash: (r, g) for r, g in store.evaluations(record.id)}
    baseline_results = store.evaluations(record.id, role="baseline")
    baseline_hashes = {r.hash for r, _ in baseline_results}
    rows = []
    for cand, gen in store.candidates(record.id):
        result, _ = results.get(cand.hash, (None, gen))
        pytorch_path = claims.is_pytorch_path(cand.language, cand.hash, cand.genome, baseline_hashes)
        rows.append({
            "name": cand.name, "hash": cand.hash, "generation": gen, "language": cand.language,
            "genome": cand.genome, "lineage": cand.lineage,
            "status": result.status if result else "pending", "detail": result.detail if result else "",
            "fitness": result.fitness if result else 0.0, "fitness_mode": result.fitness_mode if result else None,
            "significant": result.significant if result else False,
            # an unchanged PyTorch path (never crowned the best) and what the run may say about it
            "pytorch_path": pytorch_path,
            "claim": claims.claim(result.fitness, result.significant, pytorch_path) if result and result.ok else "",
            "latency_us": {m: s.median_us for m, s in result.timing.items()} if result else {},
            "iqr_us": {m: s.iqr_us for m, s in result.timing.items()} if result else {},
            "max_abs_err": result.max_abs_err if result else None,
            "best_baseline": result.best_baseline if result else None,
            "where": result.where if result else {},  # slot, host, device that timed it (executors)
            **({"shapes": result.shapes} if result and result.shapes else {}),  # multi-shape tasks: per shape
        })
    baselines: dict[str, dict[str, Any]] = {}
    for result, gen in baseline_results:
        seen = baselines.get(result.name, {}).get("latency_us_by_generation", {})
        for m, s in result.timing.items():
            seen.setdefault(m, []).append(s.median_us)
        baselines[result.name] = {"generation": gen, "status": result.status,
                                  "latency_us": {m: s.median_us for m, s in result.timing.items()},
                                  "latency_us_by_generation": seen, "where": result.where}
    generations: dict[int, dict[str, Any]] = {}
    best_so_far = 0.0
    for gen in sorted({row["generation"] for row in rows}):
        in_gen = [row for row in rows if row["generation"] == gen and row["status"] != "pending"]
        # the best (and best so far) of the evolved candidates: a PyTorch path's fitness is PyTorch's
        best_gen = max((row["fitness"] for row in in_gen if not row["pytorch_path"]), default=0.0)
        best_so_far = max(best_so_far, best_gen)
        generations[gen] = {"evaluated": len(in_gen), "valid": sum(row["status"] == "ok" for row in in_gen),
                            "best_fitness": best_gen, "best_so_far": best_so_far}
    validity: dict[str, dict[str, int]] = defaultdict(lambda: {"generated": 0, "valid": 0})
    for row in rows:
        if row["status"] == "pending":
            continue
        level = row["lineage"].get("level", "seed")
        validity[level]["generated"] += 1
        validity[level]["valid"] += row["status"] == "ok"
    evaluated = [row for row in rows if row["status"] != "pending"]
    # the run's best: the fittest evolved candidate; an unchanged PyTorch path only when nothing else is valid
    best = claims.crown((row for row in evaluated if row["status"] == "ok"), lambda r: r["fitness"],
                        lambda r: r["pytorch_path"])
    return {
        "tool": "evoforge", "version": __version__, "kind": "run-report",
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "run": {"id": record.id, "created": record.created, "updated": record.updated, "status": record.status,
                "stop_reason": record.note},
        "task": record.task, "config": record.config, "device": record.env,
        "baselines": baselines, "generations": generations, "validity_by_level": dict(validity),
        "evaluated": len(evaluated), "valid": sum(r["status"] == "ok" for r in evaluated),
        "best": best, "candidates": rows,
        "throughput": throughput(store, record.id),
        "time_by_generation": time_by_generation(store.events(record.id, "profile")),
        "llm": llm_summary(store.llm_calls(record.id), rows, str(record.task.get("name"))),
        "events": store.events(record.id),
    }


# ---- executor throughput (issue 7) ------------------------------------------------------------------
def throughput(store: Store, run_id: str) -> dict[str, Any]:
    """Evaluations per minute per slot (GPU or CPU worker), idle share per slot and batches re-queued,
    from the run's events: each session's executor summary plus every batch's slot and busy time."""
    sessions = [{k: v for k, v in e.items() if k not in ("kind",)} for e in store.events(run_id, "throughput")]
    per_slot: dict[str, dict[str, Any]] = {}
    for event in store.events(run_id, "generation"):
        slot = event.get("slot")
        if slot is None:
            continue
        row = per_slot.setdefault(slot, {"batches": 0, "evaluations": 0, "busy_s": 0.0, "host": event.get("host"),
                                         "device_name": event.get("device_name")})
        row["batches"] += 1
        row["evaluations"] += event.get("evaluated", 0)
        row["busy_s"] += event.get("seconds") or 0.0
    for row in per_slot.values():
        row["busy_s"] = round(row["busy_s"], 3)
        row["evals_per_busy_min"] = round(60.0 * row["evaluations"] / row["busy_s"], 3) if row["busy_s"] else None
    return {"sessions": sessions, "per_slot": per_slot, "requeued": len(store.events(run_id, "requeue")),
            "precompiled": [{k: v for k, v in e.items() if k != "kind"} for e in store.events(run_id, "precompile")]}


# ---- where a generation's time goes ----------------------------------------------------------------
# The judge's profile of a batch (its ``profile`` event), in the order the stages run. These are wall times
# and add up to the batch's ``wall`` (the rest, "other", is scoring and bookkeeping).
WALL_STAGES = (("load", "reference outputs"), ("startup", "workers: start, load, check"), ("time", "timing"),
               ("recheck", "recheck"))
# Stages several workers run at once: their seconds are summed over workers, so together they may exceed
# the wall time they overlap in.
SUMMED_STAGES = (("worker.ready", "worker start"), ("worker.load", "load"), ("check", "checks"))
# Parts of the timing stage, named in the table's last column.
TIMING_PARTS = {"time.draw": "timing: inputs drawn", "time.worker": "timing: in the workers",
                "time.verify": "timing: outputs checked"}


def time_by_generation(profiles: list[dict[str, Any]]) -> dict[int, dict[str, float]]:
    """Each generation's time split: the judge's stage seconds summed over the generation's batches (a
    generation sent as several batches, or finished by a resume), with ``batches`` counting them. Numeric
    entries only (a profile also names its slot)."""
    out: dict[int, dict[str, float]] = {}
    for event in profiles:
        seconds = event.get("seconds")
        if not isinstance(seconds, dict) or not isinstance(event.get("generation"), int):
            continue
        row = out.setdefault(event["generation"], {"batches": 0})
        row["batches"] += 1
        for key, value in seconds.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                row[key] = row.get(key, 0.0) + float(value)
    return dict(sorted(out.items()))


def _time_split_html(split: dict[Any, dict[str, float]]) -> str:
    """The per-generation table: wall seconds by stage, then the summed worker stages, then anything else
    the judge profiled (a stage this report does not know yet is shown by its own name, never dropped)."""
    if not split:
        return ""
    known = {k for k, _ in WALL_STAGES + SUMMED_STAGES} | {"wall", "batches"}
    extra = sorted({k for row in split.values() for k in row} - known)
    cols = [label for _, label in WALL_STAGES] + ["other"] + [label for _, label in SUMMED_STAGES]

    def cell(value: float | None) -> str:
        return "<td>-</td>" if value is None else f"<td>{value:.1f}</td>"

    body = []
    for gen, row in sorted(split.items(), key=lambda kv: int(kv[0])):
        wall = row.get("wall")
        staged = sum(row.get(k, 0.0) for k, _ in WALL_STAGES)
        other = max(wall - staged, 0.0) if wall is not None else None
        cells = "".join(cell(row.get(k)) for k, _ in WALL_STAGES) + cell(other)
        cells += "".join(cell(row.get(k)) for k, _ in SUMMED_STAGES)
        more = ", ".join(f"{html.escape(TIMING_PARTS.get(k, k))} {row[k]:.3g}" for k in extra if k in row)
        body.append(f"<tr><td>{html.escape(str(gen))}</td><td>{int(row.get('batches', 0))}</td>{cell(wall)}{cells}"
                    f"<td>{more}</td></tr>")
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    return ("<h2>time per generation</h2><p>Seconds. The judge's wall time per generation (its batches summed) "
            "and where it went, stage by stage; <i>other</i> is scoring and bookkeeping. The last three columns "
            "are summed over workers that run side by side, so they can exceed the wall time they overlap in."
            "</p><table><tr><th>gen</th><th>batches</th><th>wall</th>" + head + "<th>more</th></tr>"
            + "".join(body) + "</table>")


def _throughput_html(data: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(str(name))}</td><td>{html.escape(str(s.get('device_name') or '?'))}</td>"
        f"<td>{html.escape(str(s.get('host') or '?'))}</td><td>{s.get('evaluations', 0)}</td>"
        f"<td>{s.get('evals_per_min', 0):.2f}</td><td>{100 * s.get('idle_frac', 0):.0f}%</td></tr>"
        for session in data.get("throughput", {}).get("sessions", [])
        for name, s in (session.get("per_slot") or {}).items())
    if not rows:
        return ""
    return ("<h2>throughput</h2><table><tr><th>slot</th><th>device</th><th>host</th><th>evaluations</th>"
            f"<th>evals/min</th><th>idle</th></tr>{rows}</table>")


def headline(best: dict[str, Any] | None) -> str:
    """The run's best in one line, as the console's ``best:`` line words it (evoforge.claims)."""
    if not best:
        return "no valid candidate"
    if best.get("pytorch_path"):
        return f"no evolved kernel was valid ({best['name']} is {claims.PYTORCH_PATH})"
    line = (f"best: {best['name']}, fitness {best['fitness']:.3f} over {best.get('best_baseline') or '-'} "
            f"({best['fitness_mode']} mode): {best.get('claim') or '-'}")
    if best["fitness"] > 1.0 and not best.get("significant"):
        line += "; nothing beat PyTorch beyond noise"
    return line


def _save(plt: Any, fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plots(data: dict[str, Any], out: Path) -> list[Path]:
    try:
        import matplotlib
    except ModuleNotFoundError:
        return []
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    paths = []
    gens = sorted(data["generations"], key=int)
    fig, ax = plt.subplots(figsize=(7, 4.4))
    # the line under the points, with no markers of its own: it must not hide the candidates
    ax.plot([int(g) for g in gens], [data["generations"][g]["best_so_far"] for g in gens], color="#999",
            linewidth=1.5, drawstyle="steps-post", zorder=1, label="best evolved so far")
    valid = [r for r in data["candidates"] if r["status"] == "ok"]
    groups = (("faster, significant", "#2a2", "o", lambda r: not r.get("pytorch_path") and r["fitness"] > 1
               and r["significant"]),
              ("evolved, not significantly faster", "#47a", "o", lambda r: not r.get("pytorch_path")
               and not (r["fitness"] > 1 and r["significant"])),
              ("unchanged PyTorch path", "#c60", "x", lambda r: bool(r.get("pytorch_path"))))
    for label, color, marker, keep in groups:
        mine = [r for r in valid if keep(r)]
        if mine:
            ax.scatter([r["generation"] for r in mine], [r["fitness"] for r in mine], s=18, alpha=0.7,
                       color=color, marker=marker, zorder=3, label=label)
    ax.axhline(1.0, color="gray", linestyle="--", linewidth=1, label="fastest PyTorch path")
    ax.set_xlabel("generation")
    ax.set_ylabel("fitness (speedup over the fastest baseline)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("\n".join(textwrap.wrap(headline(data.get("best")), 80)), fontsize=9)
    ax.legend(fontsize=7, loc="best")
    paths.append(_save(plt, fig, out / "fitness.png"))

    mode = next((r["fitness_mode"] for r in data["candidates"] if r["fitness_mode"]), "eager")
    fig, ax = plt.subplots(figsize=(8.5, 4.4))
    ok = [r for r in data["candidates"] if mode in r["latency_us"]]
    ax.scatter([r["generation"] for r in ok], [r["latency_us"][mode] for r in ok], s=14, zorder=3,
               color="black", label="candidates")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, base) in enumerate(sorted(data["baselines"].items())):
        samples = (base.get("latency_us_by_generation") or {}).get(mode) or (
            [base["latency_us"][mode]] if mode in base["latency_us"] else [])
        if not samples:
            continue
        color = colors[i % len(colors)]
        # the median over every generation that timed it, and the band its timings spanned
        ax.axhline(statistics.median(samples), color=color, linestyle=":", linewidth=1, zorder=1,
                   label=f"{name} ({len(samples)} timing{'s' if len(samples) != 1 else ''})")
        if len(samples) > 1:
            ax.axhspan(min(samples), max(samples), color=color, alpha=0.08, zorder=0)
    ax.set_yscale("log")
    ax.set_xlabel("generation")
    ax.set_ylabel(f"{mode} latency, µs (median)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"{mode} latency of the candidates and PyTorch's paths (lines: median over generations)",
                 fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)  # labels never overlap
    paths.append(_save(plt, fig, out / "latency.png"))

    fig, ax = plt.subplots(figsize=(7, 3.5))
    levels = sorted(data["validity_by_level"])
    generated = [data["validity_by_level"][k]["generated"] for k in levels]
    valid = [data["validity_by_level"][k]["valid"] for k in levels]
    ax.bar(levels, generated, color="#ccc", label="generated")
    ax.bar(levels, valid, color="#4a4", label="valid")
    ax.set_ylabel("candidates")
    ax.set_title("candidates generated and valid, by mutation level", fontsize=9)
    ax.legend()
    paths.append(_save(plt, fig, out / "validity.png"))

    if data.get("llm") and data["llm"]["speedups"]:
        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.hist(data["llm"]["speedups"], bins=min(20, max(5, len(data["llm"]["speedups"]))), color="#47a")
        ax.axvline(1.0, color="gray", linestyle="--", linewidth=1, label="fastest PyTorch path")
        ax.set_xlabel("speedup of the LLM's valid candidates")
        ax.set_ylabel("candidates")
        ax.set_title("speedups of the LLM's valid candidates", fontsize=9)
        ax.legend()
        paths.append(_save(plt, fig, out / "llm_speedups.png"))
    return paths


def _html(data: dict[str, Any], plots: list[Path], best_source: str | None) -> str:
    def esc(value: Any) -> str:
        return html.escape(str(value))

    images = "".join(
        f'<img alt="{esc(p.stem)}" src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">'
        for p in plots)
    ranked = sorted(data["candidates"], key=lambda r: -r["fitness"])
    body = "".join(
        f"<tr><td>{esc(r['name'])}</td><td>{r['generation']}</td><td>{esc(r['status'])}</td>"
        f"<td>{r['fitness']:.3f}</td><td>{esc(r.get('claim', ''))}</td>"
        f"<td>{esc(', '.join(f'{m} {v:.1f}' for m, v in r['latency_us'].items()))}</td>"
        f"<td>{esc(r['lineage'].get('mutation', ''))}</td><td class=detail>{esc(r['detail'])}</td></tr>"
        for r in ranked)
    dev = data.get("device") or {}
    best = data.get("best")
    head = esc(headline(best))
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>evoforge run {esc(data['run']['id'])}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}td,th{{padding:2px 8px;border-bottom:1px solid #ddd;
font-size:13px;vertical-align:top}}td.detail{{max-width:40em;overflow-wrap:anywhere}}img{{max-width:49%}}pre{{background:#f6f6f6;padding:1em;overflow:auto;font-size:12px}}</style></head>
<body><h1>evoforge run {esc(data['run']['id'])}</h1>
<p>task {esc(data['task'].get('name'))} on {esc(dev.get('device_name', '?'))}
(torch {esc((dev.get('versions') or {}).get('torch'))}{esc(_threads(dev))}); {data['evaluated']} evaluated, \
{data['valid']} valid;
stopped: {esc(data['run']['stop_reason'])}</p><p><b>{head}</b></p>{images}
<h2>candidates</h2><table><tr><th>name</th><th>gen</th><th>status</th><th>fitness</th><th>claim</th><th>latency µs</th>
<th>mutation</th><th>detail</th></tr>{body}</table>
{_time_split_html(data.get("time_by_generation") or {})}
{_throughput_html(data)}
{_llm_html(data.get("llm"), esc)}
<h2>best kernel</h2><pre>{esc(best_source or '')}</pre></body></html>"""


def _threads(dev: dict[str, Any]) -> str:
    """", 1 CPU thread per worker" for a CPU run (the judge pins torch's intra-op threads), else ""."""
    threads = (dev.get("judge") or {}).get("cpu_threads")
    if dev.get("device_type") != "cpu" or not threads:
        return ""
    return f", {threads} CPU thread{'s' if threads != 1 else ''} per worker"


def _llm_html(llm: dict[str, Any] | None, esc: Any) -> str:
    if not llm:
        return ""

    def fmt(value: Any) -> str:
        return "-" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)

    cols = ["calls", "replies", "with_code", "valid", "useful", "validity", "tokens_in", "tokens_out", "cost",
            "tokens_per_useful", "cost_per_useful", "retries"]
    rows = [("all", llm)] + [(f"{key.removeprefix('by_')}: {name}", b) for key in ("by_guide", "by_operation",
                                                                                   "by_model")
                             for name, b in llm[key].items()]
    body = "".join("<tr><td>" + esc(label) + "</td>" + "".join(f"<td>{esc(fmt(b[c]))}</td>" for c in cols)
                   + "</tr>" for label, b in rows)
    head = "".join(f"<th>{c}</th>" for c in cols)
    return f"<h2>LLM mutator</h2><table><tr><th></th>{head}</tr>{body}</table>"


def write_report(store: Store, run_id: str, out: Path) -> list[Path]:
    data = evidence(store, run_id)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "evidence.json"
    json_path.write_text(json.dumps(data, indent=2, default=str))
    plots = _plots(data, out)
    best_source = None
    if data["best"]:
        best_source = next(c.source for c, _ in store.candidates(data["run"]["id"]) if c.hash == data["best"]["hash"])
    page = out / "report.html"
    page.write_text(_html(data, plots, best_source))
    return [json_path, *plots, page]


def best_candidate(store: Store, run_id: str) -> tuple[Candidate, dict[str, Any], dict[str, Any]]:
    data = evidence(store, run_id)
    if not data["best"]:
        raise StoreError(f"run {data['run']['id']} has no valid candidate yet")
    cand = next(c for c, _ in store.candidates(data["run"]["id"]) if c.hash == data["best"]["hash"])
    return cand, data["best"], data


_PLAIN_USE = "Use: `from this_module import evolved` and call evolved(q, k, v); or EvolvedModel()(q, k, v).\n"
_GUARDED_USE = """Use: `from this_module import attention`: torch.nn.functional.scaled_dot_product_attention's
signature, run by the evolved kernel where TABLE (below) says it was verified and by SDPA elsewhere (warned
once; strict=True raises instead). evolved(q, k, v) is the task's own call; check() says why a call falls
back, stats() counts both; routed() (or evoforge.use("this_file.py")) sends SDPA calls here inside a block;
register_transformers() adds attn_implementation="evoforge". Check it here: python this_file.py --selftest
"""


def export_module(store: Store, run_id: str | list[str]) -> str:
    """The best kernel as a standalone module with a header saying what it was measured on. An attention
    kernel comes guarded (evoforge.export: checks, SDPA fallback, custom op, self-test); any other task's
    gets its source, a plain function and an nn.Module with the task's signature. Several runs (attention
    only) make one module with a dispatch table of their best kernels."""
    if isinstance(run_id, list):
        if len(run_id) > 1:
            return export_table(store, run_id)
        run_id = run_id[0]
    from evoforge.tasks import kind_of

    cand, best, data = best_candidate(store, run_id)
    dev = data.get("device") or {}
    kind = kind_of(data["task"].get("params") or {})  # its signature, and whether it exports guarded
    args = kind.signature
    latency = best["latency_us"].get(best["fitness_mode"] or "", None)
    what = (f"Exported by evoforge {__version__} (run {data['run']['id']}): {claims.PYTORCH_PATH}."
            if best.get("pytorch_path") else f"Evolved by evoforge {__version__} (run {data['run']['id']}).")
    verdict = best.get("claim") or claims.claim(best["fitness"], bool(best.get("significant")))
    header = f'''"""{what}

Task: {data['task'].get('name')} ({data['task'].get('origin')})
Device: {dev.get('device_name', '?')}, torch {(dev.get('versions') or {}).get('torch')}, \
triton {(dev.get('versions') or {}).get('triton')}
Speedup: {best['fitness']:.3f}x over {best['best_baseline']} ({best['fitness_mode']} mode, \
{latency if latency is None else f'{latency:.2f} us'} median), measured {data['run']['updated']}: {verdict}
Exported: {data['date']}

Use: `from this_module import evolved` and call evolved({args}); or EvolvedModel()({args}).
"""
'''
    if kind.guarded_export:
        from evoforge.export import render_module

        return render_module(cand, best, data, header.replace(_PLAIN_USE, _GUARDED_USE))
    footer = f'''

# ---- evoforge export: the task's call signature ----------------------------------------
EvolvedModel = ModelNew
_evolved_model = None


def evolved({args}):
    """Compute the task's forward with the evolved kernel (the module is built once)."""
    global _evolved_model
    if _evolved_model is None:
        _evolved_model = EvolvedModel()
    return _evolved_model({args})
'''
    return header + cand.source.rstrip() + "\n" + footer


def export_table(store: Store, run_ids: list[str]) -> str:
    """One guarded module with a dispatch table: each run's best kernel is an entry, and a call runs the entry
    whose class covers it (nearest verified shape where several do), SDPA elsewhere."""
    from evoforge.export import ExportError, render_table
    from evoforge.tasks import kind_of

    entries = [best_candidate(store, run_id) for run_id in run_ids]
    lines = []
    for n, (cand, best, data) in enumerate(entries, 1):
        if not kind_of(data["task"].get("params") or {}).guarded_export:
            raise ExportError(f"run {data['run']['id']} is not an attention task ({data['task'].get('name')}); "
                              "only attention runs combine into a dispatch table")
        dev = data.get("device") or {}
        latency = best["latency_us"].get(best["fitness_mode"] or "", None)
        verdict = best.get("claim") or claims.claim(best["fitness"], bool(best.get("significant")))
        what = "an unchanged PyTorch path" if best.get("pytorch_path") else cand.name
        lines.append(f"{n}. {data['task'].get('name')} (run {data['run']['id']}, {what}): {best['fitness']:.3f}x over "
                     f"{best['best_baseline']} ({best['fitness_mode']} mode, "
                     f"{latency if latency is None else f'{latency:.2f} us'} median) on {dev.get('device_name', '?')}, "
                     f"measured {data['run']['updated']}: {verdict}")
    date = entries[0][2]["date"]
    header = f'''"""A dispatch table of {len(entries)} attention kernels evolved by evoforge {__version__}: each call
runs the kernel whose verified class covers it (the one verified nearest its shape where several do).

{chr(10).join(lines)}
Exported: {date}

{_GUARDED_USE.replace("the evolved kernel where TABLE (below) says it was verified",
                      "the kernel of TABLE (below) that was verified for the call")}"""
'''
    return render_table(entries, header)
