"""Prototype: CUDA C++ attention kernels (FlashAttention-2's structure, on mma.sync or wgmma) whose warps
split the keys as well as the rows, for short sequences.

Why: the template's Triton kernel runs one warpgroup per program, so each key block's QK^T, softmax
and PV run one after another (about 0.9 us per 64x128 block at the seed shape, 64 programs on 132
SMs). Here a program's warps take 16 query rows each (RG row groups) and KS warps share a row group,
each taking every KS-th key block; their partial (max, sum, output) are combined through shared
memory once, after the loop. So a program of 32 rows and 4 warps gives the seed shape 128 programs
and each warp a key loop KS times shorter, with no second kernel and no cross-program combine.

The kernel: K and V blocks staged in shared memory by cp.async (STAGES deep, rows padded against bank
conflicts), fragments by ldmatrix (V transposed), the scores' accumulators reused as the A operand of
P.V, exp2 with the scale folded in, row sums kept per thread until the end, causal masking on the
blocks that cross the diagonal, GQA through the K/V head index.

``--kernel wgmma``: the same structure on Hopper's wgmma. A warpgroup takes 64 rows and KS warpgroups
split the keys. Q and P are the A operand, in registers; K and V are read through unswizzled
shared-memory descriptors, with K as a K-major operand and V as an N-major (transposed) operand.

It is timed here outside the evaluator's workers, so that one build serves every configuration, but
with evoforge's own clock (evoforge.timing.measure: CUDA graphs, L2 flushed before every rep) and
beside SDPA and generation 0's Triton kernel in the same process; correctness against an fp32
reference on fresh inputs. Needs a CUDA GPU and nvcc.

Usage: python experiments/mma_prototype.py [--kernel mma|wgmma] [--task attention] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path

CUDA_SRC = r"""
#include <torch/extension.h>
#include <ATen/cuda/CUDAContext.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <stdint.h>

template <typename T> struct Ops;
template <> struct Ops<__half> {
  static __device__ __forceinline__ void mma(float* c, const uint32_t* a, uint32_t b0, uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
  static __device__ __forceinline__ uint32_t pack(float x, float y) {
    __half2 h = __floats2half2_rn(x, y);
    return *reinterpret_cast<uint32_t*>(&h);
  }
};
template <> struct Ops<__nv_bfloat16> {
  static __device__ __forceinline__ void mma(float* c, const uint32_t* a, uint32_t b0, uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
  static __device__ __forceinline__ uint32_t pack(float x, float y) {
    __nv_bfloat162 h = __floats2bfloat162_rn(x, y);
    return *reinterpret_cast<uint32_t*>(&h);
  }
};

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool pred) {
  uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  int n = pred ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(n));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

__device__ __forceinline__ void ldsm_x4(uint32_t* r, const void* smem) {
  uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(s));
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t* r, const void* smem) {
  uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(s));
}

template <int D, int RG, int KS, int BN, int STAGES>
constexpr int smem_bytes() {
  constexpr int kv = STAGES * KS * BN * (D + 8) * 2 * 2;
  constexpr int red = RG * KS * (16 * D + 32) * 4;
  return kv > red ? kv : red;
}

// Q, K, V, O contiguous [B, H(kv), N, D]. Program (row tile, batch*head); warp w: row group w % RG,
// key split w / RG. Step s covers keys [s*KS*BN, (s+1)*KS*BN); the warp of split ks takes block ks.
template <typename T, int D, int RG, int KS, int BN, int STAGES, bool CAUSAL>
__global__ void __launch_bounds__(RG * KS * 32)
attn_mma(const T* __restrict__ Q, const T* __restrict__ K, const T* __restrict__ V, T* __restrict__ O,
         int H, int HKV, int NQ, int NK, float scale_log2) {
  constexpr int NT = RG * KS * 32, ROWS = 16 * RG, STEP = KS * BN, LD = D + 8;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* Ks = reinterpret_cast<T*>(smem_raw);
  T* Vs = Ks + STAGES * STEP * LD;
  const int tile = blockIdx.x, bh = blockIdx.y;
  const int b = bh / H, h = bh % H, hk = h / (H / HKV);
  const T* q = Q + (size_t(b) * H + h) * NQ * D;
  const T* k = K + (size_t(b) * HKV + hk) * NK * D;
  const T* v = V + (size_t(b) * HKV + hk) * NK * D;
  T* o = O + (size_t(b) * H + h) * NQ * D;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int rg = warp % RG, ks = warp / RG;
  const int row0 = tile * ROWS + rg * 16;
  const int r_lo = row0 + lane / 4, r_hi = r_lo + 8;
  const int offset = NK - NQ;
  int hi = NK;
  if (CAUSAL) hi = min(NK, tile * ROWS + ROWS + offset);
  const int nsteps = (hi + STEP - 1) / STEP;

  auto load_step = [&](int s) {
    if (s < nsteps) {
      T* kd = Ks + (s % STAGES) * STEP * LD;
      T* vd = Vs + (s % STAGES) * STEP * LD;
      for (int i = threadIdx.x; i < STEP * D / 8; i += NT) {
        const int r = i / (D / 8), c = (i % (D / 8)) * 8;
        const int key = s * STEP + r;
        const bool ok = key < NK;
        const size_t src = size_t(ok ? key : 0) * D + c;
        cp_async16(kd + r * LD + c, k + src, ok);
        cp_async16(vd + r * LD + c, v + src, ok);
      }
    }
    cp_async_commit();  // an empty group keeps the wait counts uniform
  };
#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) load_step(s);

  uint32_t qa[D / 16][4];
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    const int d0 = kk * 16 + 2 * (lane % 4);
    qa[kk][0] = r_lo < NQ ? *reinterpret_cast<const uint32_t*>(q + size_t(r_lo) * D + d0) : 0u;
    qa[kk][1] = r_hi < NQ ? *reinterpret_cast<const uint32_t*>(q + size_t(r_hi) * D + d0) : 0u;
    qa[kk][2] = r_lo < NQ ? *reinterpret_cast<const uint32_t*>(q + size_t(r_lo) * D + d0 + 8) : 0u;
    qa[kk][3] = r_hi < NQ ? *reinterpret_cast<const uint32_t*>(q + size_t(r_hi) * D + d0 + 8) : 0u;
  }
  float oacc[D / 8][4];
