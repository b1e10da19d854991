"""Worker processes: started sandboxed, watched, and killed with everything they started.

Each worker (``python -m evoforge.evaluator.worker``) runs in its own session and scratch directory,
with a scrubbed environment (no API keys or tokens), resource limits (no core files, a file-size cap,
a CPU-time cap; an address-space cap with a CPU build of torch, where it cannot break CUDA), a cap on
processes and threads (a pids cgroup, or a count of its descendants), a watchdog that polls its
resident memory, its own network namespace and Landlock-confined writes where the sandbox asks for
them (see sandbox.py). It holds one end of a socket pair and nothing else of the judge's: no job file,
no seed. When it dies (segfault, ``os._exit``, CUDA error, out of memory) or outlives a request's time
limit, :meth:`WorkerProcess.request` raises :class:`WorkerLost` saying how, and the judge records it
against the entry that worker held.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evoforge.cache import worker_bytecode_env
from evoforge.evaluator import sandbox
from evoforge.evaluator.channel import CHANNEL_ENV, Channel, ChannelClosed, ChannelTimeout

if TYPE_CHECKING:
    from evoforge.evaluator.config import EvalConfig


class WorkerLost(Exception):
    """The worker died or was killed while serving a request: ``status`` (crashed / timeout) and a
    one-line ``detail``."""

    def __init__(self, status: str, detail: str, logs: str = "") -> None:
        super().__init__(detail)
        self.status, self.detail, self.logs = status, detail, logs


class WorkerProcess:
    """One sandboxed worker and the judge's end of its channel."""

    def __init__(self, config: EvalConfig, env: dict[str, str], network: bool, writes: bool,
                 cancel: threading.Event | None = None) -> None:
        self.config = config
        self.env = dict(env)
        # Its own token: what carries it is this worker's to kill, and no sibling's.
        self.env[sandbox.WORKER_TOKEN] = uuid.uuid4().hex
        self.network, self.writes = network, writes
        self.cancel = cancel
        self.workdir = Path(tempfile.mkdtemp(prefix="evoforge-worker-"))
        self.killed: str | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.channel: Channel | None = None
        self.cap: sandbox.ProcessCap | None = None
        self.ruleset: int | None = None
        self._seen: set[int] = set()  # every descendant the watchdog saw (no cgroup): killed with it
        self.started = time.monotonic()
        self.stage = "startup"
        self.is_ready = False  # its first message (ready) has been received

    # ---------------------------------------------------------------- start
    def start(self) -> None:
        cfg = self.config
        env = self.env
        if self.writes:
            (self.workdir / "tmp").mkdir()
            env["TMPDIR"] = str(self.workdir / "tmp")  # nvcc, gcc, Triton's launcher builds write here
            from evoforge.evaluator.config import EvaluatorError

            try:
                self.ruleset = sandbox.landlock_ruleset(sandbox.worker_writable(self.workdir, env))
            except OSError as exc:
                raise EvaluatorError(f"could not confine the worker's writes (Landlock): {exc}; "
                                     "use --sandbox none to run without") from None
        self.cap = sandbox.ProcessCap.create(cfg.max_tasks)
        if self.cap is None:
            sandbox.become_subreaper()  # escaped descendants stay ours to count and kill
        ours, theirs = socket.socketpair()
        env[CHANNEL_ENV] = str(theirs.fileno())
        env["EVOFORGE_LOG_LIMIT"] = str(cfg.file_log_limit_chars)
        self.out_path, self.err_path = self.workdir / "stdout.log", self.workdir / "stderr.log"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "evoforge.evaluator.worker"], cwd=self.workdir, stdout=out, stderr=err,
                stdin=subprocess.DEVNULL, env=env, start_new_session=True, pass_fds=(theirs.fileno(),),
                preexec_fn=self._limits(),
            )
        theirs.close()
        self.channel = Channel(ours)
        WATCHDOG.watch(self)

    def _limits(self) -> Callable[[], None]:
        """The child's resource limits and confinement, decided here and applied between fork and exec."""
        cfg = self.config
        fsize = cfg.file_size_limit_mb * 2**20
        cpu = cpu_time_limit_s(cfg)
        cpu_hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
        cpu_limits = (cpu, cpu + 30) if cpu_hard == resource.RLIM_INFINITY else (min(cpu, cpu_hard), cpu_hard)
        # An address-space cap breaks a CUDA build of torch (its libraries and the driver reserve huge
        # virtual ranges, even with --device cpu): only a CPU build gets it; everything else relies on
        # the resident-memory watchdog.
        address_space = cfg.memory_limit_mb * 2**20 if _cpu_build_of_torch() else None
        unshare = sandbox.netns_entry() if self.network else None
        prctl = sandbox.prctl_entry()
        restrict = sandbox.landlock_restrict() if self.ruleset is not None else None
        ruleset, cap = self.ruleset, self.cap
        driver = os.getpid()

        def apply() -> None:
            if prctl is not None:
                prctl(sandbox.PR_SET_PDEATHSIG, signal.SIGKILL)  # an orphaned worker dies with its driver
                if os.getppid() != driver:  # the driver died before the request took effect
                    os._exit(98)
            if cap is not None:
                cap.join()  # before anything runs: every process the worker starts is born inside the cap
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
            resource.setrlimit(resource.RLIMIT_CPU, cpu_limits)
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 4096), hard))
            if address_space is not None:
                resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
            if unshare is not None and unshare(sandbox.CLONE_NEWNET) != 0:
                os._exit(97)  # the probe said it works; refuse to run unisolated if it now doesn't
            if restrict is not None and ruleset is not None and not restrict(ruleset):
                os._exit(96)  # the same for the write restriction

        return apply

    # ---------------------------------------------------------------- watch
    def check(self, table: sandbox.ProcessTable | None) -> bool:
        """The watchdog's look at this worker (``table``: this tick's scan of /proc, when some worker
        has no cgroup); kills it and returns False when it broke a limit or was cancelled."""
        cfg, proc = self.config, self.proc
        if proc is None or proc.poll() is not None:
            return False
        killed = None
        if self.cancel is not None and self.cancel.is_set():
            killed = "cancelled"
        elif (table.rss_bytes.get(proc.pid, 0) / 2**20 if table is not None else _rss_mb(proc.pid)) \
                > cfg.memory_limit_mb:
            killed = "memory"
        elif self.cap is not None and self.cap.hit_limit():
            killed = "processes"
        elif self.cap is None and table is not None:
            tree = table.below(proc.pid)
            self._seen.update(tree)
            if sum(tree.values()) > cfg.max_tasks:
                killed = "processes"
        if killed:
            self.killed = killed
            self._kill(self._seen)
            return False
        return True

    def _kill(self, seen: set[int] | None = None) -> None:
        proc = self.proc
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        if self.cap is not None:
            self.cap.kill_all()
        else:
            _kill_escaped(set(seen or ()) | set(self._seen) - {proc.pid},
                          self.env.get(sandbox.WORKER_TOKEN, ""))

    # ---------------------------------------------------------------- talk
    def request(self, message: dict[str, Any], timeout_s: float, stage: str,
                fds: tuple[int, ...] = ()) -> dict[str, Any]:
        """Send one request (with ``fds``, if any) and wait for its reply; raise WorkerLost if the worker
        dies, is killed, or outlives ``timeout_s``."""
        assert self.channel is not None and self.proc is not None
        self.stage = stage
        try:
            self.channel.send(message, fds)
            return self.channel.receive(timeout_s)
        except ChannelTimeout:
            self.killed = self.killed or "timeout"
            self._kill()
            raise self._lost(timeout_s) from None
        except ChannelClosed:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
            self._kill()
            raise self._lost(timeout_s) from None

    def ready(self, timeout_s: float) -> None:
        """Wait for the worker's first message (it has imported torch and opened its channel); at once if
        it came already."""
        assert self.channel is not None and self.proc is not None
        if self.is_ready:
            return
        try:
            self.channel.receive(timeout_s)
            self.is_ready = True
        except (ChannelTimeout, ChannelClosed) as exc:
            if isinstance(exc, ChannelTimeout):
                self.killed = self.killed or "timeout"
            self._kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
            raise self._lost(timeout_s) from None

    def _lost(self, limit: float) -> WorkerLost:
        cfg = self.config
        logs = self.logs()
        killed = self.killed
        stage = self.stage
        if killed == "cancelled":
            from evoforge.evaluator.config import EvaluatorError

            raise EvaluatorError("evaluation cancelled")
        if killed == "timeout":
            return WorkerLost("timeout", f"{stage} stage ran past its {limit:g} s limit", logs)
        if killed == "memory":
            return WorkerLost("crashed", f"out of memory: worker passed the {cfg.memory_limit_mb} MiB limit", logs)
        if killed == "processes":
            return WorkerLost("crashed", f"process limit: the worker and its children passed {cfg.max_tasks} "
                                         f"processes + threads during {stage} (a fork bomb?); all killed", logs)
        code = self.proc.returncode if self.proc is not None else None
        if code == 97:
            return WorkerLost("crashed", "the worker could not enter its own network namespace", logs)
        if code == 96:
            return WorkerLost("crashed", "the worker could not confine its writes (Landlock)", logs)
        return WorkerLost("crashed", describe_exit(code, stage, logs), logs)

    def logs(self, limit: int | None = None) -> str:
        limit = limit or self.config.log_limit_chars
        out, err = _log_tail(self.out_path, limit // 2), _log_tail(self.err_path, limit // 2)
        return (out + ("\n" if out and err else "") + err).strip()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and self.killed is None

    def close(self) -> None:
        """Ask the worker to leave, then make sure it and everything it started are gone."""
        WATCHDOG.forget(self)
        if self.channel is not None and self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ChannelClosed, OSError):
                self.channel.send({"op": "exit"})
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=2)
        self._kill()
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        if self.channel is not None:
            self.channel.close()
        if self.cap is not None:
            self.cap.close()
        if self.ruleset is not None:
            with contextlib.suppress(OSError):
                os.close(self.ruleset)
            self.ruleset = None
        if not self.config.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


