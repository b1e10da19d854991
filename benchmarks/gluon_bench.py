"""Time the Gluon flash-attention family on an sm_90 GPU beside the Triton family and SDPA (issue 20).

For each shape (the seed's B1 H8 S512 D64 fp16, causal and not, and B2 H16 S4096 D128 fp16, causal and not)
it checks every entry against a float64 reference, then times it two ways: eagerly with
``triton.testing.do_bench`` (Python call path included) and as a CUDA graph of one call, replayed under
``do_bench`` (the device's time; what evoforge's search ranks on CUDA). Entries: a list of Gluon genomes, the
Triton family's generation-0 starters (the template mutator's ``starter_genomes()``, one set for every
shape: ``triton-starter-<i>``), SDPA (PyTorch's default dispatch) and FlashAttention-4 where it is installed
(``evoforge[fa4]``; its eager time includes its Python call path). A failing entry is recorded with
its error and the run goes on. Each Gluon genome runs in a process of its own (this script with the
internal ``--worker``): an illegal memory access poisons the CUDA context of the process that launched the
kernel, so a crash costs only that genome's later shapes, whose rows say so (status ``crashed`` on the shape
that crashed, ``not run`` after it). The loop without warp specialisation is measured too, though the search
is not offered it (``offered`` in each row; ``gluon_flash.PIPELINED_VERIFIED``). About three minutes on an
H200.

    python3 benchmarks/gluon_bench.py --out benchmarks/results/gluon-bench-h200.json
    python3 benchmarks/gluon_bench.py --shapes seed --genomes default,pipe-1x4-m64     # a subset
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import math
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

from evoforge.kernels import gluon_flash as gf  # noqa: E402
from evoforge.kernels.flash_attention import HardwareLimits  # noqa: E402
from evoforge.kernels.flash_attention import render as render_triton  # noqa: E402
from evoforge.mutators.template import TemplateMutator  # noqa: E402
from evoforge.task import import_source  # noqa: E402
from evoforge.tasks.attention import AttentionParams, fa4_variant, offers_fa4  # noqa: E402

GENOMES: dict[str, gf.GluonGenome] = {
    "default": gf.DEFAULTS[0],
    "ws-1x8-n128": gf.GluonGenome(block_n=128),
    "ws-1x8-s3": gf.GluonGenome(num_stages=3),
    "ws-1x8-tma-store": gf.GluonGenome(tma_store=True),
    "ws-2x4-m64": gf.GluonGenome(block_m=64, consumers=2, consumer_warps=4),
    "ws-2x4-m64-n128": gf.GluonGenome(block_m=64, consumers=2, consumer_warps=4, block_n=128),
    "ws-1x4-m64": gf.GluonGenome(block_m=64, consumer_warps=4),
    "ws-1x4-m128-n32": gf.GluonGenome(block_m=128, block_n=32, consumer_warps=4, num_stages=3),
    "pipe-1x4-m64": gf.GluonGenome(warp_spec=False, block_m=64, consumer_warps=4),
    "pipe-1x8-s3": gf.GluonGenome(warp_spec=False, num_stages=3),
    # The overlapped schedules (FA3's intra-warpgroup overlap; ping-pong between two consumers).
    "ov-1x8": gf.GluonGenome(schedule="overlap"),
    "ov-1x8-n128": gf.GluonGenome(block_n=128, schedule="overlap"),
    "ov-1x8-s3": gf.GluonGenome(num_stages=3, schedule="overlap"),
    "ov-1x4-m64": gf.GluonGenome(block_m=64, consumer_warps=4, schedule="overlap"),
    "ov-1x4-m64-n128": gf.GluonGenome(block_m=64, consumer_warps=4, block_n=128, schedule="overlap"),
    "ov-2x4-m64-n128": gf.GluonGenome(block_m=64, consumers=2, consumer_warps=4, block_n=128, schedule="overlap"),
    "pp-2x4-m64-n128": gf.GluonGenome(block_m=64, consumers=2, consumer_warps=4, block_n=128,
                                      schedule="pingpong"),
    "pp-2x4-m64": gf.GluonGenome(block_m=64, consumers=2, consumer_warps=4, schedule="pingpong"),
    # Generation 0's tile with a deeper ring, the TMA epilogue, a larger producer budget.
    "ws-2x4-m64-n128-s3": gf.GluonGenome(block_m=64, consumers=2, consumer_warps=4, block_n=128, num_stages=3),
    "ws-2x4-m64-n128-tma-store": gf.GluonGenome(block_m=64, consumers=2, consumer_warps=4, block_n=128,
                                                tma_store=True),
    "ws-2x4-m64-n128-p40": gf.GluonGenome(block_m=64, consumers=2, consumer_warps=4, block_n=128, producer_regs=40,
                                          consumer_regs=232),
    # Registers kept at the launch's (no setmaxnreg), so that ptxas keeps two overlapped consumers' wgmmas in flight.
    "ws-2x4-m64-kept": gf.GluonGenome(block_m=64, consumers=2, consumer_warps=4, realloc_regs=False),
    "ov-2x4-m64-kept": gf.GluonGenome(block_m=64, consumers=2, consumer_warps=4, schedule="overlap",
                                      realloc_regs=False),
    "pp-2x4-m64-kept": gf.GluonGenome(block_m=64, consumers=2, consumer_warps=4, schedule="pingpong",
                                      realloc_regs=False),
    "pp-2x4-m64-s3-kept": gf.GluonGenome(block_m=64, consumers=2, consumer_warps=4, schedule="pingpong",
                                         num_stages=3, realloc_regs=False),
    "ov-2x4-m64-n32-kept": gf.GluonGenome(block_m=64, consumers=2, consumer_warps=4, block_n=32, schedule="overlap",
                                          realloc_regs=False),
    # Worker warps that leave after their partition (flat_workers): FA3's tile, overlapped at 240 registers.
    "ov-2x4-m64-n128-flat": gf.GluonGenome(block_m=64, consumers=2, consumer_warps=4, block_n=128, schedule="overlap",
                                           tma_store=True, flat_workers=True),
    "ov-2x4-m64-n128-flat-regstore": gf.GluonGenome(block_m=64, consumers=2, consumer_warps=4, block_n=128,
                                                    schedule="overlap", flat_workers=True),
    "pp-2x4-m64-n128-flat": gf.GluonGenome(block_m=64, consumers=2, consumer_warps=4, block_n=128,
                                           schedule="pingpong", tma_store=True, flat_workers=True),
    # FA3's tile overlapped with flat workers and a TMA store, launched persistent (generation 0's genome since
    # 8f3ccdc's measurement, where "default" was the program-per-tile launch) and with ping-pong.
    "persistent": gf.GluonGenome(block_m=64, consumers=2, consumer_warps=4, block_n=128, schedule="overlap",
                                 tma_store=True, flat_workers=True, persistent=True),
    "persistent-pp": gf.GluonGenome(block_m=64, consumers=2, consumer_warps=4, block_n=128, schedule="pingpong",
                                    tma_store=True, flat_workers=True, persistent=True),
    "ws-2x4-m64-n128-tma-store-flat": gf.GluonGenome(block_m=64, consumers=2, consumer_warps=4, block_n=128,
                                                     tma_store=True, flat_workers=True),
}
SHAPES: dict[str, AttentionParams] = {
    "seed": AttentionParams(),
    "seed-causal": AttentionParams(causal=True),
    "b2h16s4096d128": AttentionParams(batch=2, heads=16, seq_len=4096, head_dim=128),
    "b2h16s4096d128-causal": AttentionParams(batch=2, heads=16, seq_len=4096, head_dim=128, causal=True),
    "b2h16s4096d128-bf16": AttentionParams(batch=2, heads=16, seq_len=4096, head_dim=128, dtype="bf16"),
    "b1h16s16384d128-bf16": AttentionParams(batch=1, heads=16, seq_len=16384, head_dim=128, dtype="bf16"),
    "b4h32s2048d64": AttentionParams(batch=4, heads=32, seq_len=2048, head_dim=64),
}


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    """float64 attention, a (batch, head) at a time (S=4096 scores in float64 are 128 MiB per head)."""
    out = torch.empty(q.shape, dtype=torch.float64, device=q.device)
    group = q.shape[1] // k.shape[1]
    n_q, n_k = q.shape[2], k.shape[2]
    keep = torch.ones(n_q, n_k, dtype=torch.bool, device=q.device).tril(n_k - n_q) if causal else None
    for b in range(q.shape[0]):
        for h in range(q.shape[1]):
            s = q[b, h].double() @ k[b, h // group].double().T / math.sqrt(q.shape[-1])
            if keep is not None:
                s = s.masked_fill(~keep, float("-inf"))
            out[b, h] = torch.softmax(s, dim=-1) @ v[b, h // group].double()
    return out


def load(source: str, name: str, tmp: Path) -> Any:
    return import_source(source, name, name, tmp).ModelNew()


def time_entry(fn: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> dict[str, float]:
    from triton.testing import do_bench

    eager = do_bench(lambda: fn(q, k, v), warmup=25, rep=100, return_mode="median")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn(q, k, v)  # warm, off the capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn(q, k, v)
    graphed = do_bench(graph.replay, warmup=25, rep=100, return_mode="median")
    return {"eager_us": eager * 1e3, "graph_us": graphed * 1e3}


def inputs(p: AttentionParams) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The shape's q, k, v (seeded: every process draws the same) and their float64 attention."""
    gen = torch.Generator(device="cuda").manual_seed(0)
    dtype = getattr(torch, p.torch_dtype)
    q = torch.randn(p.batch, p.heads, p.n_q, p.head_dim, device="cuda", dtype=dtype, generator=gen)
    k = torch.randn(p.batch, p.n_kv_heads, p.seq_len, p.head_dim, device="cuda", dtype=dtype, generator=gen)
    v = torch.randn(p.batch, p.n_kv_heads, p.seq_len, p.head_dim, device="cuda", dtype=dtype, generator=gen)
    return q, k, v, reference(q, k, v, p.causal)