#pragma unroll
  for (int j = 0; j < D / 8; ++j) oacc[j][0] = oacc[j][1] = oacc[j][2] = oacc[j][3] = 0.f;
  float m_lo = -INFINITY, m_hi = -INFINITY, l_lo = 0.f, l_hi = 0.f;
  const int mi = lane / 8, rr = lane % 8;

  for (int s = 0; s < nsteps; ++s) {
    cp_async_wait<STAGES - 2>();
    __syncthreads();
    load_step(s + STAGES - 1);
    const T* kt = Ks + (s % STAGES) * STEP * LD + ks * BN * LD;
    const T* vt = Vs + (s % STAGES) * STEP * LD + ks * BN * LD;
    const int key0 = s * STEP + ks * BN;
    if (key0 >= NK || (CAUSAL && key0 > row0 + 15 + offset)) continue;  // uniform across the warp
    float sacc[BN / 8][4];
#pragma unroll
    for (int j = 0; j < BN / 8; ++j) sacc[j][0] = sacc[j][1] = sacc[j][2] = sacc[j][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
      for (int j = 0; j < BN / 8; j += 2) {
        uint32_t r[4];
        ldsm_x4(r, kt + ((j + mi / 2) * 8 + rr) * LD + kk * 16 + (mi % 2) * 8);
        Ops<T>::mma(sacc[j], qa[kk], r[0], r[1]);
        Ops<T>::mma(sacc[j + 1], qa[kk], r[2], r[3]);
      }
    }
    if (key0 + BN > NK || (CAUSAL && key0 + BN - 1 > row0 + offset)) {
#pragma unroll
      for (int j = 0; j < BN / 8; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int key = key0 + j * 8 + 2 * (lane % 4) + (e & 1);
          const int row = e < 2 ? r_lo : r_hi;
          if (key >= NK || (CAUSAL && key > row + offset)) sacc[j][e] = -INFINITY;
        }
      }
    }
    float mx_lo = -INFINITY, mx_hi = -INFINITY;
#pragma unroll
    for (int j = 0; j < BN / 8; ++j) {
      mx_lo = fmaxf(mx_lo, fmaxf(sacc[j][0], sacc[j][1]));
      mx_hi = fmaxf(mx_hi, fmaxf(sacc[j][2], sacc[j][3]));
    }
    mx_lo = fmaxf(mx_lo, __shfl_xor_sync(0xffffffffu, mx_lo, 1));
    mx_lo = fmaxf(mx_lo, __shfl_xor_sync(0xffffffffu, mx_lo, 2));
    mx_hi = fmaxf(mx_hi, __shfl_xor_sync(0xffffffffu, mx_hi, 1));
    mx_hi = fmaxf(mx_hi, __shfl_xor_sync(0xffffffffu, mx_hi, 2));
    const float mn_lo = fmaxf(m_lo, mx_lo * scale_log2), mn_hi = fmaxf(m_hi, mx_hi * scale_log2);
    // A row with no visible key yet keeps m = -inf: exp against 0 keeps its p and alpha at 0.
    const float mu_lo = mn_lo == -INFINITY ? 0.f : mn_lo, mu_hi = mn_hi == -INFINITY ? 0.f : mn_hi;
    const float a_lo = exp2f(m_lo - mu_lo), a_hi = exp2f(m_hi - mu_hi);
    m_lo = mn_lo;
    m_hi = mn_hi;
    l_lo *= a_lo;
    l_hi *= a_hi;
#pragma unroll
    for (int j = 0; j < D / 8; ++j) {
      oacc[j][0] *= a_lo; oacc[j][1] *= a_lo; oacc[j][2] *= a_hi; oacc[j][3] *= a_hi;
    }
    uint32_t pa[BN / 16][4];
