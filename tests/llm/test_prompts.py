from __future__ import annotations

from pathlib import Path

import pytest

from evoforge.llm.guide import context_for
from evoforge.llm.prompts import Prompts
from evoforge.task import TaskError
from evoforge.tasks import builtin_task


def values(guide: str) -> dict[str, object]:
    return {"ctx": context_for(builtin_task("attention-tiny"), "cpu", "triton"), "guide": guide,
            "insights": ["broke: x -> compile_error: boom"],
            "elites": [{"name": "e1", "summary": "1.2x", "source": "class ModelNew: pass"}]}


def test_every_operation_renders_with_the_rules_and_the_reply_format() -> None:
    prompts = Prompts()
    parent = {"name": "p", "source": "class ModelNew: pass", "feedback": {"status": "ok", "detail": ""}}
    failed = {"name": "f", "source": "class ModelNew(", "feedback": {"status": "compile_error", "detail": "bad",
                                                                   "logs": "SyntaxError"}}
    for op, extra in [("generate", {}), ("mutate", {"parent": parent}), ("crossover", {"parents": [parent, parent]}),
                      ("repair", {"failed": failed})]:
        system, user = prompts.messages(op, **values("full"), **extra)
        assert "class ModelNew(torch.nn.Module)" in system["content"] and "thought:" in system["content"]
        assert "Forbidden" in system["content"] and "side CUDA stream" in system["content"]
        assert "Tensor[1, 2, 64, 32] float16" in user["content"]
    assert "SyntaxError" in user["content"]


def test_the_guide_decides_what_the_prompt_carries() -> None:
    prompts = Prompts()
    free = prompts.render("generate", **values("free"))
    insight = prompts.render("generate", **values("insight"))
    full = prompts.render("generate", **values("full"))
    assert "broke: x" not in free and "broke: x" in insight and "broke: x" in full
    assert "Best solutions so far" not in insight and "Best solutions so far" in full


def test_a_user_directory_overrides_templates_by_name(tmp_path: Path) -> None:
    (tmp_path / "generate.j2").write_text("Custom: {{ ctx.task_name }}\n")
    assert Prompts(tmp_path).render("generate", **values("free")) == "Custom: attention_b1_h2_s64_d32_fp16\n"
    (tmp_path / "mutate.j2").write_text("{% if %}\n")
    with pytest.raises(TaskError, match=r"mutate\.j2"):
        Prompts(tmp_path)
    with pytest.raises(TaskError, match="not a directory"):
        Prompts(tmp_path / "missing")