def measure(record: dict[str, Any], source: str | None, p: AttentionParams, data: tuple[torch.Tensor, ...],
            tmp: Path) -> dict[str, Any]:
    """Checks one entry against the reference and times it, into ``record`` (an exception is recorded)."""
    q, k, v, expected = data
    try:
        if source is None:
            fn = functools.partial(torch.nn.functional.scaled_dot_product_attention, is_causal=p.causal)
        else:
            fn = load(source, f"{record['entry']}_{record['shape']}".replace("-", "_"), tmp)
        t0 = time.perf_counter()
        got = fn(q, k, v)
        torch.cuda.synchronize()
        record["first_call_s"] = round(time.perf_counter() - t0, 3)
        err = (got.double() - expected).abs().max().item()
        tol = 2e-2 if q.dtype == torch.bfloat16 else 4e-3
        record.update(max_abs_err=err, correct=bool(err <= tol + tol * expected.abs().max().item()))
        record.update(time_entry(fn, q, k, v))
        record["tflops_graph"] = p.flops / (record["graph_us"] * 1e-6) / 1e12
        record["status"] = "ok" if record["correct"] else "incorrect"
    except Exception as exc:  # recorded, the run goes on
        text = f"{type(exc).__name__}: {str(exc)[-1200:]}"
        # A CUDA error (an illegal memory access) poisons the process's context: a crash, not a wrong answer.
        record.update(status="crashed" if "CUDA error" in text else "error", error=text)
    return record


