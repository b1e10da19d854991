"""evoforge: evolve fast GPU kernels for PyTorch operations, measured honestly.

The package's public surface for a program (the command line is ``evoforge.cli``):

- ``use(kernel)``: a ``with`` block in which torch.nn.functional.scaled_dot_product_attention runs a kernel
  exported by `evoforge best RUN --export kernel.py` where it covers the call (``evoforge.export``).
- ``capture(path)``: a ``with`` block that records the SDPA calls made inside it as a task file, for
  `evoforge run --task path` (``evoforge.workload``).
- ``__version__``.

Both import their modules on first use, so ``import evoforge`` stays light. The data flow below them: cli ->
evolve -> search -> mutators / executor / store -> evaluator -> tasks / kernels / timing (the layers are
listed in tests/test_layers.py).
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from evoforge.capture_hook import Recorder

__version__ = "0.1.0"


def use(kernel: str | Path | ModuleType, *, strict: bool | None = None) -> AbstractContextManager[ModuleType]:
    """Route torch.nn.functional.scaled_dot_product_attention to a kernel exported by
    `evoforge best RUN --export kernel.py` inside a `with` block, where the kernel covers the call (SDPA
    elsewhere). Yields the kernel module; see evoforge.export."""
    from evoforge.export import use as _use

    return _use(kernel, strict=strict)


def capture(path: str | os.PathLike[str] | None = None) -> AbstractContextManager[Recorder]:
    """Record every torch.nn.functional.scaled_dot_product_attention call made inside a `with` block (SDPA
    still computes it) and write them to ``path`` as a task file: `evoforge run --task path` then evolves
    for exactly those calls. Yields the recorder; see evoforge.workload."""
    from evoforge.workload import capture as _capture

    return _capture(path)
