"""Where evoforge keeps build artefacts that outlive one worker: named here, and only here.

The sandbox may whitelist exactly these directories for writes. Everything lives under
:func:`cache_root`: ``$EVOFORGE_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/evoforge``, else
``~/.cache/evoforge``.

- :func:`bytecode_root` — where workers find Python bytecode when the environment forbids writing it
  next to the sources (``PYTHONDONTWRITEBYTECODE``): see :func:`worker_bytecode_env`. Only a trusted
  process that imports no candidate code writes there (:func:`warm_bytecode`); for sandboxed workers it
  is read-only.
- :func:`extension_build_dir` — the build directory of one C++/CUDA candidate
  (``torch.utils.cpp_extension.load_inline``), keyed by the candidate's content hash, so a second
  evaluation of the same source, in any later worker, finds its objects and does not recompile.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

CACHE_ENV = "EVOFORGE_CACHE_DIR"
EXTENSIONS_SUBDIR = "torch_extensions"
BYTECODE_SUBDIR = "pycache"
BYTECODE_ENV = "EVOFORGE_BYTECODE_CACHE"  # "0": leave a PYTHONDONTWRITEBYTECODE environment as it is


def cache_root(env: Mapping[str, str] | None = None) -> Path:
    """evoforge's cache directory as seen with environment ``env`` (default: this process's)."""
    env = os.environ if env is None else env
    explicit = env.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    xdg = env.get("XDG_CACHE_HOME")
    home = Path(env["HOME"]) if env.get("HOME") else Path.home()
    base = Path(xdg).expanduser() if xdg else home / ".cache"
    return base / "evoforge"


def extensions_root(env: Mapping[str, str] | None = None) -> Path:
    """The parent of every candidate's extension build directory (what a sandbox lets workers write)."""
    return cache_root(env) / EXTENSIONS_SUBDIR


def bytecode_root(env: Mapping[str, str] | None = None) -> Path:
    """The PYTHONPYCACHEPREFIX of workers that would otherwise compile every module they import."""
    return cache_root(env) / BYTECODE_SUBDIR


def worker_bytecode_env(env: dict[str, str], ships_bytecode: bool | None = None) -> None:
    """Let evaluator workers reuse the bytecode of what they import (torch, Triton, Inductor).

    Every worker is a fresh process. Where the environment sets ``PYTHONDONTWRITEBYTECODE`` (common in
    containers) and torch was installed without bytecode, each worker compiles every module it imports
    again: 7.6 s of a 31 s worker on the H100 machine. Such a worker instead reads bytecode under
    :func:`bytecode_root` (``PYTHONPYCACHEPREFIX``), which :func:`warm_bytecode` fills, and still writes
    none (``PYTHONDONTWRITEBYTECODE`` stays). Left alone: an environment without
    ``PYTHONDONTWRITEBYTECODE``, one that already names a ``PYTHONPYCACHEPREFIX``, a torch with its
    bytecode beside it (``ships_bytecode``; None: look), and ``EVOFORGE_BYTECODE_CACHE=0``. Candidate
    sources are compiled in memory and never cached."""
    prefix, _ = _bytecode_plan(env, ships_bytecode)
    if prefix is not None:
        env["PYTHONPYCACHEPREFIX"] = str(prefix)


def _bytecode_plan(env: Mapping[str, str], ships_bytecode: bool | None) -> tuple[Path | None, str]:
    """The prefix evoforge gives workers started from ``env`` (None: their environment stays as it
    is), and where their bytecode comes from, in words."""
    if env.get(BYTECODE_ENV, "").strip() == "0":
        return None, f"compiled by every worker ({BYTECODE_ENV}=0)"
    if not env.get("PYTHONDONTWRITEBYTECODE"):
        return None, "written beside the sources and reused (PYTHONDONTWRITEBYTECODE is not set)"
    if env.get("PYTHONPYCACHEPREFIX"):
        return None, f"read from your PYTHONPYCACHEPREFIX ({env['PYTHONPYCACHEPREFIX']})"
    if _torch_ships_bytecode() if ships_bytecode is None else ships_bytecode:
        return None, "read from beside the sources (torch ships its bytecode)"
    root = bytecode_root(env)
    return root, f"read from {root}"


# What an evaluator worker imports, its lazy imports included (Inductor for the torch.compile baselines,
# Triton's compiler for Triton candidates, torch's extension builder for C++/CUDA ones).
WARM_MODULES = ("evoforge.evaluator.worker", "evoforge.tasks.attention", "numpy", "torch", "torch._dynamo",
                "torch._dynamo.backends.inductor", "torch._inductor.compile_fx", "torch._inductor.codegen.triton",
                "torch._inductor.codegen.cpp", "torch.nn.attention.flex_attention", "torch.utils.cpp_extension",
                "triton", "triton.compiler")


