"""The sandbox at run time: candidates that get past the static pre-check still find no network and
no secrets, and --sandbox strict refuses to run unisolated."""

from __future__ import annotations

import socket
import threading

import pytest

from evoforge.candidate import Candidate
from evoforge.evaluator import EvalConfig, Evaluator, EvaluatorError, sandbox
from evoforge.evaluator.precheck import precheck
from evoforge.task import task_from_file
from evoforge.timing import TimingConfig
from tests.conftest import CANDIDATES, TASKS

REACHING = CANDIDATES / "reaching"
FAST = TimingConfig(budget_ms=5, rounds=2, min_reps=3)


def evaluate(name: str, mode: str) -> object:
    cand = Candidate(name=name, source=(REACHING / f"{name}.py").read_text())
    assert precheck(cand.source) is None  # these are the ones the static check can't see
    config = EvalConfig(device="cpu", timeout_s=60, timing=FAST, sandbox=mode)
    return Evaluator(task_from_file(TASKS / "tanh_matmul.py"), config).evaluate([cand]).results[0]


@pytest.fixture
def listener(monkeypatch: pytest.MonkeyPatch):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    accepted: list[object] = []
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    monkeypatch.setenv("EVOFORGE_TEST_PORT", str(server.getsockname()[1]))
    yield accepted
    stop.set()
    thread.join()
    server.close()


needs_netns = pytest.mark.skipif(sandbox.network_isolation_unavailable() is not None,
                                 reason="no network namespaces here (needs root or CAP_SYS_ADMIN)")


@needs_netns
def test_basic_sandbox_has_no_network(listener: list[object]) -> None:
    result = evaluate("hidden_socket", "basic")
    assert result.status == "runtime_error" and "unreachable" in result.detail.lower()
    assert listener == []


def test_without_a_sandbox_the_same_candidate_reaches_the_server(listener: list[object]) -> None:
    result = evaluate("hidden_socket", "none")
    assert result.status == "ok"
    assert listener


def test_secrets_never_reach_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVOFORGE_TEST_API_KEY", "sk-not-for-candidates")
    assert evaluate("hidden_env", "basic").status == "ok"
    assert evaluate("hidden_env", "none").status == "incorrect"  # proves the candidate would have seen it


def test_strict_refuses_without_network_isolation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox, "network_isolation_unavailable", lambda: "no CAP_SYS_ADMIN (simulated)")
    config = EvalConfig(device="cpu", sandbox="strict")
    with pytest.raises(EvaluatorError, match="strict"):
        Evaluator(task_from_file(TASKS / "tanh_matmul.py"), config).evaluate(
            [Candidate(name="good", source=(CANDIDATES / "good.py").read_text())])


def test_unknown_sandbox_mode_is_an_error() -> None:
    config = EvalConfig(device="cpu", sandbox="paranoid")
    with pytest.raises(EvaluatorError, match="unknown sandbox"):
        Evaluator(task_from_file(TASKS / "tanh_matmul.py"), config).evaluate(
            [Candidate(name="good", source=(CANDIDATES / "good.py").read_text())])
