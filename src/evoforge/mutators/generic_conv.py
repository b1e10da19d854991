"""The generic mutator's Triton template for a 2-D convolution with its epilogue fused (``conv2d_epilogue``):
which fx graphs it claims, its genes, and its source.

Claimed where a Model is ``nn.Conv2d`` (groups 1, zero padding, any kernel, stride, padding and dilation, with or
without bias) on its one 4-D floating input, followed by any elementwise program of the convolution's output,
Python scalars and per-channel tensors of the Model (a ``(C, 1, 1)`` or ``(1, C, 1, 1)`` parameter or buffer:
KernelBench's ``x + self.bias``), optionally one ``nn.MaxPool2d`` or ``nn.AvgPool2d`` (no padding, no dilation,
floor mode, no divisor override) and elementwise ops after it. Anything else is left to the compile and layout
genes.

The kernel is an implicit GEMM over NCHW: rows are output pixels (pooled pixels where a pool follows), columns
output channels, the reduction runs over input channels × kernel taps, one ``tl.dot`` per ``BK`` chunk with a
float32 accumulator. The bias, the epilogue program, the pool (a maximum over the pool window's convolution
outputs, NaN propagated as PyTorch's pool does, or their mean) and the ops after it are applied in registers
before one store, so the output is written once and nothing between the ops goes through memory.

Genes: ``tile`` (BM pixels × BN channels × BK reduction, with its warps; BN no wider than the channels need and
BK no longer than the reduction; mutation steps along one axis), ``stages``, ``pool_par`` where a pool's window
is a power of two (its convolutions as rows of one tile, then a maximum over them; else one after another), and
``precision``: float32 operands multiply in IEEE float32 unless ``high`` makes them TF32 or ``tf32x3`` makes each
product three TF32 products on the tensor cores (close to float32's accuracy; both labelled on the candidate, as
for the matmul template), or the caller's cuDNN allows TF32 (``torch.backends.cudnn.allow_tf32``, which the
Model's own convolution follows; the judge turns it off).
"""

from __future__ import annotations

from typing import Any

import torch

from evoforge.mutators import generic_triton as gt

# The tile gene's axes: BM output pixels (pooled pixels where a pool follows), BN output channels, BK of the
# reduction (input channels x taps), and warps. A tiny convolution wants many small programs and one K step each;
# a large one wide tiles; which is the search's to find.
TILE_M = (16, 32, 64, 128)
TILE_N = (16, 32, 64, 128)
TILE_K = (16, 32, 64, 128)
TILE_WARPS = (2, 4, 8)
MAX_OPERAND = 8192  # BM*BK and BK*BN at most (float32 operands in registers)
# Short reduction steps: on an H200 a 16-wide K step ran the example conv2d in 3.6 us against 7.1 at 128 wide
# (benchmarks/results/conv-template-h200.json); the search moves each axis from here.
DEFAULT_TILE = (32, 32, 16, 4)


def _pair(v: Any) -> tuple[int, int] | None:
    if isinstance(v, int) and not isinstance(v, bool):
        return v, v
    if isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(x, int) and not isinstance(x, bool)
                                                             for x in v):
        return int(v[0]), int(v[1])
    return None