_WARM_FAILED: set[str] = set()  # markers whose fill failed in this process


def warm_bytecode(env: Mapping[str, str], announce: Callable[[str], None] | None = None,
                  timeout_s: float = 600.0) -> bool:
    """Fill the workers' bytecode cache once per Python, package versions and module list.

    A trusted process (it runs no candidate code and no sandbox) imports :data:`WARM_MODULES` with the
    workers' ``PYTHONPYCACHEPREFIX``, writing bytecode there; workers keep ``PYTHONDONTWRITEBYTECODE``
    and only read it, and their sandbox does not let them write there, so a candidate can't plant
    bytecode that a later worker runs. Returns whether the cache is warm. Does nothing (False) unless
    ``env`` is a worker environment that :func:`worker_bytecode_env` pointed at :func:`bytecode_root`;
    a fill that failed is not tried again by this process (its workers then compile, as before)."""
    prefix = env.get("PYTHONPYCACHEPREFIX")
    if not prefix or Path(prefix) != bytecode_root(env):
        return False
    root = Path(prefix)
    marker = _warm_marker(root)
    if marker.exists():
        return True
    if str(marker) in _WARM_FAILED:
        return False
    if _fill_bytecode(env, root, marker, announce, timeout_s):
        return True
    _WARM_FAILED.add(str(marker))
    return False


def _fill_bytecode(env: Mapping[str, str], root: Path, marker: Path, announce: Callable[[str], None] | None,
                   timeout_s: float) -> bool:
    script = ("import importlib\n"
              f"for name in {WARM_MODULES!r}:\n"
              "    try:\n"
              "        importlib.import_module(name)\n"
              "    except Exception:\n"
              "        pass\n")
    writer = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    try:
        root.mkdir(parents=True, exist_ok=True)
        with open(root / ".warm.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one fill at a time; the others find its marker
            if marker.exists():
                return True
            if announce is not None:
                announce("filling the workers' bytecode cache (once per Python, torch and Triton version)")
            done = subprocess.run([sys.executable, "-c", script], env=writer, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout_s,
                                  check=False)
            if done.returncode != 0:
                return False
            marker.touch()
            return True
    except (OSError, subprocess.TimeoutExpired):
        return False


def bytecode_status(env: Mapping[str, str] | None = None, ships_bytecode: bool | None = None) -> str:
    """One line for ``evoforge doctor``: how evaluator workers started from ``env`` get their bytecode."""
    prefix, where = _bytecode_plan(os.environ if env is None else env, ships_bytecode)
    if prefix is None:
        return where
    return where + (" (filled)" if _warm_marker(prefix).exists() else " (filled before the first worker starts)")


def _warm_marker(root: Path) -> Path:
    """The file that says ``root`` holds the bytecode of this interpreter, these package versions and
    :data:`WARM_MODULES`."""
    return root / f".warm-{_warm_key(WARM_MODULES)}"


@functools.cache
def _warm_key(modules: tuple[str, ...]) -> str:
    """What the cached bytecode depends on: the interpreter, the packages' versions, the module list
    (looked up once per process and module list: every worker start asks)."""
    from importlib import metadata

    versions = []
    for dist in ("torch", "triton", "numpy", "evoforge"):
        try:
            versions.append(f"{dist}={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{dist}=-")
    text = "|".join([sys.version, sys.executable, str(Path(__file__).resolve().parent), *versions, *modules])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _torch_ships_bytecode() -> bool:
    """Whether torch's __init__ has its compiled bytecode beside it (found without importing torch)."""
    try:
        spec = importlib.util.find_spec("torch")
        origin = spec.origin if spec is not None else None
        return origin is None or Path(importlib.util.cache_from_source(origin)).exists()
    except (ImportError, ValueError, NotImplementedError):
        return True


def extension_build_dir(content_hash: str, create: bool = True) -> Path:
    """Build directory for the C++/CUDA extensions of the candidate whose source hashes to ``content_hash``."""
    if not content_hash or not all(c.isalnum() for c in content_hash):
        raise ValueError(f"not a content hash: {content_hash!r}")
    path = extensions_root() / content_hash
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def clear_stale_locks(build_dir: Path, older_than_s: float) -> list[Path]:
    """Remove build lock files older than ``older_than_s``: torch's extension builder takes a file lock
    in each extension's directory and waits forever on one left by a worker killed mid-compile."""
    removed = []
    now = time.time()
    for lock in build_dir.glob("*/lock"):
        try:
            if now - lock.stat().st_mtime > older_than_s:
                lock.unlink()
                removed.append(lock)
        except OSError:
            continue
    return removed
