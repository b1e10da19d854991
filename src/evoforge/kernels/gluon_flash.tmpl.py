# evoforge: if template
"""The Gluon (sm_90) flash-attention kernel that ``evoforge.kernels.gluon_flash.render()`` fills in for a genome.

Python with holes (``__like_this__``) and blocks, as ``flash_attention.tmpl.py`` (see
``evoforge.kernels.holes``). The holes are module constants: every structural choice of the genome reaches
the kernel as a ``gl.constexpr``, so one text serves every genome and Gluon specialises the branches. The
holes below are defined as the default genome renders them on a non-causal task of head size 64.
"""

# The template's lint: an if/else on a constexpr stays a block (Gluon specialises each branch; SIM108), and
# attention's Q, K, V and O keep their names (E741).
# ruff: noqa: E741, SIM108

# evoforge: end
import math
import re

import torch
import torch.nn as nn
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    mbarrier,
    tma,
    warpgroup_mma,
    warpgroup_mma_init,
    warpgroup_mma_wait,
)
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

# evoforge: if template
__genome_json__ = "{}"  # the genome as sorted JSON (in a comment: the rendered file says what it was made from)
__causal__ = False  # the task's causality
__head_dim__ = 64  # the task's head size (a power of two from 16 to 256: render() refuses others)
__block_m__, __block_n__, __num_stages__ = 128, 64, 2
__warp_spec__ = True  # a TMA producer partition (gl.warp_specialize), else the consumer warps load too
__consumers__ = 1  # consumer partitions, each with its own BLOCK_M rows of Q (warp_spec only)
__consumer_warps__ = 4  # warps per consumer: 4 (one warpgroup) or 8 (two, splitting BLOCK_M)
__producer_regs__, __consumer_regs__ = 24, 240  # setmaxnreg budgets of the worker partitions (warp_spec)
__causal_split__ = True  # causal: mask only the blocks that cross the diagonal (else every block)
__tma_store__ = False  # the epilogue through shared memory and a TMA store (when the rows divide BLOCK_M)
__overlap__ = False  # a consumer issues block j's Q·Kᵀ with block j-1's P·V and runs j's softmax under that P·V
__pingpong__ = False  # two consumers take turns to issue their wgmmas (one's softmax under the other's MMAs)
__max_regs__ = 0  # maxnreg for the launch (0: Triton's default)
__realloc_regs__ = True  # setmaxnreg moves registers between partitions (else every warp keeps the launch's)
__flat_workers__ = False  # worker warps leave after their partition instead of looping back to Gluon's dispatch
__persistent__ = False  # one program per SM, each taking every num_programs-th tile (warp_spec only)
# evoforge: end
# Rendered by evoforge from genome __genome_json__
CAUSAL = __causal__
HEAD_DIM = __head_dim__
SCALE = 1.0 / math.sqrt(HEAD_DIM)
LOG2E = 1.4426950408889634
BLOCK_M, BLOCK_N, NUM_STAGES = __block_m__, __block_n__, __num_stages__
WARP_SPEC = __warp_spec__
CONSUMERS = __consumers__
CONSUMER_WARPS = __consumer_warps__
PRODUCER_REGS, CONSUMER_REGS = __producer_regs__, __consumer_regs__
CAUSAL_SPLIT = __causal_split__
TMA_STORE = __tma_store__
OVERLAP = __overlap__
PINGPONG = __pingpong__
MAX_REGS = __max_regs__
REALLOC_REGS = __realloc_regs__
FLAT_WORKERS = __flat_workers__
PERSISTENT = __persistent__
ROWS = BLOCK_M * CONSUMERS  # query rows per program


@gluon.constexpr_function
def _mma_layout(warps, n):
    # The register layout of a wgmma accumulator with n columns, the partition's warps stacked by rows.
    return gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[warps, 1], instr_shape=[16, n, 16])


@gluon.jit
def _row_state(pos0, BLOCK_M: gl.constexpr, s_layout: gl.constexpr):
    # A consumer's rows: their query positions, and the online softmax's running max and sum.
    pos = pos0 + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, s_layout))
    m_i = gl.full([BLOCK_M], float("-inf"), gl.float32, layout=gl.SliceLayout(1, s_layout))
    l_i = gl.zeros([BLOCK_M], gl.float32, layout=gl.SliceLayout(1, s_layout))
    return pos, m_i, l_i


@gluon.jit
def _block_range(pos0, n_q, n_k, CAUSAL: gl.constexpr, CAUSAL_SPLIT: gl.constexpr,
                 BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr):
    # Key blocks for query rows [pos0, pos0 + BLOCK_M): [0, full) need no mask, [full, own) do (the
    # diagonal, or the last block past n_k). Causal rows see keys up to pos + n_k - n_q.
    if CAUSAL:
        last = gl.minimum(pos0 + BLOCK_M + n_k - n_q, n_k)
        own = gl.cdiv(last, BLOCK_N)
        if CAUSAL_SPLIT:
            full = gl.minimum((pos0 + n_k - n_q + 1) // BLOCK_N, n_k // BLOCK_N)
        else:
            full = own * 0
    else:
        own = gl.cdiv(n_k, BLOCK_N)
        full = n_k // BLOCK_N
    return full, own


@gluon.jit
def _softmax_step(s, m_i, l_i, start_n, pos, n_q, n_k, qk_scale, MASKED: gl.constexpr, CAUSAL: gl.constexpr,
                  BLOCK_N: gl.constexpr, s_layout: gl.constexpr):
    # Online softmax of one block of scores in exp2, the scale folded into one FMA per score.
    if MASKED:
        cols = start_n + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, s_layout))
        keep = gl.expand_dims(cols < n_k, 0)
        if CAUSAL:
            keep = keep & (gl.expand_dims(pos + (n_k - n_q), 1) >= gl.expand_dims(cols, 0))
        s = gl.where(keep, s, float("-inf"))
    m_new = gl.maximum(m_i, gl.max(s, 1) * qk_scale)
    p = gl.exp2(s * qk_scale - gl.expand_dims(m_new, 1))
    alpha = gl.exp2(m_i - m_new)
    l_i = l_i * alpha + gl.sum(p, 1)
    return p, alpha, m_new, l_i


