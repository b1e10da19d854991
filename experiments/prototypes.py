"""Prototype attention kernels outside the template, timed through the evaluator beside the generation-0
genome the template picks for the task and SDPA's backends. An idea that wins becomes part of the template; one
that loses stays recorded here with its numbers.

``--kernel kq``: the scores computed transposed, S^T = K Q^T, so a program's query block is the MMA's
N dimension (8..256 on Hopper's wgmma) instead of its M dimension (64 per warpgroup).
Why: at the seed shape (B=1 H=8 S=512 D=64) 64-row programs give 64 programs for 132 SMs, and each
key block costs one program about 0.9 us of serial MMA + softmax work. With 32-row programs the
standard orientation falls back to mma.sync with row reductions across warps; transposed, a 32-query
program keeps wgmma (M = the key block) and the grid doubles to 128 programs. The price: the max over
keys crosses warps (keys are the M dimension), and P^T is the B operand of the second MMA
(O^T += V^T P^T), which wgmma reads from shared memory.

``--kernel split3d``: one program, several key blocks at once: the scores of SPLIT key blocks are one
batched (3-D) dot, each block keeps its own running max, sum and accumulator, and the SPLIT partial
results are combined inside the program after the loop. The serial key loop gets SPLIT times shorter
without a second kernel or a cross-program combine (split-KV's costs at the seed shape).

``--kernel tma-host``: K and V tiles (and Q, O) through TMA descriptors built on the host
(``triton.tools.tensor_descriptor``, as Triton's attention tutorial does on Hopper), where the
template's ``tma`` option builds them on the device, in every program, before its loop.

Usage: python experiments/prototypes.py --kernel kq|split3d|tma-host [--task attention] [--repeats 2]
           [--out results.json]
       python experiments/prototypes.py --kernel kq|split3d|tma-host --check   (CPU: TRITON_INTERPRET=1, tiny shapes)
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import sys
from pathlib import Path

_HEADER = """import math

import torch
import torch.nn as nn
import triton
import triton.language as tl

LOG2E = 1.4426950408889634
"""

_KQ = _HEADER + """
CAUSAL = {causal}
HEAD_DIM = {head_dim}
BLOCK_M, BLOCK_N = {block_m}, {block_n}
NUM_WARPS, NUM_STAGES = {num_warps}, {num_stages}
LSUM_2D = {lsum_2d}  # keep the row sums per (key, query) and reduce over keys once, after the loop
V_TRANS = {v_trans}  # load V as [N, D] and transpose in registers (else load [D, N] through strides)


@triton.jit
def _fwd_kq(Q, K, V, O, sqb, sqh, sqm, sqd, skb, skh, skn, skd, svb, svh, svn, svd, sob, soh, som, sod,
            n_heads, n_q, n_k, qk_scale, CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
            BLOCK_N: tl.constexpr, NUM_STAGES: tl.constexpr, LSUM_2D: tl.constexpr, V_TRANS: tl.constexpr):
    start_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // n_heads
    h = bh % n_heads
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    q = tl.load(Q + b * sqb + h * sqh + offs_m[:, None] * sqm + offs_d[None, :] * sqd)
    qt = tl.trans(q)  # [HEAD_DIM, BLOCK_M]
    k_base = K + b * skb + h * skh
    v_base = V + b * svb + h * svh
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    if LSUM_2D:
        l_acc = tl.zeros([BLOCK_N, BLOCK_M], tl.float32)
    else:
        l_acc = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([HEAD_DIM, BLOCK_M], tl.float32)  # O^T
    causal_offset = n_k - n_q
    hi = n_k
    if CAUSAL:
        hi = tl.minimum(n_k, (start_m + 1) * BLOCK_M + causal_offset)
    for start_n in tl.range(0, hi, BLOCK_N, num_stages=NUM_STAGES):
        cols = start_n + offs_n
        k = tl.load(k_base + cols[:, None] * skn + offs_d[None, :] * skd)  # [BLOCK_N, HEAD_DIM]
        st = tl.dot(k, qt)  # S^T: [BLOCK_N, BLOCK_M]
        if CAUSAL:
            if start_n + BLOCK_N > start_m * BLOCK_M + causal_offset + 1:
                st = tl.where(cols[:, None] <= offs_m[None, :] + causal_offset, st, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(st, 0) * qk_scale)
        p = tl.math.exp2(st * qk_scale - m_new[None, :])
        alpha = tl.math.exp2(m_i - m_new)
        if LSUM_2D:
            l_acc = l_acc * alpha[None, :] + p
        else:
            l_acc = l_acc * alpha + tl.sum(p, 0)
        if V_TRANS:
            vt = tl.trans(tl.load(v_base + cols[:, None] * svn + offs_d[None, :] * svd))
        else:
            vt = tl.load(v_base + cols[None, :] * svn + offs_d[:, None] * svd)  # [HEAD_DIM, BLOCK_N]
        acc = acc * alpha[None, :]
        acc = tl.dot(vt, p.to(vt.dtype), acc)
        m_i = m_new
    if LSUM_2D:
        l_i = tl.sum(l_acc, 0)
    else:
        l_i = l_acc
    acc = acc * (1.0 / l_i)[None, :]
    tl.store(O + b * sob + h * soh + offs_m[None, :] * som + offs_d[:, None] * sod, acc.to(O.dtype.element_ty))


