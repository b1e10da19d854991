"""Evolved by evoforge 0.1.0 (run 20261202-133835-1c08).

Task: attention_b1_h8_s512_d64_bf16_causal (builtin:attention-causal:dtype=bf16)
Device: NVIDIA H200, torch 2.11.0+cu130, triton 3.6.0
Speedup: 1.509x over sdpa_default (graph mode, 6.86 us median), measured 2026-12-02T13:39:29+00:00: faster, significant
Exported: 2026-12-02T13:39:34+00:00

Use: `from this_module import attention`: torch.nn.functional.scaled_dot_product_attention's
signature, run by the evolved kernel where TABLE (below) says it was verified and by SDPA elsewhere (warned
once; strict=True raises instead). evolved(q, k, v) is the task's own call; check() says why a call falls
back, stats() counts both; routed() (or evoforge.use("this_file.py")) sends SDPA calls here inside a block;
register_transformers() adds attn_implementation="evoforge". Check it here: python this_file.py --selftest
"""
import contextlib
import hashlib
import linecache
import math
import os
import sys
import time
import types
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch

TABLE: list[dict[str, Any]] = [{'baseline': 'sdpa_default',
  'candidate': 'flash-404da6',
  'capability': [9, 0],
  'causal': True,
  'device_name': 'NVIDIA H200',
  'device_type': 'cuda',
  'dtype': 'bfloat16',
  'fitness_mode': 'graph',
  'general': True,
  'genome': {'block_m': 64,
             'block_n': 128,
             'causal_split': False,
             'exp2': True,
             'exp_half': False,
             'fused_combine': False,
             'k_layout': 'direct',
             'kind': 'triton_flash',
             'loop': 'tl.range',
             'mask_diagonal': True,
             'num_stages': 3,
             'num_warps': 4,
             'pack_gqa': False,
             'pdl': False,
             'persistent': 0,
             'prescale_q': False,
             'scale_fma': True,
             'split_kv': 1,
             'tma': False,
             'warp_spec': False},
  'gqa_ratios': [1],
  'hash': '88c0fb9512601d05',
  'head_dim': 64,
  'language': 'triton',
  'max_seq_len': None,
  'name': 'attention_b1_h8_s512_d64_bf16_causal',
  'pack_gqa': False,
  'run': '20261202-133835-1c08',
  'scale': 0.125,
  'shape_speedups': [1.5094427503740815],
  'speedup': 1.5094427503740815,
  'tolerance': [0.01, 0.016],
  'verified_shapes': [{'batch': 1, 'heads': 8, 'kv_heads': 8, 'kv_len': 512, 'q_len': 512}],
  'versions': {'cuda': '13.0',
               'cudnn': 91900,
               'python': '3.12.3',
               'torch': '2.11.0+cu130',
               'triton': '3.6.0'}}]
KERNEL_SOURCES: dict[str, str] = {}  # each entry's evolved candidate by its hash (set at the end of the module)
SPEC: dict[str, Any] = TABLE[0] if TABLE else {}  # the first entry: a one-kernel export's only one
NAME: str = SPEC.get("name", "attention") if len(TABLE) < 2 else f"evoforge dispatch table ({len(TABLE)} kernels)"

# The builtin SDPA, not the attribute of torch.nn.functional: `evoforge.use` replaces that attribute, and
# the fallback must never route back to this module.
_SDPA: Callable[..., torch.Tensor] = getattr(torch._C._nn, "scaled_dot_product_attention",
                                            torch.nn.functional.scaled_dot_product_attention)
_INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"  # Triton reads it when the kernel is defined
_MAX_OFFSET = 2**31  # the kernel's index arithmetic is 32-bit
_MAX_GRID_Y = 65535  # CUDA's limit on a grid's second dimension (batch x heads for the Triton kernel)


class UnsupportedCall(ValueError):
    """A call outside what every exported kernel was verified for, with strict=True."""


_state: dict[str, Any] = {"strict": os.environ.get("EVOFORGE_STRICT") == "1", "warned": False, "models": {},
                          "broken": {}, "kernel": 0, "fallback": 0, "entries": {}, "reasons": {},
                          "only_faster": os.environ.get("EVOFORGE_ONLY_FASTER", "1") != "0"}
_capabilities: dict[int, tuple[int, int]] = {}


def set_strict(strict: bool) -> None:
    """strict=True: a call no kernel covers raises UnsupportedCall instead of falling back."""
    _state["strict"] = bool(strict)


def set_only_faster(only_faster: bool) -> None:
    """only_faster=True (the default): an entry does not take the calls nearest a verified shape where its run
    measured it slower than PyTorch's fastest path (SDPA runs them). False runs each entry wherever it is
    verified, to check or time the kernel itself there (the self-test does)."""
    _state["only_faster"] = bool(only_faster)
    _verdicts.clear()


def stats() -> dict[str, Any]:
    """Calls that ran an evolved kernel, calls that fell back to SDPA, and why they fell back; with several
    kernels, also the calls each entry ran ("entries": entry name -> calls)."""
    out = {"kernel": _state["kernel"], "fallback": _state["fallback"], "reasons": dict(_state["reasons"])}
    if len(TABLE) > 1:
        out["entries"] = {s["name"]: _state["entries"].get(i, 0) for i, s in enumerate(TABLE)}
    return out


