"""benchmarks/export_overhead.py runs end to end on a CPU (Triton's interpreter, a tiny shape): every row is
timed, the guarded call runs the kernel, and the record says what was measured where."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evoforge.kernels.flash_attention import FlashGenome
from tests.benchmarks import load_script
from tests.conftest import triton_device

pytest.importorskip("triton")


def test_export_overhead_records_every_row(tmp_path: Path) -> None:
    script = load_script("export_overhead")
    device = triton_device()
    genome = FlashGenome(block_m=16, block_n=16, num_warps=1, num_stages=1)
    out = tmp_path / "overhead.json"
    assert script.main(["--device", str(device), "--shape", "1,2,32,16", "--genome", json.dumps(genome.to_dict()),
                        "--calls", "2", "--reps", "2", "--table", "3", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert set(record["rows"]) == {"sdpa", "kernel_bare", "guarded", "guarded_table", "routed_use"}
    assert all(row["back_to_back_us"] > 0 and row["synced_us"] > 0 for row in record["rows"].values())
    assert record["table_entries"] == 3 and record["shape"]["seq_len"] == 32
    assert set(record["guard_us"]) == {"back_to_back_us", "synced_us"}
