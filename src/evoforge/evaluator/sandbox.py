"""How much a worker is isolated from the machine, by ``--sandbox``:

- ``none``: crash isolation and resource limits only (time, memory, CPU time, file size, open files,
  processes); the worker inherits the full environment and candidates skip the static pre-check
  and the runtime audit hook;
- ``basic`` (default): plus a scrubbed environment (no API keys, tokens, passwords, cloud
  credentials), the static pre-check, the audit hook (guards.py), and, where the OS allows them:
  a network namespace of its own (no network, not even loopback; root or CAP_SYS_ADMIN) and a
  Landlock domain (writes only beneath the scratch directory, /dev, /proc and the compiler caches; no TCP
  on ABI >= 4; no signals to outside processes on ABI >= 6);
- ``strict``: as ``basic``, but refuses to evaluate when the network namespace or the write
  restriction is unavailable.

The process cap (a pids cgroup where one can be made, else a watchdog in the driver that counts the
worker's descendants) applies in every mode.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import functools
import getpass
import itertools
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from evoforge.cache import extensions_root

SANDBOXES = ("none", "basic", "strict")
CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1

# What counts as a secret, by environment variable name: kept out of workers' environments, and
# reading one is what the static pre-check rejects.
SECRET_NAME = re.compile(r"API_KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|_KEY$|^AWS_|^GH_|^GITHUB_TOKEN",
                         re.IGNORECASE)

def redactor(environ: Mapping[str, str]) -> Callable[[str], str]:
    """A function that blanks the values of the secrets in ``environ`` (as :data:`SECRET_NAME`
    defines them), plain, reversed, hex or base64, out of a text. Results' logs and details go to
    the store and, through the LLM mutator, to a model provider: a worker that found a key anyway
    (``/proc/<pid>/environ`` of a process of the same user) must not get it out that way. A speed
    bump, not a wall: any other encoding passes."""
    forms: set[str] = set()
    for name, value in environ.items():
        if SECRET_NAME.search(name) and len(value) >= 8:
            raw = value.encode()
            forms.update({value, value[::-1], raw.hex(), base64.b64encode(raw).decode().rstrip("="),
                          base64.urlsafe_b64encode(raw).decode().rstrip("=")})
    pattern = re.compile("|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True))) if forms else None

    def redact(text: str) -> str:
        return pattern.sub("[redacted]", text) if pattern is not None and text else text

    return redact


_PROBE = (
    "import ctypes, sys\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    f"sys.exit(0 if libc.unshare({CLONE_NEWNET}) == 0 else ctypes.get_errno() or 1)\n"
)


@functools.cache
def network_isolation_unavailable() -> str | None:
    """None when a worker can have a network namespace of its own here, else the reason it can't."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    try:
        prctl = prctl_entry()
        probe = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, timeout=30, check=False,
                               preexec_fn=(lambda: prctl(PR_SET_PDEATHSIG, 9)) if prctl else None)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"could not probe unshare(CLONE_NEWNET): {exc}"
    if probe.returncode == 0:
        return None
    return f"unshare(CLONE_NEWNET) failed (errno {probe.returncode}); run as root or with CAP_SYS_ADMIN"


