"""Exported kernels kept as records: a genome and the template version that rendered it, re-rendered on demand.

A benchmark's exported kernel (``evoforge best --export``) is the template's rendering of one genome plus the
export's header and call-signature code. Instead of a copy of that file, ``benchmarks/results/`` keeps a record
(``<name>-kernel.json``): the genome, the task's causality and head size, the template version (the git commit
whose ``src/evoforge/kernels/flash_attention.py``, and ``flash_attention.tmpl.py`` beside it where that commit has
one, rendered it), the export format with its header verbatim, and the SHA-256 of the file it replaces.
``render_record`` renders that template version (read from the repository's history with ``git show``, imported
as a module of its own: the old template modules import nothing of evoforge) and checks the digest, so the bytes
are the ones that ran. ``evoforge bench render RECORD.json --out kernel.py`` writes the file.

``record_for`` makes a record from an exported file: it tries the template's versions, newest first, and keeps
the first whose rendering of the file's genome is the file's body; a file no version renders is refused.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

TEMPLATE = "src/evoforge/kernels/flash_attention.py"
TEMPLATE_FILE = "src/evoforge/kernels/flash_attention.tmpl.py"
KIND = "evoforge-kernel-record"
# The export format of the recorded files (before the guarded export): the header docstring, the rendered kernel,
# then this block giving the task's call signature.
PLAIN_EPILOGUE = '''

# ---- evoforge export: the task's call signature ----------------------------------------
EvolvedModel = ModelNew
_evolved_model = None


def evolved(q, k, v):
    """Compute the task's forward with the evolved kernel (the module is built once)."""
    global _evolved_model
    if _evolved_model is None:
        _evolved_model = EvolvedModel()
    return _evolved_model(q, k, v)
'''
EPILOGUES = {"plain-v1": PLAIN_EPILOGUE}


class RecordError(Exception):
    """A record that can't be rendered, or a file that can't be recorded. One line."""


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=False)


def repo_of(path: Path) -> Path:
    """The git work tree holding ``path``."""
    proc = _git(path.resolve().parent, "rev-parse", "--show-toplevel")
    if proc.returncode != 0:
        raise RecordError(f"{path} is not inside a git repository: a record renders from the template's history")
    return Path(proc.stdout.strip())


def has_commit(repo: Path, commit: str) -> bool:
    return _git(repo, "cat-file", "-e", f"{commit}^{{commit}}").returncode == 0


_modules: dict[tuple[str, str], Any] = {}


def template_module(repo: Path, commit: str) -> Any:
    """The template module as it was at ``commit``, imported under a name of its own."""
    key = (str(repo), commit)
    if key in _modules:
        return _modules[key]
    source = _git(repo, "show", f"{commit}:{TEMPLATE}")
    if source.returncode != 0:
        raise RecordError(f"the template at {commit[:12]} is not in {repo}'s history (a shallow clone? "
                          f"`git fetch --unshallow`): {source.stderr.strip()}")
    folder = Path(tempfile.mkdtemp(prefix=f"evoforge-template-{commit[:12]}-"))
    (folder / Path(TEMPLATE).name).write_text(source.stdout, encoding="utf-8")
    text = _git(repo, "show", f"{commit}:{TEMPLATE_FILE}")
    if text.returncode == 0:  # from 320a7a3 on the kernel's text is a file beside the module
        (folder / Path(TEMPLATE_FILE).name).write_text(text.stdout, encoding="utf-8")
    name = f"evoforge_template_{commit[:12]}"
    spec = importlib.util.spec_from_file_location(name, folder / Path(TEMPLATE).name)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    _modules[key] = module
    return module


def render_with(module: Any, genome: dict[str, Any], causal: bool, head_dim: int) -> str:
    return module.render(module.FlashGenome.from_dict(genome), causal=causal, head_dim=head_dim)


def render_record(record: dict[str, Any], repo: Path) -> str:
    """The exported file's text, re-rendered from its record, checked against the recorded digest."""
    if record.get("kind") != KIND:
        raise RecordError(f"not a kernel record (kind {record.get('kind')!r}, expected {KIND!r})")
    epilogue = EPILOGUES.get(record["export"])
    if epilogue is None:
        raise RecordError(f"unknown export format {record['export']!r} (known: {', '.join(EPILOGUES)})")
    module = template_module(repo, record["template"]["commit"])
    text = record["header"] + render_with(module, record["genome"], record["causal"], record["head_dim"]) + epilogue
    digest = hashlib.sha256(text.encode()).hexdigest()
    if record.get("sha256") and digest != record["sha256"]:
        raise RecordError(f"re-rendered {record.get('replaces')} differs from the recorded file "
                          f"(sha256 {digest[:12]} != {record['sha256'][:12]})")
    return text


def render_file(path: Path, repo: Path | None = None) -> str:
    return render_record(json.loads(path.read_text()), repo or repo_of(path))


def split_export(text: str) -> tuple[str, str, dict[str, Any], bool, int]:
    """A plain export's header, rendered kernel (epilogue removed), genome, causality and head size."""
    if not text.endswith(PLAIN_EPILOGUE):
        raise RecordError("not a plain export (its call-signature block is not the recorded one)")
    end = text.index('"""\n', 3) + 4  # the header docstring, closing quotes and newline included
    header, body = text[:end], text[end:-len(PLAIN_EPILOGUE)]
    found = re.search(r"^# Rendered by evoforge from genome (.*)$", body, re.M)
    causal = re.search(r"^CAUSAL = (True|False)$", body, re.M)
    head_dim = re.search(r"^HEAD_DIM = (\d+)$", body, re.M)
    if not (found and causal and head_dim):
        raise RecordError("no rendered template kernel in it (genome, CAUSAL and HEAD_DIM lines)")
    return header, body, json.loads(found.group(1)), causal.group(1) == "True", int(head_dim.group(1))


def record_for(path: Path, repo: Path | None = None) -> dict[str, Any]:
    """The record of an exported file: the newest template version whose rendering is the file's kernel."""
    repo = repo or repo_of(path)
    text = path.read_text()
    header, body, genome, causal, head_dim = split_export(text)
    commits = _git(repo, "log", "--format=%H", "--", TEMPLATE).stdout.split()
    for commit in commits:
        try:
            rendered = render_with(template_module(repo, commit), genome, causal, head_dim)
        except Exception:  # a version that doesn't know a field of this genome, or fails to import: not this one
            continue
        if rendered == body:
            return {"kind": KIND, "replaces": path.name, "sha256": hashlib.sha256(text.encode()).hexdigest(),
                    "export": "plain-v1", "template": {"commit": commit, "path": TEMPLATE},
                    "genome": genome, "causal": causal, "head_dim": head_dim, "header": header}
    raise RecordError(f"{path.name}: no version of {TEMPLATE} renders its kernel byte for byte")