class Watchdog:
    """One thread watching every live worker: its resident memory, its processes and threads (a pids
    cgroup, or a count from a scan of /proc), and cancellation.

    One scan of /proc per tick serves every worker. A thread per worker, each scanning /proc for its own
    descendants, cost the judge's timing loop most of its time on the H200 machines once a generation's
    candidates, kept baselines and spares were alive together (a /proc scan is slow under gVisor, and the
    scans' Python competed with the judge for the interpreter)."""

    def __init__(self, tick_s: float = 0.05) -> None:
        self.tick_s = tick_s
        self.lock = threading.Lock()
        self.workers: list[WorkerProcess] = []
        self.thread: threading.Thread | None = None
        self.wake = threading.Event()

    def watch(self, worker: WorkerProcess) -> None:
        with self.lock:
            self.workers.append(worker)
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, daemon=True, name="evoforge-watchdog")
                self.thread.start()
        self.wake.set()

    def forget(self, worker: WorkerProcess) -> None:
        with self.lock:
            if worker in self.workers:
                self.workers.remove(worker)

    def _run(self) -> None:
        next_scan = 0.0
        while True:
            with self.lock:
                workers = list(self.workers)
            if not workers:
                self.wake.wait(1.0)
                self.wake.clear()
                continue
            table = None
            if any(w.cap is None for w in workers) and time.monotonic() >= next_scan:
                table = sandbox.ProcessTable.scan()  # processes are counted every 0.25 s, as before
                next_scan = time.monotonic() + 0.25
            for worker in workers:
                try:
                    watching = worker.check(table)
                except Exception:  # a watchdog that stops watching fails open: keep it going
                    watching = True
                if not watching:
                    self.forget(worker)
            time.sleep(self.tick_s)