def reset_stats() -> None:
    _state.update(kernel=0, fallback=0, entries={}, reasons={})


def _capability(device: torch.device) -> tuple[int, int]:
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _capabilities:
        _capabilities[index] = torch.cuda.get_device_capability(index)
    return _capabilities[index]


def _fmt_shape(t: torch.Tensor) -> str:
    return "x".join(str(n) for n in t.shape)


def _shape_text(shape: dict[str, int]) -> str:
    return ", ".join(f"{key}={val}" for key, val in shape.items())


def _call_reason(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None,
                 enable_gqa: bool, dropout_p: float, causal_bottom_right: bool) -> str | None:
    """Why no kernel can take this call whatever it was verified for, or None."""
    if attn_mask is not None:
        return "an attention mask (the kernel takes none)"
    if dropout_p:
        return f"dropout_p={dropout_p} (the kernel has no dropout)"
    if not all(isinstance(t, torch.Tensor) and t.layout == torch.strided for t in (q, k, v)):
        return "inputs that are not dense tensors"
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        return f"{q.dim()}-D inputs (the kernel takes [batch, heads, seq_len, head_dim])"
    batch, heads, n_q, _ = q.shape
    if k.shape != v.shape or k.shape[0] != batch:
        return f"q {_fmt_shape(q)}, k {_fmt_shape(k)}, v {_fmt_shape(v)} (k and v must match, same batch as q)"
    kv_heads, n_k = k.shape[1], k.shape[2]
    if min(batch, heads, n_q, kv_heads, n_k) == 0:
        return "an empty input"
    if heads % kv_heads:
        return f"{heads} query heads over {kv_heads} K/V heads"
    if heads != kv_heads and not enable_gqa:
        return f"{heads} query heads and {kv_heads} K/V heads without enable_gqa=True"
    if causal_bottom_right and n_q > n_k:
        return f"a causal mask aligned to the last key with {n_q} queries and {n_k} keys (rows with no key)"
    if not q.device == k.device == v.device:
        return f"inputs on {q.device}, {k.device} and {v.device}"
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.stride(-1) != 1:
            return f"{name} with stride {t.stride(-1)} along head_dim (the kernel needs it contiguous)"
        if t.data_ptr() % 16:
            return f"{name} not 16-byte aligned"
        if sum((n - 1) * st for n, st in zip(t.shape, t.stride(), strict=True)) >= _MAX_OFFSET:
            return f"{name} spans 2^31 elements or more (the kernel's offsets are 32-bit)"
    if q.numel() >= _MAX_OFFSET:
        return "an output of 2^31 elements or more (the kernel's offsets are 32-bit)"
    return None


def _entry_reason(i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, is_causal: bool,
                  scale: float | None, causal_bottom_right: bool) -> str | None:
    """Why TABLE[i] does not cover a call that _call_reason passed, or None."""
    s = TABLE[i]
    if i in _state["broken"]:
        return _state["broken"][i]
    dtype = getattr(torch, s["dtype"])
    if not q.dtype == k.dtype == v.dtype == dtype:
        return f"dtype {q.dtype}/{k.dtype}/{v.dtype} (verified for {dtype})"
    d = s["head_dim"]
    if not q.shape[-1] == k.shape[-1] == v.shape[-1] == d:
        return f"head dim {q.shape[-1]}/{k.shape[-1]}/{v.shape[-1]} (verified for {d})"
    if scale is not None and not math.isclose(scale, s["scale"], rel_tol=1e-6):
        return f"scale={scale} (the kernel's is 1/sqrt({d}) = {s['scale']:.6g})"
    batch, heads, n_q, _ = q.shape
    kv_heads, n_k = k.shape[1], k.shape[2]
    if heads // kv_heads not in s["gqa_ratios"]:
        verified = ", ".join(f"{r}:1" for r in s["gqa_ratios"])
        return f"grouped-query ratio {heads}:{kv_heads} (verified for {verified})"
    causal = bool(is_causal) or bool(causal_bottom_right)
    # One query that sees every key (a decode step) is the same call with or without the kernel's causal mask.
    if causal != s["causal"] and not (n_q == 1 and (not is_causal or n_k == 1)):
        return f"causal={causal} (verified for causal={s['causal']})"
    if is_causal and not causal_bottom_right and n_q != n_k:
        return f"is_causal with {n_q} queries and {n_k} keys (SDPA aligns that mask to the top left, the kernel " \
               "to the last key)"
    shape = {"batch": batch, "heads": heads, "kv_heads": kv_heads, "q_len": n_q, "kv_len": n_k}
    if not s["general"] and shape not in s["verified_shapes"]:
        verified = "; ".join(_shape_text(v) for v in s["verified_shapes"])
        return f"shape {_shape_text(shape)} (this kernel was verified for its exact shapes only: {verified})"
    if s.get("max_seq_len") and max(n_q, n_k) > s["max_seq_len"]:
        return f"sequence length {max(n_q, n_k)} (verified up to {s['max_seq_len']})"
    if s["language"] == "triton" and batch * (kv_heads if s.get("pack_gqa") else heads) > _MAX_GRID_Y:
        return f"batch x heads = {batch * heads} (over the launch grid's limit)"
    if q.device.type != s["device_type"]:
        return f"device {q.device} (verified on {s['device_name']})"
    if q.device.type == "cuda" and list(_capability(q.device)) != s["capability"]:
        cap = ".".join(map(str, _capability(q.device)))
        return f"compute capability {cap} (verified on {s['device_name']}, {'.'.join(map(str, s['capability']))})"
    if q.device.type == "cpu" and s["language"] == "triton" and not _INTERPRETED:
        return "a Triton kernel on the CPU, which needs TRITON_INTERPRET=1 set before this module is imported"
    if not s["general"]:
        for name, t in (("q", q), ("k", k), ("v", v)):
            if not t.is_contiguous():
                return f"a non-contiguous {name} (this kernel was verified on contiguous inputs)"
    return None


