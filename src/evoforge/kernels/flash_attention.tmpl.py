# evoforge: if template
"""The Triton flash-attention kernel that ``evoforge.kernels.flash_attention.render()`` fills in for a genome.

This file is the kernel's source, and Python: ruff lints it as the rendered kernel will read. Where the
genome or the task decides, it has a *hole*, a name written ``__like_this__``, which ``render()`` replaces
with the value's text (see ``evoforge.kernels.holes``), and *blocks* between ``# evoforge: if NAME`` (or
``if not NAME``), ``# evoforge: else`` and ``# evoforge: end``, kept where the value of NAME is true
(false). Blocks under ``template`` (this docstring, the holes below) are the template's own and never
rendered. A hole that renders empty takes the ``, `` before it with it.

The holes follow the imports, defined as the default genome renders them on a non-causal task of head
size 64 (the linter then finds every name defined); ``render()`` in ``flash_attention.py`` fills them.
"""

# The template's lint: as it renders, the kernel's if/else on constexprs stays a block (Triton specialises
# each branch; SIM108), attention's Q, K, V and O keep their names (E741), the combine's row map unpacks
# a K/V head it does not use (RUF059), the combine's grid is a tuple sum (RUF005), and the persistent
# kernel's signature is 122 characters (E501): changing any of these would change the rendered kernels.
# ruff: noqa: E501, E741, RUF005, RUF059, SIM108

# evoforge: end
import math

import torch
import torch.nn as nn
import triton
import triton.language as tl

# evoforge: if template
__genome_json__ = "{}"  # the genome as sorted JSON (in a comment: the rendered file says what it was made from)
__causal__ = False  # the task's causality
__head_dim__ = 64  # the task's head size ...
__block_d__ = 64  # ... and its next power of two, at least 16 (a tl.dot needs 16)
__block_m__, __block_n__, __num_warps__, __num_stages__ = 64, 64, 4, 2
__exp2__ = True
__scale_mode__ = 0  # prescale_q: 1, scale_fma: 2, else 0
# the key loop: range(lo, hi, BLOCK_N), or pipelined, tl.range(lo, hi, BLOCK_N, num_stages=NUM_STAGES), with
# warp_specialize=True too for warp_spec
__loop__ = range(0)
__causal_split__ = False  # the genome's causal_split, on a causal task
__mask_diagonal__ = False  # the genome's mask_diagonal, on a causal task without causal_split
__k_trans__ = False  # k_layout == "trans"
__split_kv__ = 1
__fused_combine__ = False  # with split_kv > 1
__pack_gqa__ = False
__persistent__ = 0  # programs per SM; 0 where split_kv > 1 (fits() rejects that pair before rendering)
__tma__, __pdl__ = False, False
__exp_half__ = False  # with exp2
# __tile__ names the tile's function: _attn_fwd, the kernel itself, which finds its tile in the program id
# (one program per tile); or _attn_tile, which the persistent kernel calls per tile, then __tile_params__ is
# "start_m, bh, split" (else empty); render() says why only persistent genomes have the call.

# evoforge: end
# Rendered by evoforge from genome __genome_json__
CAUSAL = __causal__
HEAD_DIM = __head_dim__
SCALE = 1.0 / math.sqrt(HEAD_DIM)
BLOCK_M, BLOCK_N, BLOCK_D = __block_m__, __block_n__, __block_d__
NUM_WARPS, NUM_STAGES = __num_warps__, __num_stages__
USE_EXP2 = __exp2__
SCALE_MODE = __scale_mode__  # 0: scale each score, 1: scale Q once, 2: fold the scale into exp's argument (FMA)
LOG2E = 1.4426950408889634


