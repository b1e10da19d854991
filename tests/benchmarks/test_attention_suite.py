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
