"""The built-in mutator for any KernelBench-format task: no network, no key, no knowledge of the operator
beyond what a trace of its ``Model`` shows.

A candidate is the task's own source followed by a ``ModelNew`` that wraps ``Model`` (constructed first,
so its weights are the reference's) and changes *how* it runs, by a genome:

- ``compile``: eager, or ``torch.compile`` in mode default or ``max-autotune-no-cudagraphs`` — on a CPU
  only eager and default (cheap); not ``reduce-overhead``, whose CUDA graphs refuse the judge's capture;
- ``layout``: inputs as given, made contiguous, or channels-last (only where an input is 4-D; the
  weights follow);
- ``precision``: the task's own, or TF32 (``high``) or bf16 (``medium``) float32 matmuls and convolutions
  — set inside the call and restored before it returns (a flag left changed is rejected by the
  evaluator) and labelled on the candidate, since they change the task's numerics (GPU only);
- ``cuda_graph``: capture the forward in a CUDA graph once per input signature and replay it, inputs
  copied into the captured buffers and outputs cloned (GPU only);
- ``triton``: where the trace matches a pattern, a Triton template replaces the forward (see
  :mod:`evoforge.mutators.generic_triton`): softmax, log-softmax, RMSNorm, LayerNorm, sum/mean/max/min over
  a dim and cross-entropy, along any axis and for rows of any length (``block``, ``block_inner``, ``split``,
  ``warps``, ``stages``); a chain of elementwise ops on the one input fused into one pass (``block``, ``warps``);
  a matmul/linear with its bias and the elementwise ops that follow it (a named activation chain, or any
  elementwise program of its output and scalars) fused into the epilogue (``tile`` with its warps, ``stages``);
  or a Conv2d with its bias, an elementwise epilogue (scalars and per-channel tensors too), an optional max or
  average pool and elementwise ops after it, as one implicit-GEMM kernel (:mod:`evoforge.mutators.generic_conv`;
  ``tile``, ``stages``, ``pool_par``).
  On a CPU these are only proposed with ``triton_on_cpu`` (Triton's interpreter is slow).

Mutation changes one gene (its level: ``algorithmic`` for the Triton template and for splitting a row over
programs, ``implementation`` for layout and graphs, ``hardware`` for compile modes, precision, tiles, blocks,
warps and stages); crossover mixes two genomes.
"""

from __future__ import annotations

import operator
import random
from typing import Any

import torch

from evoforge.candidate import Candidate
from evoforge.mutators import generic_conv as gconv
from evoforge.mutators import generic_triton as gt
from evoforge.mutators.base import GenomeMutator
from evoforge.mutators.generic_triton import AXIS_PATTERNS, DOT_LABELS, DOT_PRECISIONS, TaskTraits
from evoforge.results import Individual
from evoforge.task import LoadedTask, TaskError, TaskSpec, init_inputs, load_task, make_inputs

# Not reduce-overhead: a run on a GPU ranks in graph mode, where the judge captures each call in a CUDA graph
# of its own, and reduce-overhead's CUDA graphs refuse that capture (graph_prepare fails: softmax, conv2d and
# matmul+bias+GELU on the H200, benchmarks/results/gpu-tests-all-h200.txt), so such a candidate can never be
# ranked. A genome that has it (an older run's) still renders.
COMPILE_MODES_GPU = ("none", "default", "max-autotune-no-cudagraphs")
COMPILE_MODES_CPU = ("none", "default")
LAYOUTS = ("as_is", "contiguous", "channels_last")
PRECISIONS = ("highest", "high", "medium")
PRECISION_LABELS = {"high": "tf32", "medium": "bf16 matmul"}
TILES = ((32, 32, 32, 4), (64, 64, 32, 4), (128, 64, 32, 4), (64, 128, 32, 4), (128, 128, 32, 8))
ROW_WARPS = (1, 2, 4, 8)
EPILOGUES = ("gelu", "gelu_tanh", "relu", "tanh", "sigmoid")


__all__ = ["GenericMutator", "TaskTraits", "analyse", "describe", "render"]