WATCHDOG = Watchdog()


def worker_env(config: EvalConfig) -> dict[str, str]:
    """The environment a worker starts with: the driver's minus its secrets, evoforge importable."""
    env = dict(os.environ) if config.sandbox == "none" else \
        {k: v for k, v in os.environ.items() if not sandbox.SECRET_NAME.search(k)}
    src = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("PYTHONFAULTHANDLER", "1")
    worker_bytecode_env(env)
    gpu = config.visible_gpu()
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    return env


def cpu_time_limit_s(config: EvalConfig) -> int:
    """RLIMIT_CPU of a worker: generous, a backstop behind the wall-clock limits."""
    if config.cpu_time_limit_s is not None:
        return max(int(config.cpu_time_limit_s), 1)
    stages = 4 + len(config.modes)  # load, checks, one block per timing mode, recheck, profile
    return int((config.startup_timeout_s + config.compile_timeout_s + config.timeout_s * stages)
               * (os.cpu_count() or 1))


def describe_exit(code: int | None, stage: str, log: str) -> str:
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        if name == "SIGXFSZ":
            return f"worker killed by {name} during {stage}: output file size limit exceeded"
        if name == "SIGXCPU":
            return f"worker killed by {name} during {stage}: CPU time limit exceeded"
        return f"worker killed by {name} during {stage}"
    last = log.strip().splitlines()[-1] if log.strip() else ""
    return f"worker exited with code {code} during {stage}" + (f": {last[:200]}" if last else "")


def _log_tail(path: Path, limit: int = 4000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(size - limit, 0))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return ("..." if size > limit else "") + text.strip()


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:  # size resident shared ...: pages
            return int(f.read().split()[1]) * _PAGE / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


_PAGE = os.sysconf("SC_PAGE_SIZE")


def _kill_escaped(pids: set[int], token: str) -> None:
    """Kill what is left of a worker's descendants that no cgroup holds: those seen while it ran
    and those carrying its token (this process is their subreaper, so they are ours now), and reap
    those that became our children."""
    for _ in range(20):
        pids |= sandbox.carrying(token) if token else set()
        alive = set(sandbox.descendants(*pids)) if pids else set()
        if not alive:
            return
        for pid in alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)
        for pid in alive:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)
        pids = alive


