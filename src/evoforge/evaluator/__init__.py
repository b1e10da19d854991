"""The evaluator: a trusted judge (evaluator.judge) and one untrusted worker process per entry
(evaluator.worker), talking through data only (evaluator.channel). Its verdicts are the plain types of
:mod:`evoforge.results`, re-exported here."""

from evoforge.evaluator.config import EvalConfig, EvalReport, EvaluatorError
from evoforge.evaluator.judge import Evaluator
from evoforge.results import STATUSES, CaseCheck, EvalResult

__all__ = ["STATUSES", "CaseCheck", "EvalConfig", "EvalReport", "EvalResult", "Evaluator", "EvaluatorError"]