# ---------------------------------------------------------------------------------------------- analysis
def _act_of(node: Any, modules: dict[str, Any]) -> str | None:
    """The epilogue name of an fx node that applies one elementwise activation to one input, else None."""
    import torch.nn.functional as F

    if node.op == "call_module":
        mod = modules.get(node.target)
        if isinstance(mod, torch.nn.GELU):
            return "gelu_tanh" if mod.approximate == "tanh" else "gelu"
        for cls, name in ((torch.nn.ReLU, "relu"), (torch.nn.Tanh, "tanh"), (torch.nn.Sigmoid, "sigmoid")):
            if isinstance(mod, cls):
                return name
        return None
    if node.op == "call_function":
        if node.target is F.gelu:
            return "gelu_tanh" if node.kwargs.get("approximate", "none") == "tanh" else "gelu"
        table = {torch.relu: "relu", F.relu: "relu", torch.tanh: "tanh", torch.sigmoid: "sigmoid",
                 F.sigmoid: "sigmoid", F.tanh: "tanh"}
        return table.get(node.target)
    if node.op == "call_method" and node.target in ("relu", "tanh", "sigmoid") and len(node.args) == 1:
        return str(node.target)
    return None


def _shapes_of_inputs(task: LoadedTask) -> list[Any]:
    """The task's inputs for their ranks, shapes and dtypes only: made on the meta device where the task allows
    (no data: a KernelBench-size input set is gigabytes), else for real."""
    try:
        with torch.device("meta"):
            return make_inputs(task, seed=0)
    except TaskError:
        return make_inputs(task, seed=0)


def analyse(task: LoadedTask) -> TaskTraits:
    """Input ranks, whether the floating inputs are float32, and which Triton template (if any) computes the
    task's Model exactly."""
    inputs = _shapes_of_inputs(task)
    traits = _analyse(task, inputs)
    floats = [x.dtype for x in inputs if isinstance(x, torch.Tensor) and x.is_floating_point()]
    traits.float32 = bool(floats) and all(d == torch.float32 for d in floats)
    return traits


def _analyse(task: LoadedTask, inputs: list[Any]) -> TaskTraits:
    traits = TaskTraits(input_ranks=[x.dim() for x in inputs if isinstance(x, torch.Tensor)])
    try:
        from torch import fx

        with torch.device("meta"):
            model = task.model_cls(*init_inputs(task))
        graph = fx.symbolic_trace(model).graph
    except Exception:
        return traits  # not traceable: compile, layout, flags and graphs still apply
    modules = dict(model.named_modules())
    nodes = [n for n in graph.nodes if n.op not in ("placeholder", "output")]
    places = [n for n in graph.nodes if n.op == "placeholder"]
    out = next(n for n in graph.nodes if n.op == "output")
    if not nodes or not places:
        return traits
    found = gt.match(nodes, places, out.args[0], modules, inputs)
    if found:
        return TaskTraits(traits.input_ranks, **found)
    if any(x.dtype not in (torch.float32, torch.float16, torch.bfloat16)
           for x in inputs if isinstance(x, torch.Tensor)):
        return traits
    if found := gconv.match(nodes, places, out.args[0], modules, inputs):
        return TaskTraits(traits.input_ranks, **found)
    first, rest = nodes[0], nodes[1:]
    if out.args[0] is not nodes[-1]:
        return traits
    # every node after the first is one activation of the previous node (a named epilogue), or else the nodes
    # after the first are elementwise ops of its output and scalars (an epilogue program)
    chain_ok = all(n.args and n.args[0] is prev and _act_of(n, modules) for prev, n in zip(nodes, rest, strict=False))
    epilogue = [str(_act_of(n, modules)) for n in rest] if chain_ok else []
    expr: list[str] = []
    if not chain_ok:
        program = gt.elementwise_program(rest, first, out.args[0], modules)
        if program is None:
            return traits
        expr = program
    x0 = inputs[0]
    if first.op == "call_module" and len(places) == 1 and first.args and first.args[0] is places[0]:
        mod = modules.get(first.target)
        if isinstance(mod, torch.nn.Linear) and x0.dim() >= 2:
            return TaskTraits(traits.input_ranks, "linear_epilogue", module=str(first.target), epilogue=epilogue,
                              expr=expr)
    is_matmul = first.op == "call_function" and first.target in (operator.matmul, torch.matmul, torch.mm)
    if is_matmul and len(places) == 2 and tuple(first.args) == tuple(places) and traits.input_ranks == [2, 2]:
        return TaskTraits(traits.input_ranks, "matmul_epilogue", epilogue=epilogue, expr=expr)
    return traits