def print_record(record: dict[str, Any]) -> None:
    line = (f"{record['eager_us']:9.1f} us eager {record['graph_us']:9.1f} us graph "
            f"{record['tflops_graph']:6.1f} TF/s err {record['max_abs_err']:.1e}") \
        if "graph_us" in record else (record.get("error") or record.get("why", ""))[-200:]
    print(f"{record['shape']:24} {record['entry']:24} {record['status']:12} {line}", flush=True)


def gluon_worker(label: str, shapes: dict[str, AttentionParams], out: Path) -> int:
    """One Gluon genome on every shape, in this (child) process: a JSON line per shape appended to ``out`` as
    soon as it is measured. Stops at a crash (the CUDA context is poisoned; the parent records the rest)."""
    g = GENOMES[label]
    limits = HardwareLimits.for_device(torch.cuda.get_device_properties(0))
    with tempfile.TemporaryDirectory() as tmpdir, out.open("a") as lines:
        for shape, p in shapes.items():
            record: dict[str, Any] = {"shape": shape, "params": p.to_dict(), "entry": f"gluon-{label}",
                                      "genome": g.to_dict(), "offered": gf.fits(g, p.head_dim, 2, limits) is None}
            # The loop without warp specialisation too, which the search is not offered (PIPELINED_VERIFIED).
            why = gf.fits(g, p.head_dim, 2, limits, allow_pipelined=True, allow_pingpong=True, allow_persistent=True)
            if why is not None:
                record.update(status="not proposed", why=why)
            else:
                measure(record, gf.render(g, causal=p.causal, head_dim=p.head_dim), p, inputs(p), Path(tmpdir))
            lines.write(json.dumps(record) + "\n")
            lines.flush()
            if record["status"] == "crashed":
                return 3
            torch.cuda.empty_cache()
    return 0


def run_isolated(label: str, shapes: dict[str, AttentionParams], timeout_s: float) -> dict[str, dict[str, Any]]:
    """Runs gluon_worker for one genome in a process of its own, so that a kernel's crash (an illegal memory
    access poisons the CUDA context of the process that launched it) loses only that genome's later shapes.
    Returns its records by shape; a shape it never recorded gets a row saying how the process ended."""
    g = GENOMES[label]
    with tempfile.TemporaryDirectory() as tmpdir:
        out = Path(tmpdir) / "records.jsonl"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", label, "--shapes", ",".join(shapes),
               "--out", str(out)]
        try:
            run = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=ROOT)
            rc: int | None = run.returncode
            stderr = run.stderr
        except subprocess.TimeoutExpired as exc:
            rc = None
            stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
        lines = out.read_text().splitlines() if out.exists() else []
    records = {r["shape"]: r for r in map(json.loads, lines)}
    ended = f"exit status {rc}" if rc is not None else f"timed out after {timeout_s:.0f} s"
    crashed = next((shape for shape, r in records.items() if r["status"] == "crashed"), None)
    for shape, p in shapes.items():
        if shape in records:
            continue
        record: dict[str, Any] = {"shape": shape, "params": p.to_dict(), "entry": f"gluon-{label}",
                                  "genome": g.to_dict(), "returncode": rc}
        if crashed is None:  # the process died before it could record this shape: the crash is here
            crashed = shape
            record.update(status="crashed", error=f"the genome's process ended ({ended}) before recording this "
                                                  f"shape; stderr: {stderr[-1200:]}")
        else:
            record.update(status="not run", error=f"the genome's process crashed on {crashed} ({ended})")
        records[shape] = record
    return records


