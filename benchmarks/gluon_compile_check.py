"""Compile the Gluon flash-attention family for sm_90 ahead of time, without a GPU (issue 20).

For each genome and task shape it renders the candidate (``evoforge.kernels.gluon_flash.render``), imports
it, and calls its ``ModelNew`` on CPU tensors with every Gluon launch turned into a warm-up: Triton compiles
the kernel to PTX and a cubin for the target (ptxas ships with the Triton wheel) and launches nothing. Where no
CUDA GPU is visible, a stand-in driver names the target (``GPUTarget("cuda", 90, 32)``). Each compiled kernel's
PTX is then run through the wheel's ``ptxas -v`` to record its registers and spills.

    python3 benchmarks/gluon_compile_check.py --out gluon-compile.json          # the default genome list
    python3 benchmarks/gluon_compile_check.py --sample 40 --out FILE.json       # plus 40 random valid genomes

Needs Triton 3.6 (the version the template is written for) and torch (any build, CPU is enough). Exit 0
when every rendered genome compiled, 1 when some failed, 2 when Triton/Gluon is missing or another version.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import platform
import random
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from evoforge.kernels import gluon_flash as gf  # noqa: E402
from evoforge.kernels.flash_attention import HardwareLimits  # noqa: E402

H200 = HardwareLimits(shared_memory_bytes=227 * 1024, capability=(9, 0), triton_version=(3, 6))

# (label, genome) pairs every check compiles: the defaults, both loop structures, both consumer layouts, the
# TMA epilogue, deep and shallow rings. The loop without warp specialisation ("pipe") too, though fits() keeps
# it from the search (gluon_flash.PIPELINED_VERIFIED: it crashed on an H200).
GENOMES: list[tuple[str, gf.GluonGenome]] = [
    ("default", gf.DEFAULTS[0]),
    ("ws-1x4-m64", gf.GluonGenome(block_m=64, consumer_warps=4)),
    ("ws-1x4-m128-n32", gf.GluonGenome(block_m=128, block_n=32, consumer_warps=4, num_stages=3)),
    ("ws-2x4-m64", gf.GluonGenome(block_m=64, consumers=2, consumer_warps=4)),
    ("ws-2x4-m128", gf.GluonGenome(block_m=128, consumers=2, consumer_warps=4, block_n=64, num_stages=2)),
    ("ws-1x8-n128-s3", gf.GluonGenome(block_n=128, num_stages=3)),
    ("ws-tma-store", gf.GluonGenome(tma_store=True)),
    ("ws-mask-every", gf.GluonGenome(causal_split=False)),
    ("overlap-1x8", gf.GluonGenome(schedule="overlap")),
    ("overlap-1x4-m64-n128", gf.GluonGenome(block_m=64, consumer_warps=4, block_n=128, schedule="overlap")),
    ("overlap-2x4-m64", gf.GluonGenome(block_m=64, consumers=2, consumer_warps=4, schedule="overlap")),
    ("pingpong-2x4-m64-n128", gf.GluonGenome(block_m=64, consumers=2, consumer_warps=4, block_n=128,
                                             schedule="pingpong")),
    ("overlap-2x4-m64-kept", gf.GluonGenome(block_m=64, consumers=2, consumer_warps=4, schedule="overlap",
                                            realloc_regs=False)),
    ("pingpong-2x4-m64-kept", gf.GluonGenome(block_m=64, consumers=2, consumer_warps=4, schedule="pingpong",
                                             realloc_regs=False)),
    ("overlap-2x4-m64-n128-flat", gf.GluonGenome(block_m=64, consumers=2, consumer_warps=4, block_n=128,
                                                 schedule="overlap", tma_store=True, flat_workers=True)),
    ("pingpong-2x4-m64-n128-flat", gf.GluonGenome(block_m=64, consumers=2, consumer_warps=4, block_n=128,
                                                  schedule="pingpong", flat_workers=True)),
    ("serial-2x4-m64-n128-flat", gf.DEFAULTS[0].with_(schedule="serial", persistent=False)),
    ("program-per-tile", gf.DEFAULTS[0].with_(persistent=False)),
    ("persistent-pingpong", gf.DEFAULTS[0].with_(persistent=True, schedule="pingpong")),
    ("persistent-serial-1x4", gf.GluonGenome(block_m=64, consumer_warps=4, persistent=True)),
    ("pipe-1x4-m64", gf.GluonGenome(warp_spec=False, block_m=64, consumer_warps=4)),
    ("pipe-1x8-m128", gf.GluonGenome(warp_spec=False, block_m=128, consumer_warps=8, num_stages=3)),
    ("pipe-1x4-s1", gf.GluonGenome(warp_spec=False, block_m=64, consumer_warps=4, num_stages=1)),
    ("pipe-tma-store", gf.GluonGenome(warp_spec=False, tma_store=True)),
]
# (label, batch, heads, kv_heads, n_q, n_k, head_dim, dtype, causal)
SHAPES = [
    ("seed-d64-fp16", 1, 8, 8, 512, 512, 64, "float16", False),
    ("d128-bf16-causal", 1, 4, 4, 1024, 1024, 128, "bfloat16", True),
    ("s1000-d64-fp16-causal", 1, 2, 2, 1000, 1000, 64, "float16", True),
    ("gqa-d128-fp16", 1, 8, 2, 256, 256, 128, "float16", False),
]


def versions() -> dict[str, str]:
    import torch
    import triton

    return {"triton": triton.__version__, "torch": torch.__version__, "python": platform.python_version()}


class StandInDriver:
    """Triton's active driver, where no GPU is: it names the target and device 0, and launches nothing."""

    def __init__(self, capability: int) -> None:
        from triton.backends.compiler import GPUTarget

        self.target = GPUTarget("cuda", capability, 32)

    def get_current_target(self) -> Any:
        return self.target

    def get_current_device(self) -> int:
        return 0

    def get_current_stream(self, device: int | None = None) -> int:
        return 0

    def get_active_torch_device(self) -> Any:
        import torch

        return torch.device("cpu")