# ---------------------------------------------------------------------------------------------- rendering
_HEADER = """

# ---------------------------------------------------------------------------------------------------
# evoforge generic mutator: ModelNew runs the task's Model above ({what}).
import torch
import torch.nn as nn
"""

_GRAPHED = '''

class _Graphed:
    """Capture fn in a CUDA graph once per input signature; replay it with the inputs copied into the
    captured buffers, and return clones of the outputs (the graph's own buffers are rewritten by the
    next replay)."""

    def __init__(self, fn):
        self.fn = fn
        self.graphs = {}

    def __call__(self, *args):
        if torch.cuda.is_current_stream_capturing():
            return self.fn(*args)  # inside a graph being captured already: its work goes into that graph
        key = tuple((tuple(a.shape), a.dtype, a.device, a.stride()) if isinstance(a, torch.Tensor) else repr(a)
                    for a in args)
        if key not in self.graphs:
            static = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):
                    self.fn(*static)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = self.fn(*static)
            self.graphs[key] = (graph, static, out)
        graph, static, out = self.graphs[key]
        for buffer, a in zip(static, args):
            if isinstance(a, torch.Tensor):
                buffer.copy_(a)
        graph.replay()
        return _clone(out)
'''

_CLONE = '''

def _clone(out):
    if isinstance(out, torch.Tensor):
        return out.clone()
    if isinstance(out, (tuple, list)):
        return type(out)(_clone(o) for o in out)
    return out
'''

_ACT_CODE = {
    "gelu": "acc = 0.5 * acc * (1.0 + tl.math.erf(acc * 0.7071067811865476))",
    "gelu_tanh": "acc = 0.5 * acc * (2.0 * tl.sigmoid(1.5957691216057308 * (acc + 0.044715 * acc * acc * acc)))",
    "relu": f"acc = tl.maximum(acc, 0.0, {gt.PROPAGATE_NAN})",  # NaN stays NaN, as in torch
    "tanh": "acc = 2.0 * tl.sigmoid(2.0 * acc) - 1.0",
    "sigmoid": "acc = tl.sigmoid(acc)",
}

_MATMUL_KERNEL = '''
import triton
import triton.language as tl


@triton.jit
def _matmul_epilogue(a_ptr, b_ptr, bias_ptr, c_ptr, M, N, K, s_am, s_ak, s_bk, s_bn, s_cm, s_cn,
                     HAS_BIAS: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rm = pid_m * BM + tl.arange(0, BM)
    rn = pid_n * BN + tl.arange(0, BN)
    rk = tl.arange(0, BK)
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k0 in range(0, K, BK):
        kk = k0 + rk
        a = tl.load(a_ptr + rm[:, None] * s_am + kk[None, :] * s_ak, mask=(rm[:, None] < M) & (kk[None, :] < K),
                    other=0.0)
        b = tl.load(b_ptr + kk[:, None] * s_bk + rn[None, :] * s_bn, mask=(kk[:, None] < K) & (rn[None, :] < N),
                    other=0.0)
        acc = tl.dot(a, b, acc, input_precision={dot_precision!r})
    if HAS_BIAS:
        acc = acc + tl.load(bias_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
{epilogue}
    tl.store(c_ptr + rm[:, None] * s_cm + rn[None, :] * s_cn, acc.to(c_ptr.dtype.element_ty),
             mask=(rm[:, None] < M) & (rn[None, :] < N))


def _matmul(a, b, bias):
    m, k = a.shape
    n = b.shape[1]
    c = torch.empty((m, n), device=a.device, dtype=a.dtype)
    grid = (triton.cdiv(m, {bm}), triton.cdiv(n, {bn}))
    _matmul_epilogue[grid](a, b, bias if bias is not None else c, c, m, n, k, a.stride(0), a.stride(1),
                           b.stride(0), b.stride(1), c.stride(0), c.stride(1), HAS_BIAS=bias is not None,
                           BM={bm}, BN={bn}, BK={bk}, num_warps={warps}, num_stages={stages})
    return c
'''

