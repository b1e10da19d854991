"""The runtime of an exported attention module: the checks, the dispatch, the fallback and the self-test.

This text is copied into every exported attention module (``evoforge best RUN [RUN ...] --export kernel.py``,
see :mod:`evoforge.export`), without this docstring: the export puts its own header (what was measured,
where) first. The export fills in ``TABLE`` (one entry per evolved kernel: what it was evolved and verified
for, and the speedup measured on each verified shape) and ``KERNEL_SOURCES`` (each evolved candidate, run in
a namespace of its own so that its names never clash with these).

- ``attention(q, k, v, attn_mask=None, is_causal=False, scale=None, enable_gqa=False)``: SDPA's signature.
  ``select`` picks the entry whose class covers the call (dtype, head dim, scale, causality, grouped-query
  ratio, layout, alignment, device and capability; the nearest verified shape where several do), unless
  the kernel measured slower than PyTorch there (``set_only_faster``); otherwise SDPA runs the call, with a
  warning the first time, or ``UnsupportedCall`` is raised with ``strict``. ``check`` says why, ``stats``
  counts; verdicts are remembered per call layout.
- ``OP``: the same call as a ``torch.library`` custom op with a fake implementation, for ``torch.compile``
  and CUDA graphs; ``routed()`` (``evoforge.use``) sends ``F.scaled_dot_product_attention`` here;
  ``register_transformers()`` adds ``attn_implementation="evoforge"``.
- ``selftest()`` (``python kernel.py --selftest``): every entry against a float64 reference on fresh inputs,
  where its kernel must run and next to it, where the fallback must.

The module needs torch (and triton for a Triton kernel), not evoforge. No ``from __future__ import
annotations`` here: the custom op reads its argument types from the annotations.
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

TABLE: list[dict[str, Any]] = []  # evoforge:table (replaced by the export)
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


# evoforge:kernel-sources (the export puts each evolved candidate here, verbatim)

OP = _register_op() if TABLE else None
if TABLE and os.environ.get("EVOFORGE_NO_TRANSFORMERS") != "1" and "transformers" in sys.modules:
    register_transformers()

if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