#pragma unroll
    for (int j = 0; j < BN / 8; ++j) {
      const float p0 = exp2f(fmaf(sacc[j][0], scale_log2, -mu_lo)), p1 = exp2f(fmaf(sacc[j][1], scale_log2, -mu_lo));
      const float p2 = exp2f(fmaf(sacc[j][2], scale_log2, -mu_hi)), p3 = exp2f(fmaf(sacc[j][3], scale_log2, -mu_hi));
      l_lo += p0 + p1;
      l_hi += p2 + p3;
      pa[j / 2][(j % 2) * 2] = Ops<T>::pack(p0, p1);
      pa[j / 2][(j % 2) * 2 + 1] = Ops<T>::pack(p2, p3);
    }
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) {
#pragma unroll
      for (int j = 0; j < D / 8; j += 2) {
        uint32_t r[4];
        ldsm_x4_trans(r, vt + (kk * 16 + (mi % 2) * 8 + rr) * LD + (j + mi / 2) * 8);
        Ops<T>::mma(oacc[j], pa[kk], r[0], r[1]);
        Ops<T>::mma(oacc[j + 1], pa[kk], r[2], r[3]);
      }
    }
  }
  cp_async_wait<0>();
  __syncthreads();
  l_lo += __shfl_xor_sync(0xffffffffu, l_lo, 1);
  l_lo += __shfl_xor_sync(0xffffffffu, l_lo, 2);
  l_hi += __shfl_xor_sync(0xffffffffu, l_hi, 1);
  l_hi += __shfl_xor_sync(0xffffffffu, l_hi, 2);
  if (KS > 1) {
    // Each split's partial (O, m, l) through shared memory; the split-0 warp of the row group combines.
    float* red = reinterpret_cast<float*>(smem_raw);
    constexpr int PER = 16 * D + 32;
    float* mine = red + warp * PER;
    if (ks > 0) {
#pragma unroll
      for (int j = 0; j < D / 8; ++j) {
        const int c = j * 8 + 2 * (lane % 4);
        mine[(lane / 4) * D + c] = oacc[j][0];
        mine[(lane / 4) * D + c + 1] = oacc[j][1];
        mine[(lane / 4 + 8) * D + c] = oacc[j][2];
        mine[(lane / 4 + 8) * D + c + 1] = oacc[j][3];
      }
      if (lane % 4 == 0) {
        mine[16 * D + lane / 4] = m_lo;
        mine[16 * D + lane / 4 + 8] = m_hi;
        mine[16 * D + 16 + lane / 4] = l_lo;
        mine[16 * D + 16 + lane / 4 + 8] = l_hi;
      }
    }
    __syncthreads();
    if (ks > 0) return;
    float big_lo = m_lo, big_hi = m_hi;
#pragma unroll
    for (int x = 1; x < KS; ++x) {
      const float* other = red + (rg + x * RG) * PER;
      big_lo = fmaxf(big_lo, other[16 * D + lane / 4]);
      big_hi = fmaxf(big_hi, other[16 * D + lane / 4 + 8]);
    }
    const float f_lo = m_lo == -INFINITY ? 0.f : exp2f(m_lo - big_lo);
    const float f_hi = m_hi == -INFINITY ? 0.f : exp2f(m_hi - big_hi);
    l_lo *= f_lo;
    l_hi *= f_hi;
#pragma unroll
    for (int j = 0; j < D / 8; ++j) {
      oacc[j][0] *= f_lo; oacc[j][1] *= f_lo; oacc[j][2] *= f_hi; oacc[j][3] *= f_hi;
    }
#pragma unroll
    for (int x = 1; x < KS; ++x) {
      const float* other = red + (rg + x * RG) * PER;
      const float mo_lo = other[16 * D + lane / 4], mo_hi = other[16 * D + lane / 4 + 8];
      const float g_lo = mo_lo == -INFINITY ? 0.f : exp2f(mo_lo - big_lo);
      const float g_hi = mo_hi == -INFINITY ? 0.f : exp2f(mo_hi - big_hi);
      l_lo += g_lo * other[16 * D + 16 + lane / 4];
      l_hi += g_hi * other[16 * D + 16 + lane / 4 + 8];
#pragma unroll
      for (int j = 0; j < D / 8; ++j) {
        const int c = j * 8 + 2 * (lane % 4);
        oacc[j][0] += g_lo * other[(lane / 4) * D + c];
        oacc[j][1] += g_lo * other[(lane / 4) * D + c + 1];
        oacc[j][2] += g_hi * other[(lane / 4 + 8) * D + c];
        oacc[j][3] += g_hi * other[(lane / 4 + 8) * D + c + 1];
      }
    }
  }
  const float inv_lo = 1.f / l_lo, inv_hi = 1.f / l_hi;
#pragma unroll
  for (int j = 0; j < D / 8; ++j) {
    const int c = j * 8 + 2 * (lane % 4);
    if (r_lo < NQ)
      *reinterpret_cast<uint32_t*>(o + size_t(r_lo) * D + c) = Ops<T>::pack(oacc[j][0] * inv_lo, oacc[j][1] * inv_lo);
    if (r_hi < NQ)
      *reinterpret_cast<uint32_t*>(o + size_t(r_hi) * D + c) = Ops<T>::pack(oacc[j][2] * inv_hi, oacc[j][3] * inv_hi);
  }
}