def install_compile_only(capability: int) -> tuple[list[Any], str]:
    """Every JIT launch becomes a warm-up (compile, never run); without a CUDA GPU, the stand-in driver.
    Returns the list the compiled kernels are appended to, and where the target comes from."""
    import torch
    import triton
    from triton.runtime import jit

    where = "the visible GPU"
    if not torch.cuda.is_available():
        triton.runtime.driver.set_active(StandInDriver(capability))
        where = f"a stand-in driver for sm_{capability}"
    compiled: list[Any] = []
    original = jit.JITFunction.run

    def compile_only(self: Any, *args: Any, grid: Any, warmup: bool, **kwargs: Any) -> Any:
        kernel = original(self, *args, grid=grid, warmup=True, **kwargs)
        compiled.append(kernel)
        return kernel

    jit.JITFunction.run = compile_only  # type: ignore[method-assign]
    return compiled, where


def ptxas_stats(ptx: str, arch: str) -> dict[str, Any]:
    """Registers, spills and shared memory of ``ptx`` as the Triton wheel's ptxas reports them."""
    from triton.backends.nvidia.compiler import get_ptxas

    ptxas = get_ptxas(int(re.sub(r"\D", "", arch))).path
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "k.ptx"
        src.write_text(ptx)
        run = subprocess.run([ptxas, f"-arch={arch}", "-v", str(src), "-o", str(Path(tmp) / "k.cubin")],
                             capture_output=True, text=True, timeout=600)
    text = run.stderr + run.stdout
    out: dict[str, Any] = {}
    if m := re.search(r"Used (\d+) registers", text):
        out["registers"] = int(m.group(1))
    if m := re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", text):
        out["spill_store_bytes"], out["spill_load_bytes"] = int(m.group(1)), int(m.group(2))
    if m := re.search(r"(\d+) bytes smem", text):
        out["ptxas_smem_bytes"] = int(m.group(1))
    # ptxas serialises the wgmmas where it can't keep them in flight ("Potential Performance Loss: wgmma.mma_async
    # instructions are serialized", C7510-C7520): the kernel still runs, correct, but without the overlap its
    # schedule was written for (waiting after every wgmma).
    serialised = sorted({line.split("ptxas info    :")[-1].strip() for line in text.splitlines()
                         if "wgmma" in line and "serialized" in line})
    if serialised:
        out["wgmma_serialized"] = serialised
    if run.returncode:
        out["ptxas_error"] = text.strip()[-500:]
    return out


