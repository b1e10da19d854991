"""Tests of the experiment scripts' CPU-checkable parts (experiments/: one-off measurements whose conclusions
experiments/README.md keeps; these tests guard that their recorded GPU timings were of correct kernels)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


def load_script(name: str) -> ModuleType:
    """experiments/<name>.py as a fresh module (the scripts are not a package). Run as a script, one finds
    its siblings (evaluate_sources) on sys.path; so it does here."""
    if str(EXPERIMENTS) not in sys.path:
        sys.path.append(str(EXPERIMENTS))
    spec = importlib.util.spec_from_file_location(f"experiment_{name}_under_test", EXPERIMENTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