template <typename T, int D, int RG, int KS, int BN, int STAGES, bool CAUSAL>
void launch(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, torch::Tensor& o) {
  const int B = q.size(0), H = q.size(1), NQ = q.size(2), HKV = k.size(1), NK = k.size(2);
  constexpr int smem = smem_bytes<D, RG, KS, BN, STAGES>();
  auto kernel = attn_mma<T, D, RG, KS, BN, STAGES, CAUSAL>;
  static bool configured = false;
  if (!configured) {
    cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    configured = true;
  }
  dim3 grid((NQ + 16 * RG - 1) / (16 * RG), B * H);
  const float scale_log2 = 1.4426950408889634f / sqrtf(float(D));
  kernel<<<grid, RG * KS * 32, smem, at::cuda::getCurrentCUDAStream()>>>(
      reinterpret_cast<const T*>(q.data_ptr()), reinterpret_cast<const T*>(k.data_ptr()),
      reinterpret_cast<const T*>(v.data_ptr()), reinterpret_cast<T*>(o.data_ptr()), H, HKV, NQ, NK, scale_log2);
}

#define CONFIGS(X) X(0, 4, 1, 64, 3) X(1, 2, 2, 64, 3) X(2, 4, 2, 64, 3) X(3, 2, 4, 64, 2) X(4, 1, 4, 64, 2) \
                   X(5, 2, 2, 32, 4) X(6, 4, 2, 32, 4) X(7, 1, 2, 64, 3)

template <typename T>
void dispatch(int64_t cfg, bool causal, const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
              torch::Tensor& o) {
#define CASE(ID, RG, KS, BN, ST) \
  case ID:                       \
    if (causal) launch<T, 64, RG, KS, BN, ST, true>(q, k, v, o);   \
    else launch<T, 64, RG, KS, BN, ST, false>(q, k, v, o);         \
    return;
  switch (cfg) { CONFIGS(CASE) default: TORCH_CHECK(false, "unknown configuration ", cfg); }
#undef CASE
}

