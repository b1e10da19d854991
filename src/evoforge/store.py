"""The run store: one SQLite file (WAL mode) per project directory, ``.evoforge/runs.db`` by default.

Contract: every write is committed before the call returns, so a crash or ``kill -9`` loses at most
the evaluation in flight; readers never see half a record. Tables: ``runs`` (config, task, device,
versions, RNG state, progress), ``candidates`` (source, hash, lineage, genome), ``evaluations``
(the full EvalResult as JSON), ``events``, ``llm_calls`` (every prompt and reply of the LLM mutator,
with tokens, latency, cost and the candidate it produced), ``leases`` (which process holds a run, and
its heartbeat). A database written by a newer schema version is refused with a clear message; an older
one is upgraded in place only by additive steps (new tables), and says so. A damaged file (SQLite's own
``quick_check`` fails) is refused before anything is written to it.

The run lifecycle: the process that runs a run holds its lease (one row: pid, host, the process's start
time, a heartbeat it refreshes every few seconds from a thread). A second session of a run whose lease
is live is refused, so two ``resume`` never evaluate the same candidates twice. A run recorded as
``running`` whose lease is not live (its process is gone: ``kill -9``, a lost machine) reads as
``interrupted``. Ends the process sees (Ctrl-C, SIGTERM, a failed start, an error) are recorded as such.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from evoforge.candidate import Candidate
from evoforge.results import EvalResult

SCHEMA_VERSION = 3
DEFAULT_PATH = Path(".evoforge/runs.db")
HEARTBEAT_S = 5.0  # how often a live run's process refreshes its lease
STALE_S = 60.0  # a lease held on another host with no heartbeat for this long is not live

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, created TEXT NOT NULL, updated TEXT NOT NULL, status TEXT NOT NULL,
    task_json TEXT NOT NULL, config_json TEXT NOT NULL, env_json TEXT, rng_json TEXT,
    generation INTEGER NOT NULL DEFAULT 0, note TEXT
);
CREATE TABLE IF NOT EXISTS candidates (
    run_id TEXT NOT NULL, hash TEXT NOT NULL, name TEXT NOT NULL, generation INTEGER NOT NULL,
    role TEXT NOT NULL, language TEXT NOT NULL, source TEXT NOT NULL, genome_json TEXT,
    lineage_json TEXT NOT NULL, created TEXT NOT NULL, PRIMARY KEY (run_id, hash, role)
);
CREATE TABLE IF NOT EXISTS evaluations (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, hash TEXT NOT NULL,
    generation INTEGER NOT NULL, role TEXT NOT NULL, status TEXT NOT NULL, fitness REAL NOT NULL,
    result_json TEXT NOT NULL, created TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS evaluations_run ON evaluations (run_id, role, hash);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, ts TEXT NOT NULL, kind TEXT NOT NULL,
    data_json TEXT NOT NULL
);
"""

# Additive upgrades: the statements that take a store from version N-1 to N.
_UPGRADES: dict[int, str] = {
    2: """
CREATE TABLE IF NOT EXISTS llm_calls (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, ts TEXT NOT NULL, generation INTEGER,
    model TEXT NOT NULL, guide TEXT NOT NULL, operation TEXT NOT NULL, status TEXT NOT NULL,
    prompt_json TEXT NOT NULL, reply TEXT, tokens_in INTEGER NOT NULL, tokens_out INTEGER NOT NULL,
    cost REAL NOT NULL, latency_s REAL NOT NULL, attempts INTEGER NOT NULL, error TEXT,
    candidate_hash TEXT, thought TEXT, retried_json TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS llm_calls_run ON llm_calls (run_id);
""",
    3: """
CREATE TABLE IF NOT EXISTS leases (
    run_id TEXT PRIMARY KEY, pid INTEGER NOT NULL, host TEXT NOT NULL, proc_start TEXT,
    started REAL NOT NULL, heartbeat REAL NOT NULL
);
""",
}
_SCHEMA += "".join(_UPGRADES[v] for v in sorted(_UPGRADES))


