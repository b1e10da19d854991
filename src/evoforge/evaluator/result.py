"""The evaluator's result types, kept at this path for code that imports them from here.

``EvalResult``, ``CaseCheck`` and ``STATUSES`` live in :mod:`evoforge.results`, a module of plain data that
imports nothing of the package, where evoforge's own code takes them (tests/test_layers.py checks that both
paths name the same objects).
"""

from evoforge.results import STATUSES, CaseCheck, EvalResult

__all__ = ["STATUSES", "CaseCheck", "EvalResult"]
