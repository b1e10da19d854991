"""The LLM client: any OpenAI-compatible chat endpoint through the ``openai`` SDK (``evoforge[llm]``).

It lives in the driver process only (workers never see the key). What it adds to the SDK:

- several models with weights (an ensemble), each with an optional price per million tokens;
- a concurrency limit (a thread pool), a per-request timeout, and retries with exponential backoff on
  429, 5xx, timeouts, dropped connections and malformed bodies (the SDK's own retries are off, so every
  attempt is counted and recorded);
- a budget in tokens and/or money, checked before every request: once spent, no request is sent and
  the caller is told why, so the run stops cleanly.

Model specs are ``name[:weight][@in/out]``, comma-separated: ``gpt-4o:2@2.5/10,my-local-model:1``
(prices in money per million input/output tokens; default 0).
"""

from __future__ import annotations

import os
import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from evoforge.task import TaskError

Message = dict[str, str]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    weight: float = 1.0
    price_in: float = 0.0  # per million input tokens
    price_out: float = 0.0  # per million output tokens

    def cost(self, tokens_in: int, tokens_out: int) -> float:
        return (tokens_in * self.price_in + tokens_out * self.price_out) / 1e6


_NUM = r"[0-9]*\.?[0-9]+"
_SPEC = re.compile(rf"^(?P<name>[^:@]+?)(?::(?P<weight>{_NUM}))?(?:@(?P<pin>{_NUM})/(?P<pout>{_NUM}))?$")


def parse_models(text: str) -> list[ModelSpec]:
    """``"a:2@1/3,b"`` -> [ModelSpec("a", 2, 1, 3), ModelSpec("b")]; a clear TaskError otherwise."""
    specs = []
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        match = _SPEC.match(part)
        if not match:
            raise TaskError(f"model {part!r}: expected name[:weight][@price_in/price_out], e.g. gpt-4o:2@2.5/10")
        weight = float(match["weight"]) if match["weight"] else 1.0
        if weight <= 0:
            raise TaskError(f"model {part!r}: the weight must be positive")
        specs.append(ModelSpec(match["name"].strip(), weight, float(match["pin"] or 0), float(match["pout"] or 0)))
    if not specs:
        raise TaskError("the LLM mutator needs a model: --model NAME (any model the endpoint serves)")
    return specs


@dataclass
class LLMConfig:
    models: list[ModelSpec]
    base_url: str | None = None  # None: the SDK's default (OPENAI_BASE_URL, else api.openai.com)
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 4
    timeout_s: float = 120.0
    retries: int = 4
    backoff_s: float = 1.0
    temperature: float = 0.7
    max_reply_tokens: int = 8192
    max_tokens: int | None = None  # budget: input + output tokens over the whole run
    max_cost: float | None = None  # budget: money, by the models' prices


@dataclass
class Completion:
    """One request's outcome. ``error`` is None when a reply came back."""

    model: str
    text: str = ""
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0
    latency_s: float = 0.0
    attempts: int = 0
    error: str | None = None
    retried: list[str] = field(default_factory=list)  # why each failed attempt was retried


class Budget:
    """Tokens and money spent so far (thread-safe); ``exhausted()`` says why no more may be spent."""

    def __init__(self, max_tokens: int | None = None, max_cost: float | None = None,
                 tokens: int = 0, cost: float = 0.0) -> None:
        self.max_tokens, self.max_cost = max_tokens, max_cost
        self.tokens, self.cost = tokens, cost
        self._lock = threading.Lock()

    def charge(self, tokens: int, cost: float) -> None:
        with self._lock:
            self.tokens += tokens
            self.cost += cost

    def exhausted(self) -> str | None:
        with self._lock:
            if self.max_tokens is not None and self.tokens >= self.max_tokens:
                return f"LLM token budget spent ({self.tokens} of {self.max_tokens} tokens)"
            if self.max_cost is not None and self.cost >= self.max_cost:
                return f"LLM cost budget spent ({self.cost:.4f} of {self.max_cost:g})"
        return None


