"""Pluggable parts (evoforge.registry): a new mutator is one file that registers it, in the same process or
through an installed package's entry point, and the run finds it by name."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from evoforge import evolve
from evoforge.candidate import Candidate
from evoforge.memory_store import MemoryStore
from evoforge.mutators.base import Individual, Mutator
from evoforge.registry import EXECUTORS, MUTATORS, MutatorContext, Registry
from evoforge.task import TaskError


class Repeat(Mutator):
    """A mutator of a plugin: proposes its seed's source under new names."""

    name = "repeat"

    def __init__(self, rng: random.Random, seed: Candidate) -> None:
        super().__init__(rng)
        self.first = seed

    def seed(self) -> list[Candidate]:
        return [self.first]

    def propose(self, parents: list[Individual], history: list[Individual], n: int) -> list[Candidate]:
        return [Candidate(name=f"repeat-{i}", source=self.first.source) for i in range(n)]


@pytest.fixture()
def name() -> Iterator[str]:
    taken = f"repeat-{uuid.uuid4().hex[:6]}"
    yield taken
    MUTATORS._factories.pop(taken, None)


def test_a_mutator_registered_by_name_is_the_one_a_run_gets(name: str) -> None:
    seen: list[MutatorContext] = []

    @MUTATORS.register(name)
    def make(ctx: MutatorContext) -> Mutator:
        seen.append(ctx)
        return Repeat(ctx.rng, Candidate(name="seed", source=ctx.spec.source))

    store = MemoryStore()
    config = evolve.RunConfig(task="attention-tiny", mutator=name, device="cpu")
    run_id = store.create_run({"name": "attention-tiny"}, {})
    prepared = evolve.prepare(config, store, run_id, random.Random(0))
    assert isinstance(prepared.mutator, Repeat)
    (ctx,) = seen
    assert ctx.config is config and ctx.store is store and ctx.run_id == run_id and ctx.device == "cpu"
    assert name in MUTATORS.names() and {"template", "generic", "llm", "mixed"} <= set(MUTATORS.names())


def test_a_name_is_taken_once(name: str) -> None:
    MUTATORS.register(name, lambda ctx: None)
    with pytest.raises(ValueError, match="registered already"):
        MUTATORS.register(name, lambda ctx: None)


def test_an_unknown_mutator_or_executor_is_refused_naming_those_there_are() -> None:
    with pytest.raises(TaskError, match=r"unknown mutator 'nope' \(available: template, generic, llm, mixed"):
        evolve._check_mutator(evolve.RunConfig(mutator="nope"))
    with pytest.raises(TaskError, match=r"unknown executor 'nope' \(available: .*local.*ray"):
        evolve.check_executor(evolve.RunConfig(executor="nope"))
    assert "local" in EXECUTORS and "ray" in EXECUTORS


def _plugin(root: Path, body: str) -> None:
    """An installed package (a dist-info on sys.path) that registers ``plugged`` through an entry point."""
    module = f"evoforge_plugin_{uuid.uuid4().hex[:8]}"
    (root / f"{module}.py").write_text(body)
    info = root / "evoforge_plugin_test-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: evoforge-plugin-test\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[evoforge.mutators]\nplugged = {module}:make\n")


def test_an_installed_package_adds_a_mutator_through_an_entry_point(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    _plugin(tmp_path, "def make(ctx):\n    return ('made', ctx)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry: Registry = Registry("mutator", "evoforge.mutators")  # a fresh one: entry points read on a miss
    assert "plugged" in registry.names()
    assert registry.get("plugged")("ctx") == ("made", "ctx")


def test_a_broken_plugin_is_named_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _plugin(tmp_path, "raise ImportError('needs numpy 9')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry: Registry = Registry("mutator", "evoforge.mutators")
    with pytest.raises(LookupError, match=r"evoforge.mutators 'plugged' .* failed to load: ImportError: needs numpy 9"):
        registry.get("plugged")
