"""Evolved by evoforge 0.1.0 (run 20261124-233305-5e7c).

Task: attention_b2_h16_s4096_d128_fp16 (builtin:attention-d128)
Device: NVIDIA H100 80GB HBM3, torch 2.11.0+cu130, triton 3.6.0
Speedup: 0.631x over sdpa_cudnn (graph mode, 656.96 us median), measured 2026-11-24T23:33:53+00:00
Exported: 2026-11-24T23:33:59+00:00

Use: `from this_module import evolved` and call evolved(q, k, v); or EvolvedModel()(q, k, v).
"""
import math

import torch
import torch.nn as nn
import triton
import triton.language as tl

# Rendered by evoforge from genome {"block_m": 64, "block_n": 128, "causal_split": false, "exp2": true, "k_layout": "trans", "kind": "triton_flash", "loop": "tl.range", "num_stages": 3, "num_warps": 4, "prescale_q": false, "split_kv": 1, "tma": false, "warp_spec": false}
CAUSAL = False
HEAD_DIM = 128
SCALE = 1.0 / math.sqrt(HEAD_DIM)
BLOCK_M, BLOCK_N, BLOCK_D = 64, 128, 128
NUM_WARPS, NUM_STAGES = 4, 3
USE_EXP2 = True
LOG2E = 1.4426950408889634