torch::Tensor attn_fwd(torch::Tensor q, torch::Tensor k, torch::Tensor v, int64_t cfg, bool causal) {
  TORCH_CHECK(q.is_cuda() && q.is_contiguous() && k.is_contiguous() && v.is_contiguous(), "contiguous CUDA inputs");
  TORCH_CHECK(q.size(3) == 64, "this prototype takes D = 64");
  TORCH_CHECK(q.size(1) % k.size(1) == 0, "query heads must be a multiple of K/V heads");
  auto o = torch::empty_like(q);
  if (q.scalar_type() == at::kHalf) dispatch<__half>(cfg, causal, q, k, v, o);
  else if (q.scalar_type() == at::kBFloat16) dispatch<__nv_bfloat16>(cfg, causal, q, k, v, o);
  else TORCH_CHECK(false, "fp16 or bf16 inputs");
  return o;
}
"""

def _wgmma_wrappers() -> str:
    """wgmma.mma_async (A from registers, B through a shared-memory descriptor, f32 accumulators that it
    adds to) for N = 64 and 128, fp16 and bf16, B K-major (trans 0) or N-major (trans 1)."""
    out = ["template <int N, int TRANS, typename T>\n"
           "__device__ __forceinline__ void wgmma(float* d, const uint32_t* a, uint64_t desc);\n"]
    for n in (64, 128):
        acc = ", ".join(f"%{i}" for i in range(n // 2))
        cons = ", ".join(f'"+f"(d[{i}])' for i in range(n // 2))
        a = ", ".join(f"%{n // 2 + i}" for i in range(4))
        for tname, ptx in (("__half", "f16"), ("__nv_bfloat16", "bf16")):
            for trans in (0, 1):
                out.append(
                    f"template <> __device__ __forceinline__ void wgmma<{n}, {trans}, {tname}>(float* d, "
                    f"const uint32_t* a, uint64_t desc) {{\n"
                    f'  asm volatile("wgmma.mma_async.sync.aligned.m64n{n}k16.f32.{ptx}.{ptx} {{{acc}}}, {{{a}}}, '
                    f'%{n // 2 + 4}, 1, 1, 1, {trans};\\n"\n'
                    f"      : {cons}\n"
                    f'      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc));\n}}\n')
    return "".join(out)


WGMMA_SRC = CUDA_SRC.split("template <int D, int RG, int KS, int BN, int STAGES>")[0] + _wgmma_wrappers() + r"""
__device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wg_wait0() { asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory"); }
__device__ __forceinline__ void fence_async_smem() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

// Shared-memory matrix descriptor, no swizzle: start, leading (K-direction) and stride (M/N-direction)
// byte offsets between 8x16-byte core matrices.
__device__ __forceinline__ uint64_t smem_desc(const void* p, uint32_t lbo, uint32_t sbo) {
  const uint64_t a = static_cast<uint32_t>(__cvta_generic_to_shared(p));
  return ((a & 0x3FFFF) >> 4) | (uint64_t((lbo & 0x3FFFF) >> 4) << 16) | (uint64_t((sbo & 0x3FFFF) >> 4) << 32);
}

template <int D, int KS, int BN, int STAGES>
constexpr int wg_smem_bytes() {
  constexpr int kv = STAGES * KS * BN * D * 2 * 2;
  constexpr int red = 4 * KS * (16 * D + 32) * 4;
  return kv > red ? kv : red;
}

// One program: 64 query rows; KS warpgroups, warpgroup ks takes keys [s*KS*BN + ks*BN, +BN) of step s.
// K and V tiles in shared memory as 8-key x 16-byte core matrices: key group g (8 keys, 16*D bytes),
// then d chunk c (128 bytes), then key % 8 (16 bytes). For S = Q K^T, B = K^T is K-major (LBO 128 between
// d chunks, SBO 16*D between key groups); for O = P V, B = V is N-major (LBO 16*D between key groups,
// SBO 128 between d chunks; VSWAP swaps them: reads past the tile, not used).
template <typename T, int D, int KS, int BN, int STAGES, bool VSWAP, bool CAUSAL>
__global__ void __launch_bounds__(KS * 128)
attn_wgmma(const T* __restrict__ Q, const T* __restrict__ K, const T* __restrict__ V, T* __restrict__ O,
           int H, int HKV, int NQ, int NK, float scale_log2) {
  constexpr int NT = KS * 128, STEP = KS * BN, TILE = STEP * D;  // elements per stage and operand
  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* Ks = reinterpret_cast<T*>(smem_raw);
  T* Vs = Ks + STAGES * TILE;
  const int tile = blockIdx.x, bh = blockIdx.y;
  const int b = bh / H, h = bh % H, hk = h / (H / HKV);
  const T* q = Q + (size_t(b) * H + h) * NQ * D;
  const T* k = K + (size_t(b) * HKV + hk) * NK * D;
  const T* v = V + (size_t(b) * HKV + hk) * NK * D;
  T* o = O + (size_t(b) * H + h) * NQ * D;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int rg = warp % 4, ks = warp / 4;
  const int row0 = tile * 64 + rg * 16;
  const int r_lo = row0 + lane / 4, r_hi = r_lo + 8;
  const int offset = NK - NQ;
  int hi = NK;
  if (CAUSAL) hi = min(NK, tile * 64 + 64 + offset);
  const int nsteps = (hi + STEP - 1) / STEP;

  auto load_step = [&](int s) {
    if (s < nsteps) {
      T* kd = Ks + (s % STAGES) * TILE;
      T* vd = Vs + (s % STAGES) * TILE;
      for (int i = threadIdx.x; i < TILE / 8; i += NT) {
        // chunk i sits at byte 16*i: key group i / D, d chunk (i / 8) % (D / 8), key % 8 = i % 8
        const int key_in = (i / D) * 8 + i % 8, c = ((i / 8) % (D / 8)) * 8;
        const int key = s * STEP + key_in;
        const bool ok = key < NK;
        const size_t src = size_t(ok ? key : 0) * D + c;
        cp_async16(kd + i * 8, k + src, ok);
        cp_async16(vd + i * 8, v + src, ok);
      }
    }
    cp_async_commit();
  };
#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) load_step(s);

  uint32_t qa[D / 16][4];
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    const int d0 = kk * 16 + 2 * (lane % 4);
    qa[kk][0] = r_lo < NQ ? *reinterpret_cast<const uint32_t*>(q + size_t(r_lo) * D + d0) : 0u;
    qa[kk][1] = r_hi < NQ ? *reinterpret_cast<const uint32_t*>(q + size_t(r_hi) * D + d0) : 0u;
    qa[kk][2] = r_lo < NQ ? *reinterpret_cast<const uint32_t*>(q + size_t(r_lo) * D + d0 + 8) : 0u;
    qa[kk][3] = r_hi < NQ ? *reinterpret_cast<const uint32_t*>(q + size_t(r_hi) * D + d0 + 8) : 0u;
  }
  float oacc[D / 2];
#pragma unroll
  for (int j = 0; j < D / 2; ++j) oacc[j] = 0.f;
  float m_lo = -INFINITY, m_hi = -INFINITY, l_lo = 0.f, l_hi = 0.f;
  const int wg_first = tile * 64;  // the warpgroup's first row (the whole program's rows)

  for (int s = 0; s < nsteps; ++s) {
    cp_async_wait<STAGES - 2>();
    fence_async_smem();  // this thread's cp.async writes, visible to the wgmma (async proxy) reads
    __syncthreads();
    load_step(s + STAGES - 1);
    const int key0 = s * STEP + ks * BN;
    // uniform across the warpgroup: every row of the program is past this block
    if (key0 >= NK || (CAUSAL && key0 > wg_first + 63 + offset)) continue;
    const unsigned char* kt = reinterpret_cast<const unsigned char*>(Ks + (s % STAGES) * TILE) + ks * (BN / 8) * 16 * D;
    const unsigned char* vt = reinterpret_cast<const unsigned char*>(Vs + (s % STAGES) * TILE) + ks * (BN / 8) * 16 * D;
    float sacc[BN / 2];
#pragma unroll
    for (int j = 0; j < BN / 2; ++j) sacc[j] = 0.f;
    wg_fence();
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk)
      wgmma<BN, 0, T>(sacc, qa[kk], smem_desc(kt + kk * 256, 128, 16 * D));
    wg_commit();
    wg_wait0();
    if (key0 + BN > NK || (CAUSAL && key0 + BN - 1 > row0 + offset)) {
#pragma unroll
      for (int j = 0; j < BN / 2; ++j) {
        const int key = key0 + (j / 4) * 8 + 2 * (lane % 4) + (j & 1);
        const int row = (j % 4) < 2 ? r_lo : r_hi;
        if (key >= NK || (CAUSAL && key > row + offset)) sacc[j] = -INFINITY;
      }
    }
    float mx_lo = -INFINITY, mx_hi = -INFINITY;
#pragma unroll
    for (int j = 0; j < BN / 8; ++j) {
      mx_lo = fmaxf(mx_lo, fmaxf(sacc[4 * j], sacc[4 * j + 1]));
      mx_hi = fmaxf(mx_hi, fmaxf(sacc[4 * j + 2], sacc[4 * j + 3]));
    }
    mx_lo = fmaxf(mx_lo, __shfl_xor_sync(0xffffffffu, mx_lo, 1));
    mx_lo = fmaxf(mx_lo, __shfl_xor_sync(0xffffffffu, mx_lo, 2));
    mx_hi = fmaxf(mx_hi, __shfl_xor_sync(0xffffffffu, mx_hi, 1));
    mx_hi = fmaxf(mx_hi, __shfl_xor_sync(0xffffffffu, mx_hi, 2));
    const float mn_lo = fmaxf(m_lo, mx_lo * scale_log2), mn_hi = fmaxf(m_hi, mx_hi * scale_log2);
    const float mu_lo = mn_lo == -INFINITY ? 0.f : mn_lo, mu_hi = mn_hi == -INFINITY ? 0.f : mn_hi;
    const float a_lo = exp2f(m_lo - mu_lo), a_hi = exp2f(m_hi - mu_hi);
    m_lo = mn_lo;
    m_hi = mn_hi;
    l_lo *= a_lo;
    l_hi *= a_hi;
#pragma unroll
    for (int j = 0; j < D / 8; ++j) {
      oacc[4 * j] *= a_lo; oacc[4 * j + 1] *= a_lo; oacc[4 * j + 2] *= a_hi; oacc[4 * j + 3] *= a_hi;
    }
    uint32_t pa[BN / 16][4];
#pragma unroll
    for (int j = 0; j < BN / 8; ++j) {
      const float p0 = exp2f(fmaf(sacc[4 * j], scale_log2, -mu_lo));
      const float p1 = exp2f(fmaf(sacc[4 * j + 1], scale_log2, -mu_lo));
      const float p2 = exp2f(fmaf(sacc[4 * j + 2], scale_log2, -mu_hi));
      const float p3 = exp2f(fmaf(sacc[4 * j + 3], scale_log2, -mu_hi));
      l_lo += p0 + p1;
      l_hi += p2 + p3;
      pa[j / 2][(j % 2) * 2] = Ops<T>::pack(p0, p1);
      pa[j / 2][(j % 2) * 2 + 1] = Ops<T>::pack(p2, p3);
    }
    wg_fence();
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) {
      const unsigned char* vk = vt + kk * 2 * 16 * D;
      wgmma<D, 1, T>(oacc, pa[kk], VSWAP ? smem_desc(vk, 128, 16 * D) : smem_desc(vk, 16 * D, 128));
    }
    wg_commit();
    wg_wait0();
  }
  cp_async_wait<0>();
  __syncthreads();
  l_lo += __shfl_xor_sync(0xffffffffu, l_lo, 1);
  l_lo += __shfl_xor_sync(0xffffffffu, l_lo, 2);
  l_hi += __shfl_xor_sync(0xffffffffu, l_hi, 1);
  l_hi += __shfl_xor_sync(0xffffffffu, l_hi, 2);
  if (KS > 1) {
    float* red = reinterpret_cast<float*>(smem_raw);
    constexpr int PER = 16 * D + 32;
    float* mine = red + warp * PER;
    if (ks > 0) {
#pragma unroll
      for (int j = 0; j < D / 8; ++j) {
        const int c = j * 8 + 2 * (lane % 4);
        mine[(lane / 4) * D + c] = oacc[4 * j];
        mine[(lane / 4) * D + c + 1] = oacc[4 * j + 1];
        mine[(lane / 4 + 8) * D + c] = oacc[4 * j + 2];
        mine[(lane / 4 + 8) * D + c + 1] = oacc[4 * j + 3];
      }
      if (lane % 4 == 0) {
        mine[16 * D + lane / 4] = m_lo;
        mine[16 * D + lane / 4 + 8] = m_hi;
        mine[16 * D + 16 + lane / 4] = l_lo;
        mine[16 * D + 16 + lane / 4 + 8] = l_hi;
      }
    }
    __syncthreads();
    if (ks > 0) return;
    float big_lo = m_lo, big_hi = m_hi;
#pragma unroll
    for (int x = 1; x < KS; ++x) {
      const float* other = red + (rg + x * 4) * PER;
      big_lo = fmaxf(big_lo, other[16 * D + lane / 4]);
      big_hi = fmaxf(big_hi, other[16 * D + lane / 4 + 8]);
    }
    const float f_lo = m_lo == -INFINITY ? 0.f : exp2f(m_lo - big_lo);
    const float f_hi = m_hi == -INFINITY ? 0.f : exp2f(m_hi - big_hi);
    l_lo *= f_lo;
    l_hi *= f_hi;
#pragma unroll
    for (int j = 0; j < D / 8; ++j) {
      oacc[4 * j] *= f_lo; oacc[4 * j + 1] *= f_lo; oacc[4 * j + 2] *= f_hi; oacc[4 * j + 3] *= f_hi;
    }
#pragma unroll
    for (int x = 1; x < KS; ++x) {
      const float* other = red + (rg + x * 4) * PER;
      const float mo_lo = other[16 * D + lane / 4], mo_hi = other[16 * D + lane / 4 + 8];
      const float g_lo = mo_lo == -INFINITY ? 0.f : exp2f(mo_lo - big_lo);
      const float g_hi = mo_hi == -INFINITY ? 0.f : exp2f(mo_hi - big_hi);
      l_lo += g_lo * other[16 * D + 16 + lane / 4];
      l_hi += g_hi * other[16 * D + 16 + lane / 4 + 8];
#pragma unroll
      for (int j = 0; j < D / 8; ++j) {
        const int c = j * 8 + 2 * (lane % 4);
        oacc[4 * j] += g_lo * other[(lane / 4) * D + c];
        oacc[4 * j + 1] += g_lo * other[(lane / 4) * D + c + 1];
        oacc[4 * j + 2] += g_hi * other[(lane / 4 + 8) * D + c];
        oacc[4 * j + 3] += g_hi * other[(lane / 4 + 8) * D + c + 1];
      }
    }
  }
  const float inv_lo = 1.f / l_lo, inv_hi = 1.f / l_hi;
