"""evoforge: evolve fast GPU kernels for PyTorch operations, measured honestly."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from types import ModuleType

__version__ = "0.1.0"


def use(kernel: str | Path | ModuleType, *, strict: bool | None = None) -> AbstractContextManager[ModuleType]:
    """Route torch.nn.functional.scaled_dot_product_attention to a kernel exported by
    `evoforge best RUN --export kernel.py` inside a `with` block, where the kernel covers the call (SDPA
    elsewhere). Yields the kernel module; see evoforge.export."""
    from evoforge.export import use as _use

    return _use(kernel, strict=strict)