def _nearest(s: dict[str, Any], batch: int, heads: int, n_q: int, n_k: int) -> tuple[float, int]:
    """(distance, index) of the verified shape of entry ``s`` nearest to a call's: the distance is the sum of
    |log2| of the ratios of the query length, the key length and batch x heads (so decode and prefill never
    look alike); the first on a tie."""
    return min((abs(math.log2(n_q / v["q_len"])) + abs(math.log2(n_k / v["kv_len"]))
                + abs(math.log2(batch * heads / (v["batch"] * v["heads"]))), j)
               for j, v in enumerate(s["verified_shapes"]))


def _distance(i: int, q: torch.Tensor, k: torch.Tensor) -> float:
    """How far a call's shape is from TABLE[i]'s nearest verified shape (see _nearest)."""
    return _nearest(TABLE[i], q.shape[0], q.shape[1], q.shape[2], k.shape[2])[0]


def _slower(s: dict[str, Any], batch: int, heads: int, n_q: int, n_k: int) -> str | None:
    """Why entry ``s`` should not run a call it covers, or None: its run measured it slower than PyTorch's
    fastest path (speedup below 1) at the verified shape nearest the call. A multi-shape run measures every
    shape, and its geometric mean can hide a shape (decode, say) where the kernel loses; an export without
    measured speedups (older ones) runs wherever it is verified."""
    speedups = s.get("shape_speedups") or []
    if not _state["only_faster"] or not speedups:
        return None
    j = _nearest(s, batch, heads, n_q, n_k)[1]
    speedup = speedups[j] if j < len(speedups) else None
    if speedup is None or speedup >= 1.0:
        return None
    return (f"the kernel measured {speedup:.2f}x of PyTorch's fastest path at its nearest verified shape "
            f"({_shape_text(s['verified_shapes'][j])}), so SDPA runs this call")


def select(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None = None,
           is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False, *,
           dropout_p: float = 0.0, causal_bottom_right: bool = False) -> tuple[int | None, str | None]:
    """(index into TABLE of the kernel that runs this call, None) or (None, why no kernel covers it). Where
    several entries cover a call, the one whose verified shape is nearest runs it (the first on a tie); an
    entry that measured slower than PyTorch at the verified shape nearest the call does not take it."""
    if not TABLE:
        return None, "an empty table (this module was not filled in by an export)"
    reason = _call_reason(q, k, v, attn_mask, enable_gqa, dropout_p, causal_bottom_right)
    if reason is not None:
        return None, reason
    reasons = [_entry_reason(i, q, k, v, is_causal, scale, causal_bottom_right) for i in range(len(TABLE))]
    batch, heads, n_q, _ = q.shape
    reasons = [r or _slower(TABLE[i], batch, heads, n_q, k.shape[2]) for i, r in enumerate(reasons)]
    covering = [i for i, r in enumerate(reasons) if r is None]
    if covering:
        return min(covering, key=lambda i: _distance(i, q, k)), None
    if len(TABLE) == 1:
        return None, reasons[0]
    return None, "; ".join(f"{s['name']}: {r}" for s, r in zip(TABLE, reasons, strict=True))


def check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None = None,
          is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False, *,
          dropout_p: float = 0.0, causal_bottom_right: bool = False) -> str | None:
    """None when an evolved kernel covers this call; otherwise why not (one line). ``is_causal`` has SDPA's
    meaning (the mask aligned to the top left); ``causal_bottom_right`` aligns it to the last key, as a
    decode step with a KV cache needs."""
    return select(q, k, v, attn_mask, is_causal, scale, enable_gqa, dropout_p=dropout_p,
                  causal_bottom_right=causal_bottom_right)[1]


def _kernel_namespace(digest: str) -> types.ModuleType:
    """The evolved candidate with this hash, executed once in a module of its own. Its source is registered
    with linecache, so that Triton (which reads a kernel's source through inspect) finds it."""
    name = f"{__name__}._evolved_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    source = KERNEL_SOURCES[digest]
    filename = f"<evoforge kernel {digest}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    module = types.ModuleType(name, digest)
    module.__file__ = filename
    sys.modules[name] = module
    try:
        exec(compile(source, filename, "exec"), module.__dict__)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _model(i: int) -> torch.nn.Module:
    digest = TABLE[i]["hash"]
    if digest not in _state["models"]:
        _state["models"][digest] = _kernel_namespace(digest).ModelNew()
    return _state["models"][digest]


def _fallback(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None, is_causal: bool,
              scale: float | None, enable_gqa: bool, dropout_p: float, causal_bottom_right: bool) -> torch.Tensor:
    if causal_bottom_right and q.shape[-2] != k.shape[-2]:
        n_q, n_k = q.shape[-2], k.shape[-2]
        attn_mask = torch.ones(n_q, n_k, dtype=torch.bool, device=q.device).tril(n_k - n_q)
        is_causal = False
    else:
        is_causal = is_causal or causal_bottom_right
    extra = {"enable_gqa": True} if enable_gqa else {}  # torch < 2.5 has no enable_gqa
    return _SDPA(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale, **extra)


