"""Recording a program's attention calls: what `evoforge capture` and `evoforge.capture()` see.

A :class:`Recorder` wraps ``torch.nn.functional.scaled_dot_product_attention`` and counts each distinct call
(shapes, dtype, flags), then calls SDPA unchanged. This file needs only the standard library and torch, since
`evoforge capture -- COMMAND` copies it into a temporary folder as ``sitecustomize.py`` on the command's
``PYTHONPATH``: every Python process the command starts then imports it at startup, runs the
``sitecustomize`` it shadows (if any), and wraps SDPA as soon as torch is imported; at exit each process appends
its counts, as JSON lines, to the file named by ``EVOFORGE_CAPTURE_FILE``. Only calls made through the
attribute ``torch.nn.functional.scaled_dot_product_attention`` are seen (transformers' "sdpa" attention makes
them that way); a name bound to SDPA before the wrapping keeps calling SDPA directly.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
import threading
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

ENV_FILE = "EVOFORGE_CAPTURE_FILE"


def _describe(attn_mask: Any) -> str | None:
    if attn_mask is None:
        return None
    dtype = str(getattr(attn_mask, "dtype", type(attn_mask).__name__)).removeprefix("torch.")
    return "bool" if dtype == "bool" else dtype


class Recorder:
    """Counts of SDPA calls by their signature. ``install()`` wraps the SDPA attribute of
    torch.nn.functional (``uninstall()`` restores what was there); ``records()`` lists them as plain dicts."""

    def __init__(self) -> None:
        self.counts: dict[tuple[Any, ...], int] = {}
        self._lock = threading.Lock()
        self._functional: ModuleType | None = None
        self._previous: Callable[..., Any] | None = None

    def record(self, q: Any, k: Any, v: Any, attn_mask: Any, dropout_p: float, is_causal: bool, scale: float | None,
               enable_gqa: bool, grad: bool) -> None:
        def shape(t: Any) -> tuple[int, ...]:
            return tuple(int(n) for n in getattr(t, "shape", ()))

        dtypes = sorted({str(getattr(t, "dtype", "?")).removeprefix("torch.") for t in (q, k, v)})
        key = (shape(q), shape(k), shape(v), "/".join(dtypes), bool(is_causal), _describe(attn_mask),
               float(dropout_p), None if scale is None else float(scale), bool(enable_gqa),
               str(getattr(getattr(q, "device", None), "type", "?")), bool(grad))
        with self._lock:
            self.counts[key] = self.counts.get(key, 0) + 1

    def records(self) -> list[dict[str, Any]]:
        names = ("q", "k", "v", "dtype", "is_causal", "mask", "dropout_p", "scale", "enable_gqa", "device", "grad")
        with self._lock:
            items = list(self.counts.items())
        return [{**{n: list(x) if isinstance(x, tuple) else x for n, x in zip(names, key, strict=True)},
                 "calls": calls} for key, calls in items]

    def install(self, functional: ModuleType | None = None) -> None:
        """Wrap torch.nn.functional.scaled_dot_product_attention (``functional``: that module, if at hand)."""
        import torch

        functional = functional or torch.nn.functional
        original = functional.scaled_dot_product_attention
        record = torch.compiler.disable(self.record)  # under torch.compile: a graph break, and real shapes

        @functools.wraps(original)
        def scaled_dot_product_attention(query: Any, key: Any, value: Any, attn_mask: Any = None,
                                         dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None,
                                         enable_gqa: bool = False) -> Any:
            grad = torch.is_grad_enabled() and any(getattr(t, "requires_grad", False) for t in (query, key, value))
            record(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa, grad)
            extra = {"enable_gqa": True} if enable_gqa else {}  # as the caller passed it (torch < 2.5 has none)
            return original(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                            scale=scale, **extra)

        self._functional, self._previous = functional, original
        functional.scaled_dot_product_attention = scaled_dot_product_attention

    def uninstall(self) -> None:
        if self._functional is not None and self._previous is not None:
            self._functional.scaled_dot_product_attention = self._previous
        self._functional = self._previous = None

    def dump(self, path: str) -> None:
        """Append this process's records to ``path``, one JSON line each."""
        records = self.records()
        if not records:
            return
        text = "".join(json.dumps({**r, "pid": os.getpid()}) + "\n" for r in records)
        with open(path, "a", encoding="utf-8") as f:  # one write per process: lines of processes never interleave
            f.write(text)


def read_records(path: str) -> list[dict[str, Any]]:
    """Every record a capture's processes appended to ``path`` (missing file: none)."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


class _TorchImportHook(importlib.abc.MetaPathFinder):
    """Wraps SDPA right after torch's own import finishes (so a program that never imports torch pays nothing)."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def find_spec(self, name: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if name != "torch":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("torch")
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader, recorder = spec.loader, self.recorder
        exec_module = loader.exec_module

        def exec_and_wrap(module: ModuleType) -> None:
            exec_module(module)
            recorder.install(sys.modules.get("torch.nn.functional"))

        loader.exec_module = exec_and_wrap  # type: ignore[method-assign]
        return spec


def _start_from_environment(path: str) -> None:
    """sitecustomize's work: run the shadowed sitecustomize, record every SDPA call, dump them at exit."""
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    module = sys.modules.pop("sitecustomize", None)
    try:
        importlib.import_module("sitecustomize")  # the one this file shadows, if there is one
    except ImportError as exc:
        if exc.name != "sitecustomize":
            print(f"evoforge capture: the program's own sitecustomize failed: {exc}", file=sys.stderr)
    except Exception as exc:
        print(f"evoforge capture: the program's own sitecustomize failed: {exc}", file=sys.stderr)
    finally:
        if module is not None and "sitecustomize" not in sys.modules:
            sys.modules["sitecustomize"] = module
    recorder = Recorder()
    if "torch.nn.functional" in sys.modules:
        recorder.install(sys.modules["torch.nn.functional"])
    else:
        sys.meta_path.insert(0, _TorchImportHook(recorder))
    atexit.register(recorder.dump, path)


if __name__ == "sitecustomize" and os.environ.get(ENV_FILE):
    with contextlib.suppress(Exception):  # never break the program being captured
        _start_from_environment(os.environ[ENV_FILE])
