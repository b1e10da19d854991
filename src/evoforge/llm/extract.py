"""Reading a candidate out of a model's reply.

The prompts ask for ``name: ...`` and ``thought: ...`` lines and one fenced code block that defines
``class ModelNew``. Replies are rarely that tidy, so: every fenced block is considered (an unclosed
last block too: a reply cut off by the token limit), and the last one that defines ``ModelNew`` and
parses wins; failing that, the last one that defines it (it will fail with ``compile_error``, which
the repair prompt can use); failing that, a reply that is itself Python defining ``ModelNew``.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_MODEL_NEW = re.compile(r"^\s*class\s+ModelNew\b", re.MULTILINE)
_FIELD = re.compile(r"^\W{0,4}(name|thought)\W{0,4}\s*[:=]\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)


@dataclass
class Extracted:
    code: str | None
    name: str | None
    thought: str | None
    problem: str | None  # why there is no code, when there is none


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
    except SyntaxError:
        return False
    return True


def slug(text: str, limit: int = 40) -> str:
    """A short file- and display-safe name."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", text.strip()).strip("-.")
    return cleaned[:limit] or "llm"


def extract(reply: str) -> Extracted:
    fields: dict[str, str] = {}
    outside = _FENCE.sub("", reply)
    for key, value in _FIELD.findall(outside):
        fields.setdefault(key.lower(), value.strip().strip("`*\"'"))
    name = slug(fields["name"]) if fields.get("name") else None
    thought = fields.get("thought", "")[:300] or None

    blocks = [body for _, body in _FENCE.findall(reply)]
    with_model = [b for b in blocks if _MODEL_NEW.search(b)]
    parsed = [b for b in with_model if _parses(b)]
    if parsed:
        return Extracted(parsed[-1].strip() + "\n", name, thought, None)
    if with_model:
        return Extracted(with_model[-1].strip() + "\n", name, thought, None)
    if not blocks and _MODEL_NEW.search(reply) and _parses(reply):
        return Extracted(reply.strip() + "\n", name, thought, None)
    problem = "the reply's code defines no class ModelNew" if blocks else "the reply contains no code block"
    return Extracted(None, name, thought, problem)
