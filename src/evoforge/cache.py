"""Where evoforge keeps build artefacts that outlive one worker: named here, and only here.

The sandbox may whitelist exactly these directories for writes. Everything lives under
:func:`cache_root`: ``$EVOFORGE_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/evoforge``, else
``~/.cache/evoforge``.

- :func:`extension_build_dir` — the build directory of one C++/CUDA candidate
  (``torch.utils.cpp_extension.load_inline``), keyed by the candidate's content hash, so a second
  evaluation of the same source, in any later worker, finds its objects and does not recompile.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path

CACHE_ENV = "EVOFORGE_CACHE_DIR"
EXTENSIONS_SUBDIR = "torch_extensions"


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