#pragma unroll
  for (int j = 0; j < D / 8; ++j) {
    const int c = j * 8 + 2 * (lane % 4);
    uint32_t* o_lo = reinterpret_cast<uint32_t*>(o + size_t(r_lo) * D + c);
    uint32_t* o_hi = reinterpret_cast<uint32_t*>(o + size_t(r_hi) * D + c);
    if (r_lo < NQ) *o_lo = Ops<T>::pack(oacc[4 * j] * inv_lo, oacc[4 * j + 1] * inv_lo);
    if (r_hi < NQ) *o_hi = Ops<T>::pack(oacc[4 * j + 2] * inv_hi, oacc[4 * j + 3] * inv_hi);
  }
}

template <typename T, int D, int KS, int BN, int STAGES, bool VSWAP, bool CAUSAL>
void launch(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, torch::Tensor& o) {
  const int B = q.size(0), H = q.size(1), NQ = q.size(2), HKV = k.size(1), NK = k.size(2);
  constexpr int smem = wg_smem_bytes<D, KS, BN, STAGES>();
  auto kernel = attn_wgmma<T, D, KS, BN, STAGES, VSWAP, CAUSAL>;
  static bool configured = false;
  if (!configured) {
    cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    configured = true;
  }
  dim3 grid((NQ + 63) / 64, B * H);
  const float scale_log2 = 1.4426950408889634f / sqrtf(float(D));
  kernel<<<grid, KS * 128, smem, at::cuda::getCurrentCUDAStream()>>>(
      reinterpret_cast<const T*>(q.data_ptr()), reinterpret_cast<const T*>(k.data_ptr()),
      reinterpret_cast<const T*>(v.data_ptr()), reinterpret_cast<T*>(o.data_ptr()), H, HKV, NQ, NK, scale_log2);
}

