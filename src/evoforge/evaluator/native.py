"""Building C++/CUDA candidates (``torch.utils.cpp_extension.load_inline``) inside a worker.

- ``cuda_toolkit()``: the CUDA toolkit's root (CUDA_HOME, CUDA_PATH, /usr/local/cuda or nvcc's), or None.
- ``prepare_extension_build(hash, timeout)``: points torch's extension builder at the candidate's own build
  directory under evoforge's cache (keyed by its content hash, so the same source reuses its objects); says
  whether CUDA sources can only be compiled here (a CPU build of torch with a toolkit), not run.
- ``compiler_errors`` and ``compiler_log``: a compiler's output cut down to its error lines, for a
  result's detail and logs.

Used by ``evaluator.worker`` when it loads a ``language="cuda"`` candidate; imports nothing of the package.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path


def cuda_toolkit() -> str | None:
    """A CUDA toolkit's root (the directory with bin/nvcc), or None."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(str(Path(nvcc).resolve().parents[1]))
    for root in candidates:
        if root and (Path(root) / "bin" / "nvcc").is_file():
            return root
    return None


def prepare_extension_build(content_hash: str, compile_timeout_s: float) -> bool:
    """Point torch's extension builder at this candidate's own build directory (keyed by its content
    hash, under evoforge's cache: a later worker evaluating the same source reuses the objects). On a
    CPU-only build of torch with a CUDA toolkit installed, CUDA sources are still compiled, so their
    compile errors are real ones; such a build can't link or run them. Returns whether that is the case
    (compile only)."""
    from torch.utils import cpp_extension

    from evoforge.cache import clear_stale_locks, extension_build_dir

    build = extension_build_dir(content_hash)
    clear_stale_locks(build, compile_timeout_s)
    os.environ["TORCH_EXTENSIONS_DIR"] = str(build)
    if getattr(cpp_extension, "CUDA_HOME", None) is None and (home := cuda_toolkit()):
        cpp_extension.CUDA_HOME = home
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "9.0")
        return True
    return False


_ERROR_LINE = re.compile(r"\berror\b|undefined reference|cannot find -l", re.IGNORECASE)


def compiler_errors(text: str, limit: int = 30) -> list[str]:
    """The compiler's error lines (ninja's and torch's own wrappers left out), in order."""
    found = []
    for line in text.splitlines():
        line = line.strip()
        if _ERROR_LINE.search(line) and not line.startswith(("Error building extension", "FAILED:", "ninja:")) \
                and " -c " not in line:
            found.append(line[:300])
    return found[:limit]


def compiler_log(text: str, limit: int = 12_000) -> str:
    """A compiler's output for the result's logs: the whole output when short, else its head and tail with
    how much was cut in between; then its error lines again, last, where a reader of the tail finds them."""
    text = text.strip()
    errors = compiler_errors(text)
    if len(text) > limit:
        head, tail = text[: limit * 2 // 3], text[-(limit // 3):]
        text = f"{head}\n[... {len(text) - len(head) - len(tail)} characters cut ...]\n{tail}"
    summary = ("\n\ncompiler errors:\n" + "\n".join(errors)) if errors else ""
    return "compiler output:\n" + text + summary