def _cpu_build_of_torch() -> bool:
    import torch

    return torch.version.cuda is None and getattr(torch.version, "hip", None) is None


class KeptWorkers:
    """Baseline workers kept alive from one evaluation to the next of the same task.

    Baselines are PyTorch's own code, timed beside every generation's candidates: starting a process for
    each of them every generation cost more than their timing on the H200 machines (a worker's start
    grows with the number started at once there). A kept worker is handed the next evaluation's pool and
    inputs (``rebind``) and keeps only its model; candidates are never kept (one process per candidate).
    Bounded; closed at exit."""

    def __init__(self, limit: int = 12) -> None:
        self.limit = limit
        self.lock = threading.Lock()
        self.workers: dict[str, WorkerProcess] = {}

    def take(self, key: str) -> WorkerProcess | None:
        with self.lock:
            worker = self.workers.pop(key, None)
        if worker is not None and not worker.alive:
            worker.close()
            return None
        return worker

    def give(self, key: str, worker: WorkerProcess) -> None:
        with self.lock:
            old = self.workers.pop(key, None)
            self.workers[key] = worker
            evicted = list(self.workers)[: max(len(self.workers) - self.limit, 0)]
            dropped = [self.workers.pop(k) for k in evicted]
        for w in [w for w in (old, *dropped) if w is not None and w is not worker]:
            w.close()

    def close_all(self) -> None:
        with self.lock:
            workers, self.workers = list(self.workers.values()), {}
        for worker in workers:
            worker.close()


class SpareWorkers:
    """Candidate workers started ahead of the evaluation that will use them.

    Starting a worker (a Python process importing torch, sandboxed) is most of an evaluation's start-up
    on the H200 machines, so while one generation's workers load and check, the judge starts as many
    blank workers for the next one. A spare has run nothing but the worker's own start-up: it gets its
    entry, pool and task only when an evaluation takes it, exactly as a freshly started worker does, so
    one process per candidate holds. Spares are keyed by everything their start depended on (config,
    environment, sandbox layers), a few keys at most (one per GPU slot, say). The judge waits for its
    spares to be ready before it times anything, so no process is starting while latencies are measured.
    Closed at exit."""

    def __init__(self, keys: int = 8) -> None:
        self.limit = keys
        self.lock = threading.Lock()
        self.workers: dict[str, list[WorkerProcess]] = {}

    def take(self, key: str) -> WorkerProcess | None:
        """A live spare started for ``key``, or None."""
        found, dead = None, []
        with self.lock:
            spares = self.workers.get(key, [])
            while spares and found is None:
                worker = spares.pop(0)
                if worker.alive:
                    found = worker
                else:
                    dead.append(worker)
        for worker in dead:
            worker.close()
        return found

    def top_up(self, key: str, count: int, make: Callable[[], WorkerProcess]) -> list[WorkerProcess]:
        """Start workers (``make`` builds one) until ``count`` spares for ``key`` exist; returns the ones
        started. Call it from a thread that outlives them: a worker dies with the thread that forked it."""
        with self.lock:
            spares = self.workers.pop(key, [])
            self.workers[key] = spares  # most recently used last
            evicted = list(self.workers)[: max(len(self.workers) - self.limit, 0)]
            stale = [w for k in evicted for w in self.workers.pop(k)]
            need = max(count - len(spares), 0)
        for worker in stale:
            worker.close()
        started = []
        for _ in range(need):
            worker = make()
            try:
                worker.start()
            except OSError:  # no spare is no failure: the evaluation starts its own
                worker.close()
                break
            started.append(worker)
        with self.lock:
            self.workers.setdefault(key, []).extend(started)
        return started

    def close_all(self) -> None:
        with self.lock:
            workers = [w for spares in self.workers.values() for w in spares]
            self.workers = {}
        for worker in workers:
            worker.close()


def spare_key(config: EvalConfig, env: dict[str, str], network: bool, writes: bool) -> str:
    """What a spare worker must share with an evaluation to serve it: how it was started."""
    parts = [repr(config), repr(sorted(env.items())), str(network), str(writes)]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


KEPT = KeptWorkers()
SPARES = SpareWorkers()
atexit.register(KEPT.close_all)
atexit.register(SPARES.close_all)


def release_workers() -> None:
    """Close every kept baseline worker and spare worker of this process (a batch between two problems: a
    worker of one problem's evaluations serves no other, and holds device memory)."""
    KEPT.close_all()
    SPARES.close_all()
