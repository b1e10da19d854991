"""A ``--task-dir`` batch that survives interruption (issue 22), and its report.

A batch is a JSON file beside the run store (``.evoforge/batches/<id>.json``), rewritten atomically (a
temporary file renamed over it) whenever a problem's run starts and whenever a problem's row is
finished, so a batch killed at any point leaves every finished row and the run it was in. ``evoforge
resume <batch id>`` runs only the problems without a row, continuing the run of the problem it was in
(its evaluated candidates kept); ``evoforge report <batch id>`` renders the rows: the table, the fast_p
curves for p in 0..2 and the geometric means.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import os
import platform
import tempfile
import uuid
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from evoforge.batch import BatchSummary, ProblemOutcome, fast_p
from evoforge.store import StoreError

PREFIX = "batch-"
CURVE_P = [round(0.05 * i, 2) for i in range(41)]  # fast_p for p = 0, 0.05, ..., 2


def is_batch_id(text: str) -> bool:
    return text.startswith(PREFIX)


def batches_dir(db: Path) -> Path:
    return Path(db).parent / "batches"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class BatchRecord:
    """What a batch asked for (folder, level, run settings, its problems in order) and what it has done."""

    id: str
    folder: str
    level: int | None
    config: dict[str, Any]
    problems: list[dict[str, Any]]  # {"path", "level"}, in the order they run
    rows: list[dict[str, Any]] = field(default_factory=list)  # ProblemOutcome dicts, as each finished
    current: dict[str, Any] = field(default_factory=dict)  # {"path", "run"}: the problem last begun
    running: dict[str, str] = field(default_factory=dict)  # path -> run of every problem begun, not finished
    status: str = "running"  # running | finished
    created: str = ""
    updated: str = ""
    pid: int | None = None
    host: str | None = None
    path: Path | None = None  # where it is kept (not stored in it)

    # ------------------------------------------------------------------ making and finding
    @classmethod
    def create(cls, db: Path, folder: Path, level: int | None, config: dict[str, Any],
               problems: list[tuple[Path, int | None]]) -> BatchRecord:
        now = _dt.datetime.now()
        record = cls(id=PREFIX + now.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:4], folder=str(folder),
                     level=level, config=config, problems=[{"path": str(p), "level": lvl} for p, lvl in problems],
                     created=now.isoformat(timespec="seconds"))
        record.path = batches_dir(db) / f"{record.id}.json"
        record.save()
        return record

    @classmethod
    def load(cls, db: Path, ident: str) -> BatchRecord:
        """A batch by id or unique id prefix (one-line StoreError otherwise)."""
        folder = batches_dir(db)
        found = sorted(folder.glob(f"{ident}*.json")) if folder.is_dir() else []
        exact = [p for p in found if p.stem == ident]
        if exact:
            found = exact
        if len(found) != 1:
            what = "no batch" if not found else f"{len(found)} batches match"
            raise StoreError(f"{what} {ident!r} in {folder} (a batch's id is printed when it starts)")
        try:
            data = json.loads(found[0].read_text())
        except (OSError, ValueError) as exc:
            raise StoreError(f"{found[0]}: not a batch record ({exc})") from None
        known = {f.name for f in fields(cls)} - {"path"}
        record = cls(**{k: v for k, v in data.items() if k in known})
        record.path = found[0]
        return record

    # ------------------------------------------------------------------ keeping it
    def save(self) -> None:
        """Write the record atomically: a reader (or a kill) sees the old file or the new one, never half."""
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.updated = _dt.datetime.now().isoformat(timespec="seconds")
        data = {k: v for k, v in asdict(self).items() if k != "path"}
        data["summary"] = self.summary().measures()
        fd, tmp = tempfile.mkstemp(prefix=f".{self.id}.", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(data, fh, indent=1, default=str)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with _suppress():
                os.unlink(tmp)
            raise

    def claim(self) -> None:
        """This process runs the batch now; refused in one line while another live process on this host does."""
        if (self.status == "running" and self.pid and self.pid != os.getpid() and self.host == platform.node()
                and _alive(self.pid)):
            raise StoreError(f"batch {self.id} is running in process {self.pid}; wait for it or stop it first")
        self.pid, self.host, self.status = os.getpid(), platform.node(), "running"
        self.save()

    def begin(self, path: Path, run_id: str) -> None:
        self.current = {"path": str(path), "run": run_id}
        self.running[str(path)] = run_id
        self.save()

    def finish(self, row: ProblemOutcome) -> None:
        self.rows.append(asdict(row))
        self.running.pop(row.path, None)
        if self.current.get("path") == row.path:
            self.current = {}
        self.save()

    def close(self) -> None:
        self.status = "finished" if not self.todo() else "running"
        self.pid = None
        self.save()

    # ------------------------------------------------------------------ reading it
    def done(self) -> set[str]:
        return {r["path"] for r in self.rows}

    def todo(self) -> list[tuple[Path, int | None]]:
        finished = self.done()
        return [(Path(p["path"]), p["level"]) for p in self.problems if p["path"] not in finished]

    def run_of(self, path: Path) -> str | None:
        """The run an interrupted session had started for ``path`` (None if it had not got that far); with
        problems run at once, each one's."""
        if str(path) in self.running:
            return self.running[str(path)]
        return self.current.get("run") if self.current.get("path") == str(path) else None

    def summary(self) -> BatchSummary:
        """The rows in the batch's problem order (problems run at once finish in any order)."""
        known = {f.name for f in fields(ProblemOutcome)}
        order = {p["path"]: i for i, p in enumerate(self.problems)}
        rows = sorted(self.rows, key=lambda r: order.get(r.get("path"), len(order)))
        return BatchSummary([ProblemOutcome(**{k: v for k, v in r.items() if k in known}) for r in rows])

    def to_dict(self) -> dict[str, Any]:
        """The batch as `run --task-dir --json` prints it, plus what it is and the fast_p curves."""
        summary = self.summary()
        return {"batch": {"id": self.id, "folder": self.folder, "level": self.level, "status": self.status,
                          "created": self.created, "updated": self.updated, "problems": len(self.problems),
                          "finished": len(self.rows)},
                **summary.to_dict(), "fast_p_curve": fast_p_curve(summary)}


