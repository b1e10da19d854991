"""The generic mutator's Triton templates for reductions along an axis and for elementwise chains: which fx graphs
they claim, their genes, and their source.

A template is claimed only where it computes the task's Model exactly (the same dim, keepdim, eps, reduction and
dtype); anything else is left to the compile and layout genes.

- **Along an axis** (``row_softmax``, ``log_softmax``, ``rmsnorm``, ``layernorm``, ``reduce_sum``, ``reduce_mean``,
  ``reduce_max``, ``reduce_min``, ``cross_entropy``): the input is viewed as (outer, R, inner), R the axis reduced
  or normalised over. Where the axis is the last one (inner == 1) a program owns one row; otherwise a program owns
  one outer index and ``BLOCK_I`` columns of inner and reads the strided axis as a (BLOCK, BLOCK_I) tile. A row
  no longer than ``BLOCK`` is read once and kept in registers; a longer one is walked in BLOCK chunks (online
  softmax: a running maximum and rescaled sum; LayerNorm: Chan's merge of per-chunk mean and M2; sums and
  maxima: one accumulator), then walked again to write. So no row length is too long.
- **Elementwise** (``elementwise``): a graph whose every node is an elementwise op of the one input and Python
  scalars (a DAG: ``x * sigmoid(x)``, MinGPT's GELU, ``x / (1 + |x|)``) becomes one Triton kernel over the
  flattened input, ``BLOCK`` elements per program.

Where rows are few and long (KernelBench's LayerNorm: 16 rows of 4M), ``split`` programs share a row: each computes
its segment's partial statistics (a maximum and rescaled sum, a sum of squares, a count/mean/M2, a partial
reduction), and a second kernel combines a row's partials and writes its segment.

Genes: ``block`` (the axis chunk or the elementwise block), ``block_inner`` (the columns per program, strided axes
only), ``split`` (programs per row, few rows only), ``warps`` and ``stages`` (GPU only, where a row is walked in a
loop). Every kernel computes in float32 and stores the input's dtype.
"""

from __future__ import annotations

import inspect
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

AXIS_PATTERNS = ("row_softmax", "log_softmax", "rmsnorm", "layernorm", "reduce_sum", "reduce_mean", "reduce_max",
                 "reduce_min", "cross_entropy")
ROW_BLOCKS = (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)  # a row's chunk, inner == 1
MAX_SINGLE = 16384  # the longest row held in registers at once (read once): longer rows are walked in chunks
COL_BLOCKS = (4, 8, 16, 32, 64, 128, 256, 512, 1024)  # the strided axis's chunk, inner > 1
INNER_BLOCKS = (16, 32, 64, 128, 256)  # columns of inner per program
MAX_TILE = 16384  # BLOCK * BLOCK_I at most
EW_BLOCKS = (256, 512, 1024, 2048, 4096, 8192)
LOOP_STAGES = (1, 2, 3, 4)
SPLITS = (1, 2, 4, 8, 16, 32, 64, 128)  # programs per row (rows only)
FEW_ROWS = 2048  # fewer rows than this: a row may be split over several programs
FLOATS = (torch.float32, torch.float16, torch.bfloat16)
# The dot-product templates' (matmul, conv) precision gene -> tl.dot's input_precision for float32 operands: IEEE
# (highest), TF32 (high; medium too, from a crossover), or 3xTF32 (each product split into three TF32 products on
# the tensor cores: close to float32's accuracy); and the label a candidate carries for the non-IEEE ones.
DOT_PRECISIONS = {"highest": "ieee", "high": "tf32", "medium": "tf32", "tf32x3": "tf32x3"}
DOT_LABELS = {"tf32": "tf32", "tf32x3": "3xtf32"}


@dataclass
class TaskTraits:
    """What the mutator knows about a task: its inputs' ranks and the Triton pattern its Model matches."""

    input_ranks: list[int] = field(default_factory=list)
    # row_softmax | log_softmax | rmsnorm | layernorm | reduce_{sum,mean,max,min} | cross_entropy | elementwise
    # | linear_epilogue | matmul_epilogue | conv2d_epilogue
    pattern: str | None = None
    module: str | None = None  # the submodule holding the weights (layernorm, rmsnorm, linear)
    epilogue: list[str] = field(default_factory=list)
    n_cols: int | None = None  # the length of the axis reduced over (R), at the analysed shape
    dim: int | None = None  # the axis, non-negative (layernorm, a module's rmsnorm: the first normalised one)
    inner: int = 1  # elements after the axis (1: the last axis)
    outer: int = 1  # rows: elements before the axis
    keepdim: bool = False
    eps: float | None = None
    expr: list[str] = field(default_factory=list)  # the elementwise program: lines from x to y
    numel: int | None = None
    reduction: str = "mean"  # cross_entropy
    ignore_index: int = -100  # cross_entropy
    conv: dict[str, Any] | None = None  # conv2d_epilogue: stride, padding, dilation, channels, reduction, pool, post
    params: list[str] = field(default_factory=list)  # conv2d_epilogue: the per-channel tensors its epilogue reads
    float32: bool = False  # every floating-point input is float32 (a dot template's precision gene then acts)

    @property
    def four_d(self) -> bool:
        return 4 in self.input_ranks


def _pow2(n: int) -> int:
    return 1 << max(int(n) - 1, 0).bit_length()


# ---------------------------------------------------------------------------------------------- genes
def block_options(traits: TaskTraits) -> list[int]:
    """The values of the ``block`` gene for this task's pattern."""
    if traits.pattern == "elementwise":
        top = max(EW_BLOCKS[0], _pow2(traits.numel or 1))
        return [b for b in EW_BLOCKS if b <= top]
    whole = _pow2(traits.n_cols or 1)
    if traits.inner > 1:
        out = [b for b in COL_BLOCKS if b < whole]
        return out + ([whole] if whole <= COL_BLOCKS[-1] else [])
    out = [b for b in ROW_BLOCKS if b < whole]
    return out + ([whole] if whole <= MAX_SINGLE else [])


def inner_options(traits: TaskTraits) -> list[int]:
    """The values of ``block_inner``: [0] (not a gene) unless the axis is strided."""
    if traits.pattern not in AXIS_PATTERNS or traits.inner <= 1:
        return [0]
    top = max(INNER_BLOCKS[0], _pow2(traits.inner))
    return [b for b in INNER_BLOCKS if b <= top]


def default_block(traits: TaskTraits) -> int:
    opts = block_options(traits)
    if traits.pattern == "elementwise":
        return 1024 if 1024 in opts else opts[-1]
    if traits.inner > 1:
        return 64 if 64 in opts else opts[-1]
    whole = _pow2(traits.n_cols or 1)
    return whole if whole <= MAX_SINGLE else 4096  # one read where a row fits, else 4096-wide chunks