@gluon.jit
def _attend(q_smem, k_buf, v_buf, k_bar, v_bar, phase, acc, m_i, l_i, start_n, pos, n_q, n_k, qk_scale,
            MASKED: gl.constexpr, CAUSAL: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
            s_layout: gl.constexpr, o_layout: gl.constexpr):
    # One key block: S = Q·Kᵀ by wgmma from shared memory, online softmax in exp2 with the scale folded
    # into one FMA per score, then O += P·V with P in registers (the wgmma's A operand).
    mbarrier.wait(k_bar, phase)
    s = gl.zeros([BLOCK_M, BLOCK_N], gl.float32, s_layout)
    s = warpgroup_mma(q_smem, k_buf.permute((1, 0)), s, use_acc=False, is_async=True)
    s = warpgroup_mma_wait(num_outstanding=0, deps=(s,))
    p, alpha, m_new, l_i = _softmax_step(s, m_i, l_i, start_n, pos, n_q, n_k, qk_scale, MASKED, CAUSAL, BLOCK_N,
                                         s_layout)
    acc = acc * gl.expand_dims(gl.convert_layout(alpha, gl.SliceLayout(1, o_layout)), 1)
    p_op = gl.convert_layout(p.to(v_buf.dtype), gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2))
    mbarrier.wait(v_bar, phase)
    acc = warpgroup_mma(p_op, v_buf, acc, is_async=True)
    acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))
    return acc, m_new, l_i


@gluon.jit
def _epilogue(acc, l_i, o_desc, O, o_smem, bh, pos0, n_q, BLOCK_M: gl.constexpr, HEAD_DIM: gl.constexpr,
              TMA_STORE: gl.constexpr, o_layout: gl.constexpr):
    acc = acc / gl.expand_dims(gl.convert_layout(l_i, gl.SliceLayout(1, o_layout)), 1)
    out = acc.to(O.dtype.element_ty)
    if TMA_STORE:
        # The rows divide BLOCK_M (the launcher checked): a whole tile of this head's rows.
        if pos0 < n_q:  # a second consumer's tile may lie past the head's last row
            o_smem.store(out)
            fence_async_shared()
            tma.async_copy_shared_to_global(o_desc, [bh * n_q + pos0, 0], o_smem)
            tma.store_wait(pendings=0)
    else:
        pos = pos0 + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, o_layout))
        cols = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, o_layout))
        rows = (bh * n_q + pos).to(gl.int64)
        ptrs = O + gl.expand_dims(rows * HEAD_DIM, 1) + gl.expand_dims(cols, 0)
        gl.store(ptrs, out, mask=gl.expand_dims(pos < n_q, 1))


