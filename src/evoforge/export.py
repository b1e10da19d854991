"""Exported attention kernels: the module `evoforge best RUN --export kernel.py` writes, and `evoforge.use`.

An attention export is a standalone module (torch, and triton for a Triton kernel; not evoforge): a header,
the safety runtime of ``export_runtime.py`` with the kernel's SPEC (what it was evolved and verified for),
and the evolved candidate's source, which runs in a namespace of its own. Its ``attention()`` follows SDPA's
signature, runs the kernel where SPEC covers the call and SDPA otherwise (warned once, or an error with
``strict=True``); it is a ``torch.library`` custom op under ``torch.compile``; ``python kernel.py --selftest``
checks it against a float64 reference.
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
from evoforge.tasks.attention import DTYPES

RUNTIME = Path(__file__).with_name("export_runtime.py")
_SPEC_LINE = "SPEC: dict[str, Any] = {}  # evoforge:spec (replaced by the export)\n"
_SOURCE_LINE = 'KERNEL_SOURCE = ""  # evoforge:kernel-source (replaced by the export)\n'
# Genomes whose rendered kernels take any batch, head count and sequence length (strides and masks come
# from the call): the template mutator's Triton kernel and its PyTorch paths. Anything else (an LLM's
# kernel, say) is exported for the exact shape it was verified on.
SHAPE_GENERAL = ("triton_flash", "torch")


class ExportError(Exception):
    """A kernel that cannot be exported, or an export that cannot be used. One line."""


def spec_for(cand: Candidate, best: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """What the exported kernel covers: the task's dtype, head dim, causality and grouped-query ratio, the
    device it was verified on, and its shapes (any, for a template genome; else the verified one)."""
    from evoforge.task import DEFAULT_TOLERANCES

    p = data["task"].get("params") or {}
    if p.get("family") != "attention":
        raise ExportError("only attention tasks export a guarded module")
    dtype = DTYPES[p["dtype"]]
    heads, kv_heads = int(p["heads"]), int(p.get("kv_heads") or p["heads"])
    seq_len = int(p["seq_len"])
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
        "gqa_ratio": heads // kv_heads,
        "pack_gqa": bool(genome.get("pack_gqa")),
        "verified_shape": {"batch": int(p["batch"]), "heads": heads, "kv_heads": kv_heads,
                           "q_len": int(p.get("q_len") or seq_len), "kv_len": seq_len},
        "general": genome.get("kind") in SHAPE_GENERAL,
        "max_seq_len": None,
        "device_type": dev.get("device_type", "cuda"),
        "device_name": dev.get("device_name", "?"),
        "capability": [int(x) for x in capability.split(".")] if capability else None,
        "tolerance": list(DEFAULT_TOLERANCES[dtype]),
        "speedup": best.get("fitness"),
        "baseline": best.get("best_baseline"),
        "fitness_mode": best.get("fitness_mode"),
        "versions": dev.get("versions") or {},
    }


def _literal(text: str) -> str:
    """A Python literal for ``text``, verbatim (a raw triple-quoted string) where it can be."""
    for quote in ("'''", '"""'):
        literal = f"r{quote}\n{text}{quote}"
        if quote not in text and not text.endswith("\\"):
            with contextlib.suppress(SyntaxError):
                if ast.literal_eval(literal) == "\n" + text:
                    return literal
    return repr("\n" + text)


def render_module(cand: Candidate, best: dict[str, Any], data: dict[str, Any], header: str) -> str:
    """The exported module's text: ``header`` (a docstring), the runtime with SPEC, the candidate's source."""
    spec = spec_for(cand, best, data)
    runtime = RUNTIME.read_text()
    if runtime.count(_SPEC_LINE) != 1 or runtime.count(_SOURCE_LINE) != 1:
        raise ExportError(f"{RUNTIME} lacks its SPEC or KERNEL_SOURCE line")
    spec_text = pprint.pformat(spec, width=110, sort_dicts=True)
    runtime = runtime.replace(_SPEC_LINE, f"SPEC: dict[str, Any] = {spec_text}\n")
    source = cand.source.rstrip() + "\n"
    runtime = runtime.replace(_SOURCE_LINE, "# The evolved candidate, as it was verified (run by _kernel_namespace).\n"
                              f"KERNEL_SOURCE = {_literal(source)}\n")
    text = header.rstrip() + "\n" + runtime
    compile(text, "kernel.py", "exec")  # a broken export is our bug: fail here, not in the user's import
    return text


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
    if not callable(getattr(module, "routed", None)) or not getattr(module, "SPEC", None):
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
