"""Shared test helpers. GPU tests are marked ``gpu`` and skipped where CUDA is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Without a GPU, Triton kernels can only run in Triton's interpreter. It must be on before triton
# is first imported (it is read when @triton.jit decorates), so it is set here, once, for the session.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

FIXTURES = Path(__file__).parent / "fixtures"
CANDIDATES = FIXTURES / "candidates"
TASKS = FIXTURES / "tasks"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES


def triton_device() -> str:
    """Where Triton kernels run in tests: the GPU when there is one, else CPU tensors (interpreter)."""
    return "cuda" if torch.cuda.is_available() else "cpu"
