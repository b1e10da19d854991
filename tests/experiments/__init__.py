"""Tests of the experiment scripts' CPU-checkable parts (experiments/: one-off measurements whose conclusions
experiments/README.md keeps; these tests guard that their recorded GPU timings were of correct kernels)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from tests.benchmarks import load_from

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


def load_script(name: str) -> ModuleType:
    """experiments/<name>.py as a fresh module (its siblings, such as evaluate_sources, on sys.path)."""
    return load_from(EXPERIMENTS, name, "experiment")
