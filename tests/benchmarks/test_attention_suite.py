"""benchmarks/attention_suite.py reads its --rows as the tasks the user meant: a task's own overrides
hold commas, so a comma piece with '=' and no ':' belongs to the row before it."""

from __future__ import annotations

from types import ModuleType

from tests.benchmarks import load_script


def load_suite() -> ModuleType:
    return load_script("attention_suite")


def test_rows_keep_their_overrides() -> None:
    split_rows = load_suite().split_rows
    assert split_rows("attention:batch=1,heads=16,seq_len=16384,head_dim=128,dtype=bf16") == [
        "attention:batch=1,heads=16,seq_len=16384,head_dim=128,dtype=bf16"]
    assert split_rows("attention-long,attention-d128:causal=true,dtype=bf16,attention-decode") == [
        "attention-long", "attention-d128:causal=true,dtype=bf16", "attention-decode"]
    assert split_rows("attention-d128;attention-d128:causal=true,dtype=bf16;") == [
        "attention-d128", "attention-d128:causal=true,dtype=bf16"]


def test_every_default_row_is_a_task_of_its_own() -> None:
    suite = load_suite()
    assert suite.split_rows(",".join(suite.ROWS)) == suite.ROWS


def test_a_row_carries_its_speedups_device_and_date() -> None:
    from evoforge.bench.suite import row_from_record

    base = {"sdpa_default": {"graph": 10.0, "eager": 20.0}, "sdpa_cudnn": {"graph": 9.0, "eager": 25.0}}
    record = {
        "date": "2026-12-02T13:37:38+00:00",
        "task": {"name": "attention_b1_h8_s512_d64_fp16"},
        "device": {"device_name": "NVIDIA H200", "driver": "580.159.04", "versions": {"torch": "2.11.0+cu130"}},
        "search": {"budget": "60s", "evaluated": 3, "valid": 3, "evals_per_min": 4.0, "best": None},
        "retime": {"statuses": ["ok", "ok"], "latency_us": {"graph": [6.0, 6.2], "eager": [10.0, 12.0]},
                   "baselines_us": [base, base]},
    }
    r = row_from_record("attention", record)
    assert (r["date"], r["device_name"], r["driver"]) == (record["date"], "NVIDIA H200", "580.159.04")
    assert r["versions"] == {"torch": "2.11.0+cu130"}
    assert r["graph"]["fastest_torch"] == "sdpa_cudnn"
    assert abs(r["graph"]["speedup_vs_fastest"] - 9.0 / 6.1) < 1e-9  # median of the re-times
    assert r["eager"]["fastest_torch"] == "sdpa_default"
    assert abs(r["eager"]["speedup_vs_fastest"] - 20.0 / 11.0) < 1e-9
    assert r["graph"]["speedup_vs_fa4"] is None  # FA4 not installed: no ratio invented


def test_a_rows_progress_is_echoed_as_it_comes_and_its_tail_kept() -> None:
    import sys

    from evoforge.bench.suite import streamed

    seen: list[str] = []
    code, tail = streamed([sys.executable, "-c", "import sys; print('summary'); "
                           "[print(f'step {i}', file=sys.stderr, flush=True) for i in range(3)]; sys.exit(3)"],
                          seen.append, "row")
    assert code == 3
    assert seen == ["  row: step 0", "  row: step 1", "  row: step 2"]
    assert tail == "step 0\nstep 1\nstep 2\n"
    code, tail = streamed([sys.executable, "-c", "print('only stdout')"], seen.append, "row")
    assert (code, tail) == (0, "only stdout\n")  # no stderr: the detail is stdout


def test_a_search_that_evaluates_nothing_fails_its_row_saying_why(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """On the long rows generation 0 alone takes about two minutes on an H200: a budget shorter than that
    evaluates nothing, and the row says so (and what to do) instead of an export's 'no valid candidate'."""
    from evoforge.bench.suite import row, row_line

    seen: list[str] = []
    r = row("attention-tiny", "1s", 1, tmp_path, "cpu", ["--device", "cpu", "--baselines", "sdpa_default"],
            seen.append)
    assert r["status"] == "failed"
    line = row_line(r)
    assert "failed: error: the search evaluated no candidate within its budget (1s" in line, line
    assert "longer --budget" in line
    assert any("attention-tiny: " in s for s in seen)  # its progress was echoed while it ran
