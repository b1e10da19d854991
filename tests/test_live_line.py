"""The live line and the run's last line print a latency with one unit (issue 22: "4.75 ms µs")."""

from __future__ import annotations

from evoforge.cli import _fmt_latency, _progress_line
from evoforge.search import Progress


def _progress(latency_us: float | None) -> Progress:
    return Progress(generation=1, evaluated=6, valid=5, best_fitness=1.5, best_name="gen1-a",
                    best_latency_us=latency_us, best_baseline="task_model", evals_per_min=3.0, eta_s=None)


def test_a_latency_has_one_unit() -> None:
    assert _fmt_latency(47.54) == "47.5 µs"
    assert _fmt_latency(4750.0) == "4.75 ms"
    assert _fmt_latency(15090.0) == "15.09 ms"
    assert _fmt_latency(None) == "-"


def test_the_live_line_says_ms_or_us_never_both() -> None:
    line = _progress_line(_progress(15090.0), 10)
    assert "(15.09 ms)" in line and "µs" not in line
    line = _progress_line(_progress(47.5), 10)
    assert "(47.5 µs)" in line and " ms" not in line
    line = _progress_line(_progress(None), 10)
    assert "µs" not in line and " ms" not in line
