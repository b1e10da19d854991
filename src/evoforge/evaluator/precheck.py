"""A static pre-check of candidate source, before any of it runs.

It rejects source that reaches for the harness rather than the task: evoforge's own modules, frame
walking and ``inspect``, ``gc`` scans for live objects, replacing functions of torch, ``time`` or the
comparison helpers, reading secrets from the environment, and processes or sockets. It is a first
filter only: the runtime guards in the worker stay authoritative, and a determined candidate can get
past any static check (``getattr`` with computed names, ``exec`` of strings). It never rejects on
style, only on those reaches.
"""

from __future__ import annotations

import ast

from evoforge.candidate import parse_source
from evoforge.evaluator.sandbox import SECRET_NAME

_FORBIDDEN_MODULES = {
    "evoforge": "imports evoforge's own modules (the harness)",
    "inspect": "uses inspect (frame and source walking)",
    "gc": "uses gc (scanning live objects for tensors)",
    "subprocess": "starts processes (subprocess)",
    "multiprocessing": "starts processes (multiprocessing)",
    "socket": "opens sockets (network)",
    "urllib": "uses the network (urllib)",
    "http": "uses the network (http)",
    "requests": "uses the network (requests)",
    "httpx": "uses the network (httpx)",
}
_FRAME_ATTRS = {"_getframe": "walks the call stack (sys._getframe)", "f_back": "walks the call stack (f_back)",
                "f_globals": "reads another frame's globals", "f_locals": "reads another frame's locals",
                "tb_frame": "walks traceback frames"}
_PROCESS_CALLS = {"system", "popen", "fork", "forkpty", "execv", "execve", "execvp", "execl", "spawnv", "spawnl",
                  "posix_spawn", "kill", "killpg"}
# Roots whose *functions* must not be replaced. torch.backends.* flags are configuration, caught at
# run time when left changed, so they are not flagged here.
_PATCH_ROOTS = {"torch", "time", "F", "nn", "math", "numpy", "np"}


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _is_environ(node: ast.AST) -> bool:
    return _dotted(node) in ("os.environ", "environ")


class _Finder(ast.NodeVisitor):
    def __init__(self) -> None:
        self.problems: list[tuple[int, str]] = []

    def flag(self, node: ast.AST, reason: str) -> None:
        self.problems.append((getattr(node, "lineno", 0), reason))

    def _module(self, node: ast.AST, name: str) -> None:
        root = name.split(".")[0]
        if root in _FORBIDDEN_MODULES:
            self.flag(node, _FORBIDDEN_MODULES[root])

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._module(node, alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.module:
            self._module(node, node.module)
        if node.module == "os":
            for alias in node.names:
                if alias.name in _PROCESS_CALLS:
                    self.flag(node, f"starts or signals processes (os.{alias.name})")
        if node.module == "sys" and any(a.name == "_getframe" for a in node.names):
            self.flag(node, _FRAME_ATTRS["_getframe"])

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr in _FRAME_ATTRS:
            self.flag(node, _FRAME_ATTRS[node.attr])
        name = _dotted(node)
        if name and name.split(".")[0] == "os" and node.attr in _PROCESS_CALLS:
            self.flag(node, f"starts or signals processes ({name})")
        self.generic_visit(node)

    def _assigned(self, target: ast.AST) -> None:
        name = _dotted(target) if isinstance(target, ast.Attribute) else None
        if not name:
            return
        parts = name.split(".")
        if parts[0] in _PATCH_ROOTS and not (parts[0] == "torch" and len(parts) > 1 and parts[1] == "backends"):
            self.flag(target, f"replaces {name} (monkey-patching)")
        if parts[0] == "os" and parts[1:2] == ["environ"]:
            self.flag(target, "writes the environment")

    def visit_Assign(self, node: ast.Assign) -> None:
        for target in node.targets:
            self._assigned(target)
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self._assigned(node.target)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = _dotted(node.func) or ""
        if func in ("setattr",) and node.args:
            owner = _dotted(node.args[0]) or ""
            root = owner.split(".")[0]
            if root in _PATCH_ROOTS and not owner.startswith("torch.backends"):
                self.flag(node, f"replaces an attribute of {owner} (monkey-patching)")
        env_read = func in ("os.getenv", "getenv") or (
            isinstance(node.func, ast.Attribute) and node.func.attr in ("get", "pop", "setdefault")
            and _is_environ(node.func.value))
        if env_read:
            key = node.args[0] if node.args else None
            if not isinstance(key, ast.Constant) or not isinstance(key.value, str):
                self.flag(node, "reads an environment variable chosen at run time")
            elif SECRET_NAME.search(key.value):
                self.flag(node, f"reads the secret {key.value!r} from the environment")
        if isinstance(node.func, ast.Attribute) and node.func.attr in ("items", "keys", "values", "copy") \
                and _is_environ(node.func.value):
            self.flag(node, "reads the whole environment")
        if func in ("dict", "list", "str", "repr", "print") and any(_is_environ(a) for a in node.args):
            self.flag(node, "reads the whole environment")
        self.generic_visit(node)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if _is_environ(node.value) and isinstance(node.ctx, ast.Load):
            key = node.slice
            if not isinstance(key, ast.Constant) or not isinstance(key.value, str):
                self.flag(node, "reads an environment variable chosen at run time")
            elif SECRET_NAME.search(key.value):
                self.flag(node, f"reads the secret {key.value!r} from the environment")
        self.generic_visit(node)


def precheck(source: str) -> str | None:
    """The first reason to reject ``source`` (with its line), or None. Syntax errors are left to the
    compile stage, which reports them as ``compile_error``."""
    try:
        tree = parse_source(source)
    except SyntaxError:
        return None
    finder = _Finder()
    finder.visit(tree)
    if not finder.problems:
        return None
    line, reason = min(finder.problems)
    return f"static pre-check: line {line} {reason}"
