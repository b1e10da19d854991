"""benchmarks/scale.py (issue 22's 2-GPU record): the command lines it runs and how part records combine into
ratios against the targets."""

from __future__ import annotations

import argparse
from pathlib import Path

from tests.benchmarks import load_script


def _args(**kw: object) -> argparse.Namespace:
    base = {"part": "run", "executor": "local", "gpus": 1, "seed": 0, "task": "attention", "budget": "150s",
            "generations": 1000, "task_dir": Path("examples/problems"), "level": None, "max_evals": 12,
            "population": 4, "batch_size": 2}
    return argparse.Namespace(**{**base, **kw})


def test_command_lines() -> None:
    scale = load_script("scale")
    run = scale.command(_args())
    assert run[1:] == ["-m", "evoforge.cli", "run", "--json", "--seed", "0", "--executor", "local",
                       "--task", "attention", "--budget", "150s", "--generations", "1000"]
    batch = scale.command(_args(part="batch", executor="ray", level=1))
    assert batch[batch.index("--executor"):] == [
        "--executor", "ray", "--address", "local", "--task-dir", "examples/problems", "--max-evals", "12",
        "--population", "4", "--batch-size", "2", "--level", "1"]


def test_combine_works_out_the_ratios_against_the_targets() -> None:
    scale = load_script("scale")
    parts = [
        {"part": "run", "executor": "local", "gpus": 1, "evals_per_min": 30.0, "device": {"device_name": "H200"}},
        {"part": "run", "executor": "local", "gpus": 2, "evals_per_min": 58.5},
        {"part": "batch", "executor": "local", "gpus": 1, "wall_s": 400.0, "evaluated": 48},
        {"part": "batch", "executor": "local", "gpus": 2, "wall_s": 240.0, "evaluated": 48},
        {"part": "run", "executor": "ray", "gpus": 1, "skipped": "ray is not importable here"},
    ]
    final = scale.combine(parts)
    assert final["device"] == {"device_name": "H200"}
    assert final["ratios"]["run_local"]["speedup"] == 1.95 and final["ratios"]["run_local"]["met"]
    assert final["ratios"]["batch_local"]["time_ratio"] == 0.6 and not final["ratios"]["batch_local"]["met"]
    assert "run_ray" not in final["ratios"] and len(final["parts"]) == 5


def test_a_batch_with_problems_at_once_has_its_own_ratio_over_the_plain_1_gpu_batch() -> None:
    scale = load_script("scale")
    cmd = scale.command(_args(part="batch", gpus=2, problems_at_once=True))
    assert cmd[cmd.index("--problems-at-once"):cmd.index("--problems-at-once") + 2] == ["--problems-at-once", "2"]
    assert "--problems-at-once" not in scale.command(_args(part="batch", gpus=2))
    parts = [
        {"part": "batch", "executor": "local", "gpus": 1, "wall_s": 400.0, "evaluated": 48},
        {"part": "batch", "executor": "local", "gpus": 2, "wall_s": 240.0, "evaluated": 48},
        {"part": "batch", "executor": "local", "gpus": 2, "wall_s": 210.0, "evaluated": 48, "problems_at_once": True},
    ]
    ratios = scale.combine(parts)["ratios"]
    assert ratios["batch_local"]["time_ratio"] == 0.6 and not ratios["batch_local"]["met"]
    assert ratios["batch_local_at_once"]["time_ratio"] == 0.525 and ratios["batch_local_at_once"]["met"]
    assert ratios["batch_local_at_once"]["wall_s_1gpu"] == 400.0


def test_ray_is_recorded_as_skipped_where_it_cannot_be_imported(monkeypatch: object) -> None:
    scale = load_script("scale")
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(scale.importlib.util, "find_spec",  # type: ignore[attr-defined]
                        lambda name, *a: None if name == "ray" else real(name, *a))
    record = scale.measure(_args(executor="ray"))
    assert record["skipped"].startswith("ray is not importable")