def _libc_function(name: str) -> Callable[..., int] | None:
    """A libc function, looked up in the parent so a child between fork and exec only calls it."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None


def netns_entry() -> Callable[..., int] | None:
    return _libc_function("unshare")


def prctl_entry() -> Callable[..., int] | None:
    return _libc_function("prctl")


# -------------------------------------------------------------------- writes: Landlock
# Landlock (Linux >= 5.13) lets an unprivileged process give up rights for itself and its children,
# and binds root too. Workers give up every way of writing the filesystem except beneath an allow-list
# (the scratch directory, /dev, the compiler caches); with ABI >= 4 also TCP bind/connect, and with
# ABI >= 6 signals to processes outside the worker (the driver). Reads are not restricted.
_SYS_LANDLOCK_CREATE_RULESET, _SYS_LANDLOCK_ADD_RULE, _SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446
_LANDLOCK_CREATE_RULESET_VERSION = 1
_LANDLOCK_RULE_PATH_BENEATH = 1
PR_SET_NO_NEW_PRIVS = 38
_FS_WRITE_FILE, _FS_TRUNCATE = 1 << 1, 1 << 14
_FS_WRITE_V1 = (1 << 1) | (1 << 4) | (1 << 5) | sum(1 << bit for bit in range(6, 13))  # write, remove, make *
_FS_REFER = 1 << 13  # ABI 2: renames and links across directories
_NET_TCP = (1 << 0) | (1 << 1)  # ABI 4: bind, connect
_SCOPE_SIGNAL = 1 << 1  # ABI 6
WRITABLE_ENV = "EVOFORGE_SANDBOX_WRITABLE"  # extra writable paths for workers, os.pathsep-separated


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _syscall() -> Callable[..., int] | None:
    function = _libc_function("syscall")
    if function is not None:
        function.restype = ctypes.c_long
    return function


@functools.cache
def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 where there is none (not Linux, too old, disabled)."""
    syscall = _syscall()
    if syscall is None:
        return 0
    version = syscall(ctypes.c_long(_SYS_LANDLOCK_CREATE_RULESET), None, ctypes.c_long(0),
                      ctypes.c_long(_LANDLOCK_CREATE_RULESET_VERSION))
    return max(int(version), 0)


def _write_access(abi: int) -> int:
    return _FS_WRITE_V1 | (_FS_REFER if abi >= 2 else 0) | (_FS_TRUNCATE if abi >= 3 else 0)


def landlock_ruleset(writable: list[Path]) -> int:
    """A Landlock ruleset (a file descriptor) that allows writes beneath ``writable`` only. Raises
    OSError where Landlock is unavailable. The worker applies it with :func:`landlock_restrict`."""
    abi = landlock_abi()
    syscall = _syscall()
    if abi < 1 or syscall is None:
        raise OSError("Landlock is unavailable (Linux >= 5.13 with Landlock enabled)")
    write = _write_access(abi)
    attr = _RulesetAttr(write, _NET_TCP if abi >= 4 else 0, _SCOPE_SIGNAL if abi >= 6 else 0)
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    fd = int(syscall(ctypes.c_long(_SYS_LANDLOCK_CREATE_RULESET), ctypes.byref(attr), ctypes.c_long(size),
                     ctypes.c_long(0)))
    if fd < 0:
        raise OSError(ctypes.get_errno(), f"landlock_create_ruleset: {os.strerror(ctypes.get_errno())}")
    try:
        for path in writable:
            try:
                target = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue  # a path that doesn't exist needs no rule
            try:
                allowed = write if os.path.isdir(path) else write & (_FS_WRITE_FILE | _FS_TRUNCATE)
                rule = _PathBeneathAttr(allowed, target)
                if syscall(ctypes.c_long(_SYS_LANDLOCK_ADD_RULE), ctypes.c_long(fd),
                           ctypes.c_long(_LANDLOCK_RULE_PATH_BENEATH), ctypes.byref(rule), ctypes.c_long(0)) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"landlock_add_rule({path}): {os.strerror(err)}")
            finally:
                os.close(target)
    except BaseException:
        os.close(fd)
        raise
    return fd


def landlock_restrict() -> Callable[[int], bool]:
    """A function for the child between fork and exec: enter the ruleset ``fd``; True on success."""
    syscall, prctl = _syscall(), prctl_entry()

    def restrict(fd: int) -> bool:
        if syscall is None or prctl is None or prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            return False
        return syscall(ctypes.c_long(_SYS_LANDLOCK_RESTRICT_SELF), ctypes.c_long(fd), ctypes.c_long(0)) == 0

    return restrict


@functools.cache
def write_restriction_unavailable() -> str | None:
    """None when workers' writes can be confined (Landlock), else the reason they can't."""
    if not sys.platform.startswith("linux"):
        return "Landlock needs Linux"
    try:
        os.close(landlock_ruleset([Path(tempfile.gettempdir())]))
    except OSError as exc:
        return str(exc)
    return None


def landlock_extras() -> list[str]:
    """What a worker's Landlock domain confines besides writes, on this kernel."""
    abi = landlock_abi()
    return (["TCP bind/connect"] if abi >= 4 else []) + (["signals to other processes"] if abi >= 6 else [])