def _import_openai() -> Any:
    try:
        import openai
    except ModuleNotFoundError:
        raise TaskError("the LLM mutator needs the openai SDK: pip install 'evoforge[llm]'") from None
    return openai


class LLMClient:
    def __init__(self, config: LLMConfig, budget: Budget | None = None, rng: random.Random | None = None) -> None:
        openai = _import_openai()
        self.config = config
        self.budget = budget or Budget(config.max_tokens, config.max_cost)
        self.rng = rng or random.Random()  # backoff jitter (threads): never the search's RNG
        self._openai = openai
        key = os.environ.get(config.api_key_env)
        base_url = config.base_url or os.environ.get("OPENAI_BASE_URL")
        if not key:
            if base_url is None:
                raise TaskError(f"the LLM mutator needs an API key in ${config.api_key_env} "
                                "(or --base-url for a local server that needs none)")
            key = "unused"  # local servers (vLLM, llama.cpp) accept any key; the SDK wants one
        self.client = openai.OpenAI(api_key=key, base_url=base_url, max_retries=0, timeout=config.timeout_s)

    def pick_model(self, rng: random.Random | None = None) -> ModelSpec:
        """A model of the ensemble, drawn by weight (with the search's RNG, so a run replays)."""
        models = self.config.models
        return (rng or self.rng).choices(models, weights=[m.weight for m in models])[0]

    def _retryable(self, exc: Exception) -> str | None:
        """Why ``exc`` is worth another attempt, or None when it is not (a bad request, a wrong key)."""
        o = self._openai
        if isinstance(exc, o.APITimeoutError):
            return "timeout"
        if isinstance(exc, o.APIConnectionError):
            return "connection error"
        if isinstance(exc, o.APIStatusError):
            code = exc.status_code
            return f"HTTP {code}" if code == 429 or code >= 500 else None
        if isinstance(exc, (o.APIResponseValidationError, ValueError, KeyError, TypeError, AttributeError)):
            return f"malformed reply ({type(exc).__name__})"
        return None

    def _delay(self, attempt: int, exc: Exception) -> float:
        response = getattr(exc, "response", None)
        retry_after = response.headers.get("retry-after") if response is not None else None
        try:
            if retry_after is not None:
                return min(float(retry_after), 60.0)
        except ValueError:
            pass
        base = self.config.backoff_s * (2 ** attempt)
        return min(base * (0.5 + self.rng.random() / 2), 60.0)

    def complete(self, messages: list[Message], model: ModelSpec) -> Completion:
        out = Completion(model=model.name)
        started = time.monotonic()
        for attempt in range(self.config.retries + 1):
            reason = self.budget.exhausted()
            if reason:
                out.error = reason
                break
            out.attempts = attempt + 1
            try:
                reply = self.client.chat.completions.create(
                    model=model.name, messages=messages,  # type: ignore[arg-type]
                    temperature=self.config.temperature, max_tokens=self.config.max_reply_tokens)
                text = reply.choices[0].message.content or ""
                usage = reply.usage
                out.tokens_in = int(usage.prompt_tokens) if usage else 0
                out.tokens_out = int(usage.completion_tokens) if usage else 0
                out.text, out.error = text, None
                out.cost = model.cost(out.tokens_in, out.tokens_out)
                self.budget.charge(out.tokens_in + out.tokens_out, out.cost)
                break
            except Exception as exc:
                why = self._retryable(exc)
                first = (str(exc).strip().splitlines() or [""])[0][:200]
                out.error = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
                if why is None or attempt == self.config.retries:
                    break
                out.retried.append(why)
                time.sleep(self._delay(attempt, exc))
        out.latency_s = time.monotonic() - started
        return out

    def complete_many(self, requests: list[tuple[list[Message], ModelSpec]]) -> list[Completion]:
        """Send ``requests`` with at most ``concurrency`` in flight; results in request order."""
        if not requests:
            return []
        workers = max(1, min(self.config.concurrency, len(requests)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="evoforge-llm") as pool:
            return list(pool.map(lambda r: self.complete(*r), requests))