_LINEAR_RUN = '''

def _run(model, x):
    linear = model.get_submodule({module!r})
    rows = x.reshape(-1, x.shape[-1])
    out = _matmul(rows, linear.weight.t(), linear.bias)
    return out.view(*x.shape[:-1], out.shape[-1])
'''

_MATMUL_RUN = '''

def _run(model, a, b):
    return _matmul(a, b, None)
'''


def _precision_lines(precision: str, indent: str) -> tuple[list[str], list[str]]:
    """Lines that set float32 matmul/conv precision inside the call, and the lines that restore it."""
    if precision == "highest":
        return [], []
    enter = [
        "saved = (torch.get_float32_matmul_precision(), torch.backends.cuda.matmul.allow_tf32, "
        "torch.backends.cudnn.allow_tf32)",
        f"torch.set_float32_matmul_precision({precision!r})",
        "torch.backends.cudnn.allow_tf32 = True",
    ]
    leave = [
        "torch.set_float32_matmul_precision(saved[0])",
        "torch.backends.cuda.matmul.allow_tf32 = saved[1]",
        "torch.backends.cudnn.allow_tf32 = saved[2]",
    ]
    return [indent + x for x in enter], [indent + x for x in leave]


def render(genome: dict[str, Any], traits: TaskTraits, task_source: str) -> str:
    """The candidate's source for ``genome``: the task's source, then a ModelNew that runs its Model."""
    g = genome
    what = describe(g)
    parts = [task_source.rstrip() + "\n", _HEADER.format(what=what)]
    if g["cuda_graph"] or g["compile"] == "reduce-overhead":
        parts.append(_CLONE)
    if g["cuda_graph"]:
        parts.append(_GRAPHED)
    template = g.get("triton")
    if template:
        if template in AXIS_PATTERNS or template == "elementwise":
            parts.append(gt.render(g, traits))
        elif template == "conv2d_epilogue":
            parts.append(gconv.render(g, traits))
        else:
            bm, bn, bk, warps = g["tile"][:4]
            lines = ["x = acc", *traits.expr, "acc = y"] if traits.expr else [_ACT_CODE[a] for a in traits.epilogue]
            epilogue = "\n".join("    " + line for line in lines) or "    pass"
            dot_precision = DOT_PRECISIONS[g["precision"]]
            parts.append(_MATMUL_KERNEL.format(bm=bm, bn=bn, bk=bk, warps=warps, stages=g["stages"],
                                               epilogue=epilogue, dot_precision=dot_precision))
            parts.append(_LINEAR_RUN.format(module=traits.module) if template == "linear_epilogue" else _MATMUL_RUN)
    init = ["        self.model = Model(*args)  # first: the reference's weights, from the same seed"]
    if template:
        init.append("        self.run = lambda *xs: _run(self.model, *xs)")
    elif g["compile"] == "none":
        init.append("        self.run = self.model")
    else:
        mode = "" if g["compile"] == "default" else f", mode={g['compile']!r}"
        init.append(f"        self.run = torch.compile(self.model{mode}, dynamic=False)")
    if g["cuda_graph"]:
        init.append("        self.graphed = _Graphed(self.run)")
    if g["layout"] == "channels_last":
        init.append("        self.converted = False")
    body: list[str] = []
    if g["layout"] == "contiguous":
        body.append("args = [a.contiguous() if isinstance(a, torch.Tensor) else a for a in args]")
    elif g["layout"] == "channels_last":
        body += ["if not self.converted:",
                 "    self.model.to(memory_format=torch.channels_last)",
                 "    self.converted = True",
                 "args = [a.contiguous(memory_format=torch.channels_last) if isinstance(a, torch.Tensor) "
                 "and a.dim() == 4 else a for a in args]"]
    call = "self.graphed(*args)" if g["cuda_graph"] else "self.run(*args)"
    if g["compile"] == "reduce-overhead" and not g["cuda_graph"]:
        call = f"_clone({call})"  # compiled CUDA graphs reuse their output buffers
    body.append(f"return {call}")
    enter, leave = _precision_lines(g["precision"] if not template else "highest", "        ")
    forward = ["    def forward(self, *args):"]
    if enter:
        forward += enter + ["        try:"] + ["            " + b for b in body] + ["        finally:"] + \
            ["    " + x for x in leave]
    else:
        forward += ["        " + b for b in body]
    cls = ["", "", "class ModelNew(nn.Module):", "    def __init__(self, *args):", "        super().__init__()",
           *init, "", *forward, ""]
    parts.append("\n".join(cls))
    return "".join(parts)


