"""Shared by the experiment scripts: kernel sources evaluated through evoforge's evaluator beside SDPA's default,
cuDNN and flash backends, one fresh worker per repeat (``time_sources`` and ``print_rows``, from the public
``evoforge.bench.sources``: source_variants.py, prototypes.py, template_ab.py); and, for scripts that time in
their own process with ``timing.measure`` (floor.py, bandwidth.py, mma_prototype.py), a rendered kernel's
``ModelNew`` and SDPA's paths as callables."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from evoforge.bench.sources import Row, print_rows, time_sources
from evoforge.task import import_source

__all__ = ["Row", "load_model", "print_rows", "sdpa_paths", "time_sources"]


def load_model(source: str, name: str) -> Any:
    """``ModelNew()`` of a kernel source, imported in this process. Triton reads a kernel's source from
    its file, so the file is written to a directory that outlives the run (it is small)."""
    return import_source(source, name, name, Path(tempfile.mkdtemp(prefix=f"evoforge-{name}-"))).ModelNew()


def sdpa_paths(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs: Any) -> dict[str, Callable[[], Any]]:
    """SDPA on these inputs through its cuDNN and flash backends and its default dispatch."""
    sdpa = torch.nn.functional.scaled_dot_product_attention
    backends = torch.nn.attention.SDPBackend

    def pinned(backend: Any) -> Callable[[], Any]:
        def run() -> Any:
            with torch.nn.attention.sdpa_kernel(backend):
                return sdpa(q, k, v, **kwargs)
        return run

    return {"sdpa_cudnn": pinned(backends.CUDNN_ATTENTION), "sdpa_flash": pinned(backends.FLASH_ATTENTION),
            "sdpa_default": lambda: sdpa(q, k, v, **kwargs)}
