"""Time the Gluon flash-attention family on an sm_90 GPU beside the Triton family and SDPA (issue 20).

For each shape (the seed's B1 H8 S512 D64 fp16, causal and not, and B2 H16 S4096 D128 fp16, causal and not)
it checks every entry against a float64 reference, then times it two ways: eagerly with
``triton.testing.do_bench`` (Python call path included) and as a CUDA graph of one call, replayed under
``do_bench`` (the device's time; what evoforge's search ranks on CUDA). Entries: a list of Gluon genomes, the
Triton family's generation-0 genome for the shape (the template mutator's ``default_genome()``, its best
measured genome per shape class) and SDPA (PyTorch's default dispatch). A failing entry is recorded with
its error and the run goes on. About two minutes on an H200.

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
from evoforge.tasks.attention import AttentionParams  # noqa: E402

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
}
SHAPES: dict[str, AttentionParams] = {
    "seed": AttentionParams(),
    "seed-causal": AttentionParams(causal=True),
    "b2h16s4096d128": AttentionParams(batch=2, heads=16, seq_len=4096, head_dim=128),
    "b2h16s4096d128-causal": AttentionParams(batch=2, heads=16, seq_len=4096, head_dim=128, causal=True),
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, help="write the records as JSON here")
    ap.add_argument("--shapes", default="", help=f"comma-separated, of {', '.join(SHAPES)} (default: all)")
    ap.add_argument("--genomes", default="", help=f"comma-separated, of {', '.join(GENOMES)} (default: all)")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("skipped: no CUDA GPU")
        return 2
    import triton

    props = torch.cuda.get_device_properties(0)
    limits = HardwareLimits.for_device(props)
    env = {"device": props.name, "capability": f"{props.major}.{props.minor}", "sms": props.multi_processor_count,
           "torch": torch.__version__, "triton": triton.__version__, "cuda": torch.version.cuda,
           "python": platform.python_version(), "host": platform.node(), "gluon_offered": gf.offered(limits),
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    print(json.dumps(env))
    genomes = {k: g for k, g in GENOMES.items() if not args.genomes or k in args.genomes.split(",")}
    shapes = {k: p for k, p in SHAPES.items() if not args.shapes or k in args.shapes.split(",")}
    records: list[dict[str, Any]] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for shape, p in shapes.items():
            gen = torch.Generator(device="cuda").manual_seed(0)
            dtype = getattr(torch, p.torch_dtype)
            q = torch.randn(p.batch, p.heads, p.n_q, p.head_dim, device="cuda", dtype=dtype, generator=gen)
            k = torch.randn(p.batch, p.n_kv_heads, p.seq_len, p.head_dim, device="cuda", dtype=dtype, generator=gen)
            v = torch.randn(p.batch, p.n_kv_heads, p.seq_len, p.head_dim, device="cuda", dtype=dtype, generator=gen)
            expected = reference(q, k, v, p.causal)
            triton_genome = TemplateMutator(random.Random(0), p, limits).default_genome()
            # (entry, genome, candidate source; None for SDPA)
            entries: list[tuple[str, dict[str, Any] | None, str | None]] = [
                ("sdpa", None, None),
                ("triton-default", triton_genome.to_dict(),
                 render_triton(triton_genome, causal=p.causal, head_dim=p.head_dim)),
            ]
            for label, g in genomes.items():
                why = gf.fits(g, p.head_dim, 2, limits)
                if why is not None:
                    records.append({"shape": shape, "entry": f"gluon-{label}", "genome": g.to_dict(),
                                    "status": "not proposed", "why": why})
                    continue
                entries.append((f"gluon-{label}", g.to_dict(), gf.render(g, causal=p.causal, head_dim=p.head_dim)))
            for entry, genome, source in entries:
                record: dict[str, Any] = {"shape": shape, "params": p.to_dict(), "entry": entry, "genome": genome}
                try:
                    if source is None:
                        fn = functools.partial(torch.nn.functional.scaled_dot_product_attention, is_causal=p.causal)
                    else:
                        fn = load(source, f"{entry}_{shape}".replace("-", "_"), tmp)
                    t0 = time.perf_counter()
                    got = fn(q, k, v)
                    torch.cuda.synchronize()
                    record["first_call_s"] = round(time.perf_counter() - t0, 3)
                    err = (got.double() - expected).abs().max().item()
                    tol = 2e-2 if dtype == torch.bfloat16 else 4e-3
                    record.update(max_abs_err=err, correct=bool(err <= tol + tol * expected.abs().max().item()))
                    record.update(time_entry(fn, q, k, v))
                    record["tflops_graph"] = p.flops / (record["graph_us"] * 1e-6) / 1e12
                    record["status"] = "ok" if record["correct"] else "incorrect"
                except Exception as exc:  # recorded, the run goes on
                    record.update(status="error", error=f"{type(exc).__name__}: {str(exc)[-1200:]}")
                records.append(record)
                line = (f"{record['eager_us']:9.1f} us eager {record['graph_us']:9.1f} us graph "
                        f"{record['tflops_graph']:6.1f} TF/s err {record['max_abs_err']:.1e}") \
                    if "graph_us" in record else record.get("error", "")[-200:]
                print(f"{shape:24} {entry:24} {record['status']:10} {line}", flush=True)
            del q, k, v, expected
            torch.cuda.empty_cache()
    # Speedup of each entry over SDPA on its shape (graph times).
    sdpa = {r["shape"]: r["graph_us"] for r in records if r["entry"] == "sdpa" and "graph_us" in r}
    for r in records:
        if "graph_us" in r and r["shape"] in sdpa:
            r["speedup_vs_sdpa_graph"] = sdpa[r["shape"]] / r["graph_us"]
    best = {}
    for r in records:
        if r.get("status") == "ok" and r["entry"].startswith("gluon-") \
                and (r["shape"] not in best or r["graph_us"] < best[r["shape"]]["graph_us"]):
            best[r["shape"]] = r
    for shape, r in best.items():
        print(f"best gluon on {shape}: {r['entry']} {r['graph_us']:.1f} us graph, "
              f"{r.get('speedup_vs_sdpa_graph', float('nan')):.2f}x SDPA")
    env["seconds"] = round(time.monotonic() - started, 1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"what": "Gluon flash-attention family vs the Triton family and SDPA",
                                        "env": env, "records": records}, indent=1) + "\n")
    return 0 if all(r["status"] in ("ok", "not proposed") for r in records) else 1


if __name__ == "__main__":
    raise SystemExit(main())