class StoreError(Exception):
    """The store can't be used (wrong schema, unknown run). One line."""


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _proc_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, from /proc), or None where that can't be read:
    with the pid it names one process, so a pid reused after a ``kill -9`` is not taken for the run."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    return fields[19] if len(fields) > 19 else None


def _pid_alive(pid: int, proc_start: str | None) -> bool:
    """Whether process ``pid`` of this host is still the one that took the lease."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by someone else
    if proc_start is not None and Path("/proc").is_dir():
        return _proc_start(pid) == proc_start
    return True


@dataclass
class Lease:
    """The process that holds a run: its pid and host, and its last heartbeat (Unix time)."""

    run_id: str
    pid: int
    host: str
    proc_start: str | None
    started: float
    heartbeat: float

    @property
    def live(self) -> bool:
        if self.host == socket.gethostname():
            return _pid_alive(self.pid, self.proc_start)
        return time.time() - self.heartbeat < STALE_S

    @property
    def mine(self) -> bool:
        return self.host == socket.gethostname() and self.pid == os.getpid()

    def describe(self) -> str:
        return f"process {self.pid} on {self.host}, heartbeat {max(time.time() - self.heartbeat, 0):.0f} s ago"


class Heartbeat:
    """A daemon thread that refreshes a run's lease every ``interval`` seconds over its own connection."""

    def __init__(self, path: Path, run_id: str, interval: float = HEARTBEAT_S) -> None:
        self.path, self.run_id, self.interval = path, run_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{run_id}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        db = sqlite3.connect(self.path, timeout=self.interval, isolation_level=None, check_same_thread=False)
        try:
            while not self._stop.wait(self.interval):
                try:
                    db.execute("UPDATE leases SET heartbeat = ? WHERE run_id = ? AND pid = ?",
                               (time.time(), self.run_id, os.getpid()))
                except sqlite3.Error:
                    continue  # busy: the next beat will do
        finally:
            db.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)


def refuse_if_held(run_id: str, held: Lease | None) -> None:
    """A claim's refusal (StoreError) while another live process holds the run's lease."""
    if held is not None and held.live and not held.mine:
        raise StoreError(f"run {run_id} is already running ({held.describe()}); two sessions would "
                         "evaluate the same candidates twice: wait for it to stop, or stop it first")


@dataclass
class RunRecord:
    id: str
    created: str
    updated: str
    status: str
    task: dict[str, Any]
    config: dict[str, Any]
    env: dict[str, Any] | None
    rng: Any
    generation: int
    note: str | None
    lease: Lease | None = None  # the process that holds it while it runs


class Beat(Protocol):
    """A running heartbeat of a run's lease."""

    def stop(self) -> None: ...


class Store(Protocol):
    """What the search, the CLI and the report need of a run store. :class:`RunStore` (SQLite, the
    default) and :class:`evoforge.memory_store.MemoryStore` implement it, and
    ``tests/test_store_contract.py`` holds both to the same behaviour."""

    path: Any

    def close(self) -> None: ...
    def transaction(self) -> AbstractContextManager[None]: ...
    def create_run(self, task: dict[str, Any], config: dict[str, Any]) -> str: ...
    def lease(self, run_id: str) -> Lease | None: ...
    def claim(self, run_id: str) -> None: ...
    def release(self, run_id: str, **fields: Any) -> None: ...
    def heartbeat(self, run_id: str, interval: float = HEARTBEAT_S) -> Beat: ...
    def update_run(self, run_id: str, **fields: Any) -> None: ...
    def run(self, run_id: str, skip_empty: bool = True) -> RunRecord: ...
    def runs(self) -> list[RunRecord]: ...
    def add_candidate(self, run_id: str, cand: Candidate, generation: int, role: str = "candidate") -> None: ...
    def add_evaluation(self, run_id: str, result: EvalResult, generation: int) -> None: ...
    def candidates(self, run_id: str, role: str = "candidate") -> list[tuple[Candidate, int]]: ...
    def evaluations(self, run_id: str, role: str | None = "candidate") -> list[tuple[EvalResult, int]]: ...
    def add_event(self, run_id: str, kind: str, **data: Any) -> None: ...
    def events(self, run_id: str, kind: str | None = None) -> list[dict[str, Any]]: ...
    def add_llm_call(self, run_id: str, call: dict[str, Any]) -> None: ...
    def llm_calls(self, run_id: str) -> list[dict[str, Any]]: ...