def _refuse(reason: str, strict: bool) -> None:
    """Count a fallback; raise with strict, else warn the first time."""
    if strict:
        what = "the evolved kernel does not cover" if len(TABLE) < 2 else "no evolved kernel of the table covers"
        raise UnsupportedCall(f"{NAME}: {what} {reason}; strict=False falls back to scaled_dot_product_attention")
    _state["fallback"] += 1
    _state["reasons"][reason] = _state["reasons"].get(reason, 0) + 1
    if not _state["warned"]:
        _state["warned"] = True
        warnings.warn(f"{NAME}: falling back to torch's scaled_dot_product_attention for {reason} "
                      "(warned once; stats() counts the fallbacks, strict=True raises instead)",
                      RuntimeWarning, stacklevel=4)


_verdicts: dict[tuple[Any, ...], tuple[int | None, str | None]] = {}  # a call's layout and flags -> select()


def _cached_select(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None,
                   is_causal: bool, scale: float | None, enable_gqa: bool, dropout_p: float,
                   causal_bottom_right: bool) -> tuple[int | None, str | None]:
    """select(), remembered per layout (shapes, strides, dtypes, device, flags): what varies between two calls
    of one layout is the data's address, whose alignment is checked on every call. Saves most of the
    checks' host time on a hot path."""
    if attn_mask is not None or not (
            type(q) is type(k) is type(v) is torch.Tensor and q.layout == k.layout == v.layout == torch.strided):
        return select(q, k, v, attn_mask, is_causal, scale, enable_gqa, dropout_p=dropout_p,
                      causal_bottom_right=causal_bottom_right)
    key = (q.shape, k.shape, v.shape, q.stride(), k.stride(), v.stride(), q.dtype, k.dtype, v.dtype, q.device,
           k.device, v.device, is_causal, scale, enable_gqa, dropout_p, causal_bottom_right)
    unaligned = (q.data_ptr() | k.data_ptr() | v.data_ptr()) & 15
    if key not in _verdicts:
        verdict = select(q, k, v, attn_mask, is_causal, scale, enable_gqa, dropout_p=dropout_p,
                         causal_bottom_right=causal_bottom_right)
        if unaligned:  # the verdict may rest on this call's addresses: not one for the layout
            return verdict
        if len(_verdicts) > 4096:
            _verdicts.clear()
        _verdicts[key] = verdict
    verdict = _verdicts[key]
    if verdict[0] is not None and unaligned:
        return select(q, k, v, attn_mask, is_causal, scale, enable_gqa, dropout_p=dropout_p,
                      causal_bottom_right=causal_bottom_right)
    return verdict


def _route(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None, is_causal: bool,
           scale: float | None, enable_gqa: bool, dropout_p: float, causal_bottom_right: bool,
           strict: bool) -> torch.Tensor:
    while True:
        index, reason = _cached_select(q, k, v, attn_mask, is_causal, scale, enable_gqa, dropout_p,
                                       causal_bottom_right)
        if index is None:
            break
        try:
            out = _model(index)(q, k, v)
        except Exception as exc:  # a kernel that fails to load or launch here: never again in this process
            if strict:
                raise
            _state["broken"][index] = (f"inputs the kernel failed on ({type(exc).__name__}: "
                                       f"{str(exc).splitlines()[0] if str(exc) else ''})")[:300]
            _verdicts.clear()  # another entry may cover the call; select again without this one
        else:
            _state["kernel"] += 1
            _state["entries"][index] = _state["entries"].get(index, 0) + 1
            return out
    _refuse(reason or "?", strict)
    return _fallback(q, k, v, attn_mask, is_causal, scale, enable_gqa, dropout_p, causal_bottom_right)


def _needs_grad(*tensors: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad for t in tensors)


def _table_id() -> str:
    if len(TABLE) == 1:
        return TABLE[0]["hash"]
    return hashlib.sha256(" ".join(s["hash"] for s in TABLE).encode()).hexdigest()[:16]


def _register_op() -> Any:
    """The table (with its checks and fallback) as a torch.library custom op with a fake implementation,
    so that torch.compile traces it as one opaque call. The name is unique per table and per load."""
    base = f"attention_{_table_id()}"
    name, n = base, 1
    while hasattr(torch.ops.evoforge, name):
        n += 1
        name = f"{base}_{n}"

    @torch.library.custom_op(f"evoforge::{name}", mutates_args=())
    def op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None, is_causal: bool,
           scale: float | None, enable_gqa: bool, causal_bottom_right: bool, strict: bool) -> torch.Tensor:
        out = _route(q, k, v, attn_mask, is_causal, scale, enable_gqa, 0.0, causal_bottom_right, strict)
        return out.contiguous()  # the fake's layout; a no-op for the kernel's own output on contiguous q

    @op.register_fake
    def _(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None, is_causal: bool,
          scale: float | None, enable_gqa: bool, causal_bottom_right: bool, strict: bool) -> torch.Tensor:
        return q.new_empty((*q.shape[:-1], v.shape[-1]))

    return op


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None = None,
              is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False, *,
              dropout_p: float = 0.0, causal_bottom_right: bool = False, strict: bool | None = None) -> torch.Tensor:
    """torch.nn.functional.scaled_dot_product_attention's semantics, through an evolved kernel where one was
    verified for the call (see TABLE and check()), else through SDPA itself: warned once, or UnsupportedCall
    with strict=True (default: set_strict(), or EVOFORGE_STRICT=1). Under torch.compile it is one custom op
    (OP)."""
    strict = _state["strict"] if strict is None else bool(strict)
    if dropout_p or _needs_grad(q, k, v):  # the kernel is forward-only and has no dropout
        _refuse(f"dropout_p={dropout_p}" if dropout_p else "inputs that require grad (the kernel is forward-only)",
                strict)
        return _fallback(q, k, v, attn_mask, is_causal, scale, enable_gqa, dropout_p, causal_bottom_right)
    if torch.compiler.is_compiling():
        return OP(q, k, v, attn_mask, bool(is_causal), scale, bool(enable_gqa), bool(causal_bottom_right), strict)
    return _route(q, k, v, attn_mask, is_causal, scale, enable_gqa, 0.0, causal_bottom_right, strict)