def check_one(genome: gf.GluonGenome, shape: tuple[Any, ...], compiled: list[Any]) -> dict[str, Any]:
    import torch

    label, batch, heads, kv_heads, n_q, n_k, head_dim, dtype, causal = shape
    record: dict[str, Any] = {"shape": label, "genome": genome.to_dict()}
    why = gf.fits(genome, head_dim, 2, H200, check_device=False, allow_pipelined=True, allow_pingpong=True,
                  allow_persistent=True)
    if why is not None:
        record.update(status="not proposed", why=why)
        return record
    source = gf.render(genome, causal=causal, head_dim=head_dim)
    name = f"gluon_candidate_{genome.key()}_{label.replace('-', '_')}"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.py"
        path.write_text(source)
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # Gluon reads the kernel's source through its module's file
        started = time.perf_counter()
        try:
            spec.loader.exec_module(module)
            dt = getattr(torch, dtype)
            q = torch.empty(batch, heads, n_q, head_dim, dtype=dt)
            k = torch.empty(batch, kv_heads, n_k, head_dim, dtype=dt)
            v = torch.empty(batch, kv_heads, n_k, head_dim, dtype=dt)
            before = len(compiled)
            module.ModelNew()(q, k, v)
            kernels = compiled[before:]
        except Exception as exc:  # a compile error: recorded, the check goes on
            record.update(status="failed", error=f"{type(exc).__name__}: {str(exc).strip()[-1500:]}",
                          seconds=round(time.perf_counter() - started, 2))
            return record
        finally:
            sys.modules.pop(name, None)
    record.update(status="compiled", seconds=round(time.perf_counter() - started, 2), kernels=len(kernels))
    if kernels:
        kernel = kernels[-1]
        asm = kernel.asm
        record.update(shared_bytes=kernel.metadata.shared, num_warps=kernel.metadata.num_warps,
                      maxnreg=getattr(kernel.metadata, "maxnreg", None), cubin_bytes=len(asm.get("cubin", b"")),
                      predicted_shared_bytes=gf.shared_bytes(genome, head_dim))
        if asm.get("cubin"):  # ptxas wrote no stale wgmma descriptor (benchmarks/wgmma_desc_check.py)
            from wgmma_desc_check import disassemble, exp2_under_mma, stale_descriptors

            sass = disassemble(asm["cubin"])
            if sass is not None:
                record["stale_wgmma_descriptors"] = stale_descriptors(sass)
                # An overlapped schedule: the exponentials each wait-for-one leaves under the in-flight P·V.
                record["exp2_under_mma"] = exp2_under_mma(sass)
        ptx = asm.get("ptx", "")
        record["wgmma"] = len(re.findall(r"wgmma\.mma_async", ptx))
        record["setmaxnreg"] = sorted(set(re.findall(r"setmaxnreg\.\w+\.sync\.aligned\.u32\s+(\d+)", ptx)))
        arch = re.search(r"\.target (sm_\w+)", ptx)
        if arch:
            record["target"] = arch.group(1)
            record.update(ptxas_stats(ptx, arch.group(1)))
    return record


