"""Kernel templates: Python sources with holes, filled in.

A template is a ``.tmpl.py`` file beside the genome code that renders it (package data, see
pyproject.toml; the name keeps imports from finding it), and valid Python, so that it reads and lints
as the kernel it renders. Where a value decides, it has:

- a *hole*: a name written ``__name__`` (anywhere, comments included), replaced by ``str(value)``;
  a hole whose text is empty takes the ``, `` before it along (an optional trailing parameter);
- a *block*: lines between ``# evoforge: if NAME`` (or ``if not NAME``), an optional
  ``# evoforge: else`` and ``# evoforge: end``, each directive alone on its line (indented or not),
  kept where the value of NAME is true (false). Blocks nest; the directive lines never render.

``template`` is false when rendering: a ``# evoforge: if template`` block is the file's own (its
docstring, definitions of the holes so that every name is defined for the linter). Names such as
``__init__`` that no value fills stay as they are. Filling is a single pass over the text, so a value's
text is never read for holes itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_DIRECTIVE = re.compile(r"[ \t]*# evoforge: (?:if (not )?(\w+)|(else)|(end))[ \t]*\n?")
_HOLE = re.compile(r"(, )?__([a-z][a-z0-9_]*?)__")
TEMPLATE = "template"  # the condition that holds in the file and never in a rendering


def fill(template: str, values: Mapping[str, object]) -> str:
    """``template`` with its blocks chosen and its holes filled from ``values``. Raises ValueError for a
    block on a name that ``values`` lacks, for unbalanced directives, and for a value that no hole or
    block of the template uses (a misspelt name would otherwise render nothing)."""
    used: set[str] = set()
    kept = _blocks(template, values, used)

    def hole(match: re.Match[str]) -> str:
        comma, name = match.group(1) or "", match.group(2)
        if name not in values:
            return match.group(0)
        used.add(name)
        text = str(values[name])
        return comma + text if text else ""

    out = _HOLE.sub(hole, kept)
    if unused := sorted(set(values) - used):
        raise ValueError(f"the template has no hole or block for {unused}")
    return out


def _blocks(template: str, values: Mapping[str, object], used: set[str]) -> str:
    out: list[str] = []
    stack: list[bool] = []  # per open block: whether the branch we are in renders
    for line in template.splitlines(keepends=True):
        directive = _DIRECTIVE.fullmatch(line)
        if directive is None:
            if all(stack):
                out.append(line)
            continue
        negate, name, is_else, _ = directive.groups()
        if name is not None:
            if name != TEMPLATE and name not in values:
                raise ValueError(f"a block on {name!r}, which has no value")
            if name != TEMPLATE:
                used.add(name)
            holds = name != TEMPLATE and bool(values[name])
            stack.append(holds != bool(negate))
        elif not stack:
            raise ValueError(f"'# evoforge: {'else' if is_else else 'end'}' outside a block")
        elif is_else:
            stack[-1] = not stack[-1]
        else:
            stack.pop()
    if stack:
        raise ValueError(f"{len(stack)} block(s) without '# evoforge: end'")
    return "".join(out)
