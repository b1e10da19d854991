"""Mutators: where new candidates come from. Each is one class behind :class:`Mutator`.
(The LLM mutator, :mod:`evoforge.mutators.llm`, is imported on demand: it needs the ``llm`` extra.)"""

from evoforge.mutators.base import GenomeMutator, Mutator
from evoforge.mutators.generic import GenericMutator
from evoforge.mutators.mixed import MixedMutator
from evoforge.mutators.template import TemplateMutator
from evoforge.results import Individual

__all__ = ["GenericMutator", "GenomeMutator", "Individual", "MixedMutator", "Mutator", "TemplateMutator"]