def worker_writable(workdir: Path, env: dict[str, str]) -> list[Path]:
    """Where a worker may write: its scratch directory (also its TMPDIR), /dev (GPU device files,
    /dev/shm, /dev/null), /proc (the CUDA driver needs it) and the compiler caches that must outlive
    it (Triton, TorchInductor, torch extensions, the CUDA JIT cache), created here if missing; plus
    whatever EVOFORGE_SANDBOX_WRITABLE lists. ``env`` is the worker's environment: cache locations
    are read from it and pinned in it."""
    home = Path(env.get("HOME") or os.path.expanduser("~"))
    try:
        user = re.sub(r"[\\/:*?\"<>|]", "_", getpass.getuser())  # as torch names its default
    except (KeyError, OSError):  # a uid with no passwd entry (some containers)
        user = str(os.getuid())
    caches = {
        "TRITON_CACHE_DIR": Path(env.get("TRITON_HOME") or home) / ".triton",
        # Inductor's default is under the temp dir, which for a worker is its scratch: pin the driver's.
        "TORCHINDUCTOR_CACHE_DIR": Path(tempfile.gettempdir()) / f"torchinductor_{user}",
        "TORCH_EXTENSIONS_DIR": Path(env.get("XDG_CACHE_HOME") or home / ".cache") / "torch_extensions",
        "CUDA_CACHE_PATH": home / ".nv" / "ComputeCache",
    }
    # /proc too: the CUDA driver writes there while it initialises (naming its threads through
    # /proc/self/task/<tid>/comm, it seems); without it cudaGetDeviceCount fails with error 304
    # ("OS call failed") - measured on the H100 machine, where every narrower allow-list failed.
    paths = [workdir, Path("/dev"), Path("/dev/shm"), Path("/proc")]
    for name, default in caches.items():
        path = Path(env[name]) if env.get(name) else default
        if name == "TORCHINDUCTOR_CACHE_DIR":
            env[name] = str(path)
        with contextlib.suppress(OSError):
            path.mkdir(parents=True, exist_ok=True)
        paths.append(path)
    paths.append(Path(env.get("TORCH_HOME") or Path(env.get("XDG_CACHE_HOME") or home / ".cache") / "torch"))
    # C++/CUDA candidates build in evoforge's own cache, one directory per content hash (evoforge.cache)
    build_root = extensions_root(env)
    with contextlib.suppress(OSError):
        build_root.mkdir(parents=True, exist_ok=True)
    paths.append(build_root)
    paths += [Path(p) for p in os.environ.get(WRITABLE_ENV, "").split(os.pathsep) if p.strip()]
    return paths


# -------------------------------------------------------------------- processes: a pids cgroup
class ProcessCap:
    """A pids cgroup (v2, or v1's pids controller) holding one worker and all its descendants:
    ``limit`` tasks (processes + threads) at most, and all of them killed at once at the end.
    Root is not bound by RLIMIT_NPROC; a cgroup binds everyone. :meth:`create` returns None where
    no pids cgroup can be made (not root, no delegation): the driver then counts descendants."""

    def __init__(self, path: Path, limit: int) -> None:
        self.path = path
        self.limit = limit
        self.procs_fd = os.open(path / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)

    @classmethod
    def create(cls, limit: int) -> ProcessCap | None:
        for parent in _pids_cgroup_parents():
            path = parent / f"evoforge-{os.getpid()}-{next(_cgroup_serial)}"
            try:
                path.mkdir()
            except OSError:
                continue
            try:
                (path / "pids.max").write_text(str(limit))
                return cls(path, limit)
            except OSError:
                with contextlib.suppress(OSError):
                    path.rmdir()
        return None

    def join(self) -> None:
        """In the child between fork and exec: move this process into the cgroup."""
        os.write(self.procs_fd, str(os.getpid()).encode())

    def tasks(self) -> int:
        try:
            return int((self.path / "pids.current").read_text())
        except (OSError, ValueError):
            return 0

    def hit_limit(self) -> bool:
        """Whether a fork was refused for the limit, or the limit is reached."""
        try:
            for line in (self.path / "pids.events").read_text().splitlines():
                if line.startswith("max ") and int(line.split()[1]) > 0:
                    return True
        except (OSError, ValueError, IndexError):
            pass
        return self.tasks() >= self.limit

    def kill_all(self) -> None:
        with contextlib.suppress(OSError):
            (self.path / "cgroup.kill").write_text("1")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                pids = [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
            except (OSError, ValueError):
                return
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)

    def close(self) -> None:
        self.kill_all()
        os.close(self.procs_fd)
        for _ in range(100):  # the last tasks leave the cgroup a moment after they die
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.02)


