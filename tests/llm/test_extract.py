from __future__ import annotations

from evoforge.llm.extract import extract, slug
from tests.llm.replies import CHEAT, NO_CODE, SYNTAX, VALID, VALID_CODE


def test_a_tidy_reply_gives_name_thought_and_code() -> None:
    found = extract(VALID)
    assert found.code == VALID_CODE and found.problem is None
    assert found.name == "fp32-math" and found.thought == "scores in fp32, one matmul each side"


def test_the_last_complete_modelnew_wins_over_drafts_and_helpers() -> None:
    text = ("Here is a draft:\n```python\nclass ModelNew:\n    broken(\n```\nA helper:\n```python\nX = 1\n```\n"
            "Final:\n```py\n" + VALID_CODE + "```\nAnd some usage:\n```python\nm = ModelNew()\n```\n")
    assert extract(text).code == VALID_CODE


def test_unparseable_modelnew_is_kept_for_the_evaluator_and_the_repair_prompt() -> None:
    found = extract(SYNTAX)
    assert found.code is not None and "class ModelNew(torch.nn.Module)" in found.code


def test_a_reply_cut_off_inside_its_code_block_still_yields_the_code() -> None:
    found = extract("name: x\n```python\n" + VALID_CODE)
    assert found.code == VALID_CODE


def test_no_code_block_and_code_without_modelnew_say_why() -> None:
    assert extract(NO_CODE).code is None
    assert extract(NO_CODE).problem == "the reply contains no code block"
    assert extract("```python\nprint(1)\n```").problem == "the reply's code defines no class ModelNew"
    assert extract(NO_CODE).thought == "let me explain instead"


def test_a_bare_module_reply_is_accepted() -> None:
    assert extract(VALID_CODE).code == VALID_CODE


def test_names_are_made_safe() -> None:
    assert slug("  my kernel / v2!! ") == "my-kernel-v2"
    assert slug("***") == "llm"
    assert extract(CHEAT).name == "cheat"