class RunStore:
    """The SQLite run store (see the module's docstring); implements :class:`Store`."""

    def __init__(self, path: str | Path = DEFAULT_PATH) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self._check_integrity()  # before anything is written to it
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self._check_schema()
        except sqlite3.DatabaseError as exc:
            self._close_quietly()
            raise StoreError(f"{self.path}: not a usable evoforge database ({exc})") from None
        except StoreError:
            self._close_quietly()
            raise

    def _close_quietly(self) -> None:
        db = getattr(self, "db", None)
        if db is not None:
            db.close()

    def _check_integrity(self) -> None:
        """SQLite's own ``quick_check`` (every page and index, not their cross-checks): a damaged store is
        refused before anything is written to it, so what it still holds can be recovered."""
        try:
            problems = [r[0] for r in self.db.execute("PRAGMA quick_check")]
        except sqlite3.DatabaseError as exc:
            problems = [str(exc)]
        if problems and problems != ["ok"]:
            more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
            raise StoreError(
                f"{self.path}: damaged store, nothing written to it (SQLite quick_check: "
                f"{' '.join(problems[0].split())}{more}); keep a copy, recover with `sqlite3 {self.path} .recover`, "
                "or start a new store with --db")

    def _check_schema(self) -> None:
        tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "meta" in tables:
            row = self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            found = int(row[0]) if row else None
            if found is None or found > SCHEMA_VERSION or found < 1:
                raise StoreError(
                    f"{self.path}: written by evoforge schema version {found}, this evoforge reads versions "
                    f"1 to {SCHEMA_VERSION}; use a matching evoforge or start a new store with --db"
                )
            if found < SCHEMA_VERSION:
                self._upgrade(found)
            return
        if tables:
            raise StoreError(f"{self.path}: a SQLite file that is not an evoforge run store")
        with self.db:
            self.db.executescript(_SCHEMA)
            self.db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    def _upgrade(self, found: int) -> None:
        """Additive steps only (new tables and indexes): nothing recorded is rewritten."""
        import sys

        with self.db:
            for version in range(found + 1, SCHEMA_VERSION + 1):
                self.db.executescript(_UPGRADES[version])
            self.db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
        print(f"evoforge: upgraded {self.path} from schema version {found} to {SCHEMA_VERSION} (new tables only)",
              file=sys.stderr)

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes so they land together or not at all."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # ---------------------------------------------------------------- runs
    def create_run(self, task: dict[str, Any], config: dict[str, Any]) -> str:
        """A new run, ``running`` and held by this process (its lease taken in the same transaction)."""
        run_id = _dt.datetime.now().strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:4]
        now = _now()
        with self.transaction():
            self.db.execute(
                "INSERT INTO runs (id, created, updated, status, task_json, config_json) VALUES (?,?,?,?,?,?)",
                (run_id, now, now, "running", json.dumps(task), json.dumps(config)),
            )
            self._write_lease(run_id)
        return run_id

    # ---------------------------------------------------------------- leases (the run lifecycle)
    def _write_lease(self, run_id: str) -> None:
        pid, now = os.getpid(), time.time()
        self.db.execute("INSERT OR REPLACE INTO leases VALUES (?,?,?,?,?,?)",
                        (run_id, pid, socket.gethostname(), _proc_start(pid), now, now))

    def lease(self, run_id: str) -> Lease | None:
        row = self.db.execute("SELECT run_id, pid, host, proc_start, started, heartbeat FROM leases "
                              "WHERE run_id = ?", (run_id,)).fetchone()
        return Lease(*row) if row else None

    def claim(self, run_id: str) -> None:
        """Take the run's lease for this process, or refuse (StoreError) while another live process holds it."""
        with self.transaction():  # BEGIN IMMEDIATE: two claims can't both see the lease free
            refuse_if_held(run_id, self.lease(run_id))
            self._write_lease(run_id)

    def release(self, run_id: str, **fields: Any) -> None:
        """Give the lease back, recording how the session ended (``status``, ``note``) where given."""
        with self.transaction():
            if fields:
                self.update_run(run_id, **fields)
            self.db.execute("DELETE FROM leases WHERE run_id = ? AND pid = ? AND host = ?",
                            (run_id, os.getpid(), socket.gethostname()))

    def heartbeat(self, run_id: str, interval: float = HEARTBEAT_S) -> Heartbeat:
        """Start refreshing this process's lease of ``run_id`` (stop it with ``.stop()``)."""
        return Heartbeat(self.path, run_id, interval)

    def update_run(self, run_id: str, **fields: Any) -> None:
        columns = {"status": "status", "env": "env_json", "rng": "rng_json", "generation": "generation",
                   "note": "note", "config": "config_json"}
        sets, values = ["updated = ?"], [_now()]
        for key, value in fields.items():
            column = columns[key]
            sets.append(f"{column} = ?")
            values.append(json.dumps(value) if column.endswith("_json") else value)
        self.db.execute(f"UPDATE runs SET {', '.join(sets)} WHERE id = ?", (*values, run_id))

    def run(self, run_id: str, skip_empty: bool = True) -> RunRecord:
        """A run by id, unique id prefix, or ``latest`` (the newest run with an evaluated candidate, or with
        ``skip_empty=False`` the newest of all). A run stored as ``running`` whose lease is not live (its
        process is gone) reads as ``interrupted``."""
        if run_id == "latest":
            query = "SELECT id FROM runs ORDER BY created DESC, rowid DESC LIMIT 1"
            if skip_empty:
                query = ("SELECT id FROM runs WHERE EXISTS (SELECT 1 FROM evaluations e WHERE e.run_id = runs.id "
                         "AND e.role = 'candidate') ORDER BY created DESC, rowid DESC LIMIT 1")
            newest = self.db.execute(query).fetchone()
            if newest is None:
                if self.db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]:
                    raise StoreError(f"no run in {self.path} has evaluated a candidate yet (see `evoforge runs`)")
                raise StoreError(f"no runs in {self.path} yet (start one with `evoforge run`)")
            run_id = newest[0]
        row = self.db.execute(
            "SELECT id, created, updated, status, task_json, config_json, env_json, rng_json, generation, note "
            "FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            matches = [r[0] for r in self.db.execute("SELECT id FROM runs WHERE id LIKE ?", (run_id + "%",))]
            if len(matches) == 1:
                return self.run(matches[0])
            raise StoreError(f"no run {run_id!r} in {self.path} (see `evoforge runs`)")
        lease = self.lease(row[0])
        status = row[3]
        if status == "running" and not (lease is not None and lease.live):
            status = "interrupted"
        return RunRecord(row[0], row[1], row[2], status, json.loads(row[4]), json.loads(row[5]),
                         json.loads(row[6]) if row[6] else None, json.loads(row[7]) if row[7] else None,
                         row[8], row[9], lease)

    def runs(self) -> list[RunRecord]:
        ids = [r[0] for r in self.db.execute("SELECT id FROM runs ORDER BY created")]
        return [self.run(i) for i in ids]

    # ---------------------------------------------------------------- candidates and evaluations
    def add_candidate(self, run_id: str, cand: Candidate, generation: int, role: str = "candidate") -> None:
        self.db.execute(
            "INSERT OR IGNORE INTO candidates VALUES (?,?,?,?,?,?,?,?,?,?)",
            (run_id, cand.hash, cand.name, generation, role, cand.language, cand.source,
             json.dumps(cand.genome) if cand.genome is not None else None, json.dumps(cand.lineage), _now()),
        )

    def add_evaluation(self, run_id: str, result: EvalResult, generation: int) -> None:
        self.db.execute(
            "INSERT INTO evaluations (run_id, hash, generation, role, status, fitness, result_json, created) "
            "VALUES (?,?,?,?,?,?,?,?)",
            (run_id, result.hash, generation, result.role, result.status, result.fitness,
             json.dumps(result.to_dict()), _now()),
        )

    def candidates(self, run_id: str, role: str = "candidate") -> list[tuple[Candidate, int]]:
        rows = self.db.execute(
            "SELECT name, source, language, genome_json, lineage_json, generation, hash FROM candidates "
            "WHERE run_id = ? AND role = ? ORDER BY generation, created, rowid", (run_id, role))
        return [(Candidate(name=r[0], source=r[1], language=r[2], genome=json.loads(r[3]) if r[3] else None,
                           lineage=json.loads(r[4])).with_hash(r[6]), r[5]) for r in rows]

    def evaluations(self, run_id: str, role: str | None = "candidate") -> list[tuple[EvalResult, int]]:
        query = "SELECT result_json, generation FROM evaluations WHERE run_id = ?"
        params: tuple[Any, ...] = (run_id,)
        if role is not None:
            query += " AND role = ?"
            params += (role,)
        rows = self.db.execute(query + " ORDER BY id", params)
        return [(EvalResult.from_dict(json.loads(r[0])), r[1]) for r in rows]

    # ---------------------------------------------------------------- events
    def add_event(self, run_id: str, kind: str, **data: Any) -> None:
        self.db.execute("INSERT INTO events (run_id, ts, kind, data_json) VALUES (?,?,?,?)",
                        (run_id, _now(), kind, json.dumps(data, default=str)))

    def events(self, run_id: str, kind: str | None = None) -> list[dict[str, Any]]:
        query = "SELECT ts, kind, data_json FROM events WHERE run_id = ?"
        params: tuple[Any, ...] = (run_id,)
        if kind:
            query += " AND kind = ?"
            params += (kind,)
        return [{"ts": r[0], "kind": r[1], **json.loads(r[2])} for r in self.db.execute(query + " ORDER BY id", params)]

    # ---------------------------------------------------------------- LLM calls
    def add_llm_call(self, run_id: str, call: dict[str, Any]) -> None:
        """One prompt and its reply (see :class:`evoforge.llm.client.Completion` and the LLM mutator)."""
        self.db.execute(
            "INSERT INTO llm_calls (run_id, ts, generation, model, guide, operation, status, prompt_json, reply, "
            "tokens_in, tokens_out, cost, latency_s, attempts, error, candidate_hash, thought, retried_json) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (run_id, _now(), call.get("generation"), call["model"], call["guide"], call["operation"], call["status"],
             json.dumps(call["prompt"]), call.get("reply"), int(call.get("tokens_in", 0)),
             int(call.get("tokens_out", 0)), float(call.get("cost", 0.0)), float(call.get("latency_s", 0.0)),
             int(call.get("attempts", 1)), call.get("error"), call.get("candidate_hash"), call.get("thought"),
             json.dumps(call.get("retried", []))),
        )

    def llm_calls(self, run_id: str) -> list[dict[str, Any]]:
        columns = ["ts", "generation", "model", "guide", "operation", "status", "prompt_json", "reply", "tokens_in",
                   "tokens_out", "cost", "latency_s", "attempts", "error", "candidate_hash", "thought", "retried_json"]
        rows = self.db.execute(f"SELECT {', '.join(columns)} FROM llm_calls WHERE run_id = ? ORDER BY id", (run_id,))
        out = []
        for row in rows:
            call = dict(zip(columns, row, strict=True))
            call["prompt"] = json.loads(call.pop("prompt_json"))
            call["retried"] = json.loads(call.pop("retried_json"))
            out.append(call)
        return out