def environment() -> dict[str, Any]:
    """The record's device, versions and date (GPU 0)."""
    import triton

    props = torch.cuda.get_device_properties(0)
    limits = HardwareLimits.for_device(props)
    return {"device": props.name, "capability": f"{props.major}.{props.minor}", "sms": props.multi_processor_count,
            "torch": torch.__version__, "triton": triton.__version__, "cuda": torch.version.cuda,
            "python": platform.python_version(), "host": platform.node(), "gluon_offered": gf.offered(limits),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, help="write the records as JSON here")
    ap.add_argument("--shapes", default="", help=f"comma-separated, of {', '.join(SHAPES)} (default: all)")
    ap.add_argument("--genomes", default="", help=f"comma-separated, of {', '.join(GENOMES)} (default: all)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds for one Gluon genome's process")
    ap.add_argument("--worker", choices=sorted(GENOMES), help=argparse.SUPPRESS)  # the child: one genome
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("skipped: no CUDA GPU")
        return 2
    shapes = {k: p for k, p in SHAPES.items() if not args.shapes or k in args.shapes.split(",")}
    if args.worker:
        return gluon_worker(args.worker, shapes, args.out)
    env = environment()
    print(json.dumps(env))
    limits = HardwareLimits.for_device(torch.cuda.get_device_properties(0))
    genomes = {k: g for k, g in GENOMES.items() if not args.genomes or k in args.genomes.split(",")}
    records: list[dict[str, Any]] = []
    started = time.monotonic()
    # Each Gluon genome in a process of its own, first (this process has launched nothing yet).
    gluon: dict[str, dict[str, dict[str, Any]]] = {}
    for label in genomes:
        gluon[label] = run_isolated(label, shapes, args.timeout)
        for r in gluon[label].values():
            print_record(r)
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for shape, p in shapes.items():
            data = inputs(p)
            starters = TemplateMutator(random.Random(0), p, limits).starter_genomes()
            entries = [("sdpa", None, None),
                       *((f"triton-starter-{i}", g.to_dict(), render_triton(g, causal=p.causal, head_dim=p.head_dim))
                         for i, g in enumerate(starters))]
            if offers_fa4(p, "cuda"):  # FlashAttention-4 where it is installed (evoforge[fa4])
                entries.append(("fa4", None, fa4_variant(p).source))
            for entry, genome, source in entries:
                record = measure({"shape": shape, "params": p.to_dict(), "entry": entry, "genome": genome},
                                 source, p, data, tmp)
                records.append(record)
                print_record(record)
            records += [gluon[label][shape] for label in genomes]
            del data
            torch.cuda.empty_cache()
    # Speedup of each entry over SDPA (and FlashAttention-4, where it ran) on its shape (graph times).
    for baseline in ("sdpa", "fa4"):
        base = {r["shape"]: r["graph_us"] for r in records
                if r["entry"] == baseline and r.get("status") == "ok" and "graph_us" in r}
        for r in records:
            if "graph_us" in r and r["shape"] in base:
                r[f"speedup_vs_{baseline}_graph"] = base[r["shape"]] / r["graph_us"]
    best = {}
    for r in records:
        if r.get("status") == "ok" and r["entry"].startswith("gluon-") \
                and (r["shape"] not in best or r["graph_us"] < best[r["shape"]]["graph_us"]):
            best[r["shape"]] = r
    for shape, r in best.items():
        fa4 = f", {r['speedup_vs_fa4_graph']:.2f}x FA4" if "speedup_vs_fa4_graph" in r else ""
        print(f"best gluon on {shape}: {r['entry']} {r['graph_us']:.1f} us graph, "
              f"{r.get('speedup_vs_sdpa_graph', float('nan')):.2f}x SDPA{fa4}")
    env["seconds"] = round(time.monotonic() - started, 1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"what": "Gluon flash-attention family vs the Triton family and SDPA",
                                        "env": env, "records": records}, indent=1) + "\n")
    return 0 if all(r["status"] in ("ok", "not proposed") for r in records) else 1


if __name__ == "__main__":
    raise SystemExit(main())