def default_inner(traits: TaskTraits) -> int:
    opts = inner_options(traits)
    return 64 if 64 in opts else opts[-1]


def split_options(traits: TaskTraits) -> list[int]:
    """Programs per row: [1] unless the rows are few and long (then a row's statistics are computed in S
    partial programs and combined, so a handful of rows still fills the GPU)."""
    if traits.pattern not in AXIS_PATTERNS or traits.pattern == "cross_entropy" or traits.inner > 1 or \
            traits.outer >= FEW_ROWS:
        return [1]
    return [s for s in SPLITS if s == 1 or (s <= (traits.n_cols or 1) // 64 and traits.outer * s <= 65536)]


def default_split(traits: TaskTraits) -> int:
    """Enough programs for about 1024 in all where there are fewer than 128 rows, else one per row."""
    opts = split_options(traits)
    if traits.outer >= 128:
        return 1
    return max(s for s in opts if s == 1 or traits.outer * s <= 1024)


def clamp_tile(block: int, block_inner: int) -> int:
    """``block`` made to fit MAX_TILE beside ``block_inner`` columns."""
    return min(block, MAX_TILE // block_inner) if block_inner else block


def loops(traits: TaskTraits, block: int) -> bool:
    """Whether an axis template walks the analysed row in chunks (then ``stages`` is a gene on a GPU)."""
    return traits.pattern in AXIS_PATTERNS and (traits.n_cols or 1) > block


# ---------------------------------------------------------------------------------------------- fx matching
class _Unsupported(Exception):
    pass


class _V(str):
    """A variable of the elementwise program (a float32 block), as opposed to a Python scalar."""


def _c(v: Any) -> str:
    """A term of the program: a variable, or a finite scalar as a float literal."""
    if isinstance(v, _V):
        return str(v)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise _Unsupported(f"operand {v!r}")
    return repr(float(v))


class _Program:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def tmp(self, expr: str) -> _V:
        name = _V(f"v{len(self.lines)}")
        self.lines.append(f"{name} = {expr}")
        return name


def _var(v: Any) -> _V:
    if not isinstance(v, _V):
        raise _Unsupported("a tensor operand is needed")
    return v


def _no_inplace(inplace: bool) -> None:
    if inplace:
        raise _Unsupported("in place")


def _tanh(p: _Program, a: str) -> str:
    return f"2.0 * tl.sigmoid(2.0 * {a}) - 1.0"


def _softplus_of(p: _Program, a: _V, beta: float = 1.0, threshold: float = 20.0) -> str:
    z = p.tmp(f"{_c(beta)} * {a}")
    e = p.tmp(f"tl.exp({z})")
    u = p.tmp(f"1.0 + {e}")
    log1p = f"tl.where({u} == 1.0, {e}, tl.log({u}) * ({e} / ({u} - 1.0)))"  # log1p(e), accurate for small e
    return f"tl.where({z} > {_c(threshold)}, {a}, {log1p} / {_c(beta)})"


def _pow(p: _Program, a: Any, b: Any) -> str:
    x = _var(a)
    if isinstance(b, (_V, bool)) or not isinstance(b, (int, float)):
        raise _Unsupported("pow with a tensor exponent")
    if b == 1:
        return str(x)
    if b == 2:
        return f"{x} * {x}"
    if b == 3:
        return f"{x} * {x} * {x}"
    if b == 4:
        sq = p.tmp(f"{x} * {x}")
        return f"{sq} * {sq}"
    if b == 0.5:
        return f"tl.sqrt({x})"
    if b == -1:
        return f"1.0 / {x}"
    if b == -0.5:
        return f"1.0 / tl.sqrt({x})"
    raise _Unsupported(f"pow exponent {b!r}")


def _gelu(p: _Program, a: _V, approximate: str = "none") -> str:
    if approximate == "tanh":
        return f"{a} * tl.sigmoid(1.5957691216057308 * ({a} + 0.044715 * {a} * {a} * {a}))"
    if approximate != "none":
        raise _Unsupported(f"gelu approximate={approximate!r}")
    return f"0.5 * {a} * (1.0 + tl.math.erf({a} * 0.7071067811865476))"


# tl.maximum / tl.minimum return the other operand where one is NaN; torch's relu, clamp and hardtanh keep the NaN
PROPAGATE_NAN = "propagate_nan=tl.PropagateNan.ALL"


def _clamp(p: _Program, a: _V, lo: Any = None, hi: Any = None) -> str:
    out = str(_var(a))
    if lo is not None:
        out = f"tl.maximum({out}, {_c(lo)}, {PROPAGATE_NAN})"
    if hi is not None:
        out = f"tl.minimum({out}, {_c(hi)}, {PROPAGATE_NAN})"
    if lo is None and hi is None:
        raise _Unsupported("clamp without bounds")
    return out


def _hardsigmoid(a: str) -> str:
    return f"tl.minimum(tl.maximum({a} + 3.0, 0.0, {PROPAGATE_NAN}), 6.0, {PROPAGATE_NAN}) / 6.0"


# Each handler takes the program and the node's arguments (variables as _V, constants as Python values), under
# the op's own signature, and returns the Triton expression of its result (float32). A call whose arguments
# don't bind, or that uses an option the handler doesn't implement, is not claimed.
def _h_add(p: _Program, a: Any, b: Any, *, alpha: Any = 1) -> str:
    return f"{_c(a)} + {_c(b)}" if alpha == 1 else f"{_c(a)} + {_c(alpha)} * {_c(b)}"


def _h_sub(p: _Program, a: Any, b: Any, *, alpha: Any = 1) -> str:
    return f"{_c(a)} - ({_c(b)})" if alpha == 1 else f"{_c(a)} - {_c(alpha)} * {_c(b)}"


def _h_mul(p: _Program, a: Any, b: Any) -> str:
    return f"{_c(a)} * {_c(b)}"


def _h_div(p: _Program, a: Any, b: Any, *, rounding_mode: Any = None) -> str:
    if rounding_mode is not None:
        raise _Unsupported("rounding division")
    return f"{_c(a)} / ({_c(b)})"


def _h_neg(p: _Program, a: Any) -> str:
    return f"-{_var(a)}"


def _unary(template: str) -> Callable[..., str]:
    def handler(p: _Program, a: Any) -> str:
        return template.format(a=_var(a))
    return handler


def _h_relu(p: _Program, a: Any, inplace: bool = False) -> str:
    _no_inplace(inplace)
    return f"tl.maximum({_var(a)}, 0.0, {PROPAGATE_NAN})"


def _h_leaky_relu(p: _Program, a: Any, negative_slope: Any = 0.01, inplace: bool = False) -> str:
    _no_inplace(inplace)
    x = _var(a)
    return f"tl.where({x} > 0.0, {x}, {x} * {_c(negative_slope)})"


def _h_elu(p: _Program, a: Any, alpha: Any = 1.0, inplace: bool = False) -> str:
    _no_inplace(inplace)
    x = _var(a)
    return f"tl.where({x} > 0.0, {x}, {_c(alpha)} * (tl.exp({x}) - 1.0))"


def _h_selu(p: _Program, a: Any, inplace: bool = False) -> str:
    _no_inplace(inplace)
    x = _var(a)
    return f"1.0507009873554805 * tl.where({x} > 0.0, {x}, 1.6732632423543772 * (tl.exp({x}) - 1.0))"


def _h_hardtanh(p: _Program, a: Any, min_val: Any = -1.0, max_val: Any = 1.0, inplace: bool = False) -> str:
    _no_inplace(inplace)
    return _clamp(p, _var(a), min_val, max_val)


def _h_relu6(p: _Program, a: Any, inplace: bool = False) -> str:
    _no_inplace(inplace)
    return _clamp(p, _var(a), 0.0, 6.0)


def _h_hardsigmoid(p: _Program, a: Any, inplace: bool = False) -> str:
    _no_inplace(inplace)
    return _hardsigmoid(_var(a))


def _h_hardswish(p: _Program, a: Any, inplace: bool = False) -> str:
    _no_inplace(inplace)
    x = _var(a)
    return f"{x} * ({_hardsigmoid(x)})"


def _h_silu(p: _Program, a: Any, inplace: bool = False) -> str:
    _no_inplace(inplace)
    x = _var(a)
    return f"{x} * tl.sigmoid({x})"


def _h_mish(p: _Program, a: Any, inplace: bool = False) -> str:
    _no_inplace(inplace)
    x = _var(a)
    sp = p.tmp(_softplus_of(p, x))
    return f"{x} * ({_tanh(p, sp)})"


def _h_softplus(p: _Program, a: Any, beta: Any = 1.0, threshold: Any = 20.0) -> str:
    return _softplus_of(p, _var(a), beta, threshold)


def _h_softsign(p: _Program, a: Any) -> str:
    x = _var(a)
    return f"{x} / (1.0 + tl.abs({x}))"


def _h_gelu(p: _Program, a: Any, approximate: str = "none") -> str:
    return _gelu(p, _var(a), approximate)


def _h_clamp(p: _Program, a: Any, min: Any = None, max: Any = None) -> str:
    return _clamp(p, _var(a), min, max)


def _h_pow(p: _Program, a: Any, exponent: Any) -> str:
    return _pow(p, a, exponent)


def _h_tanh(p: _Program, a: Any) -> str:
    return _tanh(p, _var(a))


_F = torch.nn.functional
_SIGMOID = _unary("tl.sigmoid({a})")
_ABS = _unary("tl.abs({a})")
_UNARY = {
    "abs": _ABS, "exp": _unary("tl.exp({a})"), "log": _unary("tl.log({a})"), "sqrt": _unary("tl.sqrt({a})"),
    "rsqrt": _unary("1.0 / tl.sqrt({a})"), "sin": _unary("tl.sin({a})"), "cos": _unary("tl.cos({a})"),
    "erf": _unary("tl.math.erf({a})"), "square": _unary("{a} * {a}"), "reciprocal": _unary("1.0 / {a}"),
    "sigmoid": _SIGMOID, "tanh": _h_tanh, "neg": _h_neg, "negative": _h_neg,
}
FUNCTIONS: dict[Any, Callable[..., str]] = {
    operator.add: _h_add, operator.sub: _h_sub, operator.mul: _h_mul, operator.truediv: _h_div,
    operator.neg: _h_neg, operator.pow: _h_pow, operator.abs: _ABS,
    torch.add: _h_add, torch.sub: _h_sub, torch.mul: _h_mul, torch.div: _h_div, torch.true_divide: _h_div,
    torch.pow: _h_pow, torch.clamp: _h_clamp, torch.clip: _h_clamp, torch.relu: _h_relu,
    torch.selu: _h_selu, _F.relu: _h_relu, _F.leaky_relu: _h_leaky_relu, _F.elu: _h_elu, _F.selu: _h_selu,
    _F.hardtanh: _h_hardtanh, _F.relu6: _h_relu6, _F.hardsigmoid: _h_hardsigmoid, _F.hardswish: _h_hardswish,
    _F.silu: _h_silu, _F.mish: _h_mish, _F.softplus: _h_softplus, _F.softsign: _h_softsign, _F.gelu: _h_gelu,
    _F.sigmoid: _SIGMOID, _F.tanh: _h_tanh,
    **{getattr(torch, name): h for name, h in _UNARY.items()},
}
METHODS: dict[str, Callable[..., str]] = {
    "add": _h_add, "sub": _h_sub, "mul": _h_mul, "div": _h_div, "pow": _h_pow, "clamp": _h_clamp,
    "clip": _h_clamp, "relu": _h_relu, **_UNARY,
}


def _module_call(mod: Any) -> tuple[Callable[..., str], dict[str, Any]] | None:
    """The handler of an elementwise module, with its settings as keyword arguments."""
    nn = torch.nn
    table: list[tuple[type, Callable[..., str], tuple[str, ...]]] = [
        (nn.ReLU, _h_relu, ("inplace",)), (nn.LeakyReLU, _h_leaky_relu, ("negative_slope", "inplace")),
        (nn.ELU, _h_elu, ("alpha", "inplace")), (nn.SELU, _h_selu, ("inplace",)),
        (nn.ReLU6, _h_relu6, ("inplace",)), (nn.Hardtanh, _h_hardtanh, ("min_val", "max_val", "inplace")),
        (nn.Hardsigmoid, _h_hardsigmoid, ("inplace",)), (nn.Hardswish, _h_hardswish, ("inplace",)),
        (nn.SiLU, _h_silu, ("inplace",)), (nn.Mish, _h_mish, ("inplace",)),
        (nn.Softplus, _h_softplus, ("beta", "threshold")), (nn.Softsign, _h_softsign, ()),
        (nn.GELU, _h_gelu, ("approximate",)), (nn.Sigmoid, _SIGMOID, ()), (nn.Tanh, _h_tanh, ()),
    ]
    for cls, handler, attrs in table:
        if type(mod) is cls:  # exactly: a subclass may compute something else
            return handler, {a: getattr(mod, a) for a in attrs}
    return None


def _elementwise_handler(node: Any, modules: dict[str, Any]) -> tuple[Callable[..., str], tuple, dict] | None:
    if node.op == "call_function" and node.target in FUNCTIONS:
        return FUNCTIONS[node.target], tuple(node.args), dict(node.kwargs)
    if node.op == "call_method" and node.target in METHODS:
        return METHODS[str(node.target)], tuple(node.args), dict(node.kwargs)
    if node.op == "call_module":
        found = _module_call(modules.get(node.target))
        if found:
            handler, settings = found
            return handler, tuple(node.args), {**settings, **node.kwargs}
    return None


def elementwise_program(nodes: list[Any], source: Any, out: Any, modules: dict[str, Any],
                        operands: dict[Any, str] | None = None) -> list[str] | None:
    """The Triton lines computing ``out`` (ending ``y = ...``) from ``x``, the float32 block of ``source``, when
    every node is an elementwise op of ``source``, scalars and ``operands`` (other fx nodes the kernel has loaded
    as float32 blocks that broadcast against ``x``, by their variable names); else None."""
    p = _Program()
    names: dict[Any, _V] = {source: _V("x"), **{node: _V(name) for node, name in (operands or {}).items()}}
    try:
        for node in nodes:
            found = _elementwise_handler(node, modules)
            if found is None:
                return None
            handler, args, kwargs = found

            def value(a: Any) -> Any:
                if hasattr(a, "op"):  # an fx node
                    if a not in names:
                        raise _Unsupported("an operand outside the chain")
                    return names[a]
                if isinstance(a, (list, tuple, dict)):
                    raise _Unsupported("a container operand")
                return a

            bound_args = [value(a) for a in args]
            bound_kwargs = {k: value(v) for k, v in kwargs.items()}
            try:
                inspect.signature(handler).bind(p, *bound_args, **bound_kwargs)
            except TypeError:
                return None
            if not any(isinstance(v, _V) for v in [*bound_args, *bound_kwargs.values()]):
                return None
            names[node] = p.tmp(handler(p, *bound_args, **bound_kwargs))
    except _Unsupported:
        return None
    if out not in names or out is source or out in (operands or {}):
        return None
    return [*p.lines, f"y = {names[out]}"]


def _bind(sig: Callable[..., Any], args: tuple, kwargs: dict) -> dict[str, Any] | None:
    try:
        b = inspect.signature(sig).bind(*args, **kwargs)
    except TypeError:
        return None
    b.apply_defaults()
    return dict(b.arguments)


# Signatures of the ops the axis patterns read (torch's builtins have none Python can inspect).
def _sig_softmax(input: Any, dim: Any = None, _stacklevel: int = 3, dtype: Any = None) -> None: ...
def _sig_reduce(input: Any, dim: Any = None, keepdim: bool = False, *, dtype: Any = None) -> None: ...
def _sig_max(input: Any, dim: Any = None, keepdim: bool = False) -> None: ...
def _sig_amax(input: Any, dim: Any = (), keepdim: bool = False) -> None: ...
def _sig_mean(input: Any, dim: Any = None, keepdim: bool = False, *, dtype: Any = None) -> None: ...
def _sig_ce(input: Any, target: Any, weight: Any = None, size_average: Any = None,
            ignore_index: int = -100, reduce: Any = None, reduction: str = "mean",
            label_smoothing: float = 0.0) -> None: ...


_SOFTMAX_FNS = {torch.softmax: "row_softmax", _F.softmax: "row_softmax", torch.log_softmax: "log_softmax",
                _F.log_softmax: "log_softmax"}
_REDUCE_FNS = {torch.sum: ("sum", _sig_reduce), torch.mean: ("mean", _sig_mean), torch.amax: ("max", _sig_amax),
               torch.amin: ("min", _sig_amax), torch.max: ("max", _sig_max), torch.min: ("min", _sig_max)}
_REDUCE_METHODS = {"sum": ("sum", _sig_reduce), "mean": ("mean", _sig_mean), "amax": ("max", _sig_amax),
                   "amin": ("min", _sig_amax), "max": ("max", _sig_max), "min": ("min", _sig_max)}


def _one_dim(dim: Any, ndim: int) -> int | None:
    """``dim`` as one non-negative axis of an ``ndim``-D tensor, or None (several, none, or not an int)."""
    if isinstance(dim, (list, tuple)):
        if len(dim) != 1:
            return None
        dim = dim[0]
    if isinstance(dim, bool) or not isinstance(dim, int) or not -ndim <= dim < ndim:
        return None
    return dim % ndim


def _call(node: Any) -> tuple[Any, tuple, dict] | None:
    """(target, args, kwargs) of a call_function or call_method node (a method's self first)."""
    if node.op in ("call_function", "call_method"):
        return node.target, tuple(node.args), dict(node.kwargs)
    return None


def _axis(pattern: str, shape: tuple[int, ...], dim: int, **extra: Any) -> dict[str, Any]:
    return {"pattern": pattern, "dim": dim, "n_cols": int(shape[dim]), "inner": int(math.prod(shape[dim + 1:])),
            "outer": int(math.prod(shape[:dim])), **extra}


def _match_softmax(node: Any, x: Any, shape: tuple[int, ...], modules: dict[str, Any]) -> dict[str, Any] | None:
    if node.op == "call_module":
        mod = modules.get(node.target)
        kind = {torch.nn.Softmax: "row_softmax", torch.nn.LogSoftmax: "log_softmax"}.get(type(mod))
        if kind is None or tuple(node.args) != (x,) or node.kwargs:
            return None
        dim = _one_dim(mod.dim, len(shape)) if not isinstance(mod.dim, (list, tuple)) else None
        return _axis(kind, shape, dim) if dim is not None else None
    call = _call(node)
    if call is None:
        return None
    target, args, kwargs = call
    if node.op == "call_function":
        kind = _SOFTMAX_FNS.get(target)
    else:
        kind = {"softmax": "row_softmax", "log_softmax": "log_softmax"}.get(target)
    bound = _bind(_sig_softmax, args, kwargs) if kind else None
    if not bound or bound["input"] is not x or bound["dtype"] is not None or isinstance(bound["dim"], (list, tuple)):
        return None
    dim = _one_dim(bound["dim"], len(shape))
    return _axis(kind, shape, dim) if kind and dim is not None else None


def _match_reduce(nodes: list[Any], x: Any, shape: tuple[int, ...]) -> dict[str, Any] | None:
    """sum/mean/amax/amin over one dim, or max/min over a dim followed by [0] or .values."""
    first = nodes[0]
    call = _call(first)
    if call is None:
        return None
    target, args, kwargs = call
    table = _REDUCE_FNS if first.op == "call_function" else _REDUCE_METHODS
    entry = table.get(target)
    if entry is None:
        return None
    op, sig = entry
    bound = _bind(sig, args, kwargs)
    if not bound or bound["input"] is not x or bound.get("dtype") is not None:
        return None
    dim = _one_dim(bound["dim"], len(shape))
    if dim is None or not isinstance(bound["keepdim"], bool):
        return None
    returns_pair = sig is _sig_max
    if returns_pair:
        if len(nodes) != 2:
            return None
        pick = nodes[1]
        picks_values = pick.op == "call_function" and tuple(pick.args) in ((first, 0), (first, "values")) and \
            pick.target in (operator.getitem, getattr)
        if not picks_values or (pick.target is operator.getitem) != (pick.args[1] == 0):
            return None
    elif len(nodes) != 1:
        return None
    return _axis(f"reduce_{op}", shape, dim, keepdim=bound["keepdim"])


def _is_square_of(node: Any, x: Any) -> bool:
    call = _call(node)
    if call is None:
        return False
    target, args, kwargs = call
    if kwargs:
        return False
    if target in (operator.pow, torch.pow, "pow") and len(args) == 2:
        return args[0] is x and not isinstance(args[1], bool) and args[1] == 2
    if target in (operator.mul, torch.mul, "mul") and len(args) == 2:
        return args[0] is x and args[1] is x
    return target in (torch.square, "square") and tuple(args) == (x,)


def _match_rmsnorm(nodes: list[Any], out: Any, x: Any, shape: tuple[int, ...]) -> dict[str, Any] | None:
    """x / sqrt(mean(x**2, dim, keepdim=True) + eps), or x * rsqrt(...), and nothing else."""
    call = _call(out)
    if call is None or call[2] or len(call[1]) != 2:
        return None
    target, (a, root), _ = call
    if a is not x or not hasattr(root, "op"):
        return None
    if target in (operator.truediv, torch.div, "div"):
        want_root = (torch.sqrt, "sqrt")
    elif target in (operator.mul, torch.mul, "mul"):
        want_root = (torch.rsqrt, "rsqrt")
    else:
        return None
    rc = _call(root)
    if rc is None or rc[0] not in want_root or rc[2] or len(rc[1]) != 1:
        return None
    add = rc[1][0]
    ac = _call(add) if hasattr(add, "op") else None
    if ac is None or ac[0] not in (operator.add, torch.add, "add") or ac[2] or len(ac[1]) != 2:
        return None
    mean, eps = ac[1] if hasattr(ac[1][0], "op") else ac[1][::-1]
    if not hasattr(mean, "op") or isinstance(eps, bool) or not isinstance(eps, (int, float)) or \
            not math.isfinite(eps):
        return None
    mc = _call(mean)
    if mc is None or mc[0] not in (torch.mean, "mean"):
        return None
    bound = _bind(_sig_mean, mc[1], mc[2])
    if not bound or bound["keepdim"] is not True or bound["dtype"] is not None or \
            not _is_square_of(bound["input"], x):
        return None
    dim = _one_dim(bound["dim"], len(shape))
    if dim is None or set(nodes) != {bound["input"], mean, add, root, out}:
        return None
    return _axis("rmsnorm", shape, dim, eps=float(eps))


def _match_norm_module(node: Any, x: Any, shape: tuple[int, ...], modules: dict[str, Any]) -> dict[str, Any] | None:
    """nn.LayerNorm and nn.RMSNorm over the trailing dims (any number of them)."""
    if node.op != "call_module" or tuple(node.args) != (x,) or node.kwargs:
        return None
    mod = modules.get(node.target)
    rms_cls = getattr(torch.nn, "RMSNorm", None)
    if type(mod) is torch.nn.LayerNorm:
        kind, eps = "layernorm", float(mod.eps)
    elif rms_cls is not None and type(mod) is rms_cls:
        kind, eps = "rmsnorm", (None if mod.eps is None else float(mod.eps))
    else:
        return None
    k = len(mod.normalized_shape)
    if not 0 < k <= len(shape) or tuple(shape[len(shape) - k:]) != tuple(mod.normalized_shape):
        return None
    dim = len(shape) - k
    return {"pattern": kind, "dim": dim, "n_cols": int(math.prod(shape[dim:])), "inner": 1, "eps": eps,
            "module": str(node.target), "outer": int(math.prod(shape[:dim]))}


def _match_cross_entropy(node: Any, places: list[Any], inputs: list[Any],
                         modules: dict[str, Any]) -> dict[str, Any] | None:
    """cross_entropy(logits (N, C), class indices (N,)) with no weight and no label smoothing."""
    if len(places) != 2 or len(inputs) != 2:
        return None
    logits, target = inputs
    if not (isinstance(logits, torch.Tensor) and isinstance(target, torch.Tensor)) or logits.dim() != 2 or \
            target.dim() != 1 or target.dtype != torch.int64 or logits.dtype not in FLOATS or \
            target.shape[0] != logits.shape[0]:
        return None
    if node.op == "call_module":
        mod = modules.get(node.target)
        if type(mod) is not torch.nn.CrossEntropyLoss or mod.weight is not None or node.kwargs:
            return None
        bound = {"input": node.args[0] if node.args else None, "target": node.args[1] if len(node.args) > 1 else None,
                 "weight": None, "ignore_index": mod.ignore_index, "reduction": mod.reduction,
                 "label_smoothing": mod.label_smoothing, "size_average": None, "reduce": None}
        if len(node.args) != 2:
            return None
    elif node.op == "call_function" and node.target is _F.cross_entropy:
        bound = _bind(_sig_ce, tuple(node.args), dict(node.kwargs))
    else:
        return None
    if not bound or bound["input"] is not places[0] or bound["target"] is not places[1] or \
            bound["weight"] is not None or bound["size_average"] is not None or bound["reduce"] is not None or \
            bound["label_smoothing"] != 0.0 or bound["reduction"] not in ("mean", "sum", "none") or \
            isinstance(bound["ignore_index"], bool) or not isinstance(bound["ignore_index"], int):
        return None
    return {"pattern": "cross_entropy", "dim": 1, "n_cols": int(logits.shape[1]), "inner": 1,
            "outer": int(logits.shape[0]),
            "reduction": bound["reduction"], "ignore_index": int(bound["ignore_index"])}


def match(nodes: list[Any], places: list[Any], out: Any, modules: dict[str, Any],
          inputs: list[Any]) -> dict[str, Any] | None:
    """The axis or elementwise pattern that computes the traced graph exactly, as TaskTraits fields; else None.
    ``nodes``: the graph's op nodes in order; ``out``: the node returned (not a tuple)."""
    if not nodes or not hasattr(out, "op"):
        return None
    if len(nodes) == 1 and (found := _match_cross_entropy(nodes[0], places, inputs, modules)):
        return found
    tensors = [x for x in inputs if isinstance(x, torch.Tensor)]
    if len(places) != 1 or len(tensors) != 1 or len(inputs) != 1 or tensors[0].dtype not in FLOATS or \
            tensors[0].dim() == 0:
        return None
    x, shape = places[0], tuple(int(s) for s in tensors[0].shape)
    if len(nodes) == 1 and out is nodes[0]:
        found = _match_softmax(out, x, shape, modules) or _match_norm_module(out, x, shape, modules)
        if found:
            return found
    if out is nodes[-1] and (found := _match_reduce(nodes, x, shape)):
        return found
    if out is nodes[-1] and (found := _match_rmsnorm(nodes, out, x, shape)):
        return found
    program = elementwise_program(nodes, x, out, modules)
    if program is not None and math.prod(shape) > 0:
        return {"pattern": "elementwise", "expr": program, "numel": int(math.prod(shape))}
    return None


# ---------------------------------------------------------------------------------------------- rendering
_INF = '-float("inf")'


@dataclass(frozen=True)
class _Op:
    """The pieces of an axis kernel for one pattern. Statistics are float32 blocks of shape [1] (a row) or
    [1, BLOCK_I] (strided columns): ``init`` and ``step`` accumulate them over chunks ``x`` of [lo, hi);
    ``single`` computes them from the whole row ``x`` in registers; ``partial`` names the three values a split
    program stores (count, a, b) and ``combine`` rebuilds the statistics from the S partials of a row (vectors
    ``pn``, ``pa``, ``pb``); ``final`` follows every way of computing them; ``out`` is y from x in the write pass
    (None: a reduction, which stores ``acc``)."""

    other: str
    init: tuple[str, ...]
    step: tuple[str, ...]
    single: tuple[str, ...]
    partial: tuple[str, str, str]
    combine: tuple[str, ...]
    final: tuple[str, ...] = ()
    out: str | None = None
    single_out: str | None = None
    affine: bool = False  # weight and bias (HAS_W, HAS_B) on the output


_SOFTMAX_PARTS = {
    "other": _INF,
    "init": (f"m = tl.full(@STATE, {_INF}, tl.float32)", "s = tl.zeros(@STATE, tl.float32)"),
    "step": ("m_new = tl.maximum(m, tl.max(x, axis=0, keep_dims=True))",
             f"m_safe = tl.where(m_new == {_INF}, 0.0, m_new)",
             "s = s * tl.exp(m - m_safe) + tl.sum(tl.exp(x - m_safe), axis=0, keep_dims=True)",
             "m = m_new"),
    "single": ("m = tl.max(x, axis=0, keep_dims=True)", "e = tl.exp(x - m)", "s = tl.sum(e, axis=0, keep_dims=True)"),
    "partial": ("0.0", "m", "s"),
    "combine": ("m = tl.max(pa, axis=0, keep_dims=True)", f"m_safe = tl.where(m == {_INF}, 0.0, m)",
                "s = tl.sum(pb * tl.exp(pa - m_safe), axis=0, keep_dims=True)"),
}
OPS: dict[str, _Op] = {
    "row_softmax": _Op(**_SOFTMAX_PARTS, final=("inv = 1.0 / s",), out="tl.exp(x - m) * inv", single_out="e / s"),
    "log_softmax": _Op(**_SOFTMAX_PARTS, final=("lse = m + tl.log(s)",), out="x - lse",
                       single_out="(x - m) - tl.log(s)"),
    "cross_entropy": _Op(**_SOFTMAX_PARTS),
    "rmsnorm": _Op(other="0.0", init=("ss = tl.zeros(@STATE, tl.float32)",),
                   step=("ss += tl.sum(x * x, axis=0, keep_dims=True)",),
                   single=("ss = tl.sum(x * x, axis=0, keep_dims=True)",), partial=("0.0", "ss", "0.0"),
                   combine=("ss = tl.sum(pa, axis=0, keep_dims=True)",), final=("rms = tl.sqrt(ss / R + eps)",),
                   out="x / rms", single_out="x / rms", affine=True),
    "layernorm": _Op(
        other="0.0", init=("mean = tl.zeros(@STATE, tl.float32)", "m2 = tl.zeros(@STATE, tl.float32)"),
        # Chan's merge of each chunk's mean and M2 into the running ones (r0 - lo values before this chunk)
        step=("n_c = tl.sum(msk.to(tl.float32), axis=0, keep_dims=True)",
              "c_mean = tl.sum(x, axis=0, keep_dims=True) / n_c",
              "d = tl.where(msk, x - c_mean, 0.0)",
              "delta = c_mean - mean",
              "n_new = (r0 - lo) + n_c",
              "mean = mean + delta * (n_c / n_new)",
              "m2 = m2 + tl.sum(d * d, axis=0, keep_dims=True) + delta * delta * ((r0 - lo) * n_c / n_new)"),
        single=("mean = tl.sum(x, axis=0, keep_dims=True) / R", "d = tl.where(msk, x - mean, 0.0)",
                "m2 = tl.sum(d * d, axis=0, keep_dims=True)"),
        partial=("tl.maximum(hi - lo, 0).to(tl.float32)", "mean", "m2"),
        combine=("mean = tl.sum(pn * pa, axis=0, keep_dims=True) / R",
                 "m2 = tl.sum(pb + pn * (pa - mean) * (pa - mean), axis=0, keep_dims=True)"),
        final=("rstd = 1.0 / tl.sqrt(m2 / R + eps)",), out="(x - mean) * rstd", single_out="d * rstd",
        affine=True),
}
# A maximum or minimum over a chunk with a NaN in it is NaN, as torch's is (tl.max, tl.maximum and their min twins
# pass over NaN on a GPU): a flag per chunk, and the running value combined with NaN kept.
_HAS_NAN = "tl.max(({v} != {v}).to(tl.int32), axis=0, keep_dims=True) > 0"
for _op, _init, _join, _reduce in (("sum", "0.0", "acc + tl.sum(x, axis=0, keep_dims=True)", "tl.sum"),
                                   ("mean", "0.0", "acc + tl.sum(x, axis=0, keep_dims=True)", "tl.sum"),
                                   ("max", _INF, f"tl.maximum(acc, tl.max(x, axis=0, keep_dims=True), {PROPAGATE_NAN})",
                                    "tl.max"),
                                   ("min", 'float("inf")',
                                    f"tl.minimum(acc, tl.min(x, axis=0, keep_dims=True), {PROPAGATE_NAN})", "tl.min")):
    _extreme = _op in ("max", "min")
    OPS[f"reduce_{_op}"] = _Op(
        other=_init, init=(f"acc = tl.full(@STATE, {_init}, tl.float32)",),
        step=(f"acc = {_join}",) + ((f"acc = tl.where({_HAS_NAN.format(v='x')}, float('nan'), acc)",) if _extreme
                                    else ()),
        single=(), partial=("0.0", "acc", "0.0"),
        combine=(f"acc = {_reduce}(pa, axis=0, keep_dims=True)",)
        + ((f"acc = tl.where({_HAS_NAN.format(v='pa')}, float('nan'), acc)",) if _extreme else ()),
        final=("acc = acc / R",) if _op == "mean" else ())

_PROLOGUE = {
    "rows": ("row = tl.program_id(0).to(tl.int64)", "base = row * R", "obase = row", "r = tl.arange(0, BLOCK)",
             "oofs = tl.arange(0, 1)", "omsk = oofs < 1", "lo = 0", "hi = R"),
    "cols": ("pid = tl.program_id(0)", "o = (pid // n_iblocks).to(tl.int64)",
             "cols = (pid % n_iblocks) * BLOCK_I + tl.arange(0, BLOCK_I)", "cmask = cols < INNER",
             "base = o * R * INNER", "obase = o * INNER", "r = tl.arange(0, BLOCK)", "oofs = cols[None, :]",
             "omsk = cmask[None, :]", "lo = 0", "hi = R"),
    "split": ("pid = tl.program_id(0)", "row = (pid // S).to(tl.int64)", "j = pid % S", "base = row * R",
              "obase = row", "r = tl.arange(0, BLOCK)", "oofs = tl.arange(0, 1)", "omsk = oofs < 1",
              "lo = j * SEG", "hi = tl.minimum(lo + SEG, R)"),
}
_CHUNK = {"rows": ("rr = {start} + r", "offs = rr", "msk = rr < hi"),
          # int64: an axis times its columns may pass 2**31 elements (a sum over dim 0 of everything)
          "cols": ("rr = {start} + r", "offs = rr[:, None].to(tl.int64) * INNER + cols[None, :]",
                   "msk = (rr[:, None] < hi) & cmask[None, :]")}
_AFFINE = ("if HAS_W:", "    y = y * tl.load(w_ptr + offs, mask=msk, other=0.0).to(tl.float32)",
           "if HAS_B:", "    y = y + tl.load(b_ptr + offs, mask=msk, other=0.0).to(tl.float32)")
_CE_LOSS = ("t = tl.load(t_ptr + row)", "valid = t != ignore_index",
            "tc = tl.where(valid & (t >= 0) & (t < R), t, 0)", "xt = tl.load(x_ptr + base + tc).to(tl.float32)",
            "loss = tl.where(valid, m + tl.log(s) - xt, 0.0)", "tl.store(y_ptr + obase + oofs, loss, mask=omsk)")
_STORE_ACC = ("tl.store(y_ptr + obase + oofs, acc.to(y_ptr.dtype.element_ty), mask=omsk)",)


def _indent(lines: tuple[str, ...] | list[str], n: int) -> list[str]:
    return [" " * n + line for line in lines]


def _chunk(mode: str, start: str, other: str, n: int) -> list[str]:
    lines = [x.format(start=start) for x in _CHUNK["cols" if mode == "cols" else "rows"]]
    lines.append(f"x = tl.load(x_ptr + base + offs, mask=msk, other={other}).to(tl.float32)")
    return _indent(lines, n)


def _stats_loop(op: _Op, mode: str, n: int) -> list[str]:
    state = "[1, BLOCK_I]" if mode == "cols" else "[1]"
    return _indent([x.replace("@STATE", state) for x in op.init], n) + \
        _indent(["for r0 in range(lo, hi, BLOCK):"], n) + _chunk(mode, "r0", op.other, n + 4) + \
        _indent(op.step, n + 4)


def _write(op: _Op, n: int, y: str | None) -> list[str]:
    """Store y (the output of the chunk in x), with the weights where the op has them."""
    lines = [f"y = {y}"]
    if op.affine:
        lines += list(_AFFINE)
    lines.append("tl.store(y_ptr + base + offs, y.to(y_ptr.dtype.element_ty), mask=msk)")
    return _indent(lines, n)


def _write_loop(op: _Op, mode: str, n: int) -> list[str]:
    return _indent(["for r0 in range(lo, hi, BLOCK):"], n) + _chunk(mode, "r0", "0.0", n + 4) + \
        _write(op, n + 4, op.out)


def _tail(pattern: str, op: _Op, mode: str, n: int) -> list[str]:
    """What follows the statistics: the write pass, a reduction's store, or the cross-entropy loss."""
    if pattern == "cross_entropy":
        return _indent(_CE_LOSS, n)
    if op.out is None:
        return _indent(op.final + _STORE_ACC, n)
    return _indent(op.final, n) + _write_loop(op, mode, n)


_HEADS = {
    "one": ("def _axis_kernel(x_ptr, y_ptr, w_ptr, b_ptr, t_ptr, R, INNER, n_iblocks, eps, ignore_index,\n"
            "                 BLOCK: tl.constexpr, BLOCK_I: tl.constexpr, SINGLE: tl.constexpr,\n"
            "                 HAS_W: tl.constexpr, HAS_B: tl.constexpr):"),
    "partials": "def _axis_partials(x_ptr, p_ptr, R, SEG, S: tl.constexpr, BLOCK: tl.constexpr):",
    "apply": ("def _axis_apply(x_ptr, y_ptr, w_ptr, b_ptr, p_ptr, R, SEG, eps, S: tl.constexpr,\n"
              "                BLOCK: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr):"),
}


def axis_kernel_source(pattern: str, rows: bool, split: bool = False) -> str:
    """The @triton.jit kernels of an axis pattern: ``_axis_kernel`` (one program per row, or per BLOCK_I strided
    columns), and with ``split`` (rows only) ``_axis_partials`` and ``_axis_apply``, S programs per row."""
    op, mode = OPS[pattern], "rows" if rows else "cols"
    body = _indent(_PROLOGUE[mode], 4)
    if op.out is not None or pattern == "cross_entropy":  # a normalisation: a row that fits is read once
        single = _chunk(mode, "0", op.other, 8) + _indent(op.single, 8)
        if op.single_out:
            single += _indent(op.final, 8) + _write(op, 8, op.single_out)
        body += ["    if SINGLE:", *single, "    else:", *_stats_loop(op, mode, 8)]
        body += _tail(pattern, op, mode, 4) if pattern == "cross_entropy" else _tail(pattern, op, mode, 8)
    else:
        body += _stats_loop(op, mode, 4) + _tail(pattern, op, mode, 4)
    out = ["@triton.jit", _HEADS["one"], *body]
    if split:
        n, a, b = op.partial
        out += ["", "", "@triton.jit", _HEADS["partials"], *_indent(_PROLOGUE["split"], 4), *_stats_loop(op, "rows", 4),
                "    pp = p_ptr + pid.to(tl.int64) * 3 + tl.arange(0, 1)",
                f"    tl.store(pp, tl.zeros([1], tl.float32) + {n})",
                f"    tl.store(pp + 1, {a})", f"    tl.store(pp + 2, {b})",
                "", "", "@triton.jit", _HEADS["apply"],
                *_indent(_PROLOGUE["split"] if op.out else _PROLOGUE["rows"][:6], 4),
                "    pp = p_ptr + (row * S + tl.arange(0, S)) * 3",
                "    pn = tl.load(pp)", "    pa = tl.load(pp + 1)", "    pb = tl.load(pp + 2)",
                *_indent(op.combine, 4), *_tail(pattern, op, "rows", 4)]
    return "\n".join(out) + "\n"


_AXIS_RUN = '''

def _run(model, *args):
    x = args[0].contiguous()
    shape = tuple(x.shape)
    dim = {dim}
{extent}
    outer = x.numel() // max(n * inner, 1)
{setup}
    w_, b_, t_ = (x if v is None else v for v in (w, b, t))
{launch}
{finish}
'''
_LAUNCH_ONE = """\
    n_iblocks = {n_iblocks}
    _axis_kernel[(outer * n_iblocks,)](x, y, w_, b_, t_, n, inner, n_iblocks, eps, {ignore_index},
                                       BLOCK={block}, BLOCK_I={block_inner}, SINGLE=n <= {block},
                                       HAS_W=w is not None, HAS_B=b is not None,
                                       num_warps={warps}, num_stages={stages})"""
_LAUNCH_SPLIT = """\
    if n > {block}:  # {split} programs per row, each over a segment of whole chunks: partial statistics, then apply
        seg = triton.cdiv(triton.cdiv(n, {split}), {block}) * {block}
        part = torch.empty(outer * {split} * 3, dtype=torch.float32, device=x.device)
        _axis_partials[(outer * {split},)](x, part, n, seg, S={split}, BLOCK={block},
                                           num_warps={warps}, num_stages={stages})
        _axis_apply[(outer * {apply_programs},)](x, y, w_, b_, part, n, seg, eps, S={split}, BLOCK={block},
                                           HAS_W=w is not None, HAS_B=b is not None,
                                           num_warps={warps}, num_stages={stages})
    else:
{one}"""


def _axis_setup(traits: TaskTraits) -> tuple[str, str]:
    """The lines of ``_run`` that make the output and the weights, and that finish the result."""
    pattern = traits.pattern or ""
    lines = ["    w = b = t = None", f"    eps = {0.0 if traits.eps is None else traits.eps!r}"]
    finish = "    return y"
    if pattern in ("layernorm", "rmsnorm") and traits.module:
        lines += [f"    norm = model.get_submodule({traits.module!r})",
                  "    w = norm.weight.reshape(-1) if norm.weight is not None else None",
                  "    b = norm.bias.reshape(-1) if getattr(norm, 'bias', None) is not None else None"]
        if traits.eps is None:  # nn.RMSNorm(eps=None): the input dtype's machine epsilon
            lines.append("    eps = torch.finfo(x.dtype).eps")
    if pattern.startswith("reduce_"):
        shape = "shape[:dim] + (1,) + shape[dim + 1:]" if traits.keepdim else "shape[:dim] + shape[dim + 1:]"
        lines.append(f"    y = torch.empty({shape}, dtype=x.dtype, device=x.device)")
    elif pattern == "cross_entropy":
        lines += ["    t = args[1].contiguous()", "    y = torch.empty(outer, dtype=torch.float32, device=x.device)"]
        finish = {"none": "    return y.to(x.dtype)",
                  "sum": "    return y.sum().to(x.dtype)",
                  "mean": f"    return (y.sum() / (t != {traits.ignore_index}).sum()).to(x.dtype)"}[traits.reduction]
    else:
        lines.append("    y = torch.empty_like(x)")
    return "\n".join(lines), finish


_EW_KERNEL = '''
import triton
import triton.language as tl


@triton.jit
def _elementwise(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    msk = offs < n
    x = tl.load(x_ptr + offs, mask=msk, other=0.0).to(tl.float32)
{body}
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=msk)


def _run(model, x):
    xc = x.contiguous()
    y = torch.empty_like(xc)
    n = xc.numel()
    _elementwise[(triton.cdiv(n, {block}),)](xc, y, n, BLOCK={block}, num_warps={warps})
    return y.view(x.shape)
'''


def render(g: dict[str, Any], traits: TaskTraits) -> str:
    """The kernel and ``_run(model, *inputs)`` of an axis or elementwise template for genome ``g``."""
    block = int(g.get("block") or default_block(traits))
    if traits.pattern == "elementwise":
        body = "\n".join("    " + line for line in traits.expr)
        return _EW_KERNEL.format(body=body, block=block, warps=g["warps"])
    strided = traits.inner > 1
    block_inner = int(g.get("block_inner") or default_inner(traits)) if strided else 1
    block = clamp_tile(block, block_inner)
    split = int(g.get("split") or 1) if not strided else 1
    setup, finish = _axis_setup(traits)
    if traits.pattern in ("layernorm", "rmsnorm") and traits.module:  # a module: over all the trailing dims
        extent = "    n, inner = math.prod(shape[dim:]), 1"
    else:
        extent = "    n, inner = shape[dim], math.prod(shape[dim + 1:])"
    fill = {"n_iblocks": f"triton.cdiv(inner, {block_inner})" if strided else "1", "block_inner": block_inner,
            "block": block, "warps": g["warps"], "stages": g.get("stages", 2), "ignore_index": traits.ignore_index,
            "split": split, "apply_programs": split if OPS[str(traits.pattern)].out else 1}
    launch = _LAUNCH_ONE.format(**fill)
    if split > 1:
        launch = _LAUNCH_SPLIT.format(**fill, one="\n".join("    " + line for line in launch.splitlines()))
    run = _AXIS_RUN.format(dim=traits.dim, extent=extent, setup=setup, launch=launch, finish=finish)
    kernel = axis_kernel_source(str(traits.pattern), rows=not strided, split=split > 1)
    return "\nimport math\n\nimport triton\nimport triton.language as tl\n\n\n" + kernel + run


def describe_bits(g: dict[str, Any]) -> list[str]:
    """The genes of an axis or elementwise template, for describe()."""
    block = g.get("block")
    if g["triton"] == "elementwise":
        return [f"block {block}", f"{g['warps']} warps"]
    tile = f"block {block}x{g['block_inner']}" if g.get("block_inner") else f"block {block}"
    split = [f"{g['split']} programs per row"] if g.get("split", 1) > 1 else []
    return [tile, *split, f"{g['warps']} warps", f"stages {g.get('stages', 2)}"]
