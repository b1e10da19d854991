"""Evolved by evoforge 0.1.0 (run 20261124-211248-a44d).

Task: attention_b1_h8_s512_d64_fp16 (builtin:attention)
Device: NVIDIA H100 80GB HBM3, torch 2.11.0+cu130, triton 3.6.0
Speedup: 1.432x over sdpa_default (graph mode, 7.17 us median), measured 2026-11-24T21:18:30+00:00
Exported: 2026-11-24T21:18:35+00:00

Use: `from this_module import evolved` and call evolved(q, k, v); or EvolvedModel()(q, k, v).
"""
import math

import torch
import torch.nn as nn
import triton
import triton.language as tl

# Rendered by evoforge from genome {"block_m": 64, "block_n": 128, "causal_split": false, "exp2": true, "k_layout": "direct", "kind": "triton_flash", "loop": "range", "num_stages": 4, "num_warps": 4}
CAUSAL = False
HEAD_DIM = 64
SCALE = 1.0 / math.sqrt(HEAD_DIM)
BLOCK_M, BLOCK_N, BLOCK_D = 64, 128, 64
NUM_WARPS, NUM_STAGES = 4, 4
USE_EXP2 = True
LOG2E = 1.4426950408889634


@triton.jit
def _attn_inner(acc, l_i, m_i, q, k_base, v_base, skn, skd, svn, svd, offs_m, offs_n, offs_d,
                lo, hi, n_k, causal_offset, qk_scale,
                MASK_CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr,
                EXP2: tl.constexpr, K_TRANS: tl.constexpr, NUM_STAGES: tl.constexpr):
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n
        col_ok = cols < n_k
        if K_TRANS:
            k = tl.load(k_base + cols[:, None] * skn + offs_d[None, :] * skd,
                        mask=col_ok[:, None] & (offs_d[None, :] < HEAD_DIM), other=0.0)
            qk = tl.dot(q, tl.trans(k))
        else:
            k = tl.load(k_base + cols[None, :] * skn + offs_d[:, None] * skd,
                        mask=col_ok[None, :] & (offs_d[:, None] < HEAD_DIM), other=0.0)
            qk = tl.dot(q, k)
        qk = qk * qk_scale
        keep = col_ok[None, :]
        if MASK_CAUSAL:
            keep = keep & ((offs_m[:, None] + causal_offset) >= cols[None, :])
        qk = tl.where(keep, qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        if EXP2:
            p = tl.math.exp2(qk - m_new[:, None])
            alpha = tl.math.exp2(m_i - m_new)
        else:
            p = tl.exp(qk - m_new[:, None])
            alpha = tl.exp(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_base + cols[:, None] * svn + offs_d[None, :] * svd,
                    mask=col_ok[:, None] & (offs_d[None, :] < HEAD_DIM), other=0.0)
        acc = acc * alpha[:, None]
        acc = tl.dot(p.to(v.dtype), v, acc)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _attn_fwd(Q, K, V, O, sqb, sqh, sqm, sqd, skb, skh, skn, skd, svb, svh, svn, svd,
              sob, soh, som, sod, n_heads, kv_group, n_q, n_k, qk_scale,
              CAUSAL: tl.constexpr, CAUSAL_SPLIT: tl.constexpr, HEAD_DIM: tl.constexpr,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
              EXP2: tl.constexpr, K_TRANS: tl.constexpr, NUM_STAGES: tl.constexpr):
    start_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // n_heads
    h = bh % n_heads
    kvh = h // kv_group
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = offs_m < n_q
    q = tl.load(Q + b * sqb + h * sqh + offs_m[:, None] * sqm + offs_d[None, :] * sqd,
                mask=row_ok[:, None] & (offs_d[None, :] < HEAD_DIM), other=0.0)
    k_base = K + b * skb + kvh * skh
    v_base = V + b * svb + kvh * svh
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    causal_offset = n_k - n_q
    if CAUSAL:
        # Block skipping: keys past the last row's diagonal are never loaded.
        hi = tl.minimum(n_k, (start_m + 1) * BLOCK_M + causal_offset)
        if CAUSAL_SPLIT:
            # Full blocks (entirely below every row's diagonal) run without the mask.
            full = tl.maximum(tl.minimum(start_m * BLOCK_M + causal_offset + 1, hi), 0)
            full = (full // BLOCK_N) * BLOCK_N
            acc, l_i, m_i = _attn_inner(acc, l_i, m_i, q, k_base, v_base, skn, skd, svn, svd, offs_m, offs_n,
                                        offs_d, 0, full, n_k, causal_offset, qk_scale, False, HEAD_DIM,
                                        BLOCK_N, EXP2, K_TRANS, NUM_STAGES)
            acc, l_i, m_i = _attn_inner(acc, l_i, m_i, q, k_base, v_base, skn, skd, svn, svd, offs_m, offs_n,
                                        offs_d, full, hi, n_k, causal_offset, qk_scale, True, HEAD_DIM,
                                        BLOCK_N, EXP2, K_TRANS, NUM_STAGES)
        else:
            acc, l_i, m_i = _attn_inner(acc, l_i, m_i, q, k_base, v_base, skn, skd, svn, svd, offs_m, offs_n,
                                        offs_d, 0, hi, n_k, causal_offset, qk_scale, True, HEAD_DIM,
                                        BLOCK_N, EXP2, K_TRANS, NUM_STAGES)
    else:
        acc, l_i, m_i = _attn_inner(acc, l_i, m_i, q, k_base, v_base, skn, skd, svn, svd, offs_m, offs_n,
                                    offs_d, 0, n_k, n_k, causal_offset, qk_scale, False, HEAD_DIM,
                                    BLOCK_N, EXP2, K_TRANS, NUM_STAGES)
    acc = acc / l_i[:, None]
    tl.store(O + b * sob + h * soh + offs_m[:, None] * som + offs_d[None, :] * sod,
             acc.to(O.dtype.element_ty), mask=row_ok[:, None] & (offs_d[None, :] < HEAD_DIM))


class ModelNew(nn.Module):
    def forward(self, q, k, v):
        batch, heads, n_q, _ = q.shape
        n_k = k.shape[2]
        out = torch.empty_like(q)
        grid = (triton.cdiv(n_q, BLOCK_M), batch * heads)
        qk_scale = SCALE * LOG2E if USE_EXP2 else SCALE
        _attn_fwd[grid](
            q, k, v, out, *q.stride(), *k.stride(), *v.stride(), *out.stride(),
            heads, heads // k.shape[1], n_q, n_k, qk_scale,
            CAUSAL=CAUSAL, CAUSAL_SPLIT=False, HEAD_DIM=HEAD_DIM, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N,
            BLOCK_D=BLOCK_D, EXP2=USE_EXP2, K_TRANS=False, NUM_STAGES=NUM_STAGES,
            num_warps=NUM_WARPS, num_stages=NUM_STAGES,
        )
        return out


# ---- evoforge export: the task's call signature ----------------------------------------
EvolvedModel = ModelNew
_evolved_model = None


def evolved(q, k, v):
    """Compute the task's forward with the evolved kernel (the module is built once)."""
    global _evolved_model
    if _evolved_model is None:
        _evolved_model = EvolvedModel()
    return _evolved_model(q, k, v)
