"""Task kinds (evoforge.task_kinds, registry.TASK_KINDS): a new kind of task is one file that registers it, in the
same process or through an installed package's entry point; ``--task`` resolves its names, and everything
downstream (baselines, mutator parameters, multi-shape checks, the sweep, exports) asks a spec's kind."""

from __future__ import annotations

import importlib
import json
import os
import random
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from evoforge import evolve
from evoforge.cli import app
from evoforge.memory_store import MemoryStore
from evoforge.registry import TASK_KINDS
from evoforge.resolve import resolve_task
from evoforge.shapes import multi_shape_task
from evoforge.sweep import select_variants
from evoforge.task import TaskError
from evoforge.task_kinds import FileKind, TaskKind
from evoforge.tasks import AttentionKind, attention_params, baselines_for, builtin_task, kind_of, task_kinds

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "problems" / "level1"

# One new file: a kind of task ("rows-<id>", a row softmax of any width) that registers itself. Its baselines
# are the task's eager Model only (a KernelBench file's would add torch.compile), so a run shows it was asked.
KIND_MODULE = '''
from evoforge.registry import TASK_KINDS
from evoforge.task import TaskSpec
from evoforge.task_kinds import FAMILY, FileKind, eager_baseline

NAME = {name!r}
SOURCE = """
import torch
import torch.nn as nn


class Model(nn.Module):
    def forward(self, x):
        return torch.softmax(x, dim=-1)


def get_inputs():
    return [torch.randn(16, COLS)]


def get_init_inputs():
    return []
"""


class Rows(FileKind):
    name = NAME

    def names(self):
        return [NAME]

    def resolve(self, arg):
        head, _, cols = arg.partition(":cols=")
        if head != NAME:
            return None
        cols = int(cols or 64)
        return TaskSpec(name=f"{{NAME}}-{{cols}}", source=f"COLS = {{cols}}\\n" + SOURCE, origin=f"rows:{{arg}}",
                        params={{FAMILY: NAME, "cols": cols}})

    def params(self, spec):
        return {{"cols": spec.params["cols"]}}

    def baselines(self, spec, device):
        return [eager_baseline()]


KIND = Rows()
{register}
'''


@pytest.fixture()
def name() -> Iterator[str]:
    taken = f"rows-{uuid.uuid4().hex[:6]}"
    yield taken
    TASK_KINDS._factories.pop(taken, None)


def _write_kind(root: Path, name: str, register: str) -> str:
    module = f"evoforge_kind_{uuid.uuid4().hex[:8]}"
    (root / f"{module}.py").write_text(KIND_MODULE.format(name=name, register=register))
    return module


def test_the_built_in_kinds_are_registered_and_keep_their_answers() -> None:
    assert {"attention", "file"} <= set(TASK_KINDS.names())
    attention, softmax = builtin_task("attention-tiny"), resolve_task(str(EXAMPLES / "softmax.py"))
    assert isinstance(kind_of(attention), AttentionKind) and isinstance(kind_of(softmax), FileKind)
    assert all(isinstance(kind, TaskKind) for kind in task_kinds()) and task_kinds()[-1].name == "file"
    assert kind_of(attention).params(attention) == attention_params(attention)
    assert kind_of(softmax).params(softmax) is None and kind_of(softmax).variants(softmax) == []
    assert [b.name for b in baselines_for(softmax)] == ["task_model", "task_model_compiled"]
    # a stored run's task params, and a family no longer installed: the file kind
    assert kind_of(attention.params).guarded_export and kind_of(attention.params).signature == "q, k, v"
    assert not kind_of({"family": "gone"}).guarded_export and kind_of({}).signature == "*inputs"
    # a multi-shape task is a wrapper: its kind is its shapes' kind
    multi = resolve_task("attention-tiny;attention-tiny:seq_len=32")
    assert kind_of(multi) is kind_of(attention)


def test_a_kind_registered_in_one_file_is_what_task_names_resolve_to(name: str, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module(_write_kind(tmp_path, name, "TASK_KINDS.register(NAME, KIND)"))
    spec = resolve_task(f"{name}:cols=32")
    assert spec.name == f"{name}-32" and kind_of(spec) is module.KIND
    assert [b.name for b in baselines_for(spec)] == ["task_model"]  # the kind's, not a file's
    with pytest.raises(TaskError, match=rf"unknown task 'nope': not a built-in \(attention, .*{name}\)"):
        resolve_task("nope")
    # multi-shape over the kind's shapes; a shape of another kind is refused
    assert kind_of(resolve_task(f"{name}:cols=32;{name}:cols=64")) is module.KIND
    with pytest.raises(TaskError, match="different kinds of task"):
        multi_shape_task("x", [spec, builtin_task("attention-tiny")])
    with pytest.raises(TaskError, match="the sweep needs a built-in attention task"):
        select_variants(spec)
    listed = CliRunner().invoke(app, ["tasks", "--json"])
    assert {"name": name, "kind": name} in json.loads(listed.stdout)  # `evoforge tasks` lists its names
    # a run: the kind's task, its parameters for the mutators, its baselines
    store = MemoryStore()
    config = evolve.RunConfig(task=f"{name}:cols=32", device="cpu")
    run_id = store.create_run({"name": spec.name}, {})
    prepared = evolve.prepare(config, store, run_id, random.Random(0))
    assert prepared.spec.params == spec.params and prepared.mutator.name == "generic"
    assert [b.name for b in prepared.evaluate.baselines] == ["task_model"]


def test_an_installed_package_adds_a_kind_that_evoforge_run_finds(name: str, tmp_path: Path) -> None:
    module = _write_kind(tmp_path, name, "")
    info = tmp_path / "evoforge_kind_test-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: evoforge-kind-test\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[evoforge.task_kinds]\n{name} = {module}:KIND\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "evoforge.cli", "run", "--task", f"{name}:cols=32",
                           "--generations", "1", "--population", "1", "--budget-ms", "5", "--device", "cpu",
                           "--json"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["generations"] == 1
    db = sqlite3.connect(tmp_path / ".evoforge" / "runs.db")
    (task,) = [json.loads(r[0]) for r in db.execute("SELECT task_json FROM runs")]
    assert task["params"] == {"family": name, "cols": 32}
    rows = db.execute("SELECT result_json FROM evaluations WHERE role='baseline'")
    assert {json.loads(r[0])["name"] for r in rows} == {"task_model"}


def test_a_broken_kind_plugin_is_named_where_a_task_is_unknown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    info = tmp_path / "evoforge_kind_broken-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: evoforge-kind-broken\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[evoforge.task_kinds]\nbroken = evoforge_kind_missing:KIND\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(TASK_KINDS, "_scanned", False)  # read the entry points again
    try:
        assert resolve_task("attention-tiny").name == builtin_task("attention-tiny").name
        with pytest.raises(TaskError, match=r"unknown task 'nope'.*evoforge.task_kinds 'broken' .* failed to load"):
            resolve_task("nope")
    finally:
        TASK_KINDS._factories.pop("broken", None)