@triton.jit
def _attn_inner(acc, l_i, m_i, q, k_base, v_base, skn, skd, svn, svd, offs_m, offs_n, offs_d,
                lo, hi, n_k, causal_offset, q_first, qk_scale,
                MASK_CAUSAL: tl.constexpr, DIAGONAL_ONLY: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr,
                EXP2: tl.constexpr, K_TRANS: tl.constexpr, NUM_STAGES: tl.constexpr,
                EVEN_N: tl.constexpr, EVEN_D: tl.constexpr, EMPTY_ROWS: tl.constexpr, SCALE_MODE: tl.constexpr,
                TMA: tl.constexpr, EXP_HALF: tl.constexpr, IEEE: tl.constexpr):
    # EVEN_N / EVEN_D: every key block is full and BLOCK_D == HEAD_DIM, so loads and scores need
    # no bounds masks. EMPTY_ROWS: a row may see no key in this range (split-KV past the diagonal).
    # TMA: k_base / v_base are tensor descriptors of this head's [n_k, HEAD_DIM] keys and values
    # (rows past n_k read as zeros). SCALE_MODE: 0 scales every score, 1 finds Q prescaled, 2 folds the
    # scale into the exponent's argument. EXP_HALF: 0 exp in fp32, 1 exp2 in fp16, 2 exp2 in bf16.
    # DIAGONAL_ONLY: MASK_CAUSAL applies to the blocks that cross some row's diagonal (q_first: the
    # first row's position), the others run unmasked, a branch per block (uniform across the program).
    # IEEE: fp32 inputs, whose products must stay fp32 (tl.dot would round them to TF32).
    for start_n in __loop__:
        cols = start_n + offs_n
        col_ok = cols < n_k
        if TMA:
            k = k_base.load([start_n, 0])
            qk = _dot(q, tl.trans(k), None, IEEE)
        elif K_TRANS:
            k_ptrs = k_base + cols[:, None] * skn + offs_d[None, :] * skd
            if EVEN_N and EVEN_D:
                k = tl.load(k_ptrs)
            else:
                k = tl.load(k_ptrs, mask=col_ok[:, None] & (offs_d[None, :] < HEAD_DIM), other=0.0)
            qk = _dot(q, tl.trans(k), None, IEEE)
        else:
            k_ptrs = k_base + cols[None, :] * skn + offs_d[:, None] * skd
            if EVEN_N and EVEN_D:
                k = tl.load(k_ptrs)
            else:
                k = tl.load(k_ptrs, mask=col_ok[None, :] & (offs_d[:, None] < HEAD_DIM), other=0.0)
            qk = _dot(q, k, None, IEEE)
        if SCALE_MODE == 0:
            qk = qk * qk_scale
        if MASK_CAUSAL and DIAGONAL_ONLY:
            # A block wholly below the first row's diagonal is wholly inside n_k too.
            if start_n + BLOCK_N > q_first + causal_offset + 1:
                qk = _causal_mask(qk, offs_m, cols, col_ok, causal_offset, EVEN_N)
        elif MASK_CAUSAL:
            qk = _causal_mask(qk, offs_m, cols, col_ok, causal_offset, EVEN_N)
        elif not EVEN_N:
            qk = tl.where(col_ok[None, :], qk, float("-inf"))
        if SCALE_MODE == 2:
            # Scale the row maxima, not the scores: the scores' scale and the max subtraction are one FMA.
            m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
        else:
            m_new = tl.maximum(m_i, tl.max(qk, 1))
        if EMPTY_ROWS:
            # A row with no visible key yet keeps m = -inf; exp against 0 instead of -inf keeps its
            # p and alpha at 0 rather than NaN.
            m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
        else:
            m_ref = m_new
        if SCALE_MODE == 2:
            s = qk * qk_scale - m_ref[:, None]
        else:
            s = qk - m_ref[:, None]
        if EXP_HALF > 0:
            # exp2 in the inputs' half precision, two per MUFU instruction; P comes out in V's dtype
            # (rendered with exp2 only).
            p = _exp2_half(s, EXP_HALF)
            p_sum = tl.sum(p.to(tl.float32), 1)
        elif EXP2:
            p = tl.math.exp2(s)
            p_sum = tl.sum(p, 1)
        else:
            p = tl.exp(s)
            p_sum = tl.sum(p, 1)
        if EXP2:
            alpha = tl.math.exp2(m_i - m_ref)
        else:
            alpha = tl.exp(m_i - m_ref)
        l_i = l_i * alpha + p_sum
        if TMA:
            v = v_base.load([start_n, 0])
        else:
            v_ptrs = v_base + cols[:, None] * svn + offs_d[None, :] * svd
            if EVEN_N and EVEN_D:
                v = tl.load(v_ptrs)
            else:
                v = tl.load(v_ptrs, mask=col_ok[:, None] & (offs_d[None, :] < HEAD_DIM), other=0.0)
        acc = acc * alpha[:, None]
        acc = _dot(p.to(v.dtype), v, acc, IEEE)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _causal_mask(qk, offs_m, cols, col_ok, causal_offset, EVEN_N: tl.constexpr):
    keep = (offs_m[:, None] + causal_offset) >= cols[None, :]
    if not EVEN_N:
        keep = keep & col_ok[None, :]
    return tl.where(keep, qk, float("-inf"))


