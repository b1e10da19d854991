"""How the command line prints: its two consoles, number formats, and the live line.

``out`` is stdout (tables, JSON, the run's last lines; 160 columns when it is a log or a pipe, so tables are
not squeezed into 80) and ``err`` is stderr (progress, notes and errors, one line each whatever the width).
Every command module prints through ``output.out`` and ``output.err`` looked up at call time, so a test can
swap them with ``monkeypatch.setattr(output, "out", ...)``; nothing in the package reassigns them.

- ``fmt_us``, ``fmt_latency``, ``fmt_range``, ``plural``: numbers and counts as the tables show them.
- ``progress``: the live line, a spinner on stderr naming the evaluator's latest step and how long it has run
  (on a terminal), or the step's line without the chatty ones (in a log).
- ``progress_line`` and ``best_line``: a generation's line and a run's headline, from the search's Progress.

Used by every module of ``evoforge.cli``; it imports only ``evoforge.claims`` from the package.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console

out = Console()
if not out.is_terminal:
    out = Console(width=160)  # a log or a pipe: don't squeeze tables into 80 columns
err = Console(stderr=True, soft_wrap=True)  # one error, one line, whatever the width


def fmt_us(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if value < 1000 else f"{value / 1000:.2f} ms"


def fmt_latency(value: float | None) -> str:
    """A latency in microseconds with its unit: "47.5 µs", or "15.09 ms" from a millisecond on (one unit only)."""
    if value is None:
        return "-"
    return f"{value:.1f} µs" if value < 1000 else f"{value / 1000:.2f} ms"


def plural(n: int, word: str) -> str:
    """ "1 repeat", "3 repeats"."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def fmt_range(values: list[float | None]) -> str:
    xs = [v for v in values if v is not None]
    if not xs:
        return "-"
    med = statistics.median(xs)
    if len(xs) == 1:
        return fmt_us(med)
    return f"{fmt_us(med)} [{fmt_us(min(xs))}–{fmt_us(max(xs))}]"


def with_elapsed(message: str, seconds: float) -> str:
    """The live line's step with how long it has been running, once that is long enough to wonder."""
    return message if seconds < 3 else f"{message} ({seconds:.0f} s)"


_CHATTY = ("timing ", "checking ", "rechecking ", "loaded and checked ")  # steps a log need not keep


@contextmanager
def progress(enabled: bool) -> Iterator[Callable[[str], None]]:
    """A spinner with the evaluator's latest step on stderr (stdout stays clean for --json). On a terminal
    the step shows how long it has been running, ticking every second, so a long one (a first run's
    compiles, a worker that hangs until its time limit) never looks stuck without saying for how long.
    Elsewhere (a log) each step is one line stamped with the seconds since the spinner opened, so a log
    shows where a run's time went (issue 22: a 15 s budget that took 36 s on an H200)."""
    console = err
    if not enabled or not console.is_terminal:
        opened = time.monotonic()

        def plain(message: str) -> None:  # a log: each step stamped with the seconds since this began
            if enabled and not any(word in message for word in _CHATTY):
                console.print(f"  [{time.monotonic() - opened:6.1f} s] {message}", highlight=False, markup=False)
        yield plain
        return
    import threading

    step = {"message": "starting", "since": time.monotonic()}
    done = threading.Event()
    with console.status("starting") as status:
        def tick() -> None:
            while not done.wait(1.0):
                status.update(with_elapsed(step["message"], time.monotonic() - step["since"]))

        def say(message: str) -> None:
            step.update(message=message, since=time.monotonic())
            status.update(message)

        ticker = threading.Thread(target=tick, name="evoforge-live-line", daemon=True)
        ticker.start()
        try:
            yield say
        finally:
            done.set()
            ticker.join()


def progress_line(p: Any, total: int) -> str:
    """One generation's line (``p``: the search's Progress; ``total``: the run's generation limit)."""
    best = f"{p.best_fitness:.2f}×" if p.best_fitness else "-"
    if p.best_fitness > 1.0 and not getattr(p, "best_significant", True):
        best += " (not significant)"
    lat = f" ({fmt_latency(p.best_latency_us)})" if p.best_latency_us else ""
    eta = f", ETA {p.eta_s / 60:.1f} min" if p.eta_s else ""
    # executor throughput: per slot (GPU or CPU worker), batches waiting for a slot, share of slot time idle
    slots = (f" ({p.evals_per_min_per_slot:.1f}/min per slot × {p.slots}, queue {p.queue}, idle {p.idle_frac:.0%})"
             if getattr(p, "slots", 1) > 1 else f" (queue {p.queue}, idle {p.idle_frac:.0%})")
    return (f"gen {p.generation + 1}/{total}: best {best}{lat} {p.best_name or ''}, valid {p.valid}/{p.evaluated}, "
            f"{p.evals_per_min:.1f} evals/min{slots}{eta}")


def best_line(final: Any) -> str:
    """The run's headline: the crowned (evolved) candidate, and whether its speedup is beyond noise."""
    from evoforge.claims import PYTORCH_PATH

    tail = f"{final.valid}/{final.evaluated} valid"
    if not final.best_name:
        return f"best: no valid candidate; {tail}"
    line = (f"best: {final.best_name} at {final.best_fitness:.3f}× over {final.best_baseline or '-'}, the "
            f"fastest other PyTorch path in its generation ({fmt_latency(final.best_latency_us)}): "
            f"{final.best_claim}; {tail}")
    if final.best_claim == PYTORCH_PATH:
        line += "; no evolved kernel was valid"
    elif final.best_fitness > 1.0 and not final.best_significant:
        line += "; nothing beat PyTorch beyond noise"
    return line