#define CONFIGS(X) X(0, 1, 64, 3, false) X(1, 2, 64, 3, false) X(2, 2, 128, 2, false) X(3, 4, 64, 2, false) \
                   X(4, 2, 128, 3, false) X(5, 1, 128, 3, false) X(6, 2, 64, 2, false) X(7, 3, 64, 2, false)

template <typename T>
void dispatch(int64_t cfg, bool causal, const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
              torch::Tensor& o) {
#define CASE(ID, KS, BN, ST, VSWAP)                                  \
  case ID:                                                           \
    if (causal) launch<T, 64, KS, BN, ST, VSWAP, true>(q, k, v, o);  \
    else launch<T, 64, KS, BN, ST, VSWAP, false>(q, k, v, o);        \
    return;
  switch (cfg) { CONFIGS(CASE) default: TORCH_CHECK(false, "unknown configuration ", cfg); }
#undef CASE
}
""" + "torch::Tensor attn_fwd(" + CUDA_SRC.split("torch::Tensor attn_fwd(")[1]
WG_CONFIGS = {0: (1, 64, 3, False), 1: (2, 64, 3, False), 2: (2, 128, 2, False), 3: (4, 64, 2, False),
              4: (2, 128, 3, False), 5: (1, 128, 3, False), 6: (2, 64, 2, False), 7: (3, 64, 2, False)}


CPP_SRC = "torch::Tensor attn_fwd(torch::Tensor q, torch::Tensor k, torch::Tensor v, int64_t cfg, bool causal);"
CONFIGS = {0: (4, 1, 64, 3), 1: (2, 2, 64, 3), 2: (4, 2, 64, 3), 3: (2, 4, 64, 2), 4: (1, 4, 64, 2),
           5: (2, 2, 32, 4), 6: (4, 2, 32, 4), 7: (1, 2, 64, 3)}  # id: (RG, KS, BN, STAGES), as in CONFIGS(X)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kernel", choices=("mma", "wgmma"), default="mma")
    parser.add_argument("--task", default="attention")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    import torch
    from evaluate_sources import load_model
    from torch.utils.cpp_extension import load_inline

    from evoforge.envinfo import collect
    from evoforge.kernels.flash_attention import HardwareLimits, render
    from evoforge.mutators.template import TemplateMutator
    from evoforge.resolve import resolve_task
    from evoforge.tasks import attention_params
    from evoforge.timing import TimingConfig, measure

    spec = resolve_task(args.task)
    params = attention_params(spec)
    if params is None or not torch.cuda.is_available():
        print("mma_prototype: needs an attention task and a CUDA device", file=sys.stderr)
        return 2
    source = CUDA_SRC if args.kernel == "mma" else WGMMA_SRC
    os.environ["TORCH_CUDA_ARCH_LIST"] = "9.0a"  # wgmma is an sm_90a instruction
    ext = load_inline(f"evoforge_{args.kernel}_prototype", CPP_SRC, cuda_sources=source, functions=["attn_fwd"],
                      extra_cuda_cflags=["-O3", "--use_fast_math"],
                      verbose=False)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[params.dtype]
    kv = params.n_kv_heads
    gen = torch.Generator(device="cuda").manual_seed(0)

    def inputs() -> tuple:
        def draw(heads: int, n: int) -> torch.Tensor:
            return torch.randn(params.batch, heads, n, params.head_dim, device="cuda", generator=gen).to(dtype)
        return draw(params.heads, params.n_q), draw(kv, params.seq_len), draw(kv, params.seq_len)

    def reference(q, k, v) -> torch.Tensor:
        group = params.heads // kv
        kf, vf = (t.float().repeat_interleave(group, 1) for t in (k, v))
        mask = None
        if params.causal:
            mask = torch.ones(params.n_q, params.seq_len, dtype=torch.bool, device="cuda")
            mask = mask.tril(params.seq_len - params.n_q)
        return torch.nn.functional.scaled_dot_product_attention(q.float(), kf, vf, attn_mask=mask)

    triton_src = render(TemplateMutator(random.Random(0), params, HardwareLimits.for_device(
        torch.cuda.get_device_properties(0))).default_genome(), causal=params.causal, head_dim=params.head_dim)
    triton_model = load_model(triton_src, "template_gen0")
    if args.kernel == "mma":
        names = {cid: f"mma-rg{rg}-ks{ks}-bn{bn}-s{st}" for cid, (rg, ks, bn, st) in CONFIGS.items()}
    else:
        names = {cid: f"wgmma-ks{ks}-bn{bn}-s{st}{'-vswap' if vswap else ''}"
                 for cid, (ks, bn, st, vswap) in WG_CONFIGS.items()}
    fns = {name: (lambda q, k, v, c=cid: ext.attn_fwd(q, k, v, c, params.causal)) for cid, name in names.items()}
    fns["template-gen0"] = triton_model
    group = params.heads // kv
    fns["sdpa_default"] = lambda q, k, v: torch.nn.functional.scaled_dot_product_attention(
        q, k, v, is_causal=params.causal, enable_gqa=group > 1)

    errors: dict[str, float] = {}
    for _ in range(3):
        q, k, v = inputs()
        ref = reference(q, k, v)
        for name, fn in fns.items():
            print(f"checking {name}", file=sys.stderr, flush=True)  # names the culprit if the process dies
            err = (fn(q, k, v).float() - ref).abs().max().item()
            errors[name] = max(errors.get(name, 0.0), err)
    q, k, v = inputs()
    timed = measure({name: (lambda fn=fn: fn(q, k, v)) for name, fn in fns.items()}, device="cuda",
                    modes=("graph",), config=TimingConfig(budget_ms=200.0))
    rows = {}
    for name in fns:
        stats = timed[name]["graph"]
        median = None if isinstance(stats, str) else stats.median_us
        rows[name] = {"graph_us": median, "max_abs_err": errors[name],
                      "error": stats if isinstance(stats, str) else None}
        print(f"{name:24} graph={median and round(median, 2)} max_abs_err={errors[name]:.2e}")
    if args.out:
        args.out.write_text(json.dumps({"env": collect("cuda"), "task": spec.name,
                                        "kernel": args.kernel, "configs": names, "rows": rows,
                                        "cuda_source": source}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
