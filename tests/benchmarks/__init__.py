"""Tests of the benchmark scripts' CPU-checkable parts."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load_from(folder: Path, name: str, prefix: str) -> ModuleType:
    """``folder``/<name>.py as a fresh module (the scripts are not a package). Run as a script, one finds
    its siblings (evaluate_sources) on sys.path; so it does here."""
    if str(folder) not in sys.path:
        sys.path.append(str(folder))
    spec = importlib.util.spec_from_file_location(f"{prefix}_{name}_under_test", folder / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_script(name: str) -> ModuleType:
    """benchmarks/<name>.py as a fresh module."""
    return load_from(BENCHMARKS, name, "bench")
