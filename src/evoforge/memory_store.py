"""A run store in memory: the :class:`~evoforge.store.Store` contract without a file.

For tests, notebooks and embedding evoforge's search in another program that keeps its own records: the
same runs, candidates, evaluations, events, LLM calls and leases as the SQLite store, with the same reads
(``latest``, id prefixes, ``interrupted`` for a running run whose lease is gone), kept in this process and
gone with it. Writes inside :meth:`MemoryStore.transaction` land together or not at all.
``tests/test_store_contract.py`` runs one suite against both stores.
"""

from __future__ import annotations

import copy
import datetime as _dt
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from evoforge.candidate import Candidate
from evoforge.results import EvalResult
from evoforge.store import HEARTBEAT_S, Lease, RunRecord, StoreError, _now, _proc_start, refuse_if_held


@dataclass
class _Run:
    record: dict[str, Any]
    candidates: dict[tuple[str, str], tuple[Candidate, int, str]] = field(default_factory=dict)  # (hash, role)
    evaluations: list[tuple[dict[str, Any], int, str]] = field(default_factory=list)  # result dict, gen, role
    events: list[dict[str, Any]] = field(default_factory=list)
    llm_calls: list[dict[str, Any]] = field(default_factory=list)
    lease: Lease | None = None


class _NoBeat:
    """A memory store's lease lives as long as its process: there is nothing to refresh."""

    def stop(self) -> None:
        pass