def evolved(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool | None = None) -> torch.Tensor:
    """The task's forward as evolved: causal (aligned to the last key) as the kernels were evolved, and the
    grouped-query layout of the inputs. A table whose kernels differ in causality needs ``causal``."""
    if causal is None:
        kinds = {bool(s["causal"]) for s in TABLE}
        if len(kinds) != 1:
            raise ValueError(f"{NAME}: its kernels differ in causality; call evolved(q, k, v, causal=True/False)")
        causal = kinds.pop()
    return attention(q, k, v, enable_gqa=q.shape[1] != k.shape[1], causal_bottom_right=causal)


class EvolvedModel(torch.nn.Module):
    """The task's Model, through evolved()."""

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return evolved(q, k, v)
# ---- Hugging Face transformers ----------------------------------------------------------------------

def hf_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                 attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                 is_causal: bool | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """An attention function for transformers' AttentionInterface, with the semantics of its "sdpa" one:
    query [batch, heads, q_len, head_dim], key and value [batch, kv_heads, kv_len, head_dim]; returns
    [batch, q_len, heads, head_dim]."""
    if kwargs.get("softcap") is not None or kwargs.get("position_bias") is not None or kwargs.get("cache"):
        raise UnsupportedCall(f"{NAME}: softcap, position_bias and paged caches are not supported")
    if attention_mask is not None and attention_mask.dim() == 4:
        attention_mask = attention_mask[:, :, :, : key.shape[-2]]
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    causal = bool(query.shape[2] > 1 and attention_mask is None and causal)
    if causal and key.shape[2] > query.shape[2]:  # as transformers' sdpa: top-left alignment on the first keys
        key, value = key[:, :, : query.shape[2]], value[:, :, : query.shape[2]]
    out = attention(query, key, value, attn_mask=attention_mask, is_causal=causal, scale=scaling,
                    enable_gqa=query.shape[1] != key.shape[1], dropout_p=dropout if module.training else 0.0)
    return out.transpose(1, 2).contiguous(), None


def register_transformers(name: str = "evoforge") -> bool:
    """Register hf_attention as transformers' attention implementation `name` (with the "sdpa" masks), so
    that `from_config(cfg, attn_implementation="evoforge")` runs on the kernel. False without transformers."""
    try:
        from transformers import AttentionInterface
    except ImportError:
        return False
    AttentionInterface.register(name, hf_attention)
    try:
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    except ImportError:  # transformers before 4.53 builds its masks without this registry
        return True
    AttentionMaskInterface.register(name, sdpa_mask)
    return True


# ---- self-test --------------------------------------------------------------------------------------

def _reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: str, scale: float,
               attn_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Attention in float64, written plainly, a batch at a time. causal: "", "top_left" or "bottom_right"."""
    q, k, v = q.double(), k.double(), v.double()
    if k.shape[1] != q.shape[1]:
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    n_q, n_k = q.shape[-2], k.shape[-2]
    outs = []
    for b in range(q.shape[0]):
        scores = torch.matmul(q[b], k[b].transpose(-2, -1)) * scale
        if causal:
            keep = torch.ones(n_q, n_k, dtype=torch.bool, device=q.device).tril(n_k - n_q if causal == "bottom_right"
                                                                               else 0)
            scores = scores.masked_fill(~keep, float("-inf"))
        if attn_mask is not None:  # [q_len, kv_len], boolean (True: attend)
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        outs.append(torch.matmul(torch.softmax(scores, dim=-1), v[b]))
    return torch.stack(outs)


def _inputs(batch: int, heads: int, kv_heads: int, n_q: int, n_k: int, d: int, dtype: torch.dtype,
            device: torch.device, gen: torch.Generator, layout: str = "contiguous"
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    def one(h: int, n: int) -> torch.Tensor:
        x = torch.randn(batch, h, n, d, generator=gen, dtype=torch.float32).to(device=device, dtype=dtype)
        # "bshd": a [batch, seq, heads, head_dim] buffer seen as [batch, heads, seq, head_dim], as models make it.
        return x.transpose(1, 2).contiguous().transpose(1, 2) if layout == "bshd" else x
    return one(heads, n_q), one(kv_heads, n_k), one(kv_heads, n_k)


def _time_us(fn: Callable[[], torch.Tensor], device: torch.device) -> float:
    """Median over 5 rounds of the mean time of 50 back-to-back calls (one synchronisation per round): a
    user's eager call, checks and launch included."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    for _ in range(10):
        fn()
    sync()
    rounds = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(50):
            fn()
        sync()
        rounds.append((time.perf_counter() - start) / 50)
    return sorted(rounds)[2] * 1e6