def _suppress() -> Any:
    import contextlib

    return contextlib.suppress(OSError)


def fast_p_curve(summary: BatchSummary, ps: list[float] | None = None) -> dict[str, list[float]]:
    """fast_p against eager and against the faster of eager and torch.compile, for each p of ``ps``
    (default 0 to 2 by 0.05). Below p = 1 every correct evolved candidate above p counts (fast_0 is the
    correctness rate); from p = 1 on only wins beyond noise count, as in the summary's fast_1 and fast_1.5."""
    ps = CURVE_P if ps is None else ps
    rows = summary.problems
    evolved = [p.status == "ok" and not p.pytorch_path for p in rows]
    eager = [p.vs_eager if ok else None for p, ok in zip(rows, evolved, strict=True)]
    best = [p.fitness if ok else None for p, ok in zip(rows, evolved, strict=True)]
    out: dict[str, list[float]] = {"p": list(ps), "vs_eager": [], "vs_best": []}
    for p in ps:
        out["vs_eager"].append(fast_p(eager, p, [q.significant_vs_eager for q in rows] if p >= 1 else None))
        out["vs_best"].append(fast_p(best, p, [q.significant for q in rows] if p >= 1 else None))
    return out


def write_batch_report(record: BatchRecord, folder: Path) -> list[Path]:
    """``batch.json`` (rows, summary, fast_p curves), ``fast_p.png`` where matplotlib is installed, and a
    self-contained ``report.html`` with the table, the curves and the geometric means."""
    folder.mkdir(parents=True, exist_ok=True)
    data = record.to_dict()
    paths = [folder / "batch.json"]
    paths[0].write_text(json.dumps(data, indent=1, default=str))
    png = _plot_curve(data["fast_p_curve"], folder / "fast_p.png")
    if png is not None:
        paths.append(png)
    page = folder / "report.html"
    page.write_text(_html(data, png))
    paths.append(page)
    return paths


def _plot_curve(curve: dict[str, list[float]], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ModuleNotFoundError:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(curve["p"], curve["vs_eager"], label="vs eager (KernelBench)")
    ax.plot(curve["p"], curve["vs_best"], label="vs the faster of eager and compile")
    ax.set_xlabel("p (speedup threshold)")
    ax.set_ylabel("fast_p")
    ax.set_ylim(0, 1.02)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _html(data: dict[str, Any], png: Path | None) -> str:
    import base64

    def x(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}×"

    b, m, curve = data["batch"], data["summary"], data["fast_p_curve"]
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in (
            p["problem"], p["level"] if p["level"] is not None else "-", p["status"], p["best"] or "-",
            x(p["vs_eager"]), x(p["vs_compile"]), x(p["fitness"]), f"{p['valid']}/{p['evaluated']}",
            p["run"] or "-", p["detail"])) + "</tr>" for p in data["problems"])
    points = "".join(f"<tr><td>{p:g}</td><td>{e:.2f}</td><td>{v:.2f}</td></tr>"
                     for p, e, v in zip(curve["p"], curve["vs_eager"], curve["vs_best"], strict=True)
                     if round(p * 4) == p * 4)  # every 0.25 in the table; the plot has them all
    img = ""
    if png is not None:
        img = f'<img alt="fast_p" src="data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()}">'
    return f"""<!doctype html><meta charset="utf-8"><title>evoforge batch {html.escape(b['id'])}</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:2px 8px;border-bottom:1px solid #ddd}}</style>
<h1>batch {html.escape(b['id'])}</h1>
<p>{html.escape(b['folder'])}: {b['finished']}/{b['problems']} problems finished ({html.escape(b['status'])});
{m['correct']}/{m['problems']} with a correct candidate. Geometric mean {x(m['geomean_vs_eager'])} vs eager,
{x(m['geomean_vs_best'])} vs the faster of eager and torch.compile.</p>
<table><tr><th>problem</th><th>level</th><th>status</th><th>best</th><th>vs eager</th><th>vs compile</th>
<th>fitness</th><th>valid</th><th>run</th><th>detail</th></tr>{rows}</table>
<h2>fast_p</h2>{img}
<table><tr><th>p</th><th>vs eager</th><th>vs the faster</th></tr>{points}</table>
"""
