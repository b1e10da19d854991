"""Registries of pluggable parts: mutators, executors and task kinds, by name.

A part is registered under a name, by evoforge itself for its built-in parts, or by any installed package
through an entry point (group ``evoforge.mutators``, ``evoforge.executors`` or ``evoforge.task_kinds``), the
way pytest and optuna find plugins::

    # pyproject.toml of a package that adds a mutator
    [project.entry-points."evoforge.mutators"]
    annealing = "my_package.annealing:make"      # make(context: MutatorContext) -> Mutator

or, in the same process, ``MUTATORS.register("annealing", make)``. ``--mutator annealing`` (and
``--executor``) then find it; the names a registry knows are what the CLI's errors list. A mutator or an
executor is a factory of its context; a task kind is the kind itself (:mod:`evoforge.task_kinds`), found by
``--task`` through the names it resolves and by a spec through its ``family``. Entry points
are read the first time a name is missing, so an installed plugin costs nothing until it is asked for.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from evoforge.executor import Executor
    from evoforge.mutators.base import Mutator
    from evoforge.task_kinds import TaskKind

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


class Registry(Generic[T]):
    """Factories by name, built-in ones registered at import, plugins found through entry points."""

    def __init__(self, kind: str, group: str) -> None:
        self.kind, self.group = kind, group
        self._factories: dict[str, T] = {}
        self._scanned = False

    def register(self, name: str, factory: T | None = None) -> Any:
        """Register ``factory`` under ``name`` (or use as a decorator). A name is taken once."""
        def add(f: T) -> T:
            if name in self._factories and self._factories[name] is not f:
                raise ValueError(f"{self.kind} {name!r} is registered already")
            self._factories[name] = f
            return f

        return add(factory) if factory is not None else add

    def _scan(self) -> None:
        if self._scanned:
            return
        self._scanned = True
        for point in metadata.entry_points(group=self.group):
            if point.name not in self._factories:
                self._factories[point.name] = _Lazy(point)  # type: ignore[assignment]

    def names(self) -> list[str]:
        self._scan()
        return list(self._factories)

    def get(self, name: str) -> T:
        """The factory registered as ``name``; LookupError naming the ones there are."""
        if name not in self._factories:
            self._scan()
        factory = self._factories.get(name)
        if factory is None:
            raise LookupError(f"unknown {self.kind} {name!r} (available: {', '.join(self.names())})")
        if isinstance(factory, _Lazy):
            factory = self._factories[name] = factory.load()
        return factory

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()


class _Lazy:
    """An entry point not loaded yet."""

    def __init__(self, point: metadata.EntryPoint) -> None:
        self.point = point

    def load(self) -> Any:
        try:
            return self.point.load()
        except Exception as exc:  # a broken plugin: say which, in one line
            raise LookupError(f"{self.point.group} {self.point.name!r} ({self.point.value}) failed to load: "
                              f"{type(exc).__name__}: {exc}") from None


@dataclass
class MutatorContext:
    """What a mutator factory gets: the run's config, its task, the search's RNG, the device and its limits,
    and the store and run (for a mutator that records what it does, as the LLM mutator its calls)."""

    config: Any  # evoforge.evolve.RunConfig
    spec: Any  # evoforge.task.TaskSpec
    params: Any  # the task kind's typed parameters (evoforge.tasks.AttentionParams), or None
    rng: random.Random
    device: str
    limits: Any  # evoforge.mutators.template.HardwareLimits, or None
    store: Any  # evoforge.store.Store
    run_id: str


@dataclass
class ExecutorContext:
    """What an executor factory gets: the run's config and its prepared session (evaluator, device)."""

    config: Any  # evoforge.evolve.RunConfig
    prepared: Any  # evoforge.evolve.Prepared


MUTATORS: Registry[Callable[[MutatorContext], Mutator]] = Registry("mutator", "evoforge.mutators")
EXECUTORS: Registry[Callable[[ExecutorContext], Executor]] = Registry("executor", "evoforge.executors")
TASK_KINDS: Registry[TaskKind] = Registry("task kind", "evoforge.task_kinds")