def _case(label: str, b: int, h: int, hk: int, n_q: int, n_k: int, d: int, dtype: torch.dtype, mode: str = "",
          layout: str = "contiguous", mask: bool = False, scale: float | None = None) -> dict[str, Any]:
    """One self-test call. mode: "" (not causal), "top_left" (SDPA's is_causal) or "bottom_right"."""
    return {"label": label, "b": b, "h": h, "hk": hk, "n_q": n_q, "n_k": n_k, "d": d, "dtype": dtype, "mode": mode,
            "layout": layout, "mask": mask, "scale": scale}


def _entry_cases(s: dict[str, Any]) -> list[dict[str, Any]]:
    """Calls an entry must run (each verified shape, and more of its class for a shape-general kernel) and
    calls next to its class (another dtype, head dim, causality, grouped-query ratio, a mask, another scale)."""
    dtype = getattr(torch, s["dtype"])
    d, causal = s["head_dim"], s["causal"]
    cases = []
    for vs in s["verified_shapes"]:
        n_q, n_k = vs["q_len"], vs["kv_len"]
        mode = ("bottom_right" if n_q != n_k else "top_left") if causal else ""
        cases.append(_case("verified shape", vs["batch"], vs["heads"], vs["kv_heads"], n_q, n_k, d, dtype, mode))
    vs = s["verified_shapes"][0]
    b, h, hk, n_q, n_k = vs["batch"], vs["heads"], vs["kv_heads"], vs["q_len"], vs["kv_len"]
    mode = ("bottom_right" if n_q != n_k else "top_left") if causal else ""
    square = "top_left" if causal and n_q == n_k else mode
    if s["general"]:
        small = max(1, min(n_k, 48) // 2 + 3)  # not a multiple of any block size
        cases.append(_case("other lengths", b, h, hk, small if n_q == n_k else n_q, small, d, dtype, square))
        cases.append(_case("batch 2, [b, s, h, d] layout", 2, h, hk, min(n_q, 40),
                           min(n_k, 40) if n_q != n_k else min(n_q, 40), d, dtype, square, "bshd"))
        cases.append(_case("twice the heads", b, 2 * h, 2 * hk, min(n_q, 24),
                           min(n_k, 24) if n_q != n_k else min(n_q, 24), d, dtype, square))
    small_q, small_k = min(n_q, 24), min(n_k, 24) if n_q != n_k else min(n_q, 24)
    other_dtype = torch.float32 if dtype != torch.float32 else torch.float16
    other_d = d + 16 if d + 16 <= 256 else d // 2
    base = "top_left" if causal else ""
    cases += [
        _case(f"dtype {str(other_dtype).removeprefix('torch.')}", b, h, hk, small_q, small_q, d, other_dtype, base),
        _case(f"head dim {other_d}", b, h, hk, small_q, small_q, other_d, dtype, base),
        _case(f"causal={not causal}", b, h, hk, small_q, small_q, d, dtype, "" if causal else "top_left"),
        _case("other grouped-query ratio", b, 2 * h if h == hk else h, h, small_q, small_q, d, dtype, base),
        _case("a boolean mask", b, h, hk, small_q, small_q, d, dtype, "", mask=True),
        _case("another scale", b, h, hk, small_q, small_q, d, dtype, base, scale=0.5),
    ]
    if causal:
        cases.append(_case("is_causal with fewer queries than keys", b, h, hk, 1, small_k + 1, d, dtype, "top_left"))
    return cases


def _kernel_expected(c: dict[str, Any], runs_here: list[bool]) -> bool:
    """Whether some entry that runs on this device was verified for the case's call: written from TABLE's
    fields directly, not through check(), so that the self-test checks the dispatch rather than repeating it."""
    if c["mask"] or c["scale"] is not None or (c["mode"] == "top_left" and c["n_q"] != c["n_k"]):
        return False
    causal = c["mode"] != ""
    shape = {"batch": c["b"], "heads": c["h"], "kv_heads": c["hk"], "q_len": c["n_q"], "kv_len": c["n_k"]}
    for s, here in zip(TABLE, runs_here, strict=True):
        if (here and getattr(torch, s["dtype"]) == c["dtype"] and s["head_dim"] == c["d"]
                and c["h"] // c["hk"] in s["gqa_ratios"]
                and (causal == s["causal"] or (c["n_q"] == 1 and (c["mode"] != "top_left" or c["n_k"] == 1)))
                and (s["general"] or (shape in s["verified_shapes"] and c["layout"] == "contiguous"))
                and _slower(s, c["b"], c["h"], c["n_q"], c["n_k"]) is None):
            return True
    return False


_TOLERANCES = {torch.float16: (2e-3, 2e-3), torch.bfloat16: (1e-2, 1.6e-2), torch.float32: (1e-4, 1e-4)}


def _run_case(c: dict[str, Any], dev: torch.device, gen: torch.Generator, expect: bool) -> tuple[str, str | None, str]:
    """(what ran: an entry's name, "fallback" or "error"; the failure or None; the eager timing text)."""
    q, k, v = _inputs(c["b"], c["h"], c["hk"], c["n_q"], c["n_k"], c["d"], c["dtype"], dev, gen, c["layout"])
    mask = (torch.rand(c["n_q"], c["n_k"], generator=gen) > 0.3).to(dev) if c["mask"] else None
    if mask is not None:
        mask[:, 0] = True  # no fully masked row
    kwargs: dict[str, Any] = {"attn_mask": mask, "is_causal": c["mode"] == "top_left", "scale": c["scale"],
                              "enable_gqa": c["h"] != c["hk"], "causal_bottom_right": c["mode"] == "bottom_right"}
    reset_stats()
    _state["warned"] = True  # the self-test's fallbacks are expected; no warning
    try:
        got = attention(q, k, v, **kwargs, strict=False)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        ran = (TABLE[next(iter(_state["entries"]))]["name"] if len(TABLE) > 1 else "kernel") \
            if _state["kernel"] else "fallback"
        err: str | None = None
    except Exception as exc:
        return "error", f"{type(exc).__name__}: {exc}".splitlines()[0], ""
    ref = _reference(q, k, v, c["mode"], c["scale"] if c["scale"] is not None else 1.0 / math.sqrt(c["d"]), mask)
    tol_a, tol_r = next((s["tolerance"] for s in TABLE if getattr(torch, s["dtype"]) == c["dtype"]),
                        _TOLERANCES.get(c["dtype"], (2e-3, 2e-3)))
    if torch.isnan(got).any().item() or not torch.allclose(got.double(), ref, atol=tol_a, rtol=tol_r):
        err = f"max abs error {(got.double() - ref).abs().max().item():.2e} over tolerance"
    elif expect and ran == "fallback":
        err = f"fell back inside a verified class ({next(iter(_state['reasons']), '?')})"
    elif not expect and ran != "fallback":
        err = "a kernel ran outside its verified class"
    elif ran == "fallback":
        try:
            attention(q, k, v, **kwargs, strict=True)
            err = "strict=True did not raise"
        except UnsupportedCall:
            pass
    speed = ""
    if err is None and ran != "fallback" and dev.type == "cuda":
        ours = _time_us(lambda: attention(q, k, v, **kwargs), dev)
        theirs = _time_us(lambda: _fallback(q, k, v, mask, kwargs["is_causal"], c["scale"], kwargs["enable_gqa"], 0.0,
                                            kwargs["causal_bottom_right"]), dev)
        speed = f", {ours:.1f} us vs SDPA {theirs:.1f} us ({theirs / ours:.2f}x, eager)"
    return ran, err, speed


def selftest(device: str | None = None, out: Callable[[str], None] = print) -> bool:
    """Check every entry on fresh inputs against a float64 reference: on its verified shapes and class (where a
    kernel must run, and be correct) and on calls next to it (where, unless another entry was verified for
    them, the fallback must run, be correct, and strict must raise). Prints one line per case, and the
    kernel's eager speedup over SDPA on a GPU."""
    first = TABLE[0]
    dev = torch.device(device or (first["device_type"] if first["device_type"] != "cuda" or torch.cuda.is_available()
                                  else "cpu"))
    gen = torch.Generator().manual_seed(int.from_bytes(os.urandom(4), "little"))
    tolerances = ", ".join(f"{s['dtype']} atol={s['tolerance'][0]:g} rtol={s['tolerance'][1]:g}"
                           for s in {s["dtype"]: s for s in TABLE}.values())
    out(f"{NAME}: self-test on {dev} ({torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'CPU'}), "
        f"tolerance {tolerances}")
    runs_here = []
    for i, s in enumerate(TABLE):
        vs = s["verified_shapes"][0]
        q, k, v = _inputs(vs["batch"], vs["heads"], vs["kv_heads"], vs["q_len"], vs["kv_len"], s["head_dim"],
                          getattr(torch, s["dtype"]), dev, gen)
        causal, square = s["causal"], vs["q_len"] == vs["kv_len"]
        here = _call_reason(q, k, v, None, vs["heads"] != vs["kv_heads"], 0.0, causal and not square) or \
            _entry_reason(i, q, k, v, causal and square, None, causal and not square)
        runs_here.append(here is None)
        if here is not None:
            prefix = f"{s['name']}: " if len(TABLE) > 1 else ""
            out(f"  {prefix}the kernel does not run here ({here}): checking that its calls fall back correctly")
    ok = True
    saved = {key: (dict(val) if isinstance(val, dict) else val) for key, val in _state.items()}
    for s in TABLE:  # the kernel itself is checked everywhere it is verified, also where SDPA runs its calls
        lost = [(sp, vs) for sp, vs in zip(s.get("shape_speedups") or [], s["verified_shapes"], strict=False)
                if sp is not None and sp < 1.0]
        if lost and _state["only_faster"]:
            prefix = f"{s['name']}: " if len(TABLE) > 1 else ""
            where = "; ".join(f"{_shape_text(vs)} ({sp:.2f}x)" for sp, vs in lost)
            out(f"  {prefix}measured slower than PyTorch at {where}: calls nearest those run SDPA "
                "(set_only_faster(False) runs the kernel there); checked here all the same")
    set_only_faster(False)
    for s in TABLE:
        for c in _entry_cases(s):
            ran, err, speed = _run_case(c, dev, gen, _kernel_expected(c, runs_here))
            label = f"{s['name']}: {c['label']}" if len(TABLE) > 1 else c["label"]
            shape = (f"{c['b']}x{c['h']}x{c['n_q']}x{c['d']}, kv {c['hk']}x{c['n_k']}, "
                     f"{str(c['dtype']).removeprefix('torch.')}, {c['mode'] or 'not causal'}")
            out(f"  {'ok  ' if err is None else 'FAIL'} {label:<40} {shape:<48} {ran}{speed}"
                + (f": {err}" if err else ""))
            ok = ok and err is None
    _state.update(saved)
    _verdicts.clear()
    out(f"{NAME}: self-test {'passed' if ok else 'FAILED'}")
    return ok


def _main(argv: list[str]) -> int:
    if argv[:1] != ["--selftest"] or len(argv) > 2:
        print(f"usage: python {os.path.basename(__file__)} --selftest [DEVICE]", file=sys.stderr)
        return 2
    return 0 if selftest(argv[1] if len(argv) == 2 else None) else 1


@contextlib.contextmanager
def routed() -> Iterator[None]:
    """Route torch.nn.functional.scaled_dot_product_attention to attention() inside the block."""
    original = torch.nn.functional.scaled_dot_product_attention

    def sdpa(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: torch.Tensor | None = None,
             dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None,
             enable_gqa: bool = False) -> torch.Tensor:
        return attention(query, key, value, attn_mask, is_causal, scale, enable_gqa, dropout_p=dropout_p)

    torch.nn.functional.scaled_dot_product_attention = sdpa
    try:
        yield
    finally:
        torch.nn.functional.scaled_dot_product_attention = original


# The evolved candidate 88c0fb9512601d05, as it was verified.
KERNEL_SOURCES['88c0fb9512601d05'] = r'''
import math

import torch
import torch.nn as nn
import triton
import triton.language as tl

# Rendered by evoforge from genome {"block_m": 64, "block_n": 128, "causal_split": false, "exp2": true, "exp_half": false, "fused_combine": false, "k_layout": "direct", "kind": "triton_flash", "loop": "tl.range", "mask_diagonal": true, "num_stages": 3, "num_warps": 4, "pack_gqa": false, "pdl": false, "persistent": 0, "prescale_q": false, "scale_fma": true, "split_kv": 1, "tma": false, "warp_spec": false}
CAUSAL = True
HEAD_DIM = 64
SCALE = 1.0 / math.sqrt(HEAD_DIM)
BLOCK_M, BLOCK_N, BLOCK_D = 64, 128, 64
NUM_WARPS, NUM_STAGES = 4, 3
USE_EXP2 = True
SCALE_MODE = 2  # 0: scale each score, 1: scale Q once, 2: fold the scale into exp's argument (FMA)
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
    for start_n in tl.range(lo, hi, BLOCK_N, num_stages=NUM_STAGES):
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
def _attn_fwd(Q, K, V, O, P_acc, P_m, P_l, Counter, sqb, sqh, sqm, sqd, skb, skh, skn, skd, svb, svh, svn, svd,
              sob, soh, som, sod, n_heads, kv_group, n_q, n_k, chunk, qk_scale,
              CAUSAL: tl.constexpr, CAUSAL_SPLIT: tl.constexpr, MASK_DIAGONAL: tl.constexpr,
              SPLITS: tl.constexpr, HEAD_DIM: tl.constexpr,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
              EXP2: tl.constexpr, K_TRANS: tl.constexpr, NUM_STAGES: tl.constexpr,
              EVEN_M: tl.constexpr, EVEN_N: tl.constexpr, EVEN_D: tl.constexpr, SCALE_MODE: tl.constexpr,
              TMA: tl.constexpr, FUSED_COMBINE: tl.constexpr, PACK_GQA: tl.constexpr, PDL: tl.constexpr,
              EXP_HALF: tl.constexpr, IEEE: tl.constexpr):
    # Program (row block, batch*head, split): keys [split*chunk, split*chunk + chunk). With one
    # split the result is normalised into O; with several, partial (acc, m, l) go to P_* for
    # _attn_combine, or (FUSED_COMBINE) the row block's last program to finish combines them.
    if PDL:
        # Launched as a programmatic dependent launch: the previous kernel in the stream may still be
        # running, so wait for it (and its memory) before any load or store of this kernel.
        tl.extra.cuda.gdc_wait()
    start_m = tl.program_id(0)
    bh = tl.program_id(1)
    split = tl.program_id(2)
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



SPLIT_KV = 1
FUSED_COMBINE = False
PACK_GQA = False
PERSISTENT = 0  # programs per SM that walk the tiles (0: one program per tile)


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


USE_TMA = False
USE_PDL = False
USE_EXP_HALF = False


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
                CAUSAL, False, True, SPLIT_KV, HEAD_DIM, BLOCK_M, BLOCK_N, BLOCK_D, USE_EXP2,
                False, NUM_STAGES, n_rows % BLOCK_M == 0, n_k % BLOCK_N == 0, BLOCK_D == HEAD_DIM, SCALE_MODE,
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
'''


OP = _register_op() if TABLE else None
if TABLE and os.environ.get("EVOFORGE_NO_TRANSFORMERS") != "1" and "transformers" in sys.modules:
    register_transformers()

if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
