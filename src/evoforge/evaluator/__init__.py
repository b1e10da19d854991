"""The evaluator: compile -> check -> guard -> time, each candidate in a worker process."""

from evoforge.evaluator.result import STATUSES, CaseCheck, EvalResult
from evoforge.evaluator.runner import EvalConfig, EvalReport, Evaluator, EvaluatorError

__all__ = ["STATUSES", "CaseCheck", "EvalConfig", "EvalReport", "EvalResult", "Evaluator", "EvaluatorError"]
