"""evoforge: evolve fast GPU kernels for PyTorch operations, measured honestly."""

__version__ = "0.1.0"
