"""evoforge.cache: where workers find Python bytecode when the environment forbids writing it, and who
writes it there (a trusted import run, never a sandboxed worker)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from evoforge import cache
from evoforge.cache import BYTECODE_ENV, CACHE_ENV, bytecode_root, warm_bytecode, worker_bytecode_env
from evoforge.candidate import Candidate
from evoforge.evaluator import EvalConfig, Evaluator, sandbox
from evoforge.task import task_from_file
from evoforge.timing import TimingConfig
from tests.conftest import CANDIDATES, TASKS


def test_a_no_bytecode_environment_gets_evoforges_prefix_to_read(tmp_path: Path) -> None:
    env = {"PYTHONDONTWRITEBYTECODE": "1", CACHE_ENV: str(tmp_path)}
    worker_bytecode_env(env, ships_bytecode=False)
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"  # workers still write none
    assert env["PYTHONPYCACHEPREFIX"] == str(tmp_path / "pycache") == str(bytecode_root(env))


@pytest.mark.parametrize("env, ships", [
    ({}, False),  # bytecode is written beside the sources already
    ({"PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": "/mine"}, False),  # the user's own prefix
    ({"PYTHONDONTWRITEBYTECODE": "1", BYTECODE_ENV: "0"}, False),  # switched off
    ({"PYTHONDONTWRITEBYTECODE": "1"}, True),  # torch's bytecode is there to read
])
def test_other_environments_are_left_as_they_are(env: dict[str, str], ships: bool) -> None:
    before = dict(env)
    worker_bytecode_env(env, ships_bytecode=ships)
    assert env == before


def test_the_sandbox_does_not_let_workers_write_the_bytecode(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path / "home"), CACHE_ENV: str(tmp_path / "cache"), "PYTHONDONTWRITEBYTECODE": "1"}
    worker_bytecode_env(env, ships_bytecode=False)
    writable = sandbox.worker_writable(tmp_path / "work", env)
    assert not any(p == tmp_path / "cache" or (tmp_path / "cache" / "pycache").is_relative_to(p) for p in writable)


def test_a_trusted_run_fills_the_cache_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache, "WARM_MODULES", ("json", "csv"))
    env = {**os.environ, CACHE_ENV: str(tmp_path), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTHONPYCACHEPREFIX", None)
    worker_bytecode_env(env, ships_bytecode=False)
    said: list[str] = []
    assert warm_bytecode(env, said.append)
    assert said and "bytecode cache" in said[0]
    assert list((tmp_path / "pycache").rglob("csv.cpython-*.pyc"))  # written by the trusted run
    assert list((tmp_path / "pycache").glob(".warm-*"))

    def no_second_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("the warm cache was filled again")

    monkeypatch.setattr(cache.subprocess, "run", no_second_run)
    assert warm_bytecode(env, said.append) and len(said) == 1


def test_no_warm_up_without_evoforges_prefix(tmp_path: Path) -> None:
    assert not warm_bytecode({CACHE_ENV: str(tmp_path)})
    assert not warm_bytecode({CACHE_ENV: str(tmp_path), "PYTHONPYCACHEPREFIX": str(tmp_path / "mine")})
    assert not (tmp_path / "pycache").exists()


def test_an_evaluation_without_bytecode_fills_the_cache_first(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    monkeypatch.delenv("PYTHONPYCACHEPREFIX", raising=False)
    monkeypatch.delenv(BYTECODE_ENV, raising=False)
    monkeypatch.setattr(cache, "_torch_ships_bytecode", lambda: False)
    config = EvalConfig(device="cpu", n_random=1, edge_cases=False, timing=TimingConfig(budget_ms=2, rounds=1,
                                                                                        min_reps=2))
    good = Candidate(name="good", source=(CANDIDATES / "good.py").read_text())
    report = Evaluator(task_from_file(TASKS / "tanh_matmul.py"), config).evaluate([good])
    assert report.results[0].status == "ok", report.results[0].detail
    # The trusted run imported evoforge's worker module from this checkout: its bytecode is under the prefix.
    worker_src = Path(__file__).resolve().parents[1] / "src" / "evoforge" / "evaluator" / "worker.py"
    cached = list((tmp_path / "pycache").rglob("worker.cpython-*.pyc"))
    assert any(Path(str(worker_src.parent).lstrip("/")).parts[-3:] == p.parent.parts[-3:] for p in cached), cached


def test_doctors_line_says_where_workers_get_their_bytecode(tmp_path: Path) -> None:
    base = {CACHE_ENV: str(tmp_path)}
    assert "not set" in cache.bytecode_status(base)
    assert "=0" in cache.bytecode_status({**base, "PYTHONDONTWRITEBYTECODE": "1", BYTECODE_ENV: "0"})
    assert "/mine" in cache.bytecode_status({**base, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": "/mine"})
    assert "ships" in cache.bytecode_status({**base, "PYTHONDONTWRITEBYTECODE": "1"}, ships_bytecode=True)
    line = cache.bytecode_status({**base, "PYTHONDONTWRITEBYTECODE": "1"}, ships_bytecode=False)
    assert str(tmp_path / "pycache") in line and "before the first worker" in line


def test_a_failed_fill_is_not_tried_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {CACHE_ENV: str(tmp_path), "PYTHONDONTWRITEBYTECODE": "1"}
    worker_bytecode_env(env, ships_bytecode=False)
    runs: list[object] = []

    def crashes(*args: object, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
        runs.append(args)
        return subprocess.CompletedProcess(args, 1)

    monkeypatch.setattr(cache.subprocess, "run", crashes)
    assert not warm_bytecode(env) and not warm_bytecode(env)
    assert len(runs) == 1  # the second worker does not wait for another failing fill
    assert not list((tmp_path / "pycache").glob(".warm-*"))