@triton.jit
def _dot(a, b, acc, IEEE: tl.constexpr):
    if IEEE:
        return tl.dot(a, b, acc, input_precision="ieee")
    else:
        return tl.dot(a, b, acc)


@triton.jit
def _exp2_half(x, EXP_HALF: tl.constexpr):
    # 2**x rounded to fp16 (EXP_HALF 1) or bf16 (2): the argument is rounded to that type, then one
    # ex2.approx instruction computes two elements (sm_90 for bf16x2).
    if EXP_HALF == 2:
        return tl.inline_asm_elementwise("ex2.approx.ftz.bf16x2 $0, $1;", "=r,r", [x.to(tl.bfloat16)],
                                         dtype=tl.bfloat16, is_pure=True, pack=2)
    else:
        return tl.inline_asm_elementwise("ex2.approx.f16x2 $0, $1;", "=r,r", [x.to(tl.float16)],
                                         dtype=tl.float16, is_pure=True, pack=2)


@triton.jit
def _row_map(start_m, bh, n_heads, kv_group, n_q, BLOCK_M: tl.constexpr, PACK_GQA: tl.constexpr):
    # A program's rows: (batch, K/V head, query head per row or for all rows, query position per row,
    # valid rows, rows per program column). Program column bh is batch*head, or batch*K/V head when
    # the query heads of a group are packed into the rows.
    rows = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    if PACK_GQA:
        n_kv = n_heads // kv_group
        b = bh // n_kv
        kvh = bh % n_kv
        n_rows = kv_group * n_q
        head = kvh * kv_group + rows // n_q
        pos = rows % n_q
    else:
        b = bh // n_heads
        head = bh % n_heads
        kvh = head // kv_group
        n_rows = n_q
        pos = rows
    return b, kvh, head, pos, rows, rows < n_rows, n_rows


