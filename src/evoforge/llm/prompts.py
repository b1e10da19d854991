"""EvoEngineer's prompt-engineering layer: how the model is asked.

One Jinja2 template per operation — ``generate`` (from scratch), ``mutate`` (one parent),
``crossover`` (two parents), ``repair`` (a failed candidate and its error) — plus ``system`` (the
harness's rules and the reply format) and ``_context`` (task, device, insights, elites; included by
the others). The templates ship in ``evoforge/llm/templates``; a directory given with ``--prompts``
overrides any of them by file name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evoforge.task import TaskError

OPERATIONS = ("generate", "mutate", "crossover", "repair")
TEMPLATE_DIR = Path(__file__).parent / "templates"


class Prompts:
    def __init__(self, override_dir: str | Path | None = None) -> None:
        try:
            import jinja2
        except ModuleNotFoundError:
            raise TaskError("the LLM mutator needs Jinja2: pip install 'evoforge[llm]'") from None
        paths = [str(TEMPLATE_DIR)]
        if override_dir is not None:
            override = Path(override_dir)
            if not override.is_dir():
                raise TaskError(f"--prompts {override}: not a directory")
            paths.insert(0, str(override))
        self.env = jinja2.Environment(loader=jinja2.FileSystemLoader(paths), undefined=jinja2.StrictUndefined,
                                      keep_trailing_newline=True, autoescape=False)
        self._jinja = jinja2
        # Fail now, not at the first proposal, if an override does not render.
        for name in ("system", *OPERATIONS):
            try:
                self.env.get_template(f"{name}.j2")
            except jinja2.TemplateError as exc:
                raise TaskError(f"prompt template {name}.j2: {exc}") from None

    def render(self, name: str, **values: Any) -> str:
        try:
            return self.env.get_template(f"{name}.j2").render(**values).strip() + "\n"
        except self._jinja.TemplateError as exc:
            raise TaskError(f"prompt template {name}.j2 failed to render: {exc}") from None

    def messages(self, operation: str, **values: Any) -> list[dict[str, str]]:
        if operation not in OPERATIONS:
            raise ValueError(f"unknown operation {operation!r}")
        return [{"role": "system", "content": self.render("system", **values)},
                {"role": "user", "content": self.render(operation, **values)}]