def describe(g: dict[str, Any]) -> str:
    if g.get("triton"):
        bits = [f"Triton {g['triton']}"]
        if g["triton"].endswith("epilogue"):
            bm, bn, bk, warps = g["tile"][:4]
            bits.append(f"tile {bm}x{bn}x{bk} w{warps} s{g['stages']}")
            if g.get("pool_par"):
                bits.append("pool window in parallel")
        else:
            bits += gt.describe_bits(g)
        if g["triton"].endswith("epilogue") and g["precision"] != "highest":
            bits.append(f"{DOT_LABELS[DOT_PRECISIONS[g['precision']]]} dot")
    else:
        bits = ["eager" if g["compile"] == "none" else f"torch.compile {g['compile']}"]
        if g["layout"] != "as_is":
            bits.append(g["layout"])
        if g["precision"] != "highest":
            bits.append(f"float32 matmul precision {g['precision']}")
    if g["cuda_graph"]:
        bits.append("CUDA graph")
    return ", ".join(bits)


def labels_of(g: dict[str, Any]) -> list[str]:
    if g["precision"] == "highest":
        return []
    if g.get("triton"):
        return [DOT_LABELS[DOT_PRECISIONS[g["precision"]]]] if g["triton"].endswith("epilogue") else []
    return [PRECISION_LABELS[g["precision"]]]


