"""What the guarded export costs a user's eager call (issue 21): the same evolved kernel called bare, through the
export's attention() (checks remembered per layout, alignment checked per call), through a dispatch table of
several entries, through `evoforge.use` (F.scaled_dot_product_attention routed), and SDPA itself.

Each row is measured two ways, in one process, after a warm-up:
- ``back_to_back_us``: the mean time per call of ``--calls`` calls issued back to back with one synchronisation
  at the end (the GPU queue stays full: the host's issue rate, which is what the guard adds to);
- ``synced_us``: the median of ``--reps`` single calls, each followed by a synchronisation (launch latency and
  kernel time included; what an eager call costs a step that waits for it).
``guard_us`` = the guarded row minus the bare kernel's, per measure.

The kernel is ``--kernel`` (a module exported by `evoforge best RUN --export`, run on the GPU it was verified on),
or else the template's Triton kernel for ``--genome`` rendered for ``--shape`` and exported as if verified on this
device. Writes JSON to ``--out`` (or prints it).

Usage (GPU): python benchmarks/export_overhead.py --out benchmarks/results/export-overhead-h200.json
CPU check:   TRITON_INTERPRET=1 python benchmarks/export_overhead.py --device cpu --shape 1,2,32,16 --calls 3 --reps 3
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import torch.nn.functional as F

import evoforge
from evoforge import envinfo
from evoforge.candidate import Candidate
from evoforge.export import load, render_table
from evoforge.kernels.flash_attention import FlashGenome, render

DEFAULT_GENOME = FlashGenome(block_m=64, block_n=128, num_stages=3, loop="tl.range")


def synthetic_export(genome: FlashGenome, shape: tuple[int, int, int, int], device: torch.device, folder: Path,
                     entries: int = 1) -> Path:
    """The template kernel for ``genome`` as an export verified on ``shape`` on this device; with ``entries`` > 1,
    a table of that many entries (the same kernel, verified at ``entries`` sequence lengths, the last being
    ``shape``'s), so that a call selects among them as a model's table does."""
    b, h, s, d = shape
    info = envinfo.collect(device)
    cand = Candidate(name="export_overhead", source=render(genome, causal=False, head_dim=d), genome=genome.to_dict(),
                     language="triton")
    table = []
    for n in range(entries):
        seq = max(1, s >> (entries - 1 - n))
        params = {"family": "attention", "batch": b, "heads": h, "kv_heads": h, "seq_len": seq, "q_len": None,
                  "head_dim": d, "causal": False, "dtype": "fp16"}
        data = {"task": {"name": f"attention_s{seq}", "params": params}, "run": {"id": f"overhead-{n}"},
                "device": {"device_type": device.type, "device_name": info.get("device_name", "?"),
                           "capability": info.get("capability")}}
        table.append((cand, {"fitness": None}, data))
    path = folder / f"export_{entries}.py"
    path.write_text(render_table(table, f'"""export_overhead: {entries} entries"""'))
    return path


def back_to_back_us(fn: Callable[[], Any], calls: int, sync: Callable[[], None]) -> float:
    for _ in range(min(calls, 20)):
        fn()
    sync()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    sync()
    return (time.perf_counter() - start) / calls * 1e6


def synced_us(fn: Callable[[], Any], reps: int, sync: Callable[[], None]) -> float:
    times = []
    for _ in range(reps):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e6)
    return statistics.median(times)


def measure(kernel: ModuleType, table: ModuleType | None, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
            calls: int, reps: int) -> dict[str, Any]:
    device = q.device

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for module in (kernel, table):
        if module is not None:
            reason = module.check(q, k, v)
            if reason is not None:
                raise SystemExit(f"export_overhead: the kernel does not cover the call ({reason})")
    bare = kernel._model(0)
    rows: dict[str, Callable[[], Any]] = {
        "sdpa": lambda: F.scaled_dot_product_attention(q, k, v),
        "kernel_bare": lambda: bare(q, k, v),
        "guarded": lambda: kernel.attention(q, k, v),
    }
    if table is not None:
        rows["guarded_table"] = lambda: table.attention(q, k, v)
    out: dict[str, Any] = {}
    for name, fn in rows.items():
        out[name] = {"back_to_back_us": back_to_back_us(fn, calls, sync), "synced_us": synced_us(fn, reps, sync)}
    with evoforge.use(kernel):
        routed = {"back_to_back_us": back_to_back_us(lambda: F.scaled_dot_product_attention(q, k, v), calls, sync),
                  "synced_us": synced_us(lambda: F.scaled_dot_product_attention(q, k, v), reps, sync)}
    out["routed_use"] = routed
    kernel.reset_stats()
    kernel.attention(q, k, v)
    if kernel.stats()["kernel"] != 1:
        raise SystemExit(f"export_overhead: the guarded call did not run the kernel ({kernel.stats()})")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernel", type=Path, help="an exported module (default: the template kernel, rendered)")
    parser.add_argument("--genome", default=json.dumps(DEFAULT_GENOME.to_dict()))
    parser.add_argument("--shape", default="1,8,512,64", help="batch,heads,seq_len,head_dim (fp16, not causal)")
    parser.add_argument("--table", type=int, default=4, help="entries of the table row (0: no table row)")
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--reps", type=int, default=500)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("export_overhead: no CUDA device here (--device cpu runs it under TRITON_INTERPRET=1)", file=sys.stderr)
        return 2
    b, h, s, d = (int(x) for x in args.shape.split(","))
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(b, h, s, d, generator=gen).half().to(device) for _ in range(3))
    folder = Path(tempfile.mkdtemp(prefix="export-overhead-"))
    genome = FlashGenome.from_dict(json.loads(args.genome))
    kernel = load(args.kernel) if args.kernel else load(synthetic_export(genome, (b, h, s, d), device, folder))
    table = load(synthetic_export(genome, (b, h, s, d), device, folder, args.table)) if args.table > 1 else None
    rows = measure(kernel, table, q, k, v, args.calls, args.reps)
    record = {
        "what": "host and launch cost of the guarded export per eager call (benchmarks/export_overhead.py)",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": envinfo.collect(device),
        "kernel": str(args.kernel) if args.kernel else {"genome": genome.to_dict()},
        "shape": {"batch": b, "heads": h, "seq_len": s, "head_dim": d, "dtype": "float16", "causal": False},
        "table_entries": args.table if table is not None else None,
        "calls": args.calls, "reps": args.reps,
        "rows": rows,
        "guard_us": {m: rows["guarded"][m] - rows["kernel_bare"][m] for m in ("back_to_back_us", "synced_us")},
    }
    text = json.dumps(record, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    for name, row in rows.items():
        print(f"{name:14} {row['back_to_back_us']:9.2f} us/call back to back {row['synced_us']:9.2f} us synced",
              file=sys.stderr)
    if not args.out:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
