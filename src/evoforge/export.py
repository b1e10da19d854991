"""Exported attention kernels: the module `evoforge best RUN [RUN ...] --export kernel.py` writes, and
`evoforge.use`, for runs whose task kind exports guarded (``guarded_export``: the attention family).

An attention export is a standalone module (torch, and triton for a Triton kernel; not evoforge): a header,
the safety runtime of ``export_runtime.py`` with its TABLE (per run given, one entry: what that run's best
kernel was evolved and verified for), and the evolved candidates' sources, each run in a namespace of its
own. Its ``attention()`` follows SDPA's signature and runs, per call, the entry whose class covers it (the
nearest verified shape where several do) and SDPA where none does (warned once, or an error with
``strict=True``); it is a ``torch.library`` custom op under ``torch.compile``; ``python kernel.py
--selftest`` checks every entry against a float64 reference.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib.util
import math
import pprint
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from evoforge.candidate import Candidate
from evoforge.tasks import kind_of
from evoforge.tasks.attention import DTYPES

RUNTIME = Path(__file__).with_name("export_runtime.py")
_TABLE_LINE = "TABLE: list[dict[str, Any]] = []  # evoforge:table (replaced by the export)\n"
_SOURCES_LINE = "# evoforge:kernel-sources (the export puts each evolved candidate here, verbatim)\n"
# Genomes whose rendered kernels take any batch, head count and sequence length (strides and masks come
# from the call): the template mutator's Triton kernel and its PyTorch paths. Anything else (an LLM's
# kernel, say) is exported for the exact shapes it was verified on.
SHAPE_GENERAL = ("triton_flash", "gluon_flash", "torch")


class ExportError(Exception):
    """A kernel that cannot be exported, or an export that cannot be used. One line."""


def _shape(p: dict[str, Any]) -> dict[str, int]:
    heads, seq_len = int(p["heads"]), int(p["seq_len"])
    return {"batch": int(p["batch"]), "heads": heads, "kv_heads": int(p.get("kv_heads") or heads),
            "q_len": int(p.get("q_len") or seq_len), "kv_len": seq_len}


def spec_for(cand: Candidate, best: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """What the exported kernel covers: the task's dtype, head dim, causality and grouped-query ratios, the
    device it was verified on, and its shapes (the verified ones: every shape of a multi-shape task; a
    template genome takes any batch, head count and length of that class)."""
    from evoforge.task import DEFAULT_TOLERANCES

    p = data["task"].get("params") or {}
    if not kind_of(p).guarded_export:
        raise ExportError(f"run {data['run']['id']} is not an attention task ({data['task'].get('name')}); only "
                          "attention tasks export a guarded module")
    dtype = DTYPES[p["dtype"]]
    shapes = [_shape(s.get("params") or {}) for s in p["shapes"]] if p.get("shapes") else [_shape(p)]
    dev = data.get("device") or {}
    capability = dev.get("capability")
    genome = cand.genome or {}
    return {
        "name": data["task"].get("name") or "attention",
        "run": data["run"]["id"],
        "candidate": cand.name,
        "hash": cand.hash,
        "language": cand.language,
        "genome": genome,
        "dtype": dtype,
        "head_dim": int(p["head_dim"]),
        "scale": 1.0 / math.sqrt(int(p["head_dim"])),
        "causal": bool(p.get("causal")),
        "gqa_ratios": sorted({s["heads"] // s["kv_heads"] for s in shapes}),
        "pack_gqa": bool(genome.get("pack_gqa")),
        "verified_shapes": shapes,
        "general": genome.get("kind") in SHAPE_GENERAL,
        "max_seq_len": None,
        "device_type": dev.get("device_type", "cuda"),
        "device_name": dev.get("device_name", "?"),
        "capability": [int(x) for x in capability.split(".")] if capability else None,
        "tolerance": list(DEFAULT_TOLERANCES[dtype]),
        "speedup": best.get("fitness"),
        # per verified shape (a multi-shape run measures each): the runtime leaves to SDPA the calls nearest a
        # shape where the kernel lost
        "shape_speedups": ([r.get("fitness") if r.get("status", "ok") == "ok" else 0.0 for r in best["shapes"]]
                           if best.get("shapes") else [best.get("fitness")]),
        "baseline": best.get("best_baseline"),
        "fitness_mode": best.get("fitness_mode"),
        "versions": dev.get("versions") or {},
    }


def slower_note(best: dict[str, Any], data: dict[str, Any]) -> str | None:
    """One line for the user where an attention run's best lost to PyTorch on some of its shapes (the export
    leaves the calls nearest those to SDPA), else None."""
    if not kind_of(data["task"].get("params") or {}).guarded_export:
        return None
    shapes = best.get("shapes") or [{"task": data["task"].get("name"), "fitness": best.get("fitness")}]
    lost = [s for s in shapes if (s.get("fitness") or 0.0) < 1.0]
    if not lost:
        return None
    which = ", ".join(f"{s.get('task')} {s.get('fitness') or 0.0:.2f}x" for s in lost)
    whole = "every one" if len(lost) == len(shapes) else f"{len(lost)} of {len(shapes)}"
    return (f"run {data['run']['id']}'s kernel is slower than PyTorch's fastest path on {whole} of its shapes "
            f"({which}): the export runs SDPA for the calls nearest those")


def _without_docstring(source: str) -> str:
    """A module's source less its leading docstring (the runtime's explains evoforge's side; the export
    writes its own header first)."""
    body = ast.parse(source).body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        return "".join(source.splitlines(True)[body[0].end_lineno:]).lstrip("\n")
    return source


def _literal(text: str) -> str:
    """A Python literal for ``text``, verbatim (a raw triple-quoted string) where it can be."""
    for quote in ("'''", '"""'):
        literal = f"r{quote}\n{text}{quote}"
        if quote not in text and not text.endswith("\\"):
            with contextlib.suppress(SyntaxError):
                if ast.literal_eval(literal) == "\n" + text:
                    return literal
    return repr("\n" + text)


