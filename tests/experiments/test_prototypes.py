"""The prototype kernels of experiments/prototypes.py compute attention correctly (CPU, Triton's
interpreter, tiny shapes, causal and not): their recorded GPU timings are of correct kernels."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "prototypes.py"


@pytest.mark.parametrize("kernel", ["kq", "split3d", "tma-host"])
def test_prototype_matches_sdpa(kernel: str) -> None:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--kernel", kernel, "--check"], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    checked = [line for line in proc.stdout.splitlines() if line.startswith(kernel)]
    assert len(checked) >= 6, proc.stdout  # causal and not, two configurations each
    assert all("max abs err" in line for line in checked)
