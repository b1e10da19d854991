"""Candidates: source text that defines ``class ModelNew(nn.Module)`` (the KernelBench convention).

A candidate is plain data so it can cross a process boundary as JSON. Its identity is the hash of its
*normalised* source: the source parsed and unparsed by :mod:`ast`, so comments, blank lines and
formatting do not make two otherwise identical kernels count as different candidates.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import re
import threading
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Language = Literal["torch", "triton", "cuda"]
LANGUAGES: tuple[str, ...] = ("torch", "triton", "cuda")


_PARSING = threading.Lock()


def parse_source(source: str) -> ast.Module:
    """``ast.parse``, one thread at a time: the driver hashes and pre-checks candidates from several threads
    (the loop, an executor's slots, the precompile stage), and CPython 3.11's parser can fail under that with
    "SystemError: AST constructor recursion depth mismatch" (seen in CI on 3.11.7)."""
    with _PARSING:
        return ast.parse(source)


def normalise_source(source: str) -> str:
    """Return a canonical form of ``source`` (comments and layout removed) for hashing."""
    try:
        return ast.unparse(parse_source(source))
    except SyntaxError:
        # Not valid Python: hash what is there, minus trailing spaces and blank lines, so a broken
        # candidate still has a stable identity (and still fails with compile_error when evaluated).
        lines = [line.rstrip() for line in source.splitlines()]
        return "\n".join(line for line in lines if line)


@functools.lru_cache(maxsize=1024)
def source_hash(source: str) -> str:
    """sha256 of the normalised source, as 16 hex digits (enough to tell candidates of one run apart).
    Remembered per source text: a mutator re-renders the same genome's source many times while it breeds
    (parsing and unparsing a kernel takes milliseconds; 5,000 of them were most of a 50 s test)."""
    return hashlib.sha256(normalise_source(source).encode()).hexdigest()[:16]


_CUDA_MARKERS = re.compile(r"load_inline|cpp_extension|__global__")
_TRITON_MARKERS = re.compile(r"^\s*(import triton|from triton)|@triton\.jit", re.MULTILINE)


def detect_language(source: str) -> Language:
    """Guess the candidate's language from its source (CUDA C++ wins over Triton over torch)."""
    if _CUDA_MARKERS.search(source):
        return "cuda"
    if _TRITON_MARKERS.search(source):
        return "triton"
    return "torch"


@dataclass
class Candidate:
    """One implementation to evaluate.

    ``labels`` name deliberate departures from the task's semantics (``"bf16 compute"``, ``"tf32"``):
    such a candidate is still judged against the task's own high-precision reference, and reports
    carry the label. ``lineage`` records where the candidate came from (parents, mutation, mutator,
    generation) once a search produces it.
    """

    name: str
    source: str
    language: str = ""
    labels: list[str] = field(default_factory=list)
    lineage: dict[str, Any] = field(default_factory=dict)
    genome: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not self.language:
            self.language = detect_language(self.source)
        if self.language not in LANGUAGES:
            raise ValueError(f"candidate {self.name!r}: language must be one of {LANGUAGES}, got {self.language!r}")

    @property
    def hash(self) -> str:
        """The content hash, computed once per source (parsing and unparsing a large kernel takes tens of
        milliseconds, and reports and the loop ask often); a new ``source`` gets a new hash."""
        known = self.__dict__.get("_hash")
        if known is None or known[0] is not self.source:
            known = (self.source, source_hash(self.source))
            self.__dict__["_hash"] = known
        return known[1]

    def with_hash(self, known: str) -> Candidate:
        """This candidate, its hash taken as ``known`` (what the store recorded when it was added) instead of
        recomputed: the hash it was evaluated under, whatever this Python's ``ast.unparse`` makes of it."""
        self.__dict__["_hash"] = (self.source, known)
        return self

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["hash"] = self.hash
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Candidate:
        fields = {k: data[k] for k in ("name", "source", "language", "labels", "lineage", "genome") if k in data}
        return cls(**fields)
