"""Tasks: a KernelBench-format problem (``Model``, ``get_inputs``, ``get_init_inputs``) plus metadata.

A task crosses process boundaries as a :class:`TaskSpec` (its source text, not a path), so the worker
evaluates exactly what the driver validated. Optional module-level metadata a task file may define:

- ``NAME``: a display name (default: the file's stem);
- ``ATOL`` / ``RTOL``: tolerances for every floating output, or ``TOLERANCES = {"float16": (atol, rtol)}``;
- ``FLOPS`` / ``BYTES_MOVED``: work per call, for throughput and roofline figures;
- ``get_edge_inputs()``: a list of extra input lists, or ``(name, inputs)`` pairs, checked as edge cases.

This module knows the file format only and imports nothing else of the package: the built-in families
(:mod:`evoforge.tasks`), multi-shape tasks (:mod:`evoforge.shapes`) and captured workloads
(:mod:`evoforge.workload`) build on it, and :mod:`evoforge.resolve` turns a ``--task`` argument into any of them.
"""

from __future__ import annotations

import re
import sys
import types
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

# (atol, rtol) by output dtype, judged against a float32 (GPU) or float64 (CPU) reference.
# fp16's atol 2e-3 is the seed's criterion; rtol covers large-magnitude edge cases.
DEFAULT_TOLERANCES: dict[str, tuple[float, float]] = {
    "float16": (2e-3, 2e-3),
    "bfloat16": (1e-2, 1.6e-2),
    "float32": (1e-4, 1e-4),
    "float64": (1e-7, 1e-7),
}


class TaskError(Exception):
    """A task that cannot be used. The message is one line that names the problem."""


@dataclass
class TaskSpec:
    """A task as plain data: the problem's source text and where it came from."""

    name: str
    source: str
    origin: str
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskSpec:
        return cls(**data)


@dataclass
class LoadedTask:
    """A task's module, imported, with its parts looked up and checked."""

    spec: TaskSpec
    module: types.ModuleType
    model_cls: type
    get_inputs: Any
    get_init_inputs: Any
    get_edge_inputs: Any | None
    flops: float | None
    bytes_moved: float | None

    def tolerance(self, dtype: torch.dtype) -> tuple[float, float]:
        name = str(dtype).removeprefix("torch.")
        per_dtype = getattr(self.module, "TOLERANCES", None)
        if isinstance(per_dtype, dict) and name in per_dtype:
            atol, rtol = per_dtype[name]
            return float(atol), float(rtol)
        atol, rtol = DEFAULT_TOLERANCES.get(name, (0.0, 0.0))
        atol = float(getattr(self.module, "ATOL", atol))
        rtol = float(getattr(self.module, "RTOL", rtol))
        return atol, rtol


def import_source(source: str, module_name: str, filename: str, directory: Path | None = None) -> types.ModuleType:
    """Execute ``source`` as a fresh module registered under ``module_name``.

    With ``directory``, the source is first written to ``directory/module_name.py`` and executed
    from there: Triton's ``@jit`` and ``inspect`` need a real file to read a function's source.
    Registering in ``sys.modules`` matters too: torch.compile, Triton and dataclasses look modules up
    by name. Exceptions propagate unchanged; callers classify them.
    """
    if directory is not None:
        path = Path(directory) / f"{module_name}.py"
        path.write_text(source)
        filename = str(path)
    module = types.ModuleType(module_name)
    module.__file__ = filename
    sys.modules[module_name] = module
    code = compile(source, filename, "exec")
    exec(code, module.__dict__)
    return module


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def load_task(spec: TaskSpec, *, check_inputs: bool = True, module_name: str = "evoforge_task",
              directory: Path | None = None) -> LoadedTask:
    """Import a task and check its shape; raise :class:`TaskError` naming the first problem found.

    The module is registered as ``module_name`` (the worker's built-in baseline ``task_model``
    finds the task's Model there)."""
    where = spec.origin
    try:
        module = import_source(spec.source, module_name, where, directory)
    except SyntaxError as exc:
        raise TaskError(f"{where}: syntax error at line {exc.lineno}: {exc.msg}") from None
    except Exception as exc:
        if message := needs_cuda(where, "importing it", exc):
            raise TaskError(message) from None
        raise TaskError(f"{where}: importing the task raised {_one_line(exc)}") from None

    model_cls = getattr(module, "Model", None)
    if model_cls is None:
        raise TaskError(f"{where}: no `Model` class (a KernelBench task defines class Model(nn.Module))")
    if not (isinstance(model_cls, type) and issubclass(model_cls, torch.nn.Module)):
        raise TaskError(f"{where}: `Model` must be a subclass of torch.nn.Module")
    get_inputs = getattr(module, "get_inputs", None)
    if not callable(get_inputs):
        raise TaskError(f"{where}: no `get_inputs()` function (it returns the forward's arguments)")
    get_init_inputs = getattr(module, "get_init_inputs", None)
    if get_init_inputs is None:
        get_init_inputs = list
    elif not callable(get_init_inputs):
        raise TaskError(f"{where}: `get_init_inputs` must be a function")
    get_edge_inputs = getattr(module, "get_edge_inputs", None)
    if get_edge_inputs is not None and not callable(get_edge_inputs):
        raise TaskError(f"{where}: `get_edge_inputs` must be a function")

    task = LoadedTask(
        spec=spec,
        module=module,
        model_cls=model_cls,
        get_inputs=get_inputs,
        get_init_inputs=get_init_inputs,
        get_edge_inputs=get_edge_inputs,
        flops=_number(module, "FLOPS", where),
        bytes_moved=_number(module, "BYTES_MOVED", where),
    )
    if check_inputs:
        check_calls(task)
    return task