class MemoryStore:
    """Runs kept in this process (see the module's docstring)."""

    def __init__(self, name: str = "memory") -> None:
        self.path = f"<{name}>"
        self._runs: dict[str, _Run] = {}
        self._lock = threading.RLock()

    def close(self) -> None:
        pass

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock:
            saved = copy.deepcopy(self._runs)
            try:
                yield
            except BaseException:
                self._runs = saved
                raise

    # ---------------------------------------------------------------- runs
    def create_run(self, task: dict[str, Any], config: dict[str, Any]) -> str:
        run_id = _dt.datetime.now().strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:4]
        now = _now()
        with self._lock:
            self._runs[run_id] = _Run({"id": run_id, "created": now, "updated": now, "status": "running",
                                       "task": copy.deepcopy(task), "config": copy.deepcopy(config), "env": None,
                                       "rng": None, "generation": 0, "note": None})
            self._write_lease(run_id)
        return run_id

    def _get(self, run_id: str) -> _Run:
        run = self._runs.get(run_id)
        if run is None:
            raise StoreError(f"no run {run_id!r} in {self.path} (see `evoforge runs`)")
        return run

    def _write_lease(self, run_id: str) -> None:
        pid, now = os.getpid(), time.time()
        self._get(run_id).lease = Lease(run_id, pid, socket.gethostname(), _proc_start(pid), now, now)

    def lease(self, run_id: str) -> Lease | None:
        run = self._runs.get(run_id)
        return copy.copy(run.lease) if run is not None and run.lease is not None else None

    def claim(self, run_id: str) -> None:
        with self._lock:
            refuse_if_held(run_id, self.lease(run_id))
            self._write_lease(run_id)

    def release(self, run_id: str, **fields: Any) -> None:
        with self.transaction():
            if fields:
                self.update_run(run_id, **fields)
            run = self._get(run_id)
            if run.lease is not None and run.lease.mine:
                run.lease = None

    def heartbeat(self, run_id: str, interval: float = HEARTBEAT_S) -> _NoBeat:
        return _NoBeat()

    def update_run(self, run_id: str, **fields: Any) -> None:
        allowed = {"status", "env", "rng", "generation", "note", "config"}
        with self._lock:
            record = self._get(run_id).record
            for key, value in fields.items():
                if key not in allowed:
                    raise KeyError(key)
                record[key] = copy.deepcopy(value)
            record["updated"] = _now()

    def run(self, run_id: str, skip_empty: bool = True) -> RunRecord:
        with self._lock:
            if run_id == "latest":
                order = sorted(self._runs.values(), key=lambda r: r.record["created"])  # stable: insertion order
                if skip_empty:
                    order = [r for r in order if any(role == "candidate" for _, _, role in r.evaluations)]
                if not order:
                    if self._runs:
                        raise StoreError(f"no run in {self.path} has evaluated a candidate yet (see `evoforge runs`)")
                    raise StoreError(f"no runs in {self.path} yet (start one with `evoforge run`)")
                run_id = order[-1].record["id"]
            if run_id not in self._runs:
                matches = [i for i in self._runs if i.startswith(run_id)]
                if len(matches) != 1:
                    raise StoreError(f"no run {run_id!r} in {self.path} (see `evoforge runs`)")
                run_id = matches[0]
            run = self._runs[run_id]
            r = copy.deepcopy(run.record)
            lease = self.lease(run_id)
        status = r["status"]
        if status == "running" and not (lease is not None and lease.live):
            status = "interrupted"
        return RunRecord(r["id"], r["created"], r["updated"], status, r["task"], r["config"], r["env"], r["rng"],
                         r["generation"], r["note"], lease)

    def runs(self) -> list[RunRecord]:
        with self._lock:
            ids = [r.record["id"] for r in sorted(self._runs.values(), key=lambda r: r.record["created"])]
        return [self.run(i) for i in ids]

    # ---------------------------------------------------------------- candidates and evaluations
    def add_candidate(self, run_id: str, cand: Candidate, generation: int, role: str = "candidate") -> None:
        with self._lock:
            self._get(run_id).candidates.setdefault((cand.hash, role), (copy.deepcopy(cand), generation, role))

    def add_evaluation(self, run_id: str, result: EvalResult, generation: int) -> None:
        with self._lock:
            self._get(run_id).evaluations.append((result.to_dict(), generation, result.role))

    def candidates(self, run_id: str, role: str = "candidate") -> list[tuple[Candidate, int]]:
        with self._lock:
            rows = [(c, g) for c, g, r in self._get(run_id).candidates.values() if r == role]
        rows.sort(key=lambda row: row[1])  # by generation, then as added (a stable sort)
        return [(copy.deepcopy(c), g) for c, g in rows]

    def evaluations(self, run_id: str, role: str | None = "candidate") -> list[tuple[EvalResult, int]]:
        with self._lock:
            rows = [(d, g) for d, g, r in self._get(run_id).evaluations if role is None or r == role]
        return [(EvalResult.from_dict(copy.deepcopy(d)), g) for d, g in rows]

    # ---------------------------------------------------------------- events and LLM calls
    def add_event(self, run_id: str, kind: str, **data: Any) -> None:
        import json

        with self._lock:  # stored as the SQLite store stores it: JSON, anything else as its str()
            self._get(run_id).events.append({"ts": _now(), "kind": kind,
                                             **json.loads(json.dumps(data, default=str))})

    def events(self, run_id: str, kind: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(e) for e in self._get(run_id).events if not kind or e["kind"] == kind]

    def add_llm_call(self, run_id: str, call: dict[str, Any]) -> None:
        keys = ("generation", "model", "guide", "operation", "status", "prompt", "reply", "error",
                "candidate_hash", "thought")
        row: dict[str, Any] = {"ts": _now(), **{k: copy.deepcopy(call.get(k)) for k in keys}}
        row.update(tokens_in=int(call.get("tokens_in", 0)), tokens_out=int(call.get("tokens_out", 0)),
                   cost=float(call.get("cost", 0.0)), latency_s=float(call.get("latency_s", 0.0)),
                   attempts=int(call.get("attempts", 1)), retried=copy.deepcopy(call.get("retried", [])))
        for required in ("model", "guide", "operation", "status", "prompt"):
            if required not in call:
                raise KeyError(required)
        with self._lock:
            self._get(run_id).llm_calls.append(row)

    def llm_calls(self, run_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(c) for c in self._get(run_id).llm_calls]
