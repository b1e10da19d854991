"""Kernel templates: the flash-attention template is package data, Python, and fully filled by render();
and the template language's holes and blocks (evoforge.kernels.holes)."""

from __future__ import annotations

import ast
import fnmatch
import re
from importlib.resources import files
from pathlib import Path

import pytest

from evoforge.kernels import holes
from evoforge.kernels.flash_attention import TEMPLATE, FlashGenome, render

ROOT = Path(__file__).parents[2]


def test_the_template_is_found_in_the_package_by_importlib_resources() -> None:
    resource = files("evoforge.kernels").joinpath(TEMPLATE)
    assert resource.is_file()
    assert "class ModelNew(nn.Module):" in resource.read_text(encoding="utf-8")


def test_the_wheel_packages_every_kernel_template() -> None:
    tomllib = pytest.importorskip("tomllib")
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["evoforge"]
    package = ROOT / "src" / "evoforge"
    templates = [p.relative_to(package).as_posix() for p in package.rglob("*.tmpl.py")]
    assert f"kernels/{TEMPLATE}" in templates
    assert [t for t in templates if not any(fnmatch.fnmatch(t, pattern) for pattern in patterns)] == []


def test_the_template_is_python_with_every_name_defined() -> None:
    """It parses; ruff (in CI) checks the rest, undefined names included."""
    tree = ast.parse(files("evoforge.kernels").joinpath(TEMPLATE).read_text(encoding="utf-8"))
    assert any(isinstance(n, ast.ClassDef) and n.name == "ModelNew" for n in tree.body)


@pytest.mark.parametrize("genome", [FlashGenome(), FlashGenome(persistent=2, loop="tl.range", warp_spec=True),
                                    FlashGenome(split_kv=4, fused_combine=True, pack_gqa=True)])
def test_a_rendered_kernel_keeps_no_hole_and_no_directive(genome: FlashGenome) -> None:
    source = render(genome, causal=True, head_dim=64)
    assert "evoforge:" not in source
    assert set(re.findall(r"__[a-z][a-z0-9_]*__", source)) == {"__init__"}


def test_a_hole_is_replaced_by_its_value_as_text() -> None:
    assert holes.fill("N = __n__  # __n__ rows\n", {"n": 3}) == "N = 3  # 3 rows\n"


def test_a_hole_that_no_value_fills_stays() -> None:
    assert holes.fill("def __init__(self, __x__): ...\n", {"x": "y"}) == "def __init__(self, y): ...\n"


def test_an_empty_hole_takes_the_comma_before_it() -> None:
    source = "def f(a, __extra__):\n"
    assert holes.fill(source, {"extra": ""}) == "def f(a):\n"
    assert holes.fill(source, {"extra": "b, c"}) == "def f(a, b, c):\n"


def test_a_block_renders_the_branch_its_value_picks() -> None:
    source = "a\n    # evoforge: if flag\n    b\n    # evoforge: else\n    c\n    # evoforge: end\nd\n"
    assert holes.fill(source, {"flag": 2}) == "a\n    b\nd\n"
    assert holes.fill(source, {"flag": 0}) == "a\n    c\nd\n"
    negated = "# evoforge: if not flag\nb\n# evoforge: end\n"
    assert holes.fill(negated, {"flag": False}) == "b\n"
    assert holes.fill(negated, {"flag": True}) == ""


def test_blocks_nest() -> None:
    source = "# evoforge: if a\n# evoforge: if b\nab\n# evoforge: else\na\n# evoforge: end\n# evoforge: end\n"
    assert holes.fill(source, {"a": True, "b": False}) == "a\n"
    assert holes.fill(source, {"a": False, "b": True}) == ""


def test_the_template_block_never_renders() -> None:
    source = '# evoforge: if template\n"""Doc."""\n__n__ = 1\n# evoforge: end\nN = __n__\n'
    assert holes.fill(source, {"n": 4}) == "N = 4\n"


@pytest.mark.parametrize(("source", "values", "message"), [
    ("# evoforge: if flag\n# evoforge: end\n", {}, "'flag', which has no value"),
    ("# evoforge: if flag\n", {"flag": True}, "without '# evoforge: end'"),
    ("# evoforge: end\n", {}, "outside a block"),
    ("N = __n__\n", {"n": 1, "m": 2}, "no hole or block for ['m']"),
])
def test_a_template_and_values_that_do_not_match_are_refused(source: str, values: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        holes.fill(source, values)