@triton.jit
def _attn_inner(acc, l_i, m_i, q, k_base, v_base, skn, skd, svn, svd, offs_m, offs_n, offs_d,
                lo, hi, n_k, causal_offset, qk_scale,
                MASK_CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr,
                EXP2: tl.constexpr, K_TRANS: tl.constexpr, NUM_STAGES: tl.constexpr,
                EVEN_N: tl.constexpr, EVEN_D: tl.constexpr, EMPTY_ROWS: tl.constexpr, PRESCALED: tl.constexpr,
                TMA: tl.constexpr):
    # EVEN_N / EVEN_D: every key block is full and BLOCK_D == HEAD_DIM, so loads and scores need
    # no bounds masks. EMPTY_ROWS: a row may see no key in this range (split-KV past the diagonal).
    # TMA: k_base / v_base are tensor descriptors of this head's [n_k, HEAD_DIM] keys and values
    # (rows past n_k read as zeros).
    for start_n in tl.range(lo, hi, BLOCK_N, num_stages=NUM_STAGES):
        cols = start_n + offs_n
        col_ok = cols < n_k
        if TMA:
            k = k_base.load([start_n, 0])
            qk = tl.dot(q, tl.trans(k))
        elif K_TRANS:
            k_ptrs = k_base + cols[:, None] * skn + offs_d[None, :] * skd
            if EVEN_N and EVEN_D:
                k = tl.load(k_ptrs)
            else:
                k = tl.load(k_ptrs, mask=col_ok[:, None] & (offs_d[None, :] < HEAD_DIM), other=0.0)
            qk = tl.dot(q, tl.trans(k))
        else:
            k_ptrs = k_base + cols[None, :] * skn + offs_d[:, None] * skd
            if EVEN_N and EVEN_D:
                k = tl.load(k_ptrs)
            else:
                k = tl.load(k_ptrs, mask=col_ok[None, :] & (offs_d[:, None] < HEAD_DIM), other=0.0)
            qk = tl.dot(q, k)
        if not PRESCALED:
            qk = qk * qk_scale
        if MASK_CAUSAL:
            keep = (offs_m[:, None] + causal_offset) >= cols[None, :]
            if not EVEN_N:
                keep = keep & col_ok[None, :]
            qk = tl.where(keep, qk, float("-inf"))
        elif not EVEN_N:
            qk = tl.where(col_ok[None, :], qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        if EMPTY_ROWS:
            # A row with no visible key yet keeps m = -inf; exp against 0 instead of -inf keeps its
            # p and alpha at 0 rather than NaN.
            m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
        else:
            m_ref = m_new
        if EXP2:
            p = tl.math.exp2(qk - m_ref[:, None])
            alpha = tl.math.exp2(m_i - m_ref)
        else:
            p = tl.exp(qk - m_ref[:, None])
            alpha = tl.exp(m_i - m_ref)
        l_i = l_i * alpha + tl.sum(p, 1)
        if TMA:
            v = v_base.load([start_n, 0])
        else:
            v_ptrs = v_base + cols[:, None] * svn + offs_d[None, :] * svd
            if EVEN_N and EVEN_D:
                v = tl.load(v_ptrs)
            else:
                v = tl.load(v_ptrs, mask=col_ok[:, None] & (offs_d[None, :] < HEAD_DIM), other=0.0)
        acc = acc * alpha[:, None]
        acc = tl.dot(p.to(v.dtype), v, acc)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _attn_fwd(Q, K, V, O, P_acc, P_m, P_l, sqb, sqh, sqm, sqd, skb, skh, skn, skd, svb, svh, svn, svd,
              sob, soh, som, sod, n_heads, kv_group, n_q, n_k, chunk, qk_scale,
              CAUSAL: tl.constexpr, CAUSAL_SPLIT: tl.constexpr, SPLITS: tl.constexpr, HEAD_DIM: tl.constexpr,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
              EXP2: tl.constexpr, K_TRANS: tl.constexpr, NUM_STAGES: tl.constexpr,
              EVEN_M: tl.constexpr, EVEN_N: tl.constexpr, EVEN_D: tl.constexpr, PRESCALE_Q: tl.constexpr,
              TMA: tl.constexpr):
    # Program (row block, batch*head, split): keys [split*chunk, split*chunk + chunk). With one
    # split the result is normalised into O; with several, partial (acc, m, l) go to P_* for
    # _attn_combine.
    start_m = tl.program_id(0)
    bh = tl.program_id(1)
    split = tl.program_id(2)
    b = bh // n_heads
    h = bh % n_heads
    kvh = h // kv_group
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = offs_m < n_q
    q_ptrs = Q + b * sqb + h * sqh + offs_m[:, None] * sqm + offs_d[None, :] * sqd
    if EVEN_M and EVEN_D:
        q = tl.load(q_ptrs)
    else:
        q = tl.load(q_ptrs, mask=row_ok[:, None] & (offs_d[None, :] < HEAD_DIM), other=0.0)
    if PRESCALE_Q:
        q = (q * qk_scale).to(q.dtype)
    k_base = K + b * skb + kvh * skh
    v_base = V + b * svb + kvh * svh
    if TMA:
        # Device-side descriptors of this head's keys and values (the launcher checked the layout:
        # unit last stride, 16-byte aligned rows, BLOCK_D == HEAD_DIM).
        k_base = tl.make_tensor_descriptor(k_base, shape=[n_k, HEAD_DIM], strides=[skn, 1],
                                           block_shape=[BLOCK_N, BLOCK_D])
        v_base = tl.make_tensor_descriptor(v_base, shape=[n_k, HEAD_DIM], strides=[svn, 1],
                                           block_shape=[BLOCK_N, BLOCK_D])
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    causal_offset = n_k - n_q
    lo = split * chunk
    hi = tl.minimum(lo + chunk, n_k)
    if CAUSAL:
        # Block skipping: keys past the last row's diagonal are never loaded.
        hi = tl.minimum(hi, (start_m + 1) * BLOCK_M + causal_offset)
    if CAUSAL and CAUSAL_SPLIT:
        # Full blocks (entirely below every row's diagonal) run without the mask.
        full = tl.maximum(tl.minimum(start_m * BLOCK_M + causal_offset + 1, hi), lo)
        full = lo + ((full - lo) // BLOCK_N) * BLOCK_N
        acc, l_i, m_i = _attn_inner(acc, l_i, m_i, q, k_base, v_base, skn, skd, svn, svd, offs_m, offs_n,
                                    offs_d, lo, full, n_k, causal_offset, qk_scale, False, HEAD_DIM,
                                    BLOCK_N, EXP2, K_TRANS, NUM_STAGES, EVEN_N, EVEN_D, SPLITS > 1, PRESCALE_Q, TMA)
        acc, l_i, m_i = _attn_inner(acc, l_i, m_i, q, k_base, v_base, skn, skd, svn, svd, offs_m, offs_n,
                                    offs_d, full, hi, n_k, causal_offset, qk_scale, True, HEAD_DIM,
                                    BLOCK_N, EXP2, K_TRANS, NUM_STAGES, EVEN_N, EVEN_D, SPLITS > 1, PRESCALE_Q, TMA)
    else:
        acc, l_i, m_i = _attn_inner(acc, l_i, m_i, q, k_base, v_base, skn, skd, svn, svd, offs_m, offs_n,
                                    offs_d, lo, hi, n_k, causal_offset, qk_scale, CAUSAL, HEAD_DIM,
                                    BLOCK_N, EXP2, K_TRANS, NUM_STAGES, EVEN_N, EVEN_D, SPLITS > 1, PRESCALE_Q, TMA)
    if SPLITS == 1:
        acc = acc / l_i[:, None]
        tl.store(O + b * sob + h * soh + offs_m[:, None] * som + offs_d[None, :] * sod,
                 acc.to(O.dtype.element_ty), mask=row_ok[:, None] & (offs_d[None, :] < HEAD_DIM))
    else:
        base = (bh * SPLITS + split) * n_q + offs_m
        tl.store(P_m + base, m_i, mask=row_ok)
        tl.store(P_l + base, l_i, mask=row_ok)
        tl.store(P_acc + base[:, None] * BLOCK_D + offs_d[None, :], acc, mask=row_ok[:, None])


SPLIT_KV = 1


@triton.jit
def _attn_combine(P_acc, P_m, P_l, O, sob, soh, som, sod, n_heads, n_q,
                  SPLITS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
                  EXP2: tl.constexpr):
    start_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // n_heads
    h = bh % n_heads
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = offs_m < n_q
    m = tl.full([BLOCK_M], float("-inf"), tl.float32)
    for s in tl.static_range(SPLITS):
        m = tl.maximum(m, tl.load(P_m + (bh * SPLITS + s) * n_q + offs_m, mask=row_ok, other=float("-inf")))
    l_sum = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for s in tl.static_range(SPLITS):
        base = (bh * SPLITS + s) * n_q + offs_m
        m_s = tl.load(P_m + base, mask=row_ok, other=float("-inf"))
        if EXP2:
            w = tl.math.exp2(m_s - m)
        else:
            w = tl.exp(m_s - m)
        w = tl.where(m_s == float("-inf"), 0.0, w)
        l_sum += w * tl.load(P_l + base, mask=row_ok, other=0.0)
        acc += w[:, None] * tl.load(P_acc + base[:, None] * BLOCK_D + offs_d[None, :], mask=row_ok[:, None],
                                    other=0.0)
    acc = acc / l_sum[:, None]
    tl.store(O + b * sob + h * soh + offs_m[:, None] * som + offs_d[None, :] * sod,
             acc.to(O.dtype.element_ty), mask=row_ok[:, None] & (offs_d[None, :] < HEAD_DIM))


USE_TMA = False


def _tma_ok(*tensors):
    # Device-side TMA descriptors: unit last stride, 16-byte aligned base and rows, whole-row blocks.
    return BLOCK_D == HEAD_DIM and all(
        t.stride(-1) == 1 and (t.stride(-2) * t.element_size()) % 16 == 0 and t.data_ptr() % 16 == 0 for t in tensors)


def _scratch_alloc(size, alignment, stream):
    # Global memory Triton asks for when a kernel builds tensor descriptors on the device.
    return torch.empty(size, dtype=torch.int8, device="cuda")


class ModelNew(nn.Module):
    """The kernel behind the task's forward. The first call for an input layout (shapes, strides,
    dtypes, device) launches through Triton's JIT, which compiles and specialises; later calls with the
    same layout (and 16-byte aligned inputs, as the compiled kernel assumes) reuse the compiled kernel,
    its grid and every argument but the tensors, and call its launcher directly: no re-specialisation,
    no argument binding, no autotuning on the hot path. Under TRITON_INTERPRET=1 every call goes the
    JIT way."""

    def __init__(self):
        super().__init__()
        self._scratch = {}  # split-KV partial results, per shape (scratch, never returned)
        self._fast = {}  # input layout -> a direct launcher of the compiled kernel(s)

    def _partials(self, rows, device):
        key = (rows, device)
        if key not in self._scratch:
            self._scratch[key] = (torch.empty(rows, BLOCK_D, device=device, dtype=torch.float32),
                                  torch.empty(rows, device=device, dtype=torch.float32),
                                  torch.empty(rows, device=device, dtype=torch.float32))
        return self._scratch[key]

    def forward(self, q, k, v):
        key = (q.shape, k.shape, v.shape, q.stride(), k.stride(), v.stride(), q.dtype, k.dtype, v.dtype, q.device)
        fast = self._fast.get(key)
        if fast is not None and not (q.data_ptr() | k.data_ptr() | v.data_ptr()) & 15:
            return fast(q, k, v)
        return self._launch(q, k, v, key)

    def _launch(self, q, k, v, key):
        batch, heads, n_q, _ = q.shape
        n_k = k.shape[2]
        out = torch.empty_like(q)
        qk_scale = SCALE * LOG2E if USE_EXP2 else SCALE
        tma = USE_TMA and _tma_ok(k, v)
        if tma:
            triton.set_allocator(_scratch_alloc)
        if SPLIT_KV == 1:
            chunk, (p_acc, p_m, p_l) = n_k, (out, out, out)  # the partial buffers go unused
        else:
            chunk = triton.cdiv(triton.cdiv(n_k, SPLIT_KV), BLOCK_N) * BLOCK_N
            p_acc, p_m, p_l = self._partials(batch * heads * SPLIT_KV * n_q, q.device)
        grid = (triton.cdiv(n_q, BLOCK_M), batch * heads, SPLIT_KV)
        # Every parameter positionally, constexprs included: the same tuple feeds the direct launcher.
        args = (q, k, v, out, p_acc, p_m, p_l, *q.stride(), *k.stride(), *v.stride(), *out.stride(),
                heads, heads // k.shape[1], n_q, n_k, chunk, qk_scale,
                CAUSAL, False, SPLIT_KV, HEAD_DIM, BLOCK_M, BLOCK_N, BLOCK_D, USE_EXP2, True,
                NUM_STAGES, n_q % BLOCK_M == 0, n_k % BLOCK_N == 0, BLOCK_D == HEAD_DIM, False, tma)
        kernel = _attn_fwd[grid](*args, num_warps=NUM_WARPS, num_stages=NUM_STAGES)
        combine = cgrid = cargs = None
        if SPLIT_KV > 1:
            cgrid = grid[:2] + (1,)
            cargs = (p_acc, p_m, p_l, out, *out.stride(), heads, n_q, SPLIT_KV, HEAD_DIM, BLOCK_M, BLOCK_D, USE_EXP2)
            combine = _attn_combine[cgrid](*cargs, num_warps=4)
        if q.is_cuda and hasattr(kernel, "packed_metadata") and (SPLIT_KV == 1 or hasattr(combine, "packed_metadata")):
            self._fast[key] = _direct(q.device.index, kernel, grid, args, combine, cgrid, cargs)
        return out


def _direct(device_index, kernel, grid, args, combine, cgrid, cargs):
    """A launcher for one input layout: allocate the output, call the compiled kernel's launcher with
    the current stream (so CUDA-graph capture works) and the prepared arguments."""
    stream = torch._C._cuda_getCurrentRawStream
    empty_like = torch.empty_like
    run, fn, meta = kernel.run, kernel.function, kernel.packed_metadata
    g0, g1, g2 = grid
    if SPLIT_KV == 1:
        tail = args[7:]

        def fast(q, k, v):
            out = empty_like(q)
            run(g0, g1, g2, stream(device_index), fn, meta, None, None, None, q, k, v, out, out, out, out, *tail)
            return out

        return fast
    tail, ctail = args[4:7], args[7:]
    crun, cfn, cmeta = combine.run, combine.function, combine.packed_metadata
    c0, c1, c2 = cgrid
    cextra = cargs[4:]

    def fast_split(q, k, v):
        out = empty_like(q)
        s = stream(device_index)
        run(g0, g1, g2, s, fn, meta, None, None, None, q, k, v, out, *tail, *ctail)
        crun(c0, c1, c2, s, cfn, cmeta, None, None, None, *tail, out, *cextra)
        return out

    return fast_split


# ---- evoforge export: the task's call signature ----------------------------------------
EvolvedModel = ModelNew
_evolved_model = None


def evolved(q, k, v):
    """Compute the task's forward with the evolved kernel (the module is built once)."""
    global _evolved_model
    if _evolved_model is None:
        _evolved_model = EvolvedModel()
    return _evolved_model(q, k, v)