class ModelNew(nn.Module):
    def forward(self, q, k, v):
        batch, heads, n_q, _ = q.shape
        n_k = k.shape[2]
        out = torch.empty_like(q)
        grid = (triton.cdiv(n_q, BLOCK_M), batch * heads)
        _fwd_kq[grid](q, k, v, out, *q.stride(), *k.stride(), *v.stride(), *out.stride(), heads, n_q, n_k,
                      LOG2E / math.sqrt(HEAD_DIM), CAUSAL, HEAD_DIM, BLOCK_M, BLOCK_N, NUM_STAGES, LSUM_2D, V_TRANS,
                      num_warps=NUM_WARPS, num_stages=NUM_STAGES)
        return out
"""

_SPLIT3D = _HEADER + """
CAUSAL = {causal}
HEAD_DIM = {head_dim}
BLOCK_M, BLOCK_N, SPLIT = {block_m}, {block_n}, {split}
NUM_WARPS, NUM_STAGES = {num_warps}, {num_stages}


@triton.jit
def _fwd_split3d(Q, K, V, O, sqb, sqh, sqm, sqd, skb, skh, skn, skd, svb, svh, svn, svd, sob, soh, som, sod,
                 n_heads, n_q, n_k, qk_scale, CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
                 BLOCK_N: tl.constexpr, SPLIT: tl.constexpr, NUM_STAGES: tl.constexpr, EVEN: tl.constexpr):
    # Each step takes SPLIT key blocks at once: block s of step j holds keys j*SPLIT*BLOCK_N + s*BLOCK_N + n.
    start_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // n_heads
    h = bh % n_heads
    offs_s = tl.arange(0, SPLIT)
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    q = tl.load(Q + b * sqb + h * sqh + offs_m[:, None] * sqm + offs_d[None, :] * sqd)
    q3 = tl.broadcast_to(q[None, :, :], (SPLIT, BLOCK_M, HEAD_DIM))
    k_base = K + b * skb + h * skh
    v_base = V + b * svb + h * svh
    m3 = tl.full([SPLIT, BLOCK_M], float("-inf"), tl.float32)
    l3 = tl.zeros([SPLIT, BLOCK_M], tl.float32)
    acc3 = tl.zeros([SPLIT, BLOCK_M, HEAD_DIM], tl.float32)
    causal_offset = n_k - n_q
    hi = n_k
    if CAUSAL:
        hi = tl.minimum(n_k, (start_m + 1) * BLOCK_M + causal_offset)
    for start_n in tl.range(0, hi, SPLIT * BLOCK_N, num_stages=NUM_STAGES):
        cols = start_n + offs_s[:, None] * BLOCK_N + offs_n[None, :]  # [SPLIT, BLOCK_N]
        kv_off = cols[:, :, None] * skn + offs_d[None, None, :] * skd
        if EVEN:
            k3 = tl.load(k_base + kv_off)
        else:
            k3 = tl.load(k_base + kv_off, mask=(cols < n_k)[:, :, None], other=0.0)
        s3 = tl.dot(q3, tl.trans(k3, (0, 2, 1)))  # [SPLIT, BLOCK_M, BLOCK_N]
        if CAUSAL:
            s3 = tl.where(cols[:, None, :] <= offs_m[None, :, None] + causal_offset, s3, float("-inf"))
        elif not EVEN:
            s3 = tl.where((cols < n_k)[:, None, :], s3, float("-inf"))
        m_new = tl.maximum(m3, tl.max(s3, 2) * qk_scale)
        # A block with no visible key for a row keeps m = -inf there: exp against 0 keeps p and alpha at 0.
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
        p3 = tl.math.exp2(s3 * qk_scale - m_ref[:, :, None])
        alpha = tl.math.exp2(m3 - m_ref)
        l3 = l3 * alpha + tl.sum(p3, 2)
        v_off = cols[:, :, None] * svn + offs_d[None, None, :] * svd
        if EVEN:
            v3 = tl.load(v_base + v_off)
        else:
            v3 = tl.load(v_base + v_off, mask=(cols < n_k)[:, :, None], other=0.0)
        acc3 = acc3 * alpha[:, :, None]
        acc3 = tl.dot(p3.to(v3.dtype), v3, acc3)
        m3 = m_new
    m = tl.max(m3, 0)
    w = tl.math.exp2(m3 - m[None, :])
    l_i = tl.sum(l3 * w, 0)
    acc = tl.sum(acc3 * w[:, :, None], 0) * (1.0 / l_i)[:, None]
    tl.store(O + b * sob + h * soh + offs_m[:, None] * som + offs_d[None, :] * sod, acc.to(O.dtype.element_ty))


