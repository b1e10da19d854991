"""Mutators: where new candidates come from. Each is one class behind :class:`Mutator`."""

from evoforge.mutators.base import Individual, Mutator
from evoforge.mutators.generic import GenericMutator
from evoforge.mutators.template import TemplateMutator

__all__ = ["GenericMutator", "Individual", "Mutator", "TemplateMutator"]