def sample_genomes(n: int, seed: int) -> list[tuple[str, gf.GluonGenome]]:
    """``n`` distinct random genomes that fit at head size 128 (and so at 64)."""
    rng = random.Random(seed)
    space = {"block_m": gf.BLOCKS_M, "block_n": gf.BLOCKS_N, "num_stages": gf.STAGES, "warp_spec": (True, False),
             "consumers": gf.CONSUMERS, "consumer_warps": gf.CONSUMER_WARPS, "producer_regs": gf.PRODUCER_REGS,
             "consumer_regs": gf.CONSUMER_REGS, "causal_split": (True, False), "tma_store": (True, False),
             "schedule": gf.SCHEDULES, "realloc_regs": (True, False), "flat_workers": (True, False),
             "persistent": (True, False)}
    assert set(space) == {f.name for f in fields(gf.GluonGenome)}
    out: dict[str, gf.GluonGenome] = {}
    for _ in range(10000):
        if len(out) >= n:
            break
        g = gf.GluonGenome(**{k: rng.choice(v) for k, v in space.items()})
        if gf.fits(g, 128, 2, H200, check_device=False, allow_pipelined=True, allow_pingpong=True,
                   allow_persistent=True) is None:
            out.setdefault(g.key(), g)
    return [(f"random-{k[:6]}", g) for k, g in out.items()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, help="write the records as JSON here")
    ap.add_argument("--sample", type=int, default=0, help="also compile this many random valid genomes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--capability", type=int, default=90, help="the stand-in target (no GPU visible): 90 = sm_90")
    ap.add_argument("--shapes", default="", help="comma-separated shape labels (default: all)")
    ap.add_argument("--genomes", default="", help="comma-separated genome labels (default: all)")
    args = ap.parse_args(argv)

    try:
        vers = versions()
    except ImportError as exc:
        print(f"skipped: {exc}")
        return 2
    if tuple(int(x) for x in vers["triton"].split(".")[:2]) not in gf.TRITON_VERSIONS or not gf.gluon_importable():
        print(f"skipped: Triton {vers['triton']} (the template is written for {gf.TRITON_VERSIONS}) or no Gluon")
        return 2
    compiled, where = install_compile_only(args.capability)
    genomes = [(label, g) for label, g in GENOMES if not args.genomes or label in args.genomes.split(",")]
    genomes += sample_genomes(args.sample, args.seed) if args.sample else []
    shapes = [s for s in SHAPES if not args.shapes or s[0] in args.shapes.split(",")]
    records = []
    for label, g in genomes:
        for shape in shapes:
            record = {"label": label, **check_one(g, shape, compiled)}
            records.append(record)
            extra = (f"{record.get('registers', '?')} regs, {record.get('spill_store_bytes', '?')} B spilled, "
                     f"{record.get('shared_bytes', '?')} B smem, {record.get('wgmma', '?')} wgmma, "
                     f"{record.get('seconds')} s") if record["status"] == "compiled" else \
                record.get("why") or record.get("error", "")[-300:]
            print(f"{label:18} {shape[0]:24} {record['status']:13} {extra}", flush=True)
    for r in records:  # a miscompile ptxas made of the kernel: it would read shared memory it never meant to
        if r.get("stale_wgmma_descriptors"):
            r["status"] = "failed"
            r["error"] = "stale wgmma descriptors in the SASS: " + "; ".join(r["stale_wgmma_descriptors"])[:1500]
            print(f"{r['label']:18} {r['shape']:24} failed        {r['error'][:300]}", flush=True)
    failed = [r for r in records if r["status"] == "failed"]
    summary = {"compiled": sum(r["status"] == "compiled" for r in records), "failed": len(failed),
               "not_proposed": sum(r["status"] == "not proposed" for r in records)}
    print(f"{summary['compiled']} compiled, {summary['failed']} failed, {summary['not_proposed']} not proposed "
          f"(target from {where})")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "what": "Gluon flash-attention family compiled ahead of time for sm_90 (no launch)",
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "host": platform.node(), "target": where, "versions": vers, "summary": summary, "records": records,
        }, indent=1) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