_cgroup_serial = itertools.count()


def _pids_cgroup_parents() -> list[Path]:
    """Cgroup directories, this process's own, under which a pids-limited child can be made."""
    parents = []
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return []
    mounts = {}
    try:
        for line in Path("/proc/self/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) > 3 and fields[2] in ("cgroup", "cgroup2"):
                mounts[fields[1]] = (fields[2], fields[3].split(","))
    except OSError:
        return []
    for line in lines:
        hierarchy, controllers, own = line.split(":", 2)
        for mount, (kind, options) in mounts.items():
            if kind == "cgroup" and "pids" in controllers.split(",") and "pids" in options:
                parents.append(Path(mount) / own.lstrip("/"))
            elif kind == "cgroup2" and hierarchy == "0":
                base = Path(mount) / own.lstrip("/")
                try:
                    if "pids" in (base / "cgroup.subtree_control").read_text().split():
                        parents.append(base)
                except OSError:
                    pass
    return parents


@functools.cache
def process_cap_unavailable() -> str | None:
    """None when workers can be put in a pids cgroup here, else why not."""
    cap = ProcessCap.create(64)
    if cap is None:
        return "no writable pids cgroup (needs root and a pids controller, v1 or delegated v2)"
    cap.close()
    return None


@dataclass
class ProcessTable:
    """One scan of /proc: each process's parent, thread count and resident memory."""

    children: dict[int, list[int]]
    threads: dict[int, int]
    rss_bytes: dict[int, int]

    @classmethod
    def scan(cls) -> ProcessTable:
        table = cls({}, {}, {})
        try:
            entries = os.listdir("/proc")
        except OSError:
            return table
        page = os.sysconf("SC_PAGE_SIZE")
        for entry in entries:
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
                parent, threads, rss = int(fields[1]), int(fields[17]), int(fields[21]) * page
            except (OSError, IndexError, ValueError):
                continue
            pid = int(entry)
            table.children.setdefault(parent, []).append(pid)
            table.threads[pid] = threads
            table.rss_bytes[pid] = rss
        return table

    def below(self, *roots: int) -> dict[int, int]:
        """pid -> thread count for the ``roots`` and every process below them."""
        found: dict[int, int] = {}
        stack = [root for root in roots if root in self.threads]
        while stack:
            pid = stack.pop()
            if pid in found:
                continue
            found[pid] = self.threads[pid]
            stack.extend(self.children.get(pid, []))
        return found


def descendants(*roots: int) -> dict[int, int]:
    """pid -> thread count for the ``roots`` and every process below them, from one scan of /proc."""
    return ProcessTable.scan().below(*roots)


WORKER_TOKEN = "EVOFORGE_WORKER_TOKEN"  # in each worker's environment, unique to it


def carrying(token: str) -> set[int]:
    """Processes whose environment holds ``WORKER_TOKEN=token``: a worker's descendants that have
    not exec'd with a new environment, wherever they were re-parented."""
    needle = f"{WORKER_TOKEN}={token}".encode()
    found = set()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if needle in f.read():
                        found.add(int(entry))
            except OSError:
                continue
    return found


def become_subreaper() -> None:
    """Orphans of a worker's descendants are re-parented to this process instead of init, so
    :func:`descendants` still finds a process that escaped with setsid and a double fork."""
    prctl = prctl_entry()
    if prctl is not None:
        prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


PR_SET_CHILD_SUBREAPER = 36


def missing_layers() -> list[str]:
    """The sandbox layers this machine can't give a worker, each with the reason (empty: all of them).
    ``--sandbox basic`` runs without them and says so; ``--sandbox strict`` refuses."""
    missing = []
    if reason := network_isolation_unavailable():
        missing.append(f"network isolation ({reason})")
    if reason := write_restriction_unavailable():
        missing.append(f"write confinement ({reason})")
    if process_cap_unavailable():
        missing.append("a pids cgroup (processes are counted by a watchdog instead)")
    return missing