def check_calls(task: LoadedTask) -> None:
    """Call get_init_inputs() and get_inputs() once, to report a broken task before any work. On the meta
    device where the task allows it (shapes and dtypes, no data): a KernelBench-size input set is gigabytes,
    too much to make only to throw away. A task that can't make its inputs there is called for real."""
    try:
        with torch.device("meta"):
            init_inputs(task)
            make_inputs(task, seed=0)
    except TaskError:
        init_inputs(task)
        make_inputs(task, seed=0)


def _number(module: types.ModuleType, attr: str, where: str) -> float | None:
    value = getattr(module, attr, None)
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise TaskError(f"{where}: `{attr}` must be a number, got {type(value).__name__}")


def _as_list(value: Any, what: str, where: str) -> list[Any]:
    if not isinstance(value, (list, tuple)):
        raise TaskError(f"{where}: `{what}` must return a list or tuple, got {type(value).__name__}")
    return list(value)


_CUDA_WORDS = re.compile(r"cuda|nvidia driver|nvcc", re.IGNORECASE)


def needs_cuda(where: str, what: str, exc: BaseException, device_type: str | None = None) -> str | None:
    """A clear message when ``exc`` says the task needs CUDA and the evaluation has none (a CPU-only
    machine, or ``--device cpu``), else None."""
    if not _CUDA_WORDS.search(str(exc)):
        return None
    if device_type == "cuda" or (device_type is None and torch.cuda.is_available()):
        return None
    here = "there is no CUDA device here" if not torch.cuda.is_available() else "this evaluation runs on the CPU"
    return f"{where}: this task needs CUDA ({what} raised {_one_line(exc)}), and {here}; run it on a GPU machine"


def _call_list(task: LoadedTask, fn: Any, what: str, seed: int | None = None) -> list[Any]:
    """Call one of the task's functions (seeded first if ``seed`` is given) and check it returns a list."""
    if seed is not None:
        torch.manual_seed(seed)
    try:
        value = fn()
    except Exception as exc:
        if message := needs_cuda(task.spec.origin, f"`{what}`", exc):
            raise TaskError(message) from None
        raise TaskError(f"{task.spec.origin}: `{what}` raised {_one_line(exc)}") from None
    return _as_list(value, what, task.spec.origin)


def init_inputs(task: LoadedTask) -> list[Any]:
    return _call_list(task, task.get_init_inputs, "get_init_inputs()")


def make_inputs(task: LoadedTask, seed: int) -> list[Any]:
    """The task's inputs drawn with ``seed`` (on the CPU, as KernelBench tasks create them)."""
    inputs = _call_list(task, task.get_inputs, "get_inputs()", seed)
    if not any(isinstance(x, torch.Tensor) for x in inputs):
        raise TaskError(f"{task.spec.origin}: `get_inputs()` must return at least one tensor")
    return inputs


def draw_inputs(task: LoadedTask) -> list[Any]:
    """The task's inputs drawn from torch's RNG as it stands (not reseeded)."""
    return _call_list(task, task.get_inputs, "get_inputs()")


def edge_inputs(task: LoadedTask, seed: int) -> list[tuple[str, list[Any]]]:
    """Edge-case input sets: the task's own, else every floating input scaled to large magnitude."""
    where = task.spec.origin
    if task.get_edge_inputs is not None:
        cases = _call_list(task, task.get_edge_inputs, "get_edge_inputs()", seed)
        named = []
        for i, case in enumerate(cases):
            if isinstance(case, tuple) and len(case) == 2 and isinstance(case[0], str):
                named.append((case[0], _as_list(case[1], "get_edge_inputs() entry", where)))
            else:
                named.append((f"edge{i}", _as_list(case, "get_edge_inputs() entry", where)))
        return named
    base = make_inputs(task, seed)
    scaled = [x * 8 if isinstance(x, torch.Tensor) and x.is_floating_point() else x for x in base]
    return [("large-magnitude x8", scaled)]


def task_from_file(path: str | Path) -> TaskSpec:
    """Read a KernelBench-format problem file. Raises TaskError if it can't be read."""
    p = Path(path)
    if not p.exists():
        raise TaskError(f"{p}: no such task file (give a built-in name from `evoforge tasks`, or a .py path)")
    if p.is_dir():
        raise TaskError(f"{p}: is a folder; give one problem file")
    try:
        source = p.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise TaskError(f"{p}: cannot read the task file ({_one_line(exc)})") from None
    return TaskSpec(name=p.stem, source=source, origin=str(p), params={})


def task_display_name(task: LoadedTask) -> str:
    name = getattr(task.module, "NAME", None)
    return str(name) if name else task.spec.name


def tensor_bytes(values: Any) -> int:
    """Bytes held by the tensors in a list (or nested lists/tuples) of values."""
    if isinstance(values, torch.Tensor):
        return values.numel() * values.element_size()
    if isinstance(values, (list, tuple)):
        return sum(tensor_bytes(v) for v in values)
    return 0


def reference_bytes(inputs: list[Any], ref_elem_size: int) -> int:
    """Bytes of the high-precision copies of an input set's floating tensors (the reference's inputs)."""
    return sum(x.numel() * ref_elem_size for x in inputs if isinstance(x, torch.Tensor) and x.is_floating_point())


def check_fits(where: str, needed: int, free: int, device_name: str, what: str) -> None:
    """Raise a TaskError saying how much was needed when ``needed`` bytes don't fit in ``free``."""
    if needed > free:
        gib = 2**30
        raise TaskError(f"{where}: the task does not fit in GPU memory: {what} need {needed / gib:.2f} GiB, "
                        f"{free / gib:.2f} GiB free on {device_name}; make get_inputs() smaller")
