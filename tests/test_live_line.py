"""The live line and the run's last line print a latency with one unit (issue 22: "4.75 ms µs"), and a long
step says how long it has been running (issue 23, item 9)."""

from __future__ import annotations

import io
import re
import time

import pytest
from rich.console import Console

from evoforge.cli import output
from evoforge.cli.output import fmt_latency, progress_line, with_elapsed
from evoforge.search import Progress


def _progress(latency_us: float | None) -> Progress:
    return Progress(generation=1, evaluated=6, valid=5, best_fitness=1.5, best_name="gen1-a",
                    best_latency_us=latency_us, best_baseline="task_model", evals_per_min=3.0, eta_s=None)


def test_a_latency_has_one_unit() -> None:
    assert fmt_latency(47.54) == "47.5 µs"
    assert fmt_latency(4750.0) == "4.75 ms"
    assert fmt_latency(15090.0) == "15.09 ms"
    assert fmt_latency(None) == "-"


def test_the_live_line_says_ms_or_us_never_both() -> None:
    line = progress_line(_progress(15090.0), 10)
    assert "(15.09 ms)" in line and "µs" not in line
    line = progress_line(_progress(47.5), 10)
    assert "(47.5 µs)" in line and " ms" not in line
    line = progress_line(_progress(None), 10)
    assert "µs" not in line and " ms" not in line


def test_a_long_step_says_how_long_it_has_run() -> None:
    assert with_elapsed("starting 11 worker(s)", 0.4) == "starting 11 worker(s)"
    assert with_elapsed("starting 11 worker(s)", 72.4) == "starting 11 worker(s) (72 s)"


def test_the_live_line_ticks_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no message for a while, the spinner's text still moves: the step and its seconds."""
    buf = io.StringIO()
    monkeypatch.setattr(output, "err", Console(file=buf, force_terminal=True, width=120, color_system=None))
    with output.progress(True) as say:
        say("computing reference outputs")
        time.sleep(4.5)
    assert re.search(r"computing reference outputs \([34] s\)", buf.getvalue())


def test_a_log_stamps_each_step_with_its_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Off a terminal each step is one line with the seconds since the run's steps began (where time went),
    and a step's own brackets are printed as they are, not read as markup; chatty steps stay out."""
    buf = io.StringIO()
    monkeypatch.setattr(output, "err", Console(file=buf, force_terminal=False, width=200, color_system=None))
    with output.progress(True) as say:
        say("computing reference outputs")
        time.sleep(0.3)
        say("starting 4 worker(s) [cuda:0]")
        say("timing cand-1")
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2
    first = re.fullmatch(r"  \[\s*(\d+\.\d) s\] computing reference outputs", lines[0])
    second = re.fullmatch(r"  \[\s*(\d+\.\d) s\] starting 4 worker\(s\) \[cuda:0\]", lines[1])
    assert first and second
    assert float(first.group(1)) < 0.3 <= float(second.group(1)) + 0.05
