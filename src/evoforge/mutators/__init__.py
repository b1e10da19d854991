"""Mutators: where new candidates come from. Each is one class behind :class:`Mutator` (``mutators.base``).

- ``TemplateMutator`` (``template``): the built-in attention mutator, over the Triton flash-attention kernel's
  genome (``kernels.flash_attention``) and PyTorch's own attention paths.
- ``GenericMutator`` (``generic``): any KernelBench-format task, over what PyTorch already offers
  (torch.compile modes, layouts, precision flags, CUDA graphs, Triton templates).
- ``MixedMutator`` (``mixed``): several mutators sharing every generation.
- ``LLMMutator`` (``llm``): a language model writes the kernels; imported on demand (it needs the ``llm`` extra).

``evolve`` picks one by name through ``registry.MUTATORS``; ``search`` calls its ``seed`` and ``propose``.
"""

from evoforge.mutators.base import GenomeMutator, Mutator
from evoforge.mutators.generic import GenericMutator
from evoforge.mutators.mixed import MixedMutator
from evoforge.mutators.template import TemplateMutator
from evoforge.results import Individual

__all__ = ["GenericMutator", "GenomeMutator", "Individual", "MixedMutator", "Mutator", "TemplateMutator"]
