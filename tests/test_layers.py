"""The package's import structure: layers, lowest first, no import back up a layer and no circle.

Every module under ``src/evoforge`` is parsed with :mod:`ast`; its imports are the ones at module level and the
ones inside functions (a lazy import is still a dependency), but not those under ``if TYPE_CHECKING:``, which
never run. An import of ``evoforge.a.b`` also runs ``evoforge/a/__init__.py``, so it counts as an import of the
package ``evoforge.a`` too. A module's imports of its own parent packages (``from evoforge.evaluator import
sandbox`` inside ``evoforge.evaluator.process``) are not counted: Python has run them before the module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = "evoforge"

# Lowest first. A module may import from its own layer and the layers below it, never from one above.
# An entry names a module or a package (with everything in it); the most specific entry wins. The package
# itself (evoforge/__init__.py: evoforge.use and evoforge.capture) is the public surface, so it sits on top.
LAYERS: list[tuple[str, list[str]]] = [
    # Plain data: import nothing of the package (asserted below).
    ("data", ["evoforge.results", "evoforge.candidate"]),
    # Leaf mechanisms every layer above may use: the one timing function, caches, the environment,
    # the claim rule, the plugin registries, the SDPA recorder, the exported runtime and the kernel templates.
    ("mechanisms", ["evoforge.timing", "evoforge.cache", "evoforge.envinfo", "evoforge.claims",
                    "evoforge.registry", "evoforge.capture_hook", "evoforge.export_runtime", "evoforge.kernels"]),
    # What a problem is: the KernelBench format, the task kinds' contract (evoforge.task_kinds) and the built-in
    # kinds, multi-shape and captured tasks, and the --task argument that names any of them.
    ("tasks", ["evoforge.task", "evoforge.task_kinds", "evoforge.tasks", "evoforge.shapes", "evoforge.workload",
               "evoforge.resolve"]),
    # Latencies -> the number the search selects on.
    ("fitness", ["evoforge.fitness"]),
    # The judge and its untrusted workers.
    ("evaluator", ["evoforge.evaluator"]),
    # Where candidates come from.
    ("llm", ["evoforge.llm"]),
    ("mutators", ["evoforge.mutators"]),
    # The other parts the loop talks to: where evaluations run and where runs are kept.
    ("executors and stores", ["evoforge.executor", "evoforge.store", "evoforge.memory_store"]),
    # The loop.
    ("search", ["evoforge.search"]),
    # What a command does: a run, a sweep, a batch of problems, reports, exports, the environment check,
    # the benchmarks (evoforge bench).
    ("commands", ["evoforge.evolve", "evoforge.sweep", "evoforge.batch", "evoforge.batch_store",
                  "evoforge.report", "evoforge.export", "evoforge.doctor", "evoforge.bench"]),
    # The surfaces a user touches.
    ("interface", ["evoforge.cli", ROOT]),
]
NEUTRAL = "data"


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / ROOT).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if not all(part.isidentifier() for part in parts):
            continue  # not importable by name (a template such as kernels/x.tmpl.py): not a module
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth, except the bodies of ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for stmt in child.orelse:
                    visit_one(stmt)
            else:
                visit_one(child)

    def visit_one(node: ast.AST) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        visit(node)

    visit(tree)
    return found


def _owner(name: str) -> str:
    """The module of ours that ``name`` (a module or a name inside one) lives in."""
    while name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
            package = package[: len(package) - node.level + 1]
            base = ".".join([*package, base] if base else package)
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
    out = []
    for name in names:
        if name != ROOT and not name.startswith(ROOT + "."):
            continue
        target = _owner(name)
        parts = target.split(".")
        # Importing evoforge.a.b runs evoforge/a/__init__.py first: that package is a dependency too.
        out += [".".join(parts[:n]) for n in range(2, len(parts) + 1)]
    return out


def _edges() -> dict[tuple[str, str], int]:
    """(importer, imported) -> the line of its first import, without a module's own parent packages."""
    edges: dict[tuple[str, str], int] = {}
    for module, path in MODULES.items():
        for node in _import_nodes(ast.parse(path.read_text(), filename=str(path))):
            for target in _targets(module, node):
                if target == module or module.startswith(target + "."):
                    continue
                edges.setdefault((module, target), node.lineno)
    return edges


EDGES = _edges()


def _where(edge: tuple[str, str]) -> str:
    importer, imported = edge
    path = MODULES[importer].relative_to(SRC.parent)
    return f"{importer} -> {imported}  ({path}:{EDGES[edge]})"


def layer_of(module: str) -> int | None:
    best: tuple[int, int] | None = None  # (length of the matching entry, layer)
    for index, (_, entries) in enumerate(LAYERS):
        for entry in entries:
            matches = module == entry or (entry != ROOT and module.startswith(entry + "."))
            if matches and (best is None or len(entry) > best[0]):
                best = (len(entry), index)
    return best[1] if best else None


def test_every_module_is_in_a_layer() -> None:
    unplaced = sorted(m for m in MODULES if layer_of(m) is None)
    assert not unplaced, "modules in no layer (add them to LAYERS in tests/test_layers.py):\n  " + "\n  ".join(unplaced)


def test_no_import_runs_back_up_a_layer() -> None:
    upward = []
    for edge in sorted(EDGES):
        low, high = layer_of(edge[0]), layer_of(edge[1])
        if low is not None and high is not None and high > low:
            upward.append(f"{_where(edge)}: layer '{LAYERS[low][0]}' imports layer '{LAYERS[high][0]}'")
    assert not upward, "imports from a lower layer to a higher one:\n  " + "\n  ".join(upward)


def _cycles() -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each as a list of modules."""
    graph: dict[str, list[str]] = {m: [] for m in MODULES}
    for importer, imported in EDGES:
        graph[importer].append(imported)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return components


def test_no_import_circle() -> None:
    circles = _cycles()
    report = []
    for members in circles:
        inside = sorted(e for e in EDGES if e[0] in members and e[1] in members)
        report.append("circle among " + ", ".join(members) + ":\n    " + "\n    ".join(_where(e) for e in inside))
    assert not circles, "import circles (lazy imports count):\n  " + "\n  ".join(report)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if layer_of(m) == [n for n, _ in LAYERS].index(NEUTRAL)))
def test_neutral_data_imports_nothing_of_the_package(module: str) -> None:
    imports = sorted(_where(e) for e in EDGES if e[0] == module)
    assert not imports, f"{module} holds neutral data types and imports nothing of evoforge:\n  " + "\n  ".join(imports)


def test_the_result_types_keep_their_old_import_paths() -> None:
    from evoforge import evaluator, mutators, results, timing
    from evoforge.evaluator import result
    from evoforge.mutators import base

    assert result.EvalResult is evaluator.EvalResult is results.EvalResult
    assert result.CaseCheck is results.CaseCheck and result.STATUSES is results.STATUSES
    assert base.Individual is mutators.Individual is results.Individual
    assert timing.TimingStats is results.TimingStats


def test_the_checker_sees_lazy_imports_and_skips_type_checking_blocks() -> None:
    # Guards against the checker going blind: known imports of each kind, as the code has them today.
    assert ("evoforge.cli.run", "evoforge.evolve") in EDGES  # inside a function
    assert ("evoforge.registry", "evoforge.executor") not in EDGES  # under `if TYPE_CHECKING:`
    assert ("evoforge.doctor", "evoforge.evaluator") in EDGES  # evoforge.evaluator.sandbox runs its package
    assert not any(imported == ROOT for _, imported in EDGES)  # every module's own parent