# ---------------------------------------------------------------------------------------------- mutator
class GenericMutator(GenomeMutator):
    name = "generic"

    def __init__(self, rng: random.Random, traits: TaskTraits, task_source: str, device: str,
                 triton_on_cpu: bool = False) -> None:
        super().__init__(rng)
        self.traits, self.task_source = traits, task_source
        self.gpu = device.startswith("cuda")
        self.compile_modes = COMPILE_MODES_GPU if self.gpu else COMPILE_MODES_CPU
        self.layouts = LAYOUTS if traits.four_d else LAYOUTS[:2]
        self.precisions = PRECISIONS if self.gpu else PRECISIONS[:1]
        self.templates = [None] + ([traits.pattern] if traits.pattern and (self.gpu or triton_on_cpu) else [])
        tiles = gconv.tiles(traits) if traits.pattern == "conv2d_epilogue" else list(TILES)
        self.tiles = tiles if self.gpu else tiles[:1]
        blocked = traits.pattern in AXIS_PATTERNS or traits.pattern == "elementwise"
        self.blocks = gt.block_options(traits) if blocked else [0]
        self.inners = gt.inner_options(traits)
        self.splits = gt.split_options(traits)
        self.pool_par = traits.pattern == "conv2d_epilogue" and gconv.parallel_pool(traits)
        self.defaults = {"block": gt.default_block(traits) if blocked else 0, "block_inner": gt.default_inner(traits),
                         "split": gt.default_split(traits) if blocked else 1}

    @classmethod
    def for_task(cls, rng: random.Random, spec: TaskSpec, device: str, triton_on_cpu: bool = False) -> GenericMutator:
        return cls(rng, analyse(load_task(spec, module_name="evoforge_generic_probe")), spec.source, device,
                   triton_on_cpu)

    def genome(self, **changes: Any) -> dict[str, Any]:
        g = {"kind": "generic", "compile": "none", "layout": "as_is", "precision": "highest",
             "cuda_graph": False, "triton": None, "tile": list(self.tiles[0]), "stages": 2, "warps": 4,
             **self.defaults}
        g.update(changes)
        return self._normalise(g)

    def _normalise(self, g: dict[str, Any]) -> dict[str, Any]:
        """Drop genes that don't apply, so equal programs have equal genomes (and equal hashes)."""
        g = {**self.defaults, **g}  # a genome from before the block genes: their defaults
        template = g.get("triton")
        if template:
            g["compile"], g["layout"] = "none", "as_is"
            if not template.endswith("epilogue"):
                g["precision"] = "highest"
                g["tile"] = list(self.tiles[0])
                if template == "elementwise":
                    g["block_inner"], g["stages"], g["split"] = 0, 2, 1
                else:
                    g["block"] = gt.clamp_tile(int(g["block"]), int(g["block_inner"]))
                    looped = gt.loops(self.traits, g["block"])
                    if not (self.gpu and looped):
                        g["stages"] = 2  # only a row walked in chunks pipelines its loads
                    if not looped or g["split"] not in self.splits:
                        g["split"] = 1  # a row read once is one program's
            else:
                g["warps"] = 4
                g.update(self.defaults)
                if not self.traits.float32:
                    g["precision"] = "highest"  # the dot precision gene acts on float32 operands only
        else:
            g["tile"], g["stages"], g["warps"] = list(self.tiles[0]), 2, 4
            g.update(self.defaults)
            if g["precision"] not in PRECISIONS:  # a template's dot precision (3xTF32) is no torch setting
                g["precision"] = "highest"
        if g["compile"] == "reduce-overhead":
            g["cuda_graph"] = False  # it captures its own graphs
        if template == "conv2d_epilogue" and self.pool_par:  # in parallel by default: 10.8 us against 17.0
            # for conv+ReLU+pool on an H200 at the first tile; in sequence where the tile x window is too large
            g["pool_par"] = bool(g.get("pool_par", True)) and gconv.parallel_fits(g["tile"], self.traits)
        else:
            g.pop("pool_par", None)  # a gene only where it applies: other genomes keep their hashes
        return g

    def build(self, genome: dict[str, Any], lineage: dict[str, Any]) -> Candidate:
        g = self._normalise(genome)
        source = render(g, self.traits, self.task_source)
        slug = describe(g).lower().replace("torch.compile ", "compile-").replace("pool window in parallel", "ppool")
        for long, short in (("conv2d_epilogue", "conv"), ("linear_epilogue", "linear"), ("matmul_epilogue", "mm")):
            slug = slug.replace(f"triton {long}", f"triton {short}")
        slug = slug.replace(", ", "+").replace(" ", "-")
        slug = "".join(ch for ch in slug if ch.isalnum() or ch in "+-_")
        return Candidate(name=f"generic-{slug}"[:60], source=source, language="triton" if g["triton"] else "torch",
                         labels=labels_of(g), genome=g, lineage={**lineage, "mutator": self.name})

    def seed(self) -> list[Candidate]:
        """Generation 0: a CUDA graph of the Model (GPU) and the problem's first Triton template. The plain genome
        and torch.compile's default are the task's Model and the compiled baseline, which every batch times
        anyway: as candidates they took 2 of the 7 entries of generation 0's batch (on an H200, 88 and 129 s for
        KernelBench's matmul and LayerNorm: benchmarks/results/judge-profile-kernelbench-h200.json). They
        seed only where there is nothing else (a CPU run with no template for the problem); mutation reaches
        them from the others (the graph gene off, the template gene back to none)."""
        lineage = {"mutation": "seed", "level": "seed"}
        seeds = []
        if self.gpu:
            seeds.append(self.genome(cuda_graph=True))
        if len(self.templates) > 1:
            template = self.templates[1]
            # A dot template on float32 inputs starts with 3xTF32 dots on a GPU: IEEE float32 dots run on the
            # FMA units. On an H200 every float32 dot problem's best was a 3xTF32 genome (conv2d, conv+ReLU+pool,
            # matmul+bias+GELU: results/problems-h200.json), and at KernelBench's conv size the IEEE kernel took
            # 16.6 ms against cuDNN's 9.1, where a 150 s search ended before reaching another precision. Labelled
            # on the candidate; mutation reaches IEEE (``highest``) where a tolerance wants it.
            tf32x3 = self.gpu and template.endswith("epilogue") and self.traits.float32
            seeds.append(self.genome(triton=template, **({"precision": "tf32x3"} if tf32x3 else {})))
        return [self.build(g, lineage) for g in seeds or [self.genome(), self.genome(compile="default")]]

    def _options(self, g: dict[str, Any]) -> dict[str, tuple[list[Any], str]]:
        """Gene -> (values it may move to, level), for the genes that apply to ``g``."""
        opts: dict[str, tuple[list[Any], str]] = {}
        if len(self.templates) > 1:
            opts["triton"] = (list(self.templates), "algorithmic")
        if self.gpu:
            opts["cuda_graph"] = ([False, True], "implementation")
        if g.get("triton"):
            if g["triton"].endswith("epilogue"):
                opts["tile"] = ([list(t) for t in self.tiles], "hardware")
                if "pool_par" in g and gconv.parallel_fits(g["tile"], self.traits):
                    opts["pool_par"] = ([False, True], "algorithmic")
                if self.gpu:
                    opts["stages"] = ([2, 3, 4], "hardware")
                    if self.traits.float32:
                        opts["precision"] = (["highest", "high", "tf32x3"], "hardware")
            else:
                opts["warps"] = (list(ROW_WARPS), "hardware")
                opts["block"] = (list(self.blocks), "hardware")
                if g["triton"] != "elementwise":
                    opts["block_inner"] = (list(self.inners), "hardware")
                    opts["split"] = (list(self.splits), "algorithmic")
                    if self.gpu and gt.loops(self.traits, g["block"]):
                        opts["stages"] = (list(gt.LOOP_STAGES), "hardware")
        else:
            opts["compile"] = (list(self.compile_modes), "hardware")
            opts["layout"] = (list(self.layouts), "implementation")
            if len(self.precisions) > 1:
                opts["precision"] = (list(self.precisions), "hardware")
        return {k: ([v for v in values if v != g.get(k)], level) for k, (values, level) in opts.items()
                if any(v != g.get(k) for v in values)}

    def mutate(self, genome: dict[str, Any]) -> tuple[dict[str, Any], str, str]:
        g = self._normalise({**self.genome(), **genome})
        options = self._options(g)
        if not options:
            return g, "no change", "implementation"
        gene = self.rng.choice(sorted(options))
        values, level = options[gene]
        if gene == "tile" and g.get("triton") == "conv2d_epilogue":
            # the conv tiles are a full product of their axes: a step along one (rows, columns, reduction, warps)
            values = [v for v in values if sum(a != b for a, b in zip(v, g["tile"], strict=True)) == 1] or values
        new = self.rng.choice(values)
        return self._normalise({**g, gene: new}), f"{gene} {g.get(gene)} -> {new}", level

    def crossover(self, a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        base = {**self.genome(), **({"pool_par": True} if self.pool_par else {})}
        picked = {k: (a if self.rng.random() < 0.5 else b).get(k, base[k]) for k in base}
        return self._normalise(picked)

    def propose(self, parents: list[Individual], history: list[Individual], n: int) -> list[Candidate]:
        seen = {ind.candidate.hash for ind in history}
        pool = parents or history
        if not pool:
            return [c for c in self.seed() if c.hash not in seen][:n]
        ours = [p for p in pool if p.candidate.genome and p.candidate.genome.get("kind") == "generic"]
        out = self.breed(n, seen, ours, ours or pool,
                         lambda p: (p.candidate.genome if p in ours else self.genome()) or {})
        self.note = None if len(out) == n else f"only {len(out)} new genome(s) near these parents"
        return out
