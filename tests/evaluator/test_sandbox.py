"""The sandbox at run time: candidates that get past the static pre-check still find no network, no
secrets, no way to write outside their scratch directory, no unbounded processes and no frames to
walk, each layer proven on its own where it can be switched off; and --sandbox strict refuses to run
without them."""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from evoforge.candidate import Candidate
from evoforge.evaluator import EvalConfig, EvalReport, EvalResult, Evaluator, EvaluatorError, sandbox
from evoforge.evaluator.precheck import precheck
from evoforge.evaluator.process import WorkerProcess, cpu_time_limit_s
from evoforge.evaluator.process import describe_exit as _describe_exit
from evoforge.task import task_from_file
from evoforge.timing import TimingConfig
from tests.conftest import CANDIDATES, TASKS

REACHING = CANDIDATES / "reaching"
FAST = TimingConfig(budget_ms=5, rounds=2, min_reps=3)


def candidate(name: str) -> Candidate:
    path = REACHING / f"{name}.py"
    cand = Candidate(name=name, source=(path if path.exists() else CANDIDATES / f"{name}.py").read_text())
    assert precheck(cand.source) is None  # these are the ones the static check can't see
    return cand


def evaluate_all(names: list[str], mode: str, **config: object) -> EvalReport:
    cfg = EvalConfig(device="cpu", timeout_s=30, timing=FAST, sandbox=mode, **config)  # type: ignore[arg-type]
    return Evaluator(task_from_file(TASKS / "tanh_matmul.py"), cfg).evaluate([candidate(n) for n in names])


def evaluate(name: str, mode: str) -> EvalResult:
    return evaluate_all([name], mode).results[0]