Entry = tuple[Candidate, dict[str, Any], dict[str, Any]]  # a run's best: (candidate, best, evidence)


def render_table(entries: list[Entry], header: str) -> str:
    """The exported module's text: ``header`` (a docstring), the runtime with TABLE (one entry per run's
    kernel, in the order given) and each candidate's source."""
    if not entries:
        raise ExportError("nothing to export: give at least one run")
    runs = [data["run"]["id"] for _, _, data in entries]
    if len(set(runs)) != len(runs):
        raise ExportError(f"a run is given twice ({', '.join(runs)}); give each run once")
    table = [spec_for(cand, best, data) for cand, best, data in entries]
    runtime = _without_docstring(RUNTIME.read_text())
    if runtime.count(_TABLE_LINE) != 1 or runtime.count(_SOURCES_LINE) != 1:
        raise ExportError(f"{RUNTIME} lacks its TABLE or kernel-sources line")
    table_text = pprint.pformat(table, width=110, sort_dicts=True)
    runtime = runtime.replace(_TABLE_LINE, f"TABLE: list[dict[str, Any]] = {table_text}\n")
    sources = {cand.hash: cand.source.rstrip() + "\n" for cand, _, _ in entries}
    blocks = "".join(f"# The evolved candidate {digest}, as it was verified.\nKERNEL_SOURCES[{digest!r}] = "
                     f"{_literal(source)}\n\n" for digest, source in sources.items())
    text = header.rstrip() + "\n" + runtime.replace(_SOURCES_LINE, blocks)
    compile(text, "kernel.py", "exec")  # a broken export is our bug: fail here, not in the user's import
    return text


def render_module(cand: Candidate, best: dict[str, Any], data: dict[str, Any], header: str) -> str:
    """A one-kernel export: render_table with one entry."""
    return render_table([(cand, best, data)], header)


def candidate_sources(text: str) -> list[str]:
    """The evolved candidates in an exported module's text, in TABLE's order (one for a one-kernel export), read
    without importing it: what a re-time evaluates as a candidate (the export itself defines no ModelNew). A plain
    export (any other task's, or one from before the guarded export) is its own candidate."""
    table: list[dict[str, Any]] = []
    sources: dict[str, str] = {}
    single = None
    for node in ast.parse(text).body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            if node.target.id == "TABLE":
                table = ast.literal_eval(node.value)
            elif node.target.id == "SPEC" and isinstance(node.value, ast.Dict) and not table:  # the first format
                table = [ast.literal_eval(node.value)]
        elif isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name) \
                    and target.value.id == "KERNEL_SOURCES":
                sources[ast.literal_eval(target.slice)] = ast.literal_eval(node.value)
            elif isinstance(target, ast.Name) and target.id == "KERNEL_SOURCE":
                single = ast.literal_eval(node.value)
    if sources:
        return [sources[s["hash"]].lstrip("\n") for s in table]
    if single:
        return [single.lstrip("\n")]
    if table:
        raise ExportError("an exported module whose TABLE names kernels it does not carry")
    return [text]


def load(path: str | Path) -> ModuleType:
    """Import an exported kernel module from its file (once per file and content)."""
    path = Path(path).resolve()
    if not path.is_file():
        raise ExportError(f"no exported kernel at {path}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    name = f"evoforge_kernel_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ExportError(f"{path} is not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    if not callable(getattr(module, "routed", None)) or not (getattr(module, "TABLE", None)
                                                             or getattr(module, "SPEC", None)):
        raise ExportError(f"{path} is not an attention kernel exported by evoforge (re-export it with "
                          "`evoforge best RUN --export`)")
    return module


@contextlib.contextmanager
def use(kernel: str | Path | ModuleType, *, strict: bool | None = None) -> Iterator[ModuleType]:
    """Route torch.nn.functional.scaled_dot_product_attention to an exported kernel inside the block: calls
    it covers run the kernel, the rest run SDPA (see the module's check()). Yields the module (its stats()
    count both). ``strict=True`` raises on a call the kernel does not cover."""
    module = kernel if isinstance(kernel, ModuleType) else load(kernel)
    previous = module._state["strict"]
    if strict is not None:
        module.set_strict(strict)
    try:
        with module.routed():
            yield module
    finally:
        module.set_strict(previous)
