"""The LLM mutator's whole path on a GPU with no model reachable: scripted replies that hold real
Triton and CUDA C++ kernels go through `evoforge run --mutator llm` (extraction, the store, the
evaluator's compile, checks, guards and timing) beside the live baselines.

Usage: python experiments/llm_replay.py [--task attention] [--out benchmarks/results]
Writes llm-replay-<device>.json: each candidate's status, latency and fitness, the LLM summary of
the report, and where the generations' time went. Needs the `llm` extra (openai, jinja2); the CUDA
reply needs nvcc and ninja.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from evoforge import envinfo
from evoforge.kernels.flash_attention import FlashGenome, render
from evoforge.llm.replay import ScriptedServer
from evoforge.report import evidence
from evoforge.store import RunStore

ROOT = Path(__file__).resolve().parents[1]

CUDA_SOURCE = r'''
#include <torch/extension.h>
#include <ATen/cuda/CUDAContext.h>
#include <cuda_fp16.h>

// One thread per query row, online softmax in fp32 registers: correct and simple, not fast.
template <int D>
__global__ void attn_rows(const half* __restrict__ q, const half* __restrict__ k, const half* __restrict__ v,
                          half* __restrict__ o, int S, float scale) {
    int bh = blockIdx.y;
    int row = blockIdx.x * blockDim.x + threadIdx.x;
    if (row >= S) return;
    const half* qp = q + ((size_t)bh * S + row) * D;
    const half* kb = k + (size_t)bh * S * D;
    const half* vb = v + (size_t)bh * S * D;
    float qr[D], acc[D];
    for (int d = 0; d < D; ++d) { qr[d] = __half2float(qp[d]) * scale; acc[d] = 0.f; }
    float m = -INFINITY, l = 0.f;
    for (int j = 0; j < S; ++j) {
        float s = 0.f;
        for (int d = 0; d < D; ++d) s += qr[d] * __half2float(kb[(size_t)j * D + d]);
        float mn = fmaxf(m, s), c = __expf(m - mn), p = __expf(s - mn);
        l = l * c + p;
        for (int d = 0; d < D; ++d) acc[d] = acc[d] * c + p * __half2float(vb[(size_t)j * D + d]);
        m = mn;
    }
    half* op = o + ((size_t)bh * S + row) * D;
    for (int d = 0; d < D; ++d) op[d] = __float2half(acc[d] / l);
}

torch::Tensor attn(torch::Tensor q, torch::Tensor k, torch::Tensor v, double scale) {
    TORCH_CHECK(q.size(3) == 64 && q.scalar_type() == torch::kHalf, "this kernel is for D=64 fp16");
    auto o = torch::empty_like(q);
    int B = q.size(0), H = q.size(1), S = q.size(2);
    dim3 grid((S + 127) / 128, B * H);
    attn_rows<64><<<grid, 128, 0, at::cuda::getCurrentCUDAStream()>>>(
        (const half*)q.data_ptr(), (const half*)k.data_ptr(), (const half*)v.data_ptr(), (half*)o.data_ptr(),
        S, (float)scale);
    return o;
}
'''

CUDA_MODULE = f'''import torch
import torch.nn as nn
from torch.utils.cpp_extension import load_inline

_ext = load_inline(
    name="replay_attn_rows",
    cpp_sources="torch::Tensor attn(torch::Tensor q, torch::Tensor k, torch::Tensor v, double scale);",
    cuda_sources=r"""{CUDA_SOURCE}""",
    functions=["attn"],
    extra_cuda_cflags=["-O3"],
)


class ModelNew(nn.Module):
    def forward(self, q, k, v):
        return _ext.attn(q.contiguous(), k.contiguous(), v.contiguous(), q.shape[-1] ** -0.5)
'''

TORCH_MODULE = '''import torch
import torch.nn as nn


class ModelNew(nn.Module):
    def forward(self, q, k, v):
        s = torch.matmul(q.float(), k.float().transpose(-2, -1)) * q.shape[-1] ** -0.5
        return torch.matmul(torch.softmax(s, dim=-1), v.float()).to(q.dtype)
'''


def reply(name: str, thought: str, code: str) -> str:
    return f"name: {name}\nthought: {thought}\n```python\n{code.strip()}\n```\n"


def script(head_dim: int, causal: bool) -> list[dict[str, object]]:
    triton_a = render(FlashGenome(block_m=64, block_n=128, num_stages=3, k_layout="trans", loop="tl.range"),
                      causal=causal, head_dim=head_dim)
    triton_b = render(FlashGenome(block_m=64, block_n=64, num_stages=2), causal=causal, head_dim=head_dim)
    return [
        # generation 0: four from scratch
        {"content": reply("triton-flash", "online softmax, BLOCK_N 128, 3 stages", triton_a)},
        {"content": reply("cuda-rows", "one thread per query row, online softmax", CUDA_MODULE)},
        {"content": reply("torch-fp32", "plain fp32 math", TORCH_MODULE)},
        {"content": reply("broken", "a typo", "import torch\nclass ModelNew(torch.nn.Module)\n    pass\n")},
        # generation 1: two more
        {"content": reply("triton-flash-64", "smaller key tile, 2 stages", triton_b)},
        {"content": "name: talk\nthought: no code this time\nSorry."},
    ]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", default="attention")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--sandbox", default="basic", help="the workers' sandbox: none, basic or strict")
    args = parser.parse_args()
    slug = envinfo.device_slug(torch.cuda.get_device_name(0)) if torch.cuda.is_available() else "cpu"
    work = Path("/tmp/evoforge-llm-replay")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    started = time.monotonic()
    with ScriptedServer(script(64, causal=False), default={"content": "no more"}) as server:
        (work / "evoforge.toml").write_text(
            f'[run]\ntask = "{args.task}"\nmutator = "llm"\nllm_model = "replay@1/2"\nllm_base_url = "{server.url}"\n'
            'llm_concurrency = 1\nllm_seed_candidates = 4\ngenerations = 2\npopulation = 2\n'
            f'sandbox = "{args.sandbox}"\n')
        run = subprocess.run([sys.executable, "-m", "evoforge.cli", "run", "--json"], cwd=work, capture_output=True,
                             text=True, check=False)
    print(run.stderr[-4000:], file=sys.stderr)
    if run.returncode not in (0, 1):
        print(run.stdout, file=sys.stderr)
        return run.returncode
    summary = json.loads(run.stdout)
    data = evidence(RunStore(work / ".evoforge" / "runs.db"), summary["run"])
    rows = [{k: r[k] for k in ("name", "language", "status", "detail", "fitness", "fitness_mode", "latency_us",
                                "best_baseline", "max_abs_err")} for r in data["candidates"]]
    record = {
        "benchmark": "llm_replay", "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "device": data["device"], "task": data["task"], "wall_s": round(time.monotonic() - started, 1),
        "summary": summary, "candidates": rows, "baselines": data["baselines"], "llm": data["llm"],
        "profile": [e for e in data["events"] if e["kind"] == "profile"],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"llm-replay-{slug}.json"
    path.write_text(json.dumps(record, indent=2, default=str))
    for r in rows:
        lat = ", ".join(f"{m} {v:.1f} µs" for m, v in r["latency_us"].items())
        print(f"{r['name']:24s} {r['language']:7s} {r['status']:14s} {r['fitness']:.3f}  {lat}  {r['detail'][:80]}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
