"""The evaluator's result types, kept at this path for code that imports them from here: they live in
:mod:`evoforge.results` (a module that imports nothing of the package), where evoforge's own code takes them."""

from evoforge.results import STATUSES, CaseCheck, EvalResult

__all__ = ["STATUSES", "CaseCheck", "EvalResult"]