@gluon.jit
def _consume(q_smem, q_bar, q_free, tile_no, base, k_bufs, v_bufs, k_ready, v_ready, k_empty, v_empty, o_desc, O,
             o_smem, bh, pos0, n_q, n_k, n_blocks, qk_scale, CAUSAL: gl.constexpr, CAUSAL_SPLIT: gl.constexpr,
             BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr, NUM_STAGES: gl.constexpr,
             TMA_STORE: gl.constexpr):
    # A consumer partition's tile: its BLOCK_M rows of Q (loaded by the producer; the program's tile_no-th
    # tile, handed back on q_free) against every key block the producer streams through the ring; it hands
    # each stage's K and V back on k_empty and v_empty. Blocks past its own rows' diagonal (the other consumer
    # needs them) are waited for and handed back unread. `base`: how many blocks the ring carried for this
    # program's earlier tiles (its stages and phases go on from there).
    s_layout: gl.constexpr = _mma_layout(gl.num_warps(), BLOCK_N)
    o_layout: gl.constexpr = _mma_layout(gl.num_warps(), HEAD_DIM)
    pos, m_i, l_i = _row_state(pos0, BLOCK_M, s_layout)
    acc = gl.zeros([BLOCK_M, HEAD_DIM], gl.float32, o_layout)
    full, own = _block_range(pos0, n_q, n_k, CAUSAL, CAUSAL_SPLIT, BLOCK_M, BLOCK_N)
    mbarrier.wait(q_bar, tile_no & 1)
    for i in range(0, full):
        stage = (base + i) % NUM_STAGES
        acc, m_i, l_i = _attend(q_smem, k_bufs.index(stage), v_bufs.index(stage), k_ready.index(stage),
                                v_ready.index(stage), ((base + i) // NUM_STAGES) & 1, acc, m_i, l_i, i * BLOCK_N,
                                pos, n_q, n_k, qk_scale, False, CAUSAL, BLOCK_M, BLOCK_N, s_layout, o_layout)
        mbarrier.arrive(k_empty.index(stage))
        mbarrier.arrive(v_empty.index(stage))
    for i in range(full, own):
        stage = (base + i) % NUM_STAGES
        acc, m_i, l_i = _attend(q_smem, k_bufs.index(stage), v_bufs.index(stage), k_ready.index(stage),
                                v_ready.index(stage), ((base + i) // NUM_STAGES) & 1, acc, m_i, l_i, i * BLOCK_N,
                                pos, n_q, n_k, qk_scale, True, CAUSAL, BLOCK_M, BLOCK_N, s_layout, o_layout)
        mbarrier.arrive(k_empty.index(stage))
        mbarrier.arrive(v_empty.index(stage))
    mbarrier.arrive(q_free)  # every Q·Kᵀ of the tile has retired: the producer may load the next tile's Q
    _skip_blocks(k_ready, v_ready, k_empty, v_empty, base, own, n_blocks, 0, 0, 0, False, NUM_STAGES)
    _epilogue(acc, l_i, o_desc, O, o_smem, bh, pos0, n_q, BLOCK_M, HEAD_DIM, TMA_STORE, o_layout)


@gluon.jit
def _skip_blocks(k_ready, v_ready, k_empty, v_empty, base, start, n_blocks, turns, turn0, CID: gl.constexpr,
                 PINGPONG: gl.constexpr, NUM_STAGES: gl.constexpr):
    # Blocks [start, n_blocks) of the tile lie past this consumer's diagonal: waited for and handed back
    # unread (with ping-pong, each still takes its turn, so that both consumers take as many).
    for i in range(start, n_blocks):
        stage = (base + i) % NUM_STAGES
        mbarrier.wait(k_ready.index(stage), ((base + i) // NUM_STAGES) & 1)
        mbarrier.wait(v_ready.index(stage), ((base + i) // NUM_STAGES) & 1)
        mbarrier.arrive(k_empty.index(stage))
        mbarrier.arrive(v_empty.index(stage))
        if PINGPONG:
            _take_turn(turns, turn0 + i + 1, CID)
            _pass_turn(turns, CID)


@gluon.jit
def _take_turn(turns, t, CID: gl.constexpr):
    # Ping-pong: consumer CID's t-th wgmma issue waits for the other consumer's previous issue. Consumer 0
    # goes first (an mbarrier starts with its previous phase complete), consumer 1 after it.
    mbarrier.wait(turns.index(CID), (t & 1) ^ (1 - CID))


@gluon.jit
def _pass_turn(turns, CID: gl.constexpr):
    mbarrier.arrive(turns.index(1 - CID))


@gluon.jit
def _overlap_step(q_smem, k_bufs, v_bufs, k_ready, v_ready, k_empty, v_empty, turns, base, turn0, j, p, p_op, alpha,
                  acc, m_i, l_i, pos, n_q, n_k, qk_scale, MASKED: gl.constexpr, CAUSAL: gl.constexpr,
                  PINGPONG: gl.constexpr, CID: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
                  NUM_STAGES: gl.constexpr,
                  s_layout: gl.constexpr, o_layout: gl.constexpr):
    # Key block j (j >= 1) of the tile, block base + j of the ring's stream (turn turn0 + j with ping-pong),
    # with block j-1's softmax done (p, alpha) and block j-2's P·V maybe in flight:
    # wait for that P·V (it reads p_op's registers) and hand its V back, make block j-1's P the wgmma
    # operand, then issue block j's Q·Kᵀ and block j-1's P·V together (O rescaled by block j-1's alpha in
    # between, as FA3 does) and run block j's softmax while the P·V is on the tensor cores. The P·V is
    # waited for at the top of the next step, not here: ptxas schedules a wait as early as the basic block
    # lets it, which put it above the exponentials (benchmarks/gluon_compile_check.py counts them).
    acc, p_op = warpgroup_mma_wait(num_outstanding=0, deps=(acc, p_op))
    g = base + j  # the block's number in the ring's stream
    mbarrier.arrive(v_empty.index((g + NUM_STAGES - 2) % NUM_STAGES), pred=j >= 2)
    p_op = gl.convert_layout(p.to(v_bufs.dtype), gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2))
    stage = g % NUM_STAGES
    prev = (g - 1) % NUM_STAGES
    mbarrier.wait(k_ready.index(stage), (g // NUM_STAGES) & 1)
    mbarrier.wait(v_ready.index(prev), ((g - 1) // NUM_STAGES) & 1)
    if PINGPONG:
        _take_turn(turns, turn0 + j, CID)
    s = gl.zeros([BLOCK_M, BLOCK_N], gl.float32, s_layout)
    s = warpgroup_mma(q_smem, k_bufs.index(stage).permute((1, 0)), s, use_acc=False, is_async=True)
    acc = acc * gl.expand_dims(gl.convert_layout(alpha, gl.SliceLayout(1, o_layout)), 1)
    acc = warpgroup_mma(p_op, v_bufs.index(prev), acc, is_async=True)
    if PINGPONG:
        _pass_turn(turns, CID)
    s = warpgroup_mma_wait(num_outstanding=1, deps=(s,))  # Q·Kᵀ retired; P·V may still run
    mbarrier.arrive(k_empty.index(stage))
    p, alpha, m_i, l_i = _softmax_step(s, m_i, l_i, j * BLOCK_N, pos, n_q, n_k, qk_scale, MASKED, CAUSAL, BLOCK_N,
                                       s_layout)
    return p, p_op, alpha, acc, m_i, l_i


@gluon.jit
def _consume_overlapped(q_smem, q_bar, q_free, tile_no, base, turn0, k_bufs, v_bufs, k_ready, v_ready, k_empty,
                        v_empty, turns, o_desc, O, o_smem, bh, pos0, n_q, n_k, n_blocks, qk_scale, CAUSAL: gl.constexpr,
                        CAUSAL_SPLIT: gl.constexpr, PINGPONG: gl.constexpr, CID: gl.constexpr,
                        BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr,
                        NUM_STAGES: gl.constexpr, TMA_STORE: gl.constexpr):
    # A consumer partition with its MMAs software-pipelined (FA3's intra-warpgroup overlap): block 0's
    # Q·Kᵀ and softmax, then per block j its Q·Kᵀ with block j-1's P·V (_overlap_step), then the last
    # block's P·V. Every tile owns block 0 (rows see keys from the first), so block 0 is masked as a
    # diagonal block may need. With PINGPONG the two consumers issue their wgmmas in turn.
    s_layout: gl.constexpr = _mma_layout(gl.num_warps(), BLOCK_N)
    o_layout: gl.constexpr = _mma_layout(gl.num_warps(), HEAD_DIM)
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    dtype: gl.constexpr = v_bufs.dtype
    pos, m_i, l_i = _row_state(pos0, BLOCK_M, s_layout)
    acc = warpgroup_mma_init(gl.zeros([BLOCK_M, HEAD_DIM], gl.float32, o_layout))  # carried in flight
    p_op = gl.zeros([BLOCK_M, BLOCK_N], dtype, p_layout)
    full, own = _block_range(pos0, n_q, n_k, CAUSAL, CAUSAL_SPLIT, BLOCK_M, BLOCK_N)
    mbarrier.wait(q_bar, tile_no & 1)
    # Block 0: its Q·Kᵀ alone.
    first = base % NUM_STAGES
    mbarrier.wait(k_ready.index(first), (base // NUM_STAGES) & 1)
    if PINGPONG:
        _take_turn(turns, turn0, CID)
    s = gl.zeros([BLOCK_M, BLOCK_N], gl.float32, s_layout)
    s = warpgroup_mma(q_smem, k_bufs.index(first).permute((1, 0)), s, use_acc=False, is_async=True)
    if PINGPONG:
        _pass_turn(turns, CID)
    s = warpgroup_mma_wait(num_outstanding=0, deps=(s,))
    mbarrier.arrive(k_empty.index(first))
    p, alpha, m_i, l_i = _softmax_step(s, m_i, l_i, 0, pos, n_q, n_k, qk_scale, True, CAUSAL, BLOCK_N, s_layout)
    for j in range(1, full):
        p, p_op, alpha, acc, m_i, l_i = _overlap_step(q_smem, k_bufs, v_bufs, k_ready, v_ready, k_empty, v_empty,
                                                      turns, base, turn0, j, p, p_op, alpha, acc, m_i, l_i, pos,
                                                      n_q, n_k,
                                                      qk_scale, False, CAUSAL, PINGPONG, CID, BLOCK_M, BLOCK_N,
                                                      NUM_STAGES, s_layout, o_layout)
    for j in range(gl.maximum(full, 1), own):
        p, p_op, alpha, acc, m_i, l_i = _overlap_step(q_smem, k_bufs, v_bufs, k_ready, v_ready, k_empty, v_empty,
                                                      turns, base, turn0, j, p, p_op, alpha, acc, m_i, l_i, pos,
                                                      n_q, n_k,
                                                      qk_scale, True, CAUSAL, PINGPONG, CID, BLOCK_M, BLOCK_N,
                                                      NUM_STAGES, s_layout, o_layout)
    # The last block's P·V, once the one before it has retired.
    acc, p_op = warpgroup_mma_wait(num_outstanding=0, deps=(acc, p_op))
    mbarrier.arrive(v_empty.index((base + own + NUM_STAGES - 2) % NUM_STAGES), pred=own >= 2)
    mbarrier.arrive(q_free)  # every Q·Kᵀ of the tile has retired: the producer may load the next tile's Q
    p_op = gl.convert_layout(p.to(dtype), p_layout)
    last = (base + own - 1) % NUM_STAGES
    mbarrier.wait(v_ready.index(last), ((base + own - 1) // NUM_STAGES) & 1)
    if PINGPONG:
        _take_turn(turns, turn0 + own, CID)
    acc = acc * gl.expand_dims(gl.convert_layout(alpha, gl.SliceLayout(1, o_layout)), 1)
    acc = warpgroup_mma(p_op, v_bufs.index(last), acc, is_async=True)
    if PINGPONG:
        _pass_turn(turns, CID)
    acc, p_op = warpgroup_mma_wait(num_outstanding=0, deps=(acc, p_op))
    mbarrier.arrive(v_empty.index(last))
    _skip_blocks(k_ready, v_ready, k_empty, v_empty, base, own, n_blocks, turns, turn0, CID, PINGPONG,
                 NUM_STAGES)
    _epilogue(acc, l_i, o_desc, O, o_smem, bh, pos0, n_q, BLOCK_M, HEAD_DIM, TMA_STORE, o_layout)


@gluon.jit
def _tile(t, n_heads, kv_group, n_q, n_k, CAUSAL: gl.constexpr, ROWS: gl.constexpr, BLOCK_N: gl.constexpr):
    # Tile t: ROWS query rows of one (batch, head), the row tiles of a head next to each other (their K/V
    # shared in L2); causal, each head's heaviest row tiles first. Returns the tile's (batch*head), first row,
    # rows in the [rows, HEAD_DIM] views of Q/O and of K/V, and the key blocks the tile needs.
    n_m = gl.cdiv(n_q, ROWS)
    start_m = t % n_m
    if CAUSAL:
        start_m = n_m - 1 - start_m
    bh = t // n_m
    kvh = (bh // n_heads) * (n_heads // kv_group) + (bh % n_heads) // kv_group
    pos0 = start_m * ROWS
    if CAUSAL:
        n_blocks = gl.cdiv(gl.minimum(pos0 + ROWS + n_k - n_q, n_k), BLOCK_N)
    else:
        n_blocks = gl.cdiv(n_k, BLOCK_N)
    return bh, pos0, bh * n_q + pos0, kvh * n_k, n_blocks


@gluon.jit
def _consume_as(cid: gl.constexpr, q_smem, q_bars, q_free, k_bufs, v_bufs, k_ready, v_ready, k_empty, v_empty,
                turns, o_desc, O, o_smem, n_heads, kv_group, n_q, n_k, n_tiles, qk_scale, CAUSAL: gl.constexpr,
                CAUSAL_SPLIT: gl.constexpr, OVERLAP: gl.constexpr, PINGPONG: gl.constexpr, BLOCK_M: gl.constexpr,
                BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr, NUM_STAGES: gl.constexpr, TMA_STORE: gl.constexpr,
                CONSUMERS: gl.constexpr):
    # Consumer cid, a partition (cid 0 the default one, cid 1 a worker): the cid-th BLOCK_M rows of each of
    # the program's tiles (one, or with a persistent launch every num_programs-th). The ring's stream and the
    # ping-pong turns go on from tile to tile: `base` blocks so far, and n_blocks + 1 turns per tile.
    ROWS: gl.constexpr = BLOCK_M * CONSUMERS
    base = gl.program_id(0) * 0
    for t in range(gl.program_id(0), n_tiles, gl.num_programs(0)):
        tile_no = (t - gl.program_id(0)) // gl.num_programs(0)  # the program's how-manieth tile
        bh, pos0, _, _, n_blocks = _tile(t, n_heads, kv_group, n_q, n_k, CAUSAL, ROWS, BLOCK_N)
        if OVERLAP:
            _consume_overlapped(q_smem.index(cid), q_bars.index(cid), q_free.index(cid), tile_no, base,
                                base + tile_no, k_bufs, v_bufs, k_ready, v_ready, k_empty, v_empty, turns, o_desc,
                                O, o_smem.index(cid), bh, pos0 + cid * BLOCK_M, n_q, n_k, n_blocks, qk_scale, CAUSAL,
                                CAUSAL_SPLIT, PINGPONG, cid, BLOCK_M, BLOCK_N, HEAD_DIM, NUM_STAGES, TMA_STORE)
        else:
            _consume(q_smem.index(cid), q_bars.index(cid), q_free.index(cid), tile_no, base, k_bufs, v_bufs, k_ready,
                     v_ready, k_empty, v_empty, o_desc, O, o_smem.index(cid), bh, pos0 + cid * BLOCK_M, n_q, n_k,
                     n_blocks, qk_scale, CAUSAL, CAUSAL_SPLIT, BLOCK_M, BLOCK_N, HEAD_DIM, NUM_STAGES, TMA_STORE)
        base += n_blocks


@gluon.jit
def _produce(q_desc, k_desc, v_desc, q_smem, q_bars, q_free, k_bufs, v_bufs, k_ready, v_ready, k_empty, v_empty,
             n_heads, kv_group, n_q, n_k, n_tiles, CAUSAL: gl.constexpr, BLOCK_M: gl.constexpr,
             BLOCK_N: gl.constexpr, NUM_STAGES: gl.constexpr, CONSUMERS: gl.constexpr):
    # The producer partition (one warp), for each of the program's tiles: each consumer's Q tile (once that
    # consumer has handed the last one back), then K and V blocks by TMA into their rings, each stage once
    # every consumer has handed it back (an mbarrier starts with its previous phase complete, so the first
    # round does not wait). K and V are handed back apart: an overlapped consumer is done with block j's K
    # before block j-1's V. The ring's stream goes on from tile to tile (`base` blocks so far).
    ROWS: gl.constexpr = BLOCK_M * CONSUMERS
    base = gl.program_id(0) * 0
    tile_no = base
    for t in range(gl.program_id(0), n_tiles, gl.num_programs(0)):
        _, _, q_row, kv_row, n_blocks = _tile(t, n_heads, kv_group, n_q, n_k, CAUSAL, ROWS, BLOCK_N)
        for c in gl.static_range(CONSUMERS):
            mbarrier.wait(q_free.index(c), (tile_no & 1) ^ 1)
            mbarrier.expect(q_bars.index(c), q_desc.block_type.nbytes)
            tma.async_copy_global_to_shared(q_desc, [q_row + c * BLOCK_M, 0], q_bars.index(c), q_smem.index(c))
        for i in range(n_blocks):
            stage = (base + i) % NUM_STAGES
            phase = (((base + i) // NUM_STAGES) & 1) ^ 1
            mbarrier.wait(k_empty.index(stage), phase)
            mbarrier.expect(k_ready.index(stage), k_desc.block_type.nbytes)
            tma.async_copy_global_to_shared(k_desc, [kv_row + i * BLOCK_N, 0], k_ready.index(stage),
                                            k_bufs.index(stage))
            mbarrier.wait(v_empty.index(stage), phase)
            mbarrier.expect(v_ready.index(stage), v_desc.block_type.nbytes)
            tma.async_copy_global_to_shared(v_desc, [kv_row + i * BLOCK_N, 0], v_ready.index(stage),
                                            v_bufs.index(stage))
        base += n_blocks
        tile_no += 1


@gluon.jit
def _attn_fwd(q_desc, k_desc, v_desc, o_desc, O, n_heads, kv_group, n_q, n_k, n_tiles, qk_scale,
              CAUSAL: gl.constexpr, CAUSAL_SPLIT: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
              HEAD_DIM: gl.constexpr, NUM_STAGES: gl.constexpr, WARP_SPEC: gl.constexpr, CONSUMERS: gl.constexpr,
              PRODUCER_REGS: gl.constexpr, CONSUMER_REGS: gl.constexpr, TMA_STORE: gl.constexpr,
              OVERLAP: gl.constexpr, PINGPONG: gl.constexpr, REALLOC_REGS: gl.constexpr,
              FLAT_WORKERS: gl.constexpr):
    # REALLOC_REGS and FLAT_WORKERS are read by the launcher only (_ptx_rewritten): constexprs here, so that each
    # rewrite of the PTX has a compile-cache key of its own.
    # Tiles of CONSUMERS * BLOCK_M query rows of one head (_tile), n_tiles of them: a program takes tile
    # program_id, then (a persistent launch, fewer programs than tiles) every num_programs-th after it. Q, K, V
    # and O are [rows, HEAD_DIM] views of the contiguous [B, H, S, D] tensors; a head's K/V block that runs past
    # n_k reads the next head's rows (masked to -inf before the softmax) or TMA's zeros.
    ROWS: gl.constexpr = BLOCK_M * CONSUMERS

    dtype: gl.constexpr = q_desc.dtype
    q_smem = gl.allocate_shared_memory(dtype, [CONSUMERS, BLOCK_M, HEAD_DIM], q_desc.layout)
    k_bufs = gl.allocate_shared_memory(dtype, [NUM_STAGES, BLOCK_N, HEAD_DIM], k_desc.layout)
    v_bufs = gl.allocate_shared_memory(dtype, [NUM_STAGES, BLOCK_N, HEAD_DIM], v_desc.layout)
    if TMA_STORE:
        o_smem = gl.allocate_shared_memory(dtype, [CONSUMERS, BLOCK_M, HEAD_DIM], o_desc.layout)
    else:
        o_smem = q_smem  # unused
    q_bars = gl.allocate_shared_memory(gl.int64, [CONSUMERS, 1], mbarrier.MBarrierLayout())
    q_free = gl.allocate_shared_memory(gl.int64, [CONSUMERS, 1], mbarrier.MBarrierLayout())
    k_ready = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    v_ready = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    k_empty = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    v_empty = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    turns = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())  # ping-pong's
    for c in gl.static_range(CONSUMERS):
        mbarrier.init(q_bars.index(c), count=1)
        mbarrier.init(q_free.index(c), count=1)
    for s in gl.static_range(NUM_STAGES):
        mbarrier.init(k_ready.index(s), count=1)
        mbarrier.init(v_ready.index(s), count=1)
        mbarrier.init(k_empty.index(s), count=CONSUMERS)
        mbarrier.init(v_empty.index(s), count=CONSUMERS)
    for c in gl.static_range(2):
        mbarrier.init(turns.index(c), count=1)
    fence_async_shared()

    if WARP_SPEC:
        if CONSUMERS == 2:
            gl.warp_specialize([
                (_consume_as, (0, q_smem, q_bars, q_free, k_bufs, v_bufs, k_ready, v_ready, k_empty, v_empty, turns,
                               o_desc, O, o_smem, n_heads, kv_group, n_q, n_k, n_tiles, qk_scale, CAUSAL,
                               CAUSAL_SPLIT, OVERLAP, PINGPONG, BLOCK_M, BLOCK_N, HEAD_DIM, NUM_STAGES, TMA_STORE,
                               CONSUMERS)),
                (_consume_as, (1, q_smem, q_bars, q_free, k_bufs, v_bufs, k_ready, v_ready, k_empty, v_empty, turns,
                               o_desc, O, o_smem, n_heads, kv_group, n_q, n_k, n_tiles, qk_scale, CAUSAL,
                               CAUSAL_SPLIT, OVERLAP, PINGPONG, BLOCK_M, BLOCK_N, HEAD_DIM, NUM_STAGES, TMA_STORE,
                               CONSUMERS)),
                (_produce, (q_desc, k_desc, v_desc, q_smem, q_bars, q_free, k_bufs, v_bufs, k_ready, v_ready, k_empty,
                            v_empty, n_heads, kv_group, n_q, n_k, n_tiles, CAUSAL, BLOCK_M, BLOCK_N, NUM_STAGES,
                            CONSUMERS)),
            ], [gl.num_warps(), 1], [CONSUMER_REGS, PRODUCER_REGS])
        else:
            gl.warp_specialize([
                (_consume_as, (0, q_smem, q_bars, q_free, k_bufs, v_bufs, k_ready, v_ready, k_empty, v_empty, turns,
                               o_desc, O, o_smem, n_heads, kv_group, n_q, n_k, n_tiles, qk_scale, CAUSAL,
                               CAUSAL_SPLIT, OVERLAP, False, BLOCK_M, BLOCK_N, HEAD_DIM, NUM_STAGES, TMA_STORE,
                               CONSUMERS)),
                (_produce, (q_desc, k_desc, v_desc, q_smem, q_bars, q_free, k_bufs, v_bufs, k_ready, v_ready, k_empty,
                            v_empty, n_heads, kv_group, n_q, n_k, n_tiles, CAUSAL, BLOCK_M, BLOCK_N, NUM_STAGES,
                            CONSUMERS)),
            ], [1], [PRODUCER_REGS])
    else:
        # One tile per program (the launcher never makes this loop persistent).
        bh, pos0, q_row, kv_row, n_blocks = _tile(gl.program_id(0), n_heads, kv_group, n_q, n_k, CAUSAL, ROWS,
                                                  BLOCK_N)
        _pipelined(q_desc, k_desc, v_desc, o_desc, O, q_smem, q_bars, k_bufs, v_bufs, k_ready, v_ready, o_smem, bh,
                   pos0, q_row, kv_row, n_q, n_k, n_blocks, qk_scale, CAUSAL, CAUSAL_SPLIT, BLOCK_M, BLOCK_N,
                   HEAD_DIM, NUM_STAGES, TMA_STORE)


@gluon.jit
def _pipe_step(q_buf, k_bufs, v_bufs, k_ready, v_ready, k_desc, v_desc, kv_row, i, own, acc, m_i, l_i, pos, n_q, n_k,
               qk_scale, MASKED: gl.constexpr, CAUSAL: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
               NUM_STAGES: gl.constexpr, s_layout: gl.constexpr, o_layout: gl.constexpr):
    # Key block i of the loop without warp specialisation: attend to it, then refill its stage with
    # block i + NUM_STAGES once every warp has read it (a CTA barrier, then the TMA).
    stage = i % NUM_STAGES
    k_buf = k_bufs.index(stage)
    v_buf = v_bufs.index(stage)
    acc, m_i, l_i = _attend(q_buf, k_buf, v_buf, k_ready.index(stage), v_ready.index(stage), (i // NUM_STAGES) & 1,
                            acc, m_i, l_i, i * BLOCK_N, pos, n_q, n_k, qk_scale, MASKED, CAUSAL, BLOCK_M, BLOCK_N,
                            s_layout, o_layout)
    nxt = i + NUM_STAGES
    ok = nxt < own
    gl.thread_barrier()  # every warp's wgmma has read this stage
    mbarrier.expect(k_ready.index(stage), k_desc.block_type.nbytes, pred=ok)
    tma.async_copy_global_to_shared(k_desc, [kv_row + nxt * BLOCK_N, 0], k_ready.index(stage), k_buf, pred=ok)
    mbarrier.expect(v_ready.index(stage), v_desc.block_type.nbytes, pred=ok)
    tma.async_copy_global_to_shared(v_desc, [kv_row + nxt * BLOCK_N, 0], v_ready.index(stage), v_buf, pred=ok)
    return acc, m_i, l_i


@gluon.jit
def _pipelined(q_desc, k_desc, v_desc, o_desc, O, q_smem, q_bars, k_bufs, v_bufs, k_ready, v_ready, o_smem, bh,
               pos0, q_row, kv_row, n_q, n_k, n_blocks, qk_scale, CAUSAL: gl.constexpr,
               CAUSAL_SPLIT: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr,
               NUM_STAGES: gl.constexpr, TMA_STORE: gl.constexpr):
    # Without warp specialisation: the same warps keep NUM_STAGES K/V blocks in flight by TMA and refill
    # a stage once every warp has finished reading it (a CTA barrier, then the TMA).
    s_layout: gl.constexpr = _mma_layout(gl.num_warps(), BLOCK_N)
    o_layout: gl.constexpr = _mma_layout(gl.num_warps(), HEAD_DIM)
    q_buf = q_smem.index(0)
    q_bar = q_bars.index(0)
    mbarrier.expect(q_bar, q_desc.block_type.nbytes)
    tma.async_copy_global_to_shared(q_desc, [q_row, 0], q_bar, q_buf)
    for i in gl.static_range(NUM_STAGES):
        ok = i < n_blocks  # with one consumer, n_blocks is this tile's own block count
        mbarrier.expect(k_ready.index(i), k_desc.block_type.nbytes, pred=ok)
        tma.async_copy_global_to_shared(k_desc, [kv_row + i * BLOCK_N, 0], k_ready.index(i), k_bufs.index(i),
                                        pred=ok)
        mbarrier.expect(v_ready.index(i), v_desc.block_type.nbytes, pred=ok)
        tma.async_copy_global_to_shared(v_desc, [kv_row + i * BLOCK_N, 0], v_ready.index(i), v_bufs.index(i),
                                        pred=ok)
    pos, m_i, l_i = _row_state(pos0, BLOCK_M, s_layout)
    acc = gl.zeros([BLOCK_M, HEAD_DIM], gl.float32, o_layout)
    full, own = _block_range(pos0, n_q, n_k, CAUSAL, CAUSAL_SPLIT, BLOCK_M, BLOCK_N)
    mbarrier.wait(q_bar, 0)
    # Two loops, as in _consume, not one loop with `if i < full:` around two inlined _attend calls: for
    # that, ptxas (CUDA 12.8, the Triton 3.6 wheel's) wrote the K and V wgmma descriptors of the k-steps
    # after the first only in the unmasked copy, and the masked copy read those uniform registers unwritten
    # (the PTX was right). A tile whose first block is masked (causal row tile 0; n_k not a multiple of
    # BLOCK_N) gave wgmma a stale descriptor: "out-of-range shared address" on an H200. One wgmma site per
    # loop body compiles right (the SASS checked by benchmarks/gluon_compile_check.py).
    for i in range(0, full):
        acc, m_i, l_i = _pipe_step(q_buf, k_bufs, v_bufs, k_ready, v_ready, k_desc, v_desc, kv_row, i, own, acc,
                                   m_i, l_i, pos, n_q, n_k, qk_scale, False, CAUSAL, BLOCK_M, BLOCK_N, NUM_STAGES,
                                   s_layout, o_layout)
    for i in range(full, own):
        acc, m_i, l_i = _pipe_step(q_buf, k_bufs, v_bufs, k_ready, v_ready, k_desc, v_desc, kv_row, i, own, acc,
                                   m_i, l_i, pos, n_q, n_k, qk_scale, True, CAUSAL, BLOCK_M, BLOCK_N, NUM_STAGES,
                                   s_layout, o_layout)
    _epilogue(acc, l_i, o_desc, O, o_smem.index(0), bh, pos0, n_q, BLOCK_M, HEAD_DIM, TMA_STORE, o_layout)


_GL_DTYPES = {torch.float16: gl.float16, torch.bfloat16: gl.bfloat16}


def _desc(t, block):
    layout = gl.NVMMASharedLayout.get_default_for(block, _GL_DTYPES[t.dtype])
    return TensorDescriptor(t, list(t.shape), list(t.stride()), block, layout)


def _workers_leave(ptx):
    """The PTX with Gluon's worker warps leaving once their partition is done, instead of going back to wait
    for the next ``warp_specialize`` region. Gluon (Triton 3.6) runs worker warps in a dispatch loop: wait at a
    CTA barrier, read their partition from shared memory, run it (``brx.idx``), loop. Inside that loop the
    ptxas of Triton 3.6 cannot give a partition the registers its ``setmaxnreg`` raises it to, and with two
    overlapped consumer partitions it serialises every wgmma of the kernel ("insufficient register resources",
    C7512). This kernel has one ``warp_specialize`` region, so the state a worker reads after its partition is
    always "exit": each back edge to the loop's head (an unconditional branch in a block LLVM marks as inside
    that loop) becomes the head's own steps up to its barrier (the register move and the CTA barrier the
    default partition waits at), then a branch to the dispatch table's exit block (a bare ``ret``). Where the
    PTX does not have this shape, it is returned unchanged (the kernel is the same, its wgmmas serialised)."""
    table = re.search(r"\$L_brx_\d+: \.branchtargets\s+([^;]+);\s*brx\.idx", ptx)
    if table is None:
        return ptx
    heads = list(re.finditer(r"^(\$L__BB\d+_\d+):", ptx[:table.start()], re.M))
    if not heads:
        return ptx
    head = heads[-1].group(1)
    wait = re.search(r"^\s*barrier\.sync\s+\d+;[ \t]*$", ptx[heads[-1].end():table.start()], re.M)
    if wait is None:
        return ptx
    steps = [line for line in ptx[heads[-1].end():heads[-1].end() + wait.end()].split("\n")
             if line.strip() and not line.strip().startswith(("//", ".loc"))]
    exits = [label for label in (t.strip() for t in table.group(1).split(","))
             if re.search("^" + re.escape(label) + r":.*\n(?:[ \t]*(?:\.loc.*|//.*)?\n)*[ \t]*ret;", ptx, re.M)]
    if len(exits) != 1:
        return ptx
    mark = "in Loop: Header=" + head[len("$L__"):] + " "
    out, in_loop, labelled = [], False, False
    for line in ptx.split("\n"):
        if re.match(r"^\$L__BB\d+_\d+:", line):
            in_loop, labelled = mark in line, True
        elif labelled and line.strip().startswith("//"):
            in_loop = in_loop or mark in line
        else:
            labelled = False
        if in_loop and re.fullmatch(r"\s*bra\.uni\s+" + re.escape(head) + ";", line):
            indent = line[:len(line) - len(line.lstrip())]
            out += [*steps, indent + "bra.uni \t" + exits[0] + ";"]
        else:
            out.append(line)
    return "\n".join(out)


class _ptx_rewritten:
    """While active, Triton's compile pipeline rewrites this kernel's PTX: with ``strip_setmaxnreg`` every
    ``setmaxnreg`` goes, so that all warps keep the launch's registers (realloc_regs=False); with
    ``workers_leave``, :func:`_workers_leave` (flat_workers). A compile-stage hook, chained to any hook
    already set and put back on exit: it touches only this module's kernel, and only compiles (the first launch
    of a layout), never a cached kernel: REALLOC_REGS and FLAT_WORKERS are constexprs of the kernel, so each
    rewrite has a compile-cache key of its own. Both exist because of one limit of the ptxas of Triton 3.6:
    with two overlapped consumer partitions it serialises every wgmma of the kernel ("insufficient register
    resources", C7512) while the worker warps' ``setmaxnreg`` sits in Gluon's dispatch loop."""

    def __init__(self, strip_setmaxnreg, workers_leave):
        self.strip, self.leave = strip_setmaxnreg, workers_leave

    def __enter__(self):
        if self.strip or self.leave:
            from triton import knobs

            self.before = knobs.runtime.add_stages_inspection_hook
            before, strip, leave = self.before, self.strip, self.leave

            def hook(backend, stages, options, language, capability):
                if before is not None:
                    before(backend, stages, options, language, capability)
                make_ptx = stages["ptx"]

                def ptx(src, metadata):
                    text = make_ptx(src, metadata)
                    if "_attn_fwd" not in metadata.get("name", "_attn_fwd"):
                        return text
                    if leave:
                        text = _workers_leave(text)
                    if strip:
                        text = re.sub(r"\n\s*setmaxnreg\.(inc|dec)\.sync\.aligned\.u32\s+\d+;", "", text)
                    return text

                stages["ptx"] = ptx

            knobs.runtime.add_stages_inspection_hook = hook
        return self

    def __exit__(self, *exc):
        if self.strip or self.leave:
            from triton import knobs

            knobs.runtime.add_stages_inspection_hook = self.before
        return False


def _programs(n_tiles, device):
    """Programs to launch: a program per tile, or with PERSISTENT (warp-specialised kernels only) at most one
    per SM (every genome's registers fill an SM), each taking every num_programs-th tile."""
    if not (PERSISTENT and WARP_SPEC) or device.type != "cuda":
        return n_tiles
    return min(n_tiles, _sm_count(device.index if device.index is not None else torch.cuda.current_device()))


_SMS = {}


def _sm_count(index):
    if index not in _SMS:
        _SMS[index] = torch.cuda.get_device_properties(index).multi_processor_count
    return _SMS[index]


class ModelNew(nn.Module):
    """The kernel behind the task's forward (fp16/bf16, contiguous [B, H, S, D] views; other strides are
    copied contiguous first). Each call builds the four TMA descriptors and launches through Gluon's JIT,
    which compiles on the first call for a layout."""

    def forward(self, q, k, v):
        batch, heads, n_q, _ = q.shape
        n_k = k.shape[2]
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        out = torch.empty_like(q)
        q2, k2, v2, o2 = (t.view(-1, HEAD_DIM) for t in (q, k, v, out))
        q_desc = _desc(q2, [BLOCK_M, HEAD_DIM])
        k_desc = _desc(k2, [BLOCK_N, HEAD_DIM])
        v_desc = _desc(v2, [BLOCK_N, HEAD_DIM])
        o_desc = _desc(o2, [BLOCK_M, HEAD_DIM])
        n_tiles = triton.cdiv(n_q, ROWS) * batch * heads
        grid = (_programs(n_tiles, q.device),)
        launch = {"maxnreg": MAX_REGS} if MAX_REGS else {}
        with _ptx_rewritten(not REALLOC_REGS, FLAT_WORKERS):
            self._launch(grid, launch, q_desc, k_desc, v_desc, o_desc, out, heads, k.shape[1], n_q, n_k, n_tiles)
        return out

    def _launch(self, grid, launch, q_desc, k_desc, v_desc, o_desc, out, heads, kv_heads, n_q, n_k, n_tiles):
        _attn_fwd[grid](q_desc, k_desc, v_desc, o_desc, out, heads, heads // kv_heads, n_q, n_k, n_tiles,
                        SCALE * LOG2E,
                        CAUSAL, CAUSAL_SPLIT, BLOCK_M, BLOCK_N, HEAD_DIM, NUM_STAGES, WARP_SPEC, CONSUMERS,
                        PRODUCER_REGS, CONSUMER_REGS, TMA_STORE and n_q % BLOCK_M == 0, OVERLAP, PINGPONG, REALLOC_REGS,
                        FLAT_WORKERS, num_warps=CONSUMER_WARPS, **launch)
