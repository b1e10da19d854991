"""The LLM mutator against the scripted server, with a hand-made history (no evaluator)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from evoforge.candidate import Candidate
from evoforge.kernels.flash_attention import HardwareLimits
from evoforge.llm.client import LLMClient, LLMConfig, ModelSpec
from evoforge.llm.guide import context_for
from evoforge.llm.prompts import Prompts
from evoforge.llm.replay import ScriptedServer
from evoforge.mutators import llm as llm_module
from evoforge.mutators.llm import LLMMutator
from evoforge.mutators.mixed import MixedMutator
from evoforge.mutators.template import TemplateMutator
from evoforge.tasks import attention_params, builtin_task
from tests.llm.replies import NO_CODE, SYNTAX, VALID, VALID_2, VALID_CODE, reply
from tests.llm.test_guide import individual

TASK = builtin_task("attention-tiny")


def distinct(n: int, tokens: list[int] | None = None) -> list[dict[str, Any]]:
    """``n`` scripted replies with different code (a model that does not repeat itself)."""
    return [{"content": reply(f"v{i}", "a variant", f"{VALID_CODE}\nVARIANT = {i}\n"),
             **({"tokens": tokens} if tokens else {})} for i in range(n)]


def mutator(server: ScriptedServer, guide: str = "full", calls: list[dict[str, Any]] | None = None,
            **llm: Any) -> LLMMutator:
    config = LLMConfig(models=[ModelSpec("m")], base_url=server.url, concurrency=1, timeout_s=5, retries=1,
                       backoff_s=0.01, **llm)
    record = calls.append if calls is not None else None
    return LLMMutator(random.Random(0), LLMClient(config), Prompts(), context_for(TASK, "cpu", "triton"), guide,
                      record=record,
                      seeds=[Candidate(name="ref", source="class ModelNew: pass\n", lineage={"mutator": "llm"})],
                      seed_generations=3)


def test_seed_asks_for_candidates_from_scratch_and_records_every_call() -> None:
    calls: list[dict[str, Any]] = []
    with ScriptedServer([{"content": VALID, "tokens": [10, 5]}, {"content": NO_CODE}, {"content": SYNTAX}]) as s:
        seeds = mutator(s, calls=calls).seed()
    assert [c.name for c in seeds] == ["ref", "llm-fp32-math", "llm-broken"]
    assert seeds[1].lineage == {"mutator": "llm", "mutation": "generate", "level": "llm:generate", "parents": [],
                                "model": "m", "guide": "full", "thought": "scores in fp32, one matmul each side"}
    assert [c["status"] for c in calls] == ["ok", "no_code", "ok"]
    assert calls[0]["tokens_in"] == 10 and calls[0]["tokens_out"] == 5 and calls[0]["candidate_hash"] == seeds[1].hash
    assert calls[1]["error"] == "the reply contains no code block" and calls[1]["candidate_hash"] is None
    assert calls[0]["prompt"][0]["role"] == "system" and "ModelNew" in calls[0]["prompt"][1]["content"]


@pytest.mark.parametrize("guide", ["free", "insight", "full"])
def test_a_failure_becomes_an_insight_in_the_next_prompt_except_for_free(guide: str, monkeypatch:
                                                                        pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(llm_module, "REPAIR_RATE", 0.0)
    history = [individual("good", "ok", fitness=0.8, source=VALID),
               individual("llm-broken", "compile_error", detail="syntax error at line 4: expected ':'",
                          thought="forgot a colon")]
    with ScriptedServer([], default={"content": VALID_2}) as s:
        out = mutator(s, guide).propose(history[:1], history, 1)
        prompt = s.requests[-1]["messages"][1]["content"]
    assert out and out[0].lineage["mutation"] == "mutate"
    seen = "broke: llm-broken -> compile_error: syntax error at line 4" in prompt
    assert seen == (guide != "free")
    assert ("Best solutions so far" in prompt) == (guide == "full")
    assert ("Its evaluation:" in prompt) == (guide == "full")


def test_failed_llm_candidates_are_repaired_with_their_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(llm_module, "REPAIR_RATE", 1.0)
    broken = individual("llm-broken", "runtime_error", detail="RuntimeError: shapes don't match",
                        logs="Traceback...\nRuntimeError: shapes don't match")
    with ScriptedServer(distinct(2), default={"content": VALID}) as s:
        out = mutator(s).propose([], [broken], 2)
        prompts = [r["messages"][1]["content"] for r in s.requests]
    assert [c.lineage["mutation"] for c in out] == ["repair", "generate"]  # one failure: repaired once
    assert out[0].lineage["parents"] == [broken.candidate.hash]
    assert "## Failed candidate: llm-broken (runtime_error)" in prompts[0]
    assert "RuntimeError: shapes don't match" in prompts[0]
    repaired = individual("llm-fixed", "ok", fitness=1.0)
    repaired.candidate.lineage.update(mutation="repair", parents=[broken.candidate.hash])
    with ScriptedServer([], default={"content": VALID}) as s:
        out = mutator(s).propose([repaired], [broken, repaired], 1)
    assert out[0].lineage["mutation"] == "mutate"  # already repaired: not again


def test_crossover_takes_two_valid_parents(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(llm_module, "REPAIR_RATE", 0.0)
    monkeypatch.setattr(llm_module, "CROSSOVER_RATE", 1.0)
    a, b = individual("a", "ok", fitness=1.0), individual("b", "ok", fitness=1.1)
    with ScriptedServer([], default={"content": VALID}) as s:
        out = mutator(s).propose([a, b], [a, b], 1)
        prompt = s.requests[-1]["messages"][1]["content"]
    assert out[0].lineage["mutation"] == "crossover" and sorted(out[0].lineage["parents"]) == sorted(
        [a.candidate.hash, b.candidate.hash])
    assert "## Parent A:" in prompt and "## Parent B:" in prompt


def test_a_spent_budget_stops_the_mutator_cleanly() -> None:
    calls: list[dict[str, Any]] = []
    with ScriptedServer(distinct(2, [100, 100]), default={"content": VALID, "tokens": [100, 100]}) as s:
        m = mutator(s, calls=calls, max_tokens=300)
        assert len(m.propose([], [], 3)) >= 1
        assert m.stop_reason == "LLM token budget spent (400 of 300 tokens)"
        assert m.propose([], [], 3) == []
        assert len(s.requests) == 2
    assert [c["status"] for c in calls] == ["ok", "ok", "budget"]


def test_an_endpoint_that_always_fails_stops_the_run_with_its_error() -> None:
    with ScriptedServer([], default={"status": 500}) as s:
        m = mutator(s)
        assert m.propose([], [], 2) == []
    assert m.stop_reason is not None and m.stop_reason.startswith("every LLM request failed (last: InternalServer")


def test_replies_without_code_leave_a_note_for_the_stop_message() -> None:
    with ScriptedServer([], default={"content": NO_CODE}) as s:
        m = mutator(s)
        assert m.propose([], [], 2) == []
    assert m.stop_reason is None and m.note == "its last 2 replies held no usable code"


def test_mixed_mutator_shares_proposals_and_stops_with_its_llm() -> None:
    params = attention_params(TASK)
    assert params is not None
    rng = random.Random(1)
    template = TemplateMutator(rng, params, HardwareLimits(interpreter=True))
    with ScriptedServer(distinct(20, [50, 50]), default={"content": VALID, "tokens": [50, 50]}) as s:
        llm = mutator(s, max_tokens=1000)
        mixed = MixedMutator(rng, [(template, 0.5), (llm, 0.5)])
        seeds = mixed.seed()
        history = [individual(c.name, "ok", fitness=1.0, source=c.source) for c in seeds]
        for ind, cand in zip(history, seeds, strict=True):
            ind.candidate = cand
        proposed = mixed.propose(history, history, 8)
        assert mixed.stop_reason is None
        llm.client.budget.max_tokens = llm.client.budget.tokens  # spent: the next proposal stops the run
        mixed.propose(history, history, 8)
    assert {c.lineage.get("mutator") for c in seeds} == {"template", "llm"}
    assert {c.lineage.get("mutator") for c in proposed} == {"template", "llm"}
    assert mixed.stop_reason is not None and mixed.stop_reason.startswith("llm: LLM token budget spent")


def test_a_repeated_reply_is_recorded_as_a_duplicate_and_not_proposed_again() -> None:
    calls: list[dict[str, Any]] = []
    same_name_other_code = VALID_2.replace("name: fp32-math-2", "name: fp32-math")
    with ScriptedServer([{"content": VALID}, {"content": VALID}, {"content": same_name_other_code}],
                        default={"content": VALID}) as s:
        m = mutator(s, calls=calls)
        seeds = m.seed()  # the model repeats its first reply: one candidate, one duplicate
        assert [c.name for c in seeds] == ["ref", "llm-fp32-math", "llm-fp32-math-2"]
        history = [individual(c.name, "ok", fitness=1.0, source=c.source) for c in seeds]
        for ind, cand in zip(history, seeds, strict=True):
            ind.candidate = cand
        assert m.propose(history, history, 2) == []  # it repeats a candidate the run has: nothing new
    assert [c["status"] for c in calls] == ["ok", "duplicate", "ok", "duplicate", "duplicate"]
    assert calls[1]["candidate_hash"] == seeds[1].hash and calls[1]["reply"] == VALID
    assert m.stop_reason is None and m.note == "2 of its last 2 replies repeated a candidate it already had"