class ModelNew(nn.Module):
    def forward(self, q, k, v):
        batch, heads, n_q, _ = q.shape
        n_k = k.shape[2]
        out = torch.empty_like(q)
        grid = (triton.cdiv(n_q, BLOCK_M), batch * heads)
        _fwd_split3d[grid](q, k, v, out, *q.stride(), *k.stride(), *v.stride(), *out.stride(), heads, n_q, n_k,
                           LOG2E / math.sqrt(HEAD_DIM), CAUSAL, HEAD_DIM, BLOCK_M, BLOCK_N, SPLIT, NUM_STAGES,
                           n_k % (SPLIT * BLOCK_N) == 0, num_warps=NUM_WARPS, num_stages=NUM_STAGES)
        return out
"""

_TMA_HOST = _HEADER + """from triton.tools.tensor_descriptor import TensorDescriptor

CAUSAL = {causal}
HEAD_DIM = {head_dim}
BLOCK_M, BLOCK_N = {block_m}, {block_n}
NUM_WARPS, NUM_STAGES = {num_warps}, {num_stages}


@triton.jit
def _fwd_tma(desc_q, desc_k, desc_v, desc_o, n_q, n_k, qk_scale, CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr,
             BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, NUM_STAGES: tl.constexpr):
    # The descriptors cover the [batch*heads*n, HEAD_DIM] views of the contiguous inputs.
    start_m = tl.program_id(0)
    bh = tl.program_id(1)
    q_row = bh * n_q + start_m * BLOCK_M
    kv_row = bh * n_k
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    q = desc_q.load([q_row, 0])
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    causal_offset = n_k - n_q
    hi = n_k
    if CAUSAL:
        hi = tl.minimum(n_k, (start_m + 1) * BLOCK_M + causal_offset)
    for start_n in tl.range(0, hi, BLOCK_N, num_stages=NUM_STAGES):
        k = desc_k.load([kv_row + start_n, 0])
        qk = tl.dot(q, k.T)
        if CAUSAL:
            if start_n + BLOCK_N > start_m * BLOCK_M + causal_offset + 1:
                qk = tl.where(offs_m[:, None] + causal_offset >= (start_n + offs_n)[None, :], qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
        p = tl.math.exp2(qk * qk_scale - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = desc_v.load([kv_row + start_n, 0])
        acc = acc * alpha[:, None]
        acc = tl.dot(p.to(v.dtype), v, acc)
        m_i = m_new
    acc = acc * (1.0 / l_i)[:, None]
    desc_o.store([q_row, 0], acc.to(desc_o.dtype))


class ModelNew(nn.Module):
    # Host-side descriptors, built per call (a few microseconds of Python; captured once in a CUDA graph).
    # Whole blocks only: n_q % BLOCK_M == 0 and n_k % BLOCK_N == 0, contiguous inputs, as many K/V heads as Q.
    def forward(self, q, k, v):
        batch, heads, n_q, d = q.shape
        n_k = k.shape[2]
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        out = torch.empty_like(q)
        desc_q = TensorDescriptor.from_tensor(q.view(-1, d), [BLOCK_M, d])
        desc_o = TensorDescriptor.from_tensor(out.view(-1, d), [BLOCK_M, d])
        desc_k = TensorDescriptor.from_tensor(k.view(-1, d), [BLOCK_N, d])
        desc_v = TensorDescriptor.from_tensor(v.view(-1, d), [BLOCK_N, d])
        grid = (triton.cdiv(n_q, BLOCK_M), batch * heads)
        _fwd_tma[grid](desc_q, desc_k, desc_v, desc_o, n_q, n_k, LOG2E / math.sqrt(HEAD_DIM), CAUSAL, HEAD_DIM,
                       BLOCK_M, BLOCK_N, NUM_STAGES, num_warps=NUM_WARPS, num_stages=NUM_STAGES)
        return out
"""

TEMPLATES = {"kq": _KQ, "split3d": _SPLIT3D, "tma-host": _TMA_HOST}


def configs(kernel: str, head_dim: int, causal: bool) -> dict[str, str]:
    """Name -> source of every configuration timed for this kernel."""
    out: dict[str, str] = {}
    template = TEMPLATES[kernel]
    if kernel == "kq":
        grid = [dict(block_m=bm, block_n=bn, num_warps=4, num_stages=s, lsum_2d=l2, v_trans=True)
                for bm, bn, s, l2 in itertools.product((32, 64), (64, 128), (2, 3), (False, True))]
        grid += [dict(block_m=bm, block_n=128, num_warps=4, num_stages=3, lsum_2d=False, v_trans=False)
                 for bm in (16, 32)]
        grid += [dict(block_m=32, block_n=128, num_warps=8, num_stages=3, lsum_2d=False, v_trans=True),
                 dict(block_m=16, block_n=128, num_warps=4, num_stages=3, lsum_2d=False, v_trans=True)]
        for c in grid:
            name = (f"kq-{c['block_m']}x{c['block_n']}-w{c['num_warps']}-s{c['num_stages']}"
                    f"{'-l2d' if c['lsum_2d'] else ''}{'' if c['v_trans'] else '-vdirect'}")
            out[name] = template.format(causal=causal, head_dim=head_dim, **c)
    elif kernel == "tma-host":
        for bm, bn, w, s in ((64, 128, 4, 3), (64, 128, 4, 2), (64, 64, 4, 3), (64, 64, 4, 4), (128, 64, 8, 3),
                             (128, 128, 8, 2), (128, 128, 8, 3), (128, 64, 4, 3)):
            out[f"tma-host-{bm}x{bn}-w{w}-s{s}"] = template.format(
                causal=causal, head_dim=head_dim, block_m=bm, block_n=bn, num_warps=w, num_stages=s)
    else:
        for split, bn, w, s in ((2, 128, 8, 2), (2, 128, 8, 3), (2, 128, 4, 2), (2, 64, 4, 3), (2, 64, 8, 3),
                                (4, 64, 8, 2), (4, 32, 8, 2), (4, 64, 16, 2), (4, 128, 16, 1), (2, 32, 4, 3)):
            out[f"split3d-{split}x64x{bn}-w{w}-s{s}"] = template.format(
                causal=causal, head_dim=head_dim, block_m=64, block_n=bn, split=split, num_warps=w, num_stages=s)
    return out


def check(kernel: str) -> int:
    """Correctness on the CPU through Triton's interpreter, tiny shapes, causal and not."""
    os.environ["TRITON_INTERPRET"] = "1"
    import torch

    if kernel == "kq":
        cases = [dict(block_m=16, block_n=32, num_warps=4, num_stages=2, lsum_2d=False, v_trans=True),
                 dict(block_m=32, block_n=32, num_warps=4, num_stages=2, lsum_2d=True, v_trans=False)]
    elif kernel == "tma-host":
        cases = [dict(block_m=16, block_n=16, num_warps=4, num_stages=2),
                 dict(block_m=32, block_n=16, num_warps=4, num_stages=2)]
    else:
        cases = [dict(block_m=16, block_n=16, split=2, num_warps=4, num_stages=2),
                 dict(block_m=32, block_n=16, split=4, num_warps=4, num_stages=2)]
    failures = 0
    for causal, n_k in ((False, 64), (True, 64), (False, 80), (True, 96)):
        if kernel != "split3d" and n_k % 32:
            continue  # the kq and tma-host prototypes take whole key blocks only
        for case in cases:
            ns: dict[str, object] = {}
            exec(compile(TEMPLATES[kernel].format(causal=causal, head_dim=16, **case), kernel, "exec"), ns)
            torch.manual_seed(0)
            q = torch.randn(1, 2, 64, 16)
            k, v = torch.randn(1, 2, n_k, 16), torch.randn(1, 2, n_k, 16)
            mask = torch.ones(64, n_k, dtype=torch.bool).tril(n_k - 64) if causal else None
            ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            err = (ns["ModelNew"]()(q, k, v) - ref).abs().max().item()
            print(f"{kernel} causal={causal} n_k={n_k} {case}: max abs err {err:.2e}")
            failures += not err <= 1e-4
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kernel", choices=sorted(TEMPLATES), required=True)
    parser.add_argument("--task", default="attention")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.check:
        return check(args.kernel)
    import torch
    from evaluate_sources import print_rows, time_sources

    from evoforge.kernels.flash_attention import HardwareLimits, render
    from evoforge.mutators.template import TemplateMutator
    from evoforge.resolve import resolve_task
    from evoforge.tasks import attention_params

    spec = resolve_task(args.task)
    params = attention_params(spec)
    if params is None or not torch.cuda.is_available():
        print("prototypes: needs an attention task and a CUDA device", file=sys.stderr)
        return 2
    sources = configs(args.kernel, params.head_dim, params.causal)
    base = TemplateMutator(random.Random(0), params, HardwareLimits.for_device(
        torch.cuda.get_device_properties(0))).default_genome()
    sources = {"base": render(base, causal=params.causal, head_dim=params.head_dim), **sources}
    env, rows = time_sources(spec, sources, args.repeats)
    print_rows(rows, 28)
    if args.out:
        args.out.write_text(json.dumps({"env": env, "task": spec.name, "sources": sources, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
