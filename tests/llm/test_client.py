"""The client against the scripted server: retries, timeouts, malformed bodies, budgets, ensembles."""

from __future__ import annotations

import random

import pytest

from evoforge.llm.client import Budget, LLMClient, LLMConfig, ModelSpec, parse_models
from evoforge.llm.replay import ScriptedServer
from evoforge.task import TaskError

MSG = [{"role": "user", "content": "write a kernel"}]


def client(server: ScriptedServer, **kw: object) -> LLMClient:
    config = LLMConfig(models=[ModelSpec("m", price_in=1.0, price_out=2.0)], base_url=server.url,
                       timeout_s=1.0, retries=3, backoff_s=0.01, **kw)  # type: ignore[arg-type]
    return LLMClient(config)


def test_429_then_success_is_retried_and_counted() -> None:
    with ScriptedServer([{"status": 429, "retry_after": 0}, {"content": "hi", "tokens": [100, 20]}]) as server:
        done = client(server).complete(MSG, ModelSpec("m", price_in=1.0, price_out=2.0))
    assert done.error is None and done.text == "hi"
    assert done.attempts == 2 and done.retried == ["HTTP 429"]
    assert (done.tokens_in, done.tokens_out) == (100, 20)
    assert done.cost == pytest.approx((100 * 1.0 + 20 * 2.0) / 1e6)


def test_a_hang_past_the_timeout_and_a_malformed_body_are_retried() -> None:
    script = [{"delay": 3, "content": "late"}, {"raw": "{not json"}, {"status": 503}, {"content": "ok"}]
    with ScriptedServer(script) as server:
        done = client(server).complete(MSG, ModelSpec("m"))
    assert done.text == "ok" and done.attempts == 4
    assert done.retried[0] == "timeout" and done.retried[1].startswith("malformed reply")
    assert done.retried[2] == "HTTP 503"


def test_a_bad_request_is_not_retried_and_retries_run_out() -> None:
    with ScriptedServer([{"status": 400}]) as server:
        done = client(server).complete(MSG, ModelSpec("m"))
    assert done.attempts == 1 and done.error and "400" in done.error
    with ScriptedServer([], default={"status": 500}) as server:
        done = client(server).complete(MSG, ModelSpec("m"))
    assert done.attempts == 4 and done.error and "500" in done.error


def test_the_budget_stops_requests_before_they_are_sent() -> None:
    with ScriptedServer([], default={"content": "x", "tokens": [60, 40]}) as server:
        c = client(server, max_tokens=150)
        first = c.complete_many([(MSG, ModelSpec("m"))] * 2)
        assert [d.error for d in first] == [None, None]  # 200 tokens: over 150 now
        later = c.complete(MSG, ModelSpec("m"))
        assert later.attempts == 0 and later.error and "token budget spent" in later.error
        assert len(server.requests) == 2
    assert Budget(max_cost=1.0, cost=1.5).exhausted() == "LLM cost budget spent (1.5000 of 1)"


def test_requests_run_concurrently_and_come_back_in_order() -> None:
    script = [{"delay": 0.5, "content": "slow"}, {"content": "fast"}]
    with ScriptedServer(script) as server:
        done = client(server, concurrency=2).complete_many([(MSG, ModelSpec("a")), (MSG, ModelSpec("b"))])
    assert [d.model for d in done] == ["a", "b"]
    assert sorted(d.text for d in done) == ["fast", "slow"]


def test_model_specs_and_weights() -> None:
    models = parse_models("big:3@2.5/10, small")
    assert models == [ModelSpec("big", 3.0, 2.5, 10.0), ModelSpec("small")]
    with ScriptedServer([]) as server:
        c = LLMClient(LLMConfig(models=models, base_url=server.url))
        picks = [c.pick_model(random.Random(i)).name for i in range(400)]
    assert 0.65 < picks.count("big") / 400 < 0.85
    for bad in ("", "a:0", "a:b:c", "x@1"):
        with pytest.raises(TaskError):
            parse_models(bad)


def test_a_key_is_needed_only_without_a_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EVOFORGE_TEST_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(TaskError, match=r"\$EVOFORGE_TEST_KEY"):
        LLMClient(LLMConfig(models=[ModelSpec("m")], api_key_env="EVOFORGE_TEST_KEY"))
    LLMClient(LLMConfig(models=[ModelSpec("m")], api_key_env="EVOFORGE_TEST_KEY", base_url="http://127.0.0.1:9/v1"))