def _conv_settings(mod: Any) -> dict[str, Any] | None:
    """Stride, padding and dilation of an nn.Conv2d the template computes exactly, else None."""
    if type(mod) is not torch.nn.Conv2d or mod.groups != 1 or mod.padding_mode != "zeros":
        return None
    stride, dilation = _pair(mod.stride), _pair(mod.dilation)
    kernel = _pair(mod.kernel_size)
    if stride is None or dilation is None or kernel is None:
        return None
    padding: tuple[int, int] | None
    if mod.padding == "valid":
        padding = (0, 0)
    elif mod.padding == "same":  # symmetric only (stride 1 is nn.Conv2d's own requirement)
        spans = [d * (k - 1) for d, k in zip(dilation, kernel, strict=True)]
        padding = (spans[0] // 2, spans[1] // 2) if all(s % 2 == 0 for s in spans) else None
    else:
        padding = _pair(mod.padding)
    if padding is None:
        return None
    return {"stride": list(stride), "padding": list(padding), "dilation": list(dilation),
            "out_channels": int(mod.out_channels), "reduction": int(mod.in_channels * kernel[0] * kernel[1])}


def _pool_settings(node: Any, modules: dict[str, Any]) -> dict[str, Any] | None:
    """Kind, kernel and stride of an nn.MaxPool2d or nn.AvgPool2d node that the template computes exactly."""
    if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
        return None
    mod = modules.get(node.target)
    if type(mod) is torch.nn.MaxPool2d:
        if mod.return_indices or _pair(mod.dilation) != (1, 1):
            return None
        kind = "max"
    elif type(mod) is torch.nn.AvgPool2d:
        if mod.divisor_override is not None:  # no padding below, so count_include_pad changes nothing
            return None
        kind = "avg"
    else:
        return None
    kernel = _pair(mod.kernel_size)
    stride = _pair(mod.stride if mod.stride not in (None, [], ()) else mod.kernel_size)
    if kernel is None or stride is None or mod.ceil_mode or _pair(mod.padding) != (0, 0):
        return None
    return {"kind": kind, "kernel": list(kernel), "stride": list(stride)}


def _attr(root: Any, target: str) -> Any:
    value = root
    for part in target.split("."):
        value = getattr(value, part, None)
    return value


def match(nodes: list[Any], places: list[Any], out: Any, modules: dict[str, Any],
          inputs: list[Any]) -> dict[str, Any] | None:
    """TaskTraits fields for ``conv2d_epilogue`` when the traced graph is a convolution of the one input, an
    elementwise epilogue and an optional max-pool (see the module's docstring); else None."""
    tensors = [x for x in inputs if isinstance(x, torch.Tensor)]
    if len(places) != 1 or len(inputs) != 1 or len(tensors) != 1 or tensors[0].dim() != 4 or \
            tensors[0].dtype not in gt.FLOATS or not nodes or not hasattr(out, "op"):
        return None
    first, x = nodes[0], places[0]
    if first.op != "call_module" or tuple(first.args) != (x,) or first.kwargs:
        return None
    conv = _conv_settings(modules.get(first.target))
    if conv is None:
        return None
    rest = nodes[1:]
    if out is not nodes[-1] or out.op == "get_attr":
        return None
    root = modules.get("")
    per_channel = {n: f"pc{i}" for i, n in enumerate(n for n in rest if n.op == "get_attr")}
    for node in per_channel:
        value = _attr(root, str(node.target))
        if not isinstance(value, torch.Tensor) or value.dtype != tensors[0].dtype or \
                tuple(value.shape) not in ((conv["out_channels"], 1, 1), (1, conv["out_channels"], 1, 1)):
            return None
    ops = [n for n in rest if n.op != "get_attr"]
    pools = [(i, found) for i, n in enumerate(ops) if (found := _pool_settings(n, modules)) is not None]
    if len(pools) > 1:
        return None
    pool, post, post_expr = None, [], []
    if pools:
        at, pool = pools[0]
        ops, node, post = ops[:at], ops[at], ops[at + 1:]
        if node.args[0] is not (ops[-1] if ops else first):  # the pool of the epilogue's result, nothing else
            return None
        if post:
            program = gt.elementwise_program(post, node, post[-1], modules, operands=per_channel)
            if program is None:
                return None
            post_expr = program
    expr: list[str] = []
    if ops:
        program = gt.elementwise_program(ops, first, ops[-1], modules, operands=per_channel)
        if program is None:
            return None
        expr = program
    return {"pattern": "conv2d_epilogue", "module": str(first.target), "expr": expr,
            "conv": {**conv, "pool": pool, "post": post_expr}, "params": [str(n.target) for n in per_channel]}


def tiles(traits: gt.TaskTraits) -> list[tuple[int, int, int, int]]:
    """The ``tile`` gene's values, the default first: no channel block wider than the output channels need and no
    reduction block longer than the reduction (16 at least: tl.dot), operands within MAX_OPERAND."""
    conv = traits.conv or {}
    widest_n = max(16, gt._pow2(conv.get("out_channels", 16)))
    widest_k = max(16, gt._pow2(conv.get("reduction", 16)))
    # not 128 rows on 2 warps: Triton 3.6 miscompiled (128, 16, 16) on 2 warps at 3 stages on an H200 (wrong
    # output; the only one of 90 tile x stage choices, results/conv-template-h200.json), and such a tile is slow
    out = [(m, n, k, w) for m in TILE_M for n in TILE_N for k in TILE_K for w in TILE_WARPS
           if n <= widest_n and k <= widest_k and m * k <= MAX_OPERAND and k * n <= MAX_OPERAND
           and not (w == 2 and m > 64)]
    first = (DEFAULT_TILE[0], min(DEFAULT_TILE[1], widest_n), min(DEFAULT_TILE[2], widest_k), DEFAULT_TILE[3])
    return [first] + [t for t in out if t != first]


_KERNEL = """
import triton
import triton.language as tl


@triton.jit
def _conv_acc(x_ptr, w_ptr, img, oh, ow, mmask, rn, nmask, C, H, W, K, SH: tl.constexpr, SW: tl.constexpr,
              PADH: tl.constexpr, PADW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr, KH: tl.constexpr,
              KW: tl.constexpr, DOT: tl.constexpr, ROWS: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    # the convolution at output pixels (img, oh, ow) (ROWS of them) for channels rn: an implicit GEMM over K
    rk = tl.arange(0, BK)
    acc = tl.zeros((ROWS, BN), dtype=tl.float32)
    for k0 in range(0, K, BK):
        kk = k0 + rk
        ch = kk // (KH * KW)
        tap = kk % (KH * KW)
        ih = oh[:, None] * SH - PADH + (tap // KW)[None, :] * DH
        iw = ow[:, None] * SW - PADW + (tap % KW)[None, :] * DW
        amask = mmask[:, None] & (kk < K)[None, :] & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        a = tl.load(x_ptr + ((img[:, None] * C + ch[None, :]) * H + ih) * W + iw, mask=amask, other=0.0)
        b = tl.load(w_ptr + rn[None, :].to(tl.int64) * K + kk[:, None], mask=nmask[None, :] & (kk < K)[:, None],
                    other=0.0)
        acc = tl.dot(a, b.to(a.dtype), acc, input_precision=DOT)
    return acc


@triton.jit
def _conv_epilogue(x_ptr, w_ptr, bias_ptr, {param_ptrs}y_ptr, NB, C, H, W, OC, PH, PW, K,
                   SH: tl.constexpr, SW: tl.constexpr, PADH: tl.constexpr, PADW: tl.constexpr,
                   DH: tl.constexpr, DW: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
                   PKH: tl.constexpr, PKW: tl.constexpr, PSH: tl.constexpr, PSW: tl.constexpr,
                   POOL: tl.constexpr, POOL_PAR: tl.constexpr, HAS_BIAS: tl.constexpr, DOT: tl.constexpr,
                   BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    rm = tl.program_id(0) * BM + tl.arange(0, BM)
    rn = tl.program_id(1) * BN + tl.arange(0, BN)
    mmask = rm < NB * PH * PW
    nmask = rn < OC
    img = (rm // (PH * PW)).to(tl.int64)
    ph = (rm % (PH * PW)) // PW
    pw = rm % PW
    if HAS_BIAS:
        bias = tl.load(bias_ptr + rn, mask=nmask, other=0.0).to(tl.float32)[None, :]
{param_loads}
    if POOL_PAR:  # the pool window's PKH*PKW convolutions as rows of one tile, then the pool over them
        rw = tl.program_id(0) * BM * (PKH * PKW) + tl.arange(0, BM * PKH * PKW)
        rp = rw // (PKH * PKW)
        win = rw % (PKH * PKW)
        wmask = rp < NB * PH * PW
        acc = _conv_acc(x_ptr, w_ptr, (rp // (PH * PW)).to(tl.int64), ((rp % (PH * PW)) // PW) * PSH + win // PKW,
                        (rp % PW) * PSW + win % PKW, wmask, rn, nmask, C, H, W, K, SH, SW, PADH, PADW, DH, DW,
                        KH, KW, DOT, BM * PKH * PKW, BN, BK)
{epilogue_par}
        acc3 = tl.reshape(acc, (BM, PKH * PKW, BN))
        if POOL == 2:
            best = tl.sum(acc3, axis=1) / (PKH * PKW)
        else:
            nan = tl.max((acc3 != acc3).to(tl.int32), axis=1) > 0  # max-pool propagates NaN, as PyTorch's does
            best = tl.where(nan, float("nan"), tl.max(acc3, axis=1))
    else:
        if POOL == 1:
            best = tl.full((BM, BN), float("-inf"), tl.float32)
        else:
            best = tl.zeros((BM, BN), dtype=tl.float32)
        for pi in tl.static_range(PKH):
            for pj in tl.static_range(PKW):
                acc = _conv_acc(x_ptr, w_ptr, img, ph * PSH + pi, pw * PSW + pj, mmask, rn, nmask, C, H, W, K,
                                SH, SW, PADH, PADW, DH, DW, KH, KW, DOT, BM, BN, BK)
{epilogue}
                if POOL == 1:
                    best = tl.maximum(best, acc, propagate_nan=tl.PropagateNan.ALL)
                elif POOL == 2:
                    best = best + acc
                else:
                    best = acc
        if POOL == 2:
            best = best / (PKH * PKW)
{post}
    dst = ((img[:, None] * OC + rn[None, :]) * PH + ph[:, None]) * PW + pw[:, None]
    tl.store(y_ptr + dst, best.to(y_ptr.dtype.element_ty), mask=mmask[:, None] & nmask[None, :])


def _attr(root, target):
    for part in target.split("."):
        root = getattr(root, part)
    return root


def _run(model, x):
    conv = model.get_submodule({module!r})
    x = x.contiguous()
    w = conv.weight.contiguous()
    nb, c, h, wd = x.shape
    oc, _, kh, kw = w.shape
    oh = (h + 2 * {padh} - {dh} * (kh - 1) - 1) // {sh} + 1
    ow = (wd + 2 * {padw} - {dw} * (kw - 1) - 1) // {sw} + 1
    ph, pw = (oh - {pkh}) // {psh} + 1, (ow - {pkw}) // {psw} + 1
    y = torch.empty((nb, oc, ph, pw), device=x.device, dtype=x.dtype)
    per_channel = [_attr(model, t).reshape(-1) for t in {params!r}]
    dot = {dot!r}
    if dot == "ieee" and torch.backends.cudnn.allow_tf32:  # TF32, as the Model's own convolution would be
        dot = "tf32"
    grid = (triton.cdiv(nb * ph * pw, {bm}), triton.cdiv(oc, {bn}))
    _conv_epilogue[grid](x, w, conv.bias if conv.bias is not None else w, *per_channel, y, nb, c, h, wd, oc, ph, pw,
                         c * kh * kw, SH={sh}, SW={sw}, PADH={padh}, PADW={padw}, DH={dh}, DW={dw}, KH=kh, KW=kw,
                         PKH={pkh}, PKW={pkw}, PSH={psh}, PSW={psw}, POOL={pool}, POOL_PAR={pool_par},
                         HAS_BIAS=conv.bias is not None, DOT=dot if x.dtype == torch.float32 else "ieee", BM={bm},
                         BN={bn}, BK={bk},
                         num_warps={warps}, num_stages={stages})
    return y
"""


def parallel_pool(traits: gt.TaskTraits) -> bool:
    """Whether the ``pool_par`` gene applies: a pool follows and its window is a power of two (tl.arange)."""
    pool = (traits.conv or {}).get("pool")
    if not pool:
        return False
    size = pool["kernel"][0] * pool["kernel"][1]
    return size > 1 and size & (size - 1) == 0


def parallel_fits(tile: list[int] | tuple[int, ...], traits: gt.TaskTraits) -> bool:
    """Whether ``tile`` can take the pool window in parallel: its BM rows become BM x window rows of the
    convolution, and that operand too stays within MAX_OPERAND. (128, 16, 64) on 4 warps with a 2x2 window, 3
    stages, asked 270,336 bytes of shared memory of an H200's 232,448 (benchmarks/results/
    gpu-tests-all-h200-f394e13.txt); within the bound, one pipeline stage takes at most 64 KiB."""
    pool = (traits.conv or {}).get("pool") or {"kernel": [1, 1]}
    return tile[0] * pool["kernel"][0] * pool["kernel"][1] * tile[2] <= MAX_OPERAND


def render(g: dict[str, Any], traits: gt.TaskTraits) -> str:
    """The kernel and ``_run(model, x)`` of the conv template for genome ``g``. TF32 is used where the genome's
    precision asks for it, or where the caller's cuDNN would use it (``torch.backends.cudnn.allow_tf32``, the
    setting the Model's own convolution follows)."""
    conv = traits.conv or {}
    pool = conv.get("pool") or {"kernel": [1, 1], "stride": [1, 1]}
    bm, bn, bk, warps = g["tile"][:4]
    lines = ["if HAS_BIAS:", "    acc = acc + bias", *(["x = acc", *traits.expr, "acc = y"] if traits.expr else [])]
    post = ["x = best", *conv["post"], "best = y"] if conv.get("post") else []
    names = [f"pc{i}" for i in range(len(traits.params))]
    return _KERNEL.format(
        param_ptrs="".join(f"{n}_ptr, " for n in names),
        param_loads="\n".join(f"    {n} = tl.load({n}_ptr + rn, mask=nmask, other=0.0).to(tl.float32)[None, :]"
                              for n in names),
        epilogue="\n".join(" " * 16 + line for line in lines), epilogue_par="\n".join(" " * 8 + line for line in lines),
        post="\n".join(" " * 4 + line for line in post),
        module=traits.module, params=list(traits.params),
        sh=conv["stride"][0], sw=conv["stride"][1], padh=conv["padding"][0], padw=conv["padding"][1],
        dh=conv["dilation"][0], dw=conv["dilation"][1], pkh=pool["kernel"][0], pkw=pool["kernel"][1],
        psh=pool["stride"][0], psw=pool["stride"][1], pool={None: 0, "max": 1, "avg": 2}[pool.get("kind")],
        pool_par=bool(g.get("pool_par")) and parallel_pool(traits),
        dot=gt.DOT_PRECISIONS[g["precision"]], bm=bm, bn=bn, bk=bk, warps=warps,
        stages=g["stages"])