@contextmanager
def serving(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """A TCP server on 127.0.0.1 whose port candidates find in EVOFORGE_TEST_PORT; yields what it accepted."""
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
    try:
        yield accepted
    finally:
        stop.set()
        thread.join()
        server.close()


@pytest.fixture
def listener(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    with serving(monkeypatch) as accepted:
        yield accepted


needs_netns = pytest.mark.skipif(sandbox.network_isolation_unavailable() is not None,
                                 reason="no network namespaces here (needs root or CAP_SYS_ADMIN)")
needs_landlock = pytest.mark.skipif(sandbox.write_restriction_unavailable() is not None,
                                    reason="no Landlock here (Linux >= 5.13 with Landlock enabled)")
needs_landlock_net = pytest.mark.skipif(sandbox.landlock_abi() < 4, reason="Landlock without TCP rules (ABI < 4)")


@needs_netns
def test_the_network_namespace_alone_stops_a_socket(listener: list[object], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox, "write_restriction_unavailable", lambda: "switched off for this test")
    result = evaluate("hidden_socket", "basic")
    assert result.status == "runtime_error" and "unreachable" in result.detail.lower()
    assert listener == []


@needs_landlock_net
def test_landlock_alone_stops_a_tcp_socket(listener: list[object], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox, "network_isolation_unavailable", lambda: "switched off for this test")
    result = evaluate("hidden_socket", "basic")
    assert result.status == "runtime_error" and "permission denied" in result.detail.lower()
    assert listener == []


# ---------------------------------------------------------------- every hostile candidate in one run
HOSTILE = ["leaks_api_key", "writes_outside", "fork_bomb", "hidden_frames", "hidden_patch", "hidden_socket",
           "hidden_env", "good"]
SECRET = "sk-not-for-candidates"
TASK_CAP = 128  # processes + threads per worker: far above what this worker needs, far below a bomb


@dataclass
class Run:
    report: EvalReport
    loot: Path
    outside: Path
    accepted: list[object]
    marker: str

    def __getitem__(self, name: str) -> EvalResult:
        return self.report.by_name()[name]


def hostile_run(tmp: Path, mode: str, names: list[str]) -> Run:
    marker = uuid.uuid4().hex  # every process of this run carries it in its environment
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EVOFORGE_TEST_API_KEY", SECRET)
        mp.setenv("EVOFORGE_TEST_LOOT", str(tmp / "loot.txt"))
        mp.setenv("EVOFORGE_TEST_OUTSIDE", str(tmp / "outside.txt"))
        mp.setenv("EVOFORGE_TEST_MARKER", marker)
        with serving(mp) as accepted:
            report = evaluate_all(names, mode, max_tasks=TASK_CAP)
    return Run(report, tmp / "loot.txt", tmp / "outside.txt", accepted, marker)


@pytest.fixture(scope="module")
def basic(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return hostile_run(tmp_path_factory.mktemp("outside-basic"), "basic", HOSTILE)


@pytest.fixture(scope="module")
def unsandboxed(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The same candidates without a sandbox: proves each would have done harm."""
    names = ["leaks_api_key", "writes_outside", "hidden_frames", "hidden_socket", "hidden_env", "good"]
    return hostile_run(tmp_path_factory.mktemp("outside-none"), "none", names)


def processes_carrying(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if marker.encode() in Path(f"/proc/{entry}/environ").read_bytes():
                    found.append(int(entry))
            except OSError:
                continue
    return found


def test_without_a_sandbox_every_hostile_candidate_does_harm(unsandboxed: Run) -> None:
    assert SECRET in unsandboxed.loot.read_text()  # it read the key and wrote it out
    assert unsandboxed.outside.exists()  # it wrote outside its scratch directory
    # it walked the frames for the harness's reference, but the reference lives in the judge's process
    assert unsandboxed["hidden_frames"].status == "incorrect"
    assert unsandboxed["hidden_socket"].status == "ok" and unsandboxed.accepted  # it reached the server
    assert unsandboxed["hidden_env"].status == "incorrect"  # it saw a key
    assert unsandboxed["good"].ok


@needs_landlock
def test_an_api_key_never_reaches_a_file(basic: Run) -> None:
    assert basic["leaks_api_key"].ok  # it swallowed the refusal and looked innocent...
    assert not basic.loot.exists()  # ...but wrote nothing outside its scratch directory


def test_secrets_never_reach_the_worker(basic: Run) -> None:
    assert basic["hidden_env"].ok  # it computes the wrong answer exactly when it sees a key


@needs_landlock
def test_a_write_outside_the_scratch_directory_is_stopped(basic: Run) -> None:
    result = basic["writes_outside"]
    assert result.status == "runtime_error" and "Permission denied" in result.detail
    assert not basic.outside.exists()


def test_a_fork_bomb_is_bounded_and_leaves_nothing_behind(basic: Run) -> None:
    result = basic["fork_bomb"]
    assert result.status == "crashed" and "process limit" in result.detail and str(TASK_CAP) in result.detail
    assert processes_carrying(basic.marker) == []  # its children left the process group; all dead anyway


def test_frame_walking_past_the_static_check_is_refused_at_run_time(basic: Run) -> None:
    result = basic["hidden_frames"]
    assert result.status == "rejected" and "sys._getframe" in result.detail and "runtime guard" in result.detail


def test_patching_past_the_static_check_is_caught_at_run_time(basic: Run) -> None:
    result = basic["hidden_patch"]
    assert result.status == "rejected"
    assert "torch.allclose" in result.detail and "time.perf_counter" in result.detail


@pytest.mark.skipif(sandbox.network_isolation_unavailable() is not None and sandbox.landlock_abi() < 4,
                    reason="neither a network namespace nor Landlock TCP rules here")
def test_a_socket_to_localhost_is_stopped(basic: Run) -> None:
    assert basic["hidden_socket"].status == "runtime_error"
    assert basic.accepted == []


def test_the_run_goes_on_after_every_hostile_candidate(basic: Run) -> None:
    assert basic["good"].ok and basic["good"].timing["eager"].reps >= 3
    # one worker per candidate, and the clock check's reference (no baselines here): the fork bomb's end cost no other
    assert basic.report.workers == len(HOSTILE) + 1
    sandbox_env = basic.report.env["sandbox"]
    assert sandbox_env["mode"] == "basic"
    assert sandbox_env["writes_restricted"] == (sandbox.write_restriction_unavailable() is None)


def test_without_a_pids_cgroup_the_watchdog_bounds_a_fork_bomb(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox.ProcessCap, "create", classmethod(lambda cls, limit: None))
    marker = uuid.uuid4().hex
    monkeypatch.setenv("EVOFORGE_TEST_MARKER", marker)
    report = evaluate_all(["fork_bomb", "good"], "basic", max_tasks=TASK_CAP)
    bomb, good = report.results
    assert bomb.status == "crashed" and "process limit" in bomb.detail
    assert good.ok
    assert processes_carrying(marker) == []


def test_a_key_read_from_the_drivers_proc_environ_is_redacted_from_results() -> None:
    """The scrubbed environment is no wall against /proc/<driver>/environ (same user): the driver
    blanks its secrets out of what results carry off the machine. Run in a child, whose
    environment at exec holds the key (a monkeypatched variable never reaches /proc)."""
    key = "sk-proc-environ-" + uuid.uuid4().hex
    script = textwrap.dedent(f"""
        import json
        from pathlib import Path
        from evoforge.candidate import Candidate
        from evoforge.evaluator import EvalConfig, Evaluator
        from evoforge.task import task_from_file
        from evoforge.timing import TimingConfig
        source = Path({str(REACHING / "reads_parent_env.py")!r}).read_text()
        config = EvalConfig(device="cpu", timeout_s=30, timing=TimingConfig(budget_ms=5, rounds=2, min_reps=3))
        report = Evaluator(task_from_file(Path({str(TASKS / "tanh_matmul.py")!r})), config).evaluate(
            [Candidate(name="reads_parent_env", source=source)])
        print(json.dumps(report.results[0].to_dict()))
        """)
    env = {**os.environ, "EVOFORGE_TEST_API_KEY": key, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = proc.stdout.strip().splitlines()[-1]
    assert json.loads(result)["status"] == "runtime_error"
    assert "exfiltrated ['EVOFORGE_TEST_API_KEY=[redacted]']" in result  # it did find the key...
    assert key not in result and key[::-1] not in result  # ...and it left in no form we know


def test_the_redactor_blanks_the_forms_it_knows_and_nothing_else() -> None:
    import base64

    key = "sk-abcdef0123456789"
    redact = sandbox.redactor({"OPENAI_API_KEY": key, "PATH": "/usr/bin:/bin", "SHORT_TOKEN": "abc"})
    for form in (key, key[::-1], key.encode().hex(), base64.b64encode(key.encode()).decode().rstrip("=")):
        assert redact(f"before {form} after") == "before [redacted] after"
    assert redact("/usr/bin:/bin abc") == "/usr/bin:/bin abc"  # not a secret; too short to be one


# ---------------------------------------------------------------- limits and refusals
def test_workers_get_cpu_file_and_open_file_limits() -> None:
    config = EvalConfig(device="cpu", timeout_s=10, startup_timeout_s=20, compile_timeout_s=30)
    expected = cpu_time_limit_s(config)
    # one entry per worker: startup, a compile, and a stage limit for each of load, checks, recheck,
    # profile and every timing mode, on every core
    assert expected == int((20 + 30 + 10 * (4 + len(config.modes))) * (os.cpu_count() or 1))
    probe = ("import resource\n"
             "print(*[resource.getrlimit(getattr(resource, n))[0] for n in ('RLIMIT_CPU', 'RLIMIT_FSIZE', "
             "'RLIMIT_NOFILE', 'RLIMIT_CORE')])")
    worker = WorkerProcess(config, dict(os.environ), network=False, writes=False)
    try:
        out = subprocess.run([sys.executable, "-c", probe], preexec_fn=worker._limits(), capture_output=True,
                             text=True, check=True).stdout.split()
    finally:
        worker.close()
    assert [int(x) for x in out] == [expected, 512 * 2**20, min(4096, resource.getrlimit(resource.RLIMIT_NOFILE)[0]), 0]
    assert "CPU time limit" in _describe_exit(-signal.SIGXCPU, "check", "")
    assert cpu_time_limit_s(EvalConfig(cpu_time_limit_s=7.5)) == 7


@needs_landlock
def test_the_write_restriction_leaves_the_scratch_dir_devices_and_caches_writable(tmp_path: Path) -> None:
    scratch, elsewhere = tmp_path / "scratch", tmp_path / "elsewhere"
    scratch.mkdir()
    elsewhere.mkdir()
    env = dict(os.environ)
    writable = sandbox.worker_writable(scratch, env)
    assert Path(env["TORCHINDUCTOR_CACHE_DIR"]) in writable  # pinned: the worker's temp dir is its scratch
    ruleset = sandbox.landlock_ruleset(writable)
    restrict = sandbox.landlock_restrict()

    def enter() -> None:
        if not restrict(ruleset):
            os._exit(96)

    probe = textwrap.dedent(f"""
        import os
        for path in [{str(scratch / "a")!r}, {str(elsewhere / "b")!r}, "/dev/null", {env["TORCHINDUCTOR_CACHE_DIR"]!r}
                     + "/evoforge-probe", "/proc/self/comm"]:
            try:
                with open(path, "w") as f:
                    f.write("x")
                print("wrote", path)
            except OSError as exc:
                print("refused", path, exc.errno)
        """)
    try:
        out = subprocess.run([sys.executable, "-c", probe], preexec_fn=enter, capture_output=True, text=True,
                             check=True).stdout
    finally:
        os.close(ruleset)
        Path(env["TORCHINDUCTOR_CACHE_DIR"], "evoforge-probe").unlink(missing_ok=True)
    assert f"wrote {scratch / 'a'}" in out and "wrote /dev/null" in out
    assert "wrote /proc/self/comm" in out  # the CUDA driver names its threads there
    assert f"wrote {env['TORCHINDUCTOR_CACHE_DIR']}/evoforge-probe" in out
    assert f"refused {elsewhere / 'b'}" in out and not (elsewhere / "b").exists()


def test_the_audit_hook_refuses_frames_to_candidate_code_but_not_to_libraries(tmp_path: Path) -> None:
    """Run in a child: an audit hook stays for the life of its process."""
    candidate_code = textwrap.dedent("""
        import collections, enum, logging, sys, traceback, typing
        refused, allowed = [], []
        def attempt(name, fn):
            try:
                fn()
                allowed.append(name)
            except RuntimeError as exc:
                assert "sandbox" in str(exc), exc
                refused.append(name)
        attempt("namedtuple", lambda: collections.namedtuple("P", "x y"))
        attempt("enum", lambda: enum.Enum("Color", "RED GREEN"))
        attempt("typevar", lambda: typing.TypeVar("T"))
        attempt("logging", lambda: logging.getLogger("x").warning("fine"))
        def format_own_exception():
            try:
                1 / 0
            except ZeroDivisionError:
                traceback.format_exc()
        attempt("traceback", format_own_exception)
        attempt("pythonpath library", lambda: __import__("evoforge_testlib").frame())
        getframe = getattr(sys, "_get" + "frame")
        attempt("getframe", lambda: getframe(1))
        attempt("inspect", lambda: __import__("inspect").currentframe())
        attempt("logging.currentframe", lambda: logging.currentframe())
        attempt("gc", lambda: __import__("gc").get_objects())
        def tb_frame():
            try:
                raise ValueError
            except ValueError as exc:
                return exc.__traceback__.tb_frame
        attempt("tb_frame", tb_frame)
        def generator():
            yield 1
        attempt("gi_frame", lambda: generator().gi_frame)
        attempt("settrace", lambda: sys.settrace(lambda *a: None))
        attempt("ctypes", lambda: __import__("ctypes").pythonapi.PyEval_GetFrame)
        attempt("forged", lambda: compile("x = 1", typing.__file__, "exec"))
        """)
    driver = textwrap.dedent(f"""
        import json, sys
        from evoforge.evaluator import guards
        import torch.fx  # a library may use frames freely: it is not candidate code
        guards.install_audit_guard()
        path = {str(tmp_path / "evoforge_candidate_x.py")!r}
        source = {candidate_code!r}
        open(path, "w").write(source)
        namespace = {{"__name__": "evoforge_candidate_x"}}
        exec(compile(source, path, "exec"), namespace)
        print(json.dumps({{"refused": namespace["refused"], "allowed": namespace["allowed"],
                          "violation": guards.audit_violation({{path}})}}))
        """)
    # A library on PYTHONPATH (not installed, not the standard library) is library code too.
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "evoforge_testlib.py").write_text("import sys\n\n\ndef frame():\n    return sys._getframe(0)\n")
    proc = subprocess.run([sys.executable, "-c", driver], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([*sys.path, str(lib)])})
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    assert data["allowed"] == ["namedtuple", "enum", "typevar", "logging", "traceback", "pythonpath library"]
    assert data["refused"] == ["getframe", "inspect", "logging.currentframe", "gc", "tb_frame", "gi_frame",
                               "settrace", "ctypes", "forged"]
    assert data["violation"].startswith("runtime guard: walks the call stack")


@pytest.mark.parametrize(("layer", "probe"), [("network", "network_isolation_unavailable"),
                                              ("writes", "write_restriction_unavailable")])
def test_strict_refuses_without_each_layer(layer: str, probe: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox, probe, lambda: f"no {layer} isolation (simulated)")
    config = EvalConfig(device="cpu", sandbox="strict")
    with pytest.raises(EvaluatorError, match=f"strict.*no {layer} isolation"):
        Evaluator(task_from_file(TASKS / "tanh_matmul.py"), config).evaluate(
            [Candidate(name="good", source=(CANDIDATES / "good.py").read_text())])


def test_doctor_reports_every_layer() -> None:
    from evoforge.doctor import sandbox_report

    report = sandbox_report()
    assert [line.split(":")[0] for line in report["lines"]] == ["network", "writes", "processes"]
    assert report["writes_restricted"] == (sandbox.write_restriction_unavailable() is None)
    assert report["process_cap"] in ("cgroup", "watchdog")
    if not report["writes_restricted"]:
        assert "NOT confined" in report["lines"][1] and "strict refuses" in report["lines"][1]


def test_unknown_sandbox_mode_is_an_error() -> None:
    config = EvalConfig(device="cpu", sandbox="paranoid")
    with pytest.raises(EvaluatorError, match="unknown sandbox"):
        Evaluator(task_from_file(TASKS / "tanh_matmul.py"), config).evaluate(
            [Candidate(name="good", source=(CANDIDATES / "good.py").read_text())])
