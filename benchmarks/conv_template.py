"""The generic mutator's conv2d template on this GPU, outside the search: (A) every tile x stages of the example
conv2d against the task's Model (max abs error: a tile Triton miscompiles shows here), (B) chosen genomes of the
example conv2d and conv+ReLU+pool and of KernelBench's Conv2D_ReLU_BiasAdd timed against the Model, both as CUDA
graphs (triton.testing.do_bench_cudagraph), cuDNN's TF32 off as in the judge.

Usage: python benchmarks/conv_template.py [--out benchmarks/results/conv-template-<device>.json] [--quick]
Needs a CUDA GPU. ``--quick`` skips the KernelBench problem (seconds per genome at its size).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from evoforge import envinfo
from evoforge.mutators.generic import GenericMutator
from evoforge.task import import_source, task_from_file

ROOT = Path(__file__).resolve().parents[1]
CONV2D = ROOT / "examples" / "problems" / "level1" / "conv2d.py"
POOLED = ROOT / "examples" / "problems" / "level2" / "conv_relu_pool.py"
KERNELBENCH = ROOT / "benchmarks" / "kernelbench" / "level2" / "1_Conv2D_ReLU_BiasAdd.py"
TIMED: list[tuple[Path, dict[str, Any]]] = [
    *[(POOLED, g) for g in ({"pool_par": False}, {"pool_par": True}, {"tile": [16, 16, 64, 4], "pool_par": True},
                            {"tile": [16, 16, 64, 4], "pool_par": False}, {"tile": [32, 16, 16, 4], "stages": 3},
                            {"tile": [64, 16, 64, 4], "pool_par": True})],
    *[(CONV2D, g) for g in ({"tile": [16, 16, 16, 4], "stages": 3}, {"tile": [16, 16, 128, 4]},
                            {"tile": [32, 16, 128, 4]})],
]
TIMED_LARGE: list[tuple[Path, dict[str, Any]]] = [
    (KERNELBENCH, g) for g in ({"tile": [128, 128, 32, 8], "stages": 3}, {"tile": [128, 64, 32, 4], "stages": 3},
                               {"tile": [64, 128, 64, 4], "stages": 2})]


class Built:
    """A candidate of the conv template imported from a file (Triton's jit reads its source), on the GPU."""

    count = 0

    def __init__(self, path: Path, folder: Path, genes: dict[str, Any]) -> None:
        spec = task_from_file(path)
        self.mutator = GenericMutator.for_task(random.Random(0), spec, "cuda")
        cand = self.mutator.build(self.mutator.genome(triton="conv2d_epilogue", **genes), {})
        Built.count += 1
        module = import_source(cand.source, f"conv_candidate_{Built.count}", "<candidate>", directory=folder)
        torch.manual_seed(0)
        self.name = cand.name
        self.new = module.ModelNew(*module.get_init_inputs()).cuda()
        self.inputs = [x.cuda() for x in module.get_inputs()]

    def error(self) -> float:
        with torch.no_grad():
            out, ref = self.new(*self.inputs), self.new.model(*self.inputs)
        return float((out - ref).abs().max())


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("conv_template.py needs a CUDA GPU", file=sys.stderr)
        return 2
    import triton.testing

    torch.backends.cudnn.allow_tf32 = False  # as in the judge's processes
    torch.backends.cuda.matmul.allow_tf32 = False
    env = envinfo.collect(torch.device("cuda", 0))
    slug = envinfo.device_slug(env["device_name"])
    out_path = args.out or ROOT / "benchmarks" / "results" / f"conv-template-{slug}.json"
    record: dict[str, Any] = {"tool": "evoforge", "kind": "conv-template", "device": env,
                              "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                              "correct": [], "timing": [], "errors": []}
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="evoforge-conv-") as tmp:
        folder = Path(tmp)
        tiles = Built(CONV2D, folder, {}).mutator.tiles
        for tile in tiles:  # (A)
            for stages in (2, 3):
                try:
                    err = Built(CONV2D, folder, {"tile": list(tile), "stages": stages}).error()
                    record["correct"].append({"tile": list(tile), "stages": stages, "max_err": err})
                except Exception as exc:  # a tile that fails to compile or launch is a finding, not a crash
                    record["errors"].append({"tile": list(tile), "stages": stages, "error": repr(exc)[:300]})
        bad = [r for r in record["correct"] if r["max_err"] > 1e-3]
        print(f"(A) {len(record['correct'])} tile x stages on conv2d, {len(bad)} wrong: {bad}", flush=True)
        for path, genes in TIMED + ([] if args.quick else TIMED_LARGE):  # (B)
            try:
                built = Built(path, folder, genes)
                with torch.no_grad():
                    ours = triton.testing.do_bench_cudagraph(lambda b=built: b.new(*b.inputs), rep=50)
                    model = triton.testing.do_bench_cudagraph(lambda b=built: b.new.model(*b.inputs), rep=50)
                row = {"problem": str(path.relative_to(ROOT)), "genes": genes, "candidate": built.name,
                       "template_us": ours * 1e3, "model_us": model * 1e3, "max_err": built.error()}
                record["timing"].append(row)
                print(f"(B) {path.stem} {genes}: {row['template_us']:.2f} us against the Model's "
                      f"{row['model_us']:.2f} us", flush=True)
            except Exception as exc:
                record["errors"].append({"problem": str(path), "genes": genes, "error": repr(exc)[:300]})
    record["wall_s"] = round(time.time() - started, 1)
    out_path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