@triton.jit
def __tile__(Q, K, V, O, P_acc, P_m, P_l, Counter, sqb, sqh, sqm, sqd, skb, skh, skn, skd, svb, svh, svn, svd,
              sob, soh, som, sod, n_heads, kv_group, n_q, n_k, chunk, qk_scale,
              CAUSAL: tl.constexpr, CAUSAL_SPLIT: tl.constexpr, MASK_DIAGONAL: tl.constexpr,
              SPLITS: tl.constexpr, HEAD_DIM: tl.constexpr,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
              EXP2: tl.constexpr, K_TRANS: tl.constexpr, NUM_STAGES: tl.constexpr,
              EVEN_M: tl.constexpr, EVEN_N: tl.constexpr, EVEN_D: tl.constexpr, SCALE_MODE: tl.constexpr,
              TMA: tl.constexpr, FUSED_COMBINE: tl.constexpr, PACK_GQA: tl.constexpr, PDL: tl.constexpr,
              EXP_HALF: tl.constexpr, IEEE: tl.constexpr, __tile_params__):
    # Program (row block, batch*head, split): keys [split*chunk, split*chunk + chunk). With one
    # split the result is normalised into O; with several, partial (acc, m, l) go to P_* for
    # _attn_combine, or (FUSED_COMBINE) the row block's last program to finish combines them.
    # evoforge: if not persistent
    if PDL:
        # Launched as a programmatic dependent launch: the previous kernel in the stream may still be
        # running, so wait for it (and its memory) before any load or store of this kernel.
        tl.extra.cuda.gdc_wait()
    start_m = tl.program_id(0)
    bh = tl.program_id(1)
    split = tl.program_id(2)
    # evoforge: else

    # evoforge: end
    b, kvh, head, offs_m, rows, row_ok, n_rows = _row_map(start_m, bh, n_heads, kv_group, n_q, BLOCK_M, PACK_GQA)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    if PACK_GQA:
        # Rows mix query heads: the causal bounds come from the rows' first and last positions.
        q_first = tl.min(tl.where(row_ok, offs_m, n_q), 0)
        q_last = tl.max(tl.where(row_ok, offs_m, 0), 0)
        q_ptrs = Q + b * sqb + (head * sqh + offs_m * sqm)[:, None] + offs_d[None, :] * sqd
    else:
        q_first = start_m * BLOCK_M
        q_last = q_first + BLOCK_M - 1
        q_ptrs = Q + b * sqb + head * sqh + offs_m[:, None] * sqm + offs_d[None, :] * sqd
    if EVEN_M and EVEN_D:
        q = tl.load(q_ptrs)
    else:
        q = tl.load(q_ptrs, mask=row_ok[:, None] & (offs_d[None, :] < HEAD_DIM), other=0.0)
    if SCALE_MODE == 1:
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
        hi = tl.minimum(hi, q_last + 1 + causal_offset)
    if CAUSAL and CAUSAL_SPLIT:
        # Full blocks (entirely below every row's diagonal) run without the mask.
        full = tl.maximum(tl.minimum(q_first + causal_offset + 1, hi), lo)
        full = lo + ((full - lo) // BLOCK_N) * BLOCK_N
        acc, l_i, m_i = _attn_inner(acc, l_i, m_i, q, k_base, v_base, skn, skd, svn, svd, offs_m, offs_n,
                                    offs_d, lo, full, n_k, causal_offset, q_first, qk_scale, False, False, HEAD_DIM,
                                    BLOCK_N, EXP2, K_TRANS, NUM_STAGES, EVEN_N, EVEN_D, SPLITS > 1, SCALE_MODE, TMA,
                                    EXP_HALF, IEEE)
        acc, l_i, m_i = _attn_inner(acc, l_i, m_i, q, k_base, v_base, skn, skd, svn, svd, offs_m, offs_n,
                                    offs_d, full, hi, n_k, causal_offset, q_first, qk_scale, True, False, HEAD_DIM,
                                    BLOCK_N, EXP2, K_TRANS, NUM_STAGES, EVEN_N, EVEN_D, SPLITS > 1, SCALE_MODE, TMA,
                                    EXP_HALF, IEEE)
    else:
        acc, l_i, m_i = _attn_inner(acc, l_i, m_i, q, k_base, v_base, skn, skd, svn, svd, offs_m, offs_n,
                                    offs_d, lo, hi, n_k, causal_offset, q_first, qk_scale, CAUSAL, MASK_DIAGONAL,
                                    HEAD_DIM, BLOCK_N, EXP2, K_TRANS, NUM_STAGES, EVEN_N, EVEN_D, SPLITS > 1,
                                    SCALE_MODE, TMA, EXP_HALF, IEEE)
    if SPLITS == 1:
        acc = acc * (1.0 / l_i)[:, None]
        _store_rows(O, acc, b, head, offs_m, row_ok, offs_d, sob, soh, som, sod, HEAD_DIM, PACK_GQA,
                    not (EVEN_M and EVEN_D))
    else:
        base = (bh * SPLITS + split) * n_rows + rows
        tl.store(P_m + base, m_i, mask=row_ok)
        tl.store(P_l + base, l_i, mask=row_ok)
        tl.store(P_acc + base[:, None] * BLOCK_D + offs_d[None, :], acc, mask=row_ok[:, None])
        if FUSED_COMBINE:
            # Every thread's partial stores happen before the barrier; the counter's acq_rel atomic
            # publishes them (and, for the last program, acquires everyone else's).
            tl.debug_barrier()
            tile = start_m + bh * tl.num_programs(0)
            arrived = tl.atomic_add(Counter + tile, 1, sem="acq_rel", scope="gpu")
            if arrived == SPLITS - 1:
                tl.atomic_xchg(Counter + tile, 0, sem="relaxed", scope="gpu")  # ready for the next call
                _combine_tile(P_acc, P_m, P_l, O, start_m, bh, sob, soh, som, sod, n_heads, kv_group, n_q,
                              SPLITS, HEAD_DIM, BLOCK_M, BLOCK_D, EXP2, PACK_GQA)

# evoforge: if template
_attn_fwd = _attn_tile = __tile__  # the tile's function under the two names it renders as
# evoforge: end
# evoforge: if persistent
@triton.jit
def _attn_fwd_persistent(Q, K, V, O, P_acc, P_m, P_l, Counter, sqb, sqh, sqm, sqd, skb, skh, skn, skd, svb, svh, svn, svd,
              sob, soh, som, sod, n_heads, kv_group, n_q, n_k, chunk, qk_scale,
              CAUSAL: tl.constexpr, CAUSAL_SPLIT: tl.constexpr, MASK_DIAGONAL: tl.constexpr,
              SPLITS: tl.constexpr, HEAD_DIM: tl.constexpr,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
              EXP2: tl.constexpr, K_TRANS: tl.constexpr, NUM_STAGES: tl.constexpr,
              EVEN_M: tl.constexpr, EVEN_N: tl.constexpr, EVEN_D: tl.constexpr, SCALE_MODE: tl.constexpr,
              TMA: tl.constexpr, FUSED_COMBINE: tl.constexpr, PACK_GQA: tl.constexpr, PDL: tl.constexpr,
              EXP_HALF: tl.constexpr, IEEE: tl.constexpr, n_m, n_tiles):
    # A fixed number of programs, each walking the n_tiles tiles (n_m row blocks per column, no split-KV)
    # with a stride of the grid.
    if PDL:
        tl.extra.cuda.gdc_wait()
    for tile in range(tl.program_id(0), n_tiles, tl.num_programs(0)):
        # Column-major order: the tiles in flight share a few heads' K/V in L2. Causal rows take the
        # heaviest row blocks (the most keys) first, so the last tiles to start are the short ones.
        start_m = tile % n_m
        if CAUSAL:
            start_m = n_m - 1 - start_m
        _attn_tile(Q, K, V, O, P_acc, P_m, P_l, Counter, sqb, sqh, sqm, sqd, skb, skh, skn, skd, svb, svh, svn,
                   svd, sob, soh, som, sod, n_heads, kv_group, n_q, n_k, chunk, qk_scale, CAUSAL, CAUSAL_SPLIT,
                   MASK_DIAGONAL, SPLITS, HEAD_DIM, BLOCK_M, BLOCK_N, BLOCK_D, EXP2, K_TRANS, NUM_STAGES, EVEN_M,
                   EVEN_N, EVEN_D, SCALE_MODE, TMA, FUSED_COMBINE, PACK_GQA, PDL, EXP_HALF, IEEE, start_m,
                   tile // n_m, 0)

# evoforge: end


SPLIT_KV = __split_kv__
FUSED_COMBINE = __fused_combine__
PACK_GQA = __pack_gqa__
PERSISTENT = __persistent__  # programs per SM that walk the tiles (0: one program per tile)


@triton.jit
def _store_rows(O, acc, b, head, pos, row_ok, offs_d, sob, soh, som, sod, HEAD_DIM: tl.constexpr,
                PACK_GQA: tl.constexpr, MASKED: tl.constexpr):
    # MASKED: some row of the block is past the end, or BLOCK_D > HEAD_DIM (else a plain, vectorised store).
    if PACK_GQA:
        o_ptrs = O + b * sob + (head * soh + pos * som)[:, None] + offs_d[None, :] * sod
    else:
        o_ptrs = O + b * sob + head * soh + pos[:, None] * som + offs_d[None, :] * sod
    if MASKED:
        tl.store(o_ptrs, acc.to(O.dtype.element_ty), mask=row_ok[:, None] & (offs_d[None, :] < HEAD_DIM))
    else:
        tl.store(o_ptrs, acc.to(O.dtype.element_ty))


@triton.jit
def _combine_tile(P_acc, P_m, P_l, O, start_m, bh, sob, soh, som, sod, n_heads, kv_group, n_q,
                  SPLITS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
                  EXP2: tl.constexpr, PACK_GQA: tl.constexpr):
    # Partials are read through L2 only (.cg): another program wrote them, and an SM's L1 may hold
    # lines of the same scratch from an earlier call. Rows past the end (never stored) read m = 0, l = 1
    # and acc = 0 from every split, so they compute 0 instead of -inf - -inf and 0 / 0 (NaN): the same
    # instructions, no NaN for the interpreter to warn about or for a debugger to trip on.
    b, kvh, head, pos, rows, row_ok, n_rows = _row_map(start_m, bh, n_heads, kv_group, n_q, BLOCK_M, PACK_GQA)
    offs_d = tl.arange(0, BLOCK_D)
    m = tl.full([BLOCK_M], float("-inf"), tl.float32)
    for s in tl.static_range(SPLITS):
        m = tl.maximum(m, tl.load(P_m + (bh * SPLITS + s) * n_rows + rows, mask=row_ok, other=0.0,
                                  cache_modifier=".cg"))
    l_sum = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for s in tl.static_range(SPLITS):
        base = (bh * SPLITS + s) * n_rows + rows
        m_s = tl.load(P_m + base, mask=row_ok, other=0.0, cache_modifier=".cg")
        if EXP2:
            w = tl.math.exp2(m_s - m)
        else:
            w = tl.exp(m_s - m)
        w = tl.where(m_s == float("-inf"), 0.0, w)
        l_sum += w * tl.load(P_l + base, mask=row_ok, other=1.0, cache_modifier=".cg")
        acc += w[:, None] * tl.load(P_acc + base[:, None] * BLOCK_D + offs_d[None, :], mask=row_ok[:, None],
                                    other=0.0, cache_modifier=".cg")
    acc = acc / l_sum[:, None]
    _store_rows(O, acc, b, head, pos, row_ok, offs_d, sob, soh, som, sod, HEAD_DIM, PACK_GQA, True)


@triton.jit
def _attn_combine(P_acc, P_m, P_l, O, sob, soh, som, sod, n_heads, kv_group, n_q,
                  SPLITS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
                  EXP2: tl.constexpr, PACK_GQA: tl.constexpr):
    _combine_tile(P_acc, P_m, P_l, O, tl.program_id(0), tl.program_id(1), sob, soh, som, sod, n_heads, kv_group, n_q,
                  SPLITS, HEAD_DIM, BLOCK_M, BLOCK_D, EXP2, PACK_GQA)


USE_TMA = __tma__
USE_PDL = __pdl__
USE_EXP_HALF = __exp_half__


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
        self._scratch = {}  # split-KV partial results and row-block counters, per shape (never returned)
        self._fast = {}  # input layout -> a direct launcher of the compiled kernel(s)

    def _partials(self, rows, tiles, device):
        key = (rows, tiles, device)
        if key not in self._scratch:
            # The counters start at zero and the last program of each row block sets its counter back.
            self._scratch[key] = (torch.empty(rows, BLOCK_D, device=device, dtype=torch.float32),
                                  torch.empty(rows, device=device, dtype=torch.float32),
                                  torch.empty(rows, device=device, dtype=torch.float32),
                                  torch.zeros(tiles, device=device, dtype=torch.int32))
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
        pdl = USE_PDL and q.is_cuda
        # Half-precision exp2 is PTX: on the GPU only, for fp16 and bf16 inputs (else fp32 exp2).
        exp_half = {torch.float16: 1, torch.bfloat16: 2}.get(v.dtype, 0) if USE_EXP_HALF and q.is_cuda else 0
        if tma:
            triton.set_allocator(_scratch_alloc)
        kv_group = heads // k.shape[1]
        # With PACK_GQA a program column is one K/V head and its rows are its group's query heads.
        n_rows, columns = (kv_group * n_q, batch * k.shape[1]) if PACK_GQA else (n_q, batch * heads)
        n_m = triton.cdiv(n_rows, BLOCK_M)
        grid = (n_m, columns, SPLIT_KV)
        if SPLIT_KV == 1:
            chunk, (p_acc, p_m, p_l, counter) = n_k, (out, out, out, out)  # the partial buffers go unused
        else:
            chunk = triton.cdiv(triton.cdiv(n_k, SPLIT_KV), BLOCK_N) * BLOCK_N
            p_acc, p_m, p_l, counter = self._partials(batch * heads * SPLIT_KV * n_q, grid[0] * grid[1], q.device)
        # Every parameter positionally, constexprs included: the same tuple feeds the direct launcher.
        args = (q, k, v, out, p_acc, p_m, p_l, counter, *q.stride(), *k.stride(), *v.stride(), *out.stride(),
                heads, kv_group, n_q, n_k, chunk, qk_scale,
                CAUSAL, __causal_split__, __mask_diagonal__, SPLIT_KV, HEAD_DIM, BLOCK_M, BLOCK_N, BLOCK_D, USE_EXP2,
                __k_trans__, NUM_STAGES, n_rows % BLOCK_M == 0, n_k % BLOCK_N == 0, BLOCK_D == HEAD_DIM, SCALE_MODE,
                tma, FUSED_COMBINE, PACK_GQA, pdl, exp_half, q.dtype == torch.float32)
        if PERSISTENT:
            # PERSISTENT programs per SM (the interpreter: 3 programs, so that each walks several tiles),
            # the same arguments and the tiles: row blocks per column, and all of them.
            slots = torch.cuda.get_device_properties(q.device).multi_processor_count * PERSISTENT if q.is_cuda else 3
            grid = (min(n_m * columns, slots), 1, 1)
            args = (*args, n_m, n_m * columns)
        # Only the kernel this genome renders exists in the module.
        kernel_fn = _attn_fwd_persistent if PERSISTENT else _attn_fwd
        # A programmatic dependent launch exists on the GPU only (Triton's interpreter has no griddepcontrol).
        launch = {"launch_pdl": True} if pdl else {}
        kernel = kernel_fn[grid](*args, num_warps=NUM_WARPS, num_stages=NUM_STAGES, **launch)
        combine = cgrid = cargs = None
        if SPLIT_KV > 1 and not FUSED_COMBINE:
            cgrid = grid[:2] + (1,)
            cargs = (p_acc, p_m, p_l, out, *out.stride(), heads, kv_group, n_q, SPLIT_KV, HEAD_DIM, BLOCK_M, BLOCK_D,
                     USE_EXP2, PACK_GQA)
            combine = _attn_combine[cgrid](*cargs, num_warps=4)
        compiled = hasattr(kernel, "packed_metadata") and (combine is None or hasattr(combine, "packed_metadata"))
        if q.is_cuda and compiled:
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
        tail = args[8:]

        def fast(q, k, v):
            out = empty_like(q)
            run(g0, g1, g2, stream(device_index), fn, meta, None, None, None, q, k, v, out, out, out, out, out, *tail)
            return out

        return fast
    tail, ctail = args[4:7], args[7:]
    if combine is None:

        def fast_fused(q, k, v):
            out = empty_like(q)
            run(g0, g1, g2, stream(device_index), fn, meta, None, None, None, q, k, v, out, *tail, *ctail)
            return out

        return fast_fused
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
