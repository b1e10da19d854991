"""Captured workloads: the attention calls a real program makes, as a task file evoforge evolves for.

`evoforge capture -- python my_model.py` (or ``with evoforge.capture("captured.toml"):`` around a model's calls)
records every ``scaled_dot_product_attention`` call (:mod:`evoforge.capture_hook`) and writes them here as a
TOML file that `evoforge run --task captured.toml` reads:

- calls an evolved kernel can take (4-D, no mask, no dropout, no gradient, the default scale, SDPA's causal
  mask only where queries and keys are as many) are grouped into **shape classes**: what one kernel is
  specialised for (head dim, dtype, causal, grouped-query or not). A decode step (one query, no mask) is the
  same call with or without a causal mask, so it joins its causal class where there is one;
- within a class, shapes are bucketed (batch, heads, K/V heads, decode/prefill/chunk, the key length's power of
  two; a bucket's shape is the longest it saw), each with its calls and its estimated share of the class's
  attention time. The ``MAX_SHAPES`` largest shares are marked ``evolve = true``: the shapes the run judges a
  kernel on (edit the marks to choose others);
- every other call is listed under ``[[unsupported]]`` with why (it will run SDPA through the export's fallback).

A class becomes one task (a multi-shape task where it has several shapes to evolve): ``captured.toml`` when the
file has one class, ``captured.toml:N`` for class N.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evoforge.capture_hook import Recorder
from evoforge.shapes import multi_shape_task
from evoforge.task import TaskError, TaskSpec
from evoforge.tasks import builtin_task

MAX_SHAPES = 4
_DTYPES = {"float16": "fp16", "bfloat16": "bf16", "float32": "fp32"}
# A nominal device for ranking shapes by their share of attention time only (never reported as a measurement):
# 400 TFLOP/s, 3 TB/s and 5 us per call.
_FLOP_PER_US, _BYTES_PER_US, _LAUNCH_US = 400e6, 3e6, 5.0


@dataclass
class Shape:
    batch: int
    heads: int
    kv_heads: int
    q_len: int
    seq_len: int
    calls: int = 0
    est_us: float = 0.0
    evolve: bool = False


@dataclass
class ShapeClass:
    head_dim: int
    dtype: str  # fp16 / bf16 / fp32
    causal: bool
    shapes: list[Shape] = field(default_factory=list)

    @property
    def calls(self) -> int:
        return sum(s.calls for s in self.shapes)

    def describe(self) -> str:
        gqa = sorted({s.heads // s.kv_heads for s in self.shapes})
        ratio = "" if gqa == [1] else f", grouped-query {'/'.join(f'{r}:1' for r in gqa)}"
        return f"head dim {self.head_dim}, {self.dtype}, {'causal' if self.causal else 'not causal'}{ratio}"


@dataclass
class Workload:
    classes: list[ShapeClass]
    unsupported: dict[str, int]  # reason -> calls
    examples: dict[str, str]  # reason -> one call that had it
    calls: int
    processes: int


def _reason(r: dict[str, Any]) -> str | None:
    """Why no evolved kernel can take this recorded call, or None."""
    q, k, v = r["q"], r["k"], r["v"]
    if not len(q) == len(k) == len(v) == 4:
        return f"{len(q)}-D inputs (kernels take [batch, heads, seq_len, head_dim])"
    if r.get("mask"):
        return "an attention mask"
    if r.get("dropout_p"):
        return "dropout"
    if r.get("grad"):
        return "inputs that require grad (the kernels are forward-only)"
    if r["dtype"] not in _DTYPES:
        return f"dtype {r['dtype']}"
    (b, h, n_q, d), (bk, hk, n_k, dk) = q, k
    if list(k) != list(v) or bk != b or dk != d:
        return "q, k and v of different batch or head dim (or k and v of different shapes)"
    if min(b, h, n_q, hk, n_k, d) == 0:
        return "an empty input"
    if h % hk or (h != hk and not r.get("enable_gqa")):
        return f"{h} query heads over {hk} K/V heads"
    if r.get("scale") is not None and not math.isclose(r["scale"], 1 / math.sqrt(d), rel_tol=1e-6):
        return "a scale other than 1/sqrt(head_dim)"
    if n_q > n_k:
        return "more queries than keys"
    if r.get("is_causal") and n_q != n_k:
        return "is_causal with fewer queries than keys (SDPA aligns that mask to the top left)"
    return None


def _bucket(n_q: int, n_k: int) -> tuple[str, int, int]:
    def pow2(n: int) -> int:
        return 1 << max(n - 1, 0).bit_length()
    if n_q == 1:
        return "decode", 1, pow2(n_k)
    if n_q == n_k:
        return "prefill", 0, pow2(n_k)
    return "chunk", pow2(n_q), pow2(n_k)


def _est_us(s: Shape, head_dim: int, dtype: str, causal: bool) -> float:
    flops = 4 * s.batch * s.heads * s.q_len * s.seq_len * head_dim / (2 if causal and s.q_len == s.seq_len else 1)
    elem = 4 if dtype == "fp32" else 2
    moved = elem * head_dim * (2 * s.batch * s.heads * s.q_len + 2 * s.batch * s.kv_heads * s.seq_len)
    return s.calls * (_LAUNCH_US + max(flops / _FLOP_PER_US, moved / _BYTES_PER_US))


def summarise(records: list[dict[str, Any]]) -> Workload:
    """Group recorded calls into shape classes (largest estimated attention time first) and unsupported calls."""
    unsupported: dict[str, int] = {}
    examples: dict[str, str] = {}
    grouped: dict[tuple[int, str, bool | None, bool], dict[tuple[Any, ...], Shape]] = {}
    for r in records:
        reason = _reason(r)
        if reason is not None:
            unsupported[reason] = unsupported.get(reason, 0) + r["calls"]
            examples.setdefault(reason, f"q {'x'.join(map(str, r['q']))}, k {'x'.join(map(str, r['k']))}, "
                                        f"{r['dtype']}, is_causal={r.get('is_causal')}")
            continue
        (b, h, n_q, d), (_, hk, n_k, _) = r["q"], r["k"]
        causal = True if r.get("is_causal") else (None if n_q == 1 else False)  # None: a decode step, either
        key = (d, _DTYPES[r["dtype"]], causal, h != hk)
        bucket = (b, h, hk, *_bucket(n_q, n_k))
        shapes = grouped.setdefault(key, {})
        s = shapes.setdefault(bucket, Shape(b, h, hk, n_q, n_k))
        s.q_len, s.seq_len, s.calls = max(s.q_len, n_q), max(s.seq_len, n_k), s.calls + r["calls"]
    for d, dtype, causal, gqa in list(grouped):
        if causal is not None:
            continue
        home = next((c for c in (True, False) if (d, dtype, c, gqa) in grouped), True)
        target = grouped.setdefault((d, dtype, home, gqa), {})
        for bucket, s in grouped.pop((d, dtype, None, gqa)).items():
            if bucket in target:
                target[bucket].calls += s.calls
                target[bucket].seq_len = max(target[bucket].seq_len, s.seq_len)
            else:
                target[bucket] = s
    classes = []
    for (d, dtype, causal, _), shapes in grouped.items():
        cls = ShapeClass(d, dtype, bool(causal), list(shapes.values()))
        for s in cls.shapes:
            s.est_us = _est_us(s, d, dtype, cls.causal)
        cls.shapes.sort(key=lambda s: -s.est_us)
        for s in cls.shapes[:MAX_SHAPES]:
            s.evolve = True
        classes.append(cls)
    classes.sort(key=lambda c: -sum(s.est_us for s in c.shapes))
    processes = len({r.get("pid") for r in records})
    return Workload(classes, unsupported, examples, sum(r["calls"] for r in records), processes)


def _toml_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") + '"'


def to_toml(w: Workload, source: str) -> str:
    """The workload as a task file (TOML) for `evoforge run --task`."""
    covered = sum(c.calls for c in w.classes)
    lines = [f"# Attention calls recorded by evoforge capture from {source}.",
             "# Evolve for them: evoforge run --task THIS_FILE (with several classes: THIS_FILE:N for class N).",
             "# A shape marked evolve = true is one the run judges a kernel on; est_share is its share of its",
             "# class's attention time on a nominal GPU (400 TFLOP/s, 3 TB/s, 5 us a call): a ranking, not a",
             "# measurement.",
             f"source = {_toml_str(source)}",
             f"recorded = {_toml_str(datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'))}",
             f"calls = {w.calls}",
             f"covered_calls = {covered}  # calls an evolved kernel can take; the rest are under [[unsupported]]",
             f"processes = {w.processes}",
             "floor = 0.0  # a kernel below this speedup on any evolved shape scores 0 (see evoforge.shapes)"]
    for n, c in enumerate(w.classes, 1):
        total = sum(s.est_us for s in c.shapes) or 1.0
        lines += ["", f"# class {n}: {c.describe()}, {c.calls} calls", "[[class]]", f"head_dim = {c.head_dim}",
                  f"dtype = {_toml_str(c.dtype)}", f"causal = {str(c.causal).lower()}", f"calls = {c.calls}"]
        for s in c.shapes:
            lines += ["", "[[class.shape]]", f"batch = {s.batch}", f"heads = {s.heads}", f"kv_heads = {s.kv_heads}",
                      f"q_len = {s.q_len}", f"seq_len = {s.seq_len}", f"calls = {s.calls}",
                      f"est_share = {s.est_us / total:.3f}", f"evolve = {str(s.evolve).lower()}"]
    for reason, calls in sorted(w.unsupported.items(), key=lambda kv: -kv[1]):
        lines += ["", "[[unsupported]]", f"reason = {_toml_str(reason)}", f"calls = {calls}",
                  f"example = {_toml_str(w.examples[reason])}"]
    return "\n".join(lines) + "\n"


def summary_lines(w: Workload, output: str) -> list[str]:
    """What a capture found, for the console."""
    covered = sum(c.calls for c in w.classes)
    share = f"{100 * covered / w.calls:.0f}%" if w.calls else "0%"
    out = [f"recorded {w.calls} attention calls in {w.processes} process{'es' if w.processes != 1 else ''}; "
           f"{covered} ({share}) can run an evolved kernel"]
    for n, c in enumerate(w.classes, 1):
        evolve = [s for s in c.shapes if s.evolve]
        out.append(f"  class {n}: {c.describe()}: {c.calls} calls, {len(c.shapes)} shapes, "
                   f"{len(evolve)} to evolve on")
    for reason, calls in sorted(w.unsupported.items(), key=lambda kv: -kv[1]):
        out.append(f"  SDPA stays: {calls} call{'s' if calls != 1 else ''} with {reason}")
    if w.classes:
        runs = ([f"evoforge run --task {output}"] if len(w.classes) == 1
                else [f"evoforge run --task {output}:{n}" for n in range(1, len(w.classes) + 1)])
        out.append("next: " + "   ·   ".join(runs))
    return out


def write(records: list[dict[str, Any]], path: str | os.PathLike[str], source: str) -> Workload:
    """Summarise ``records`` and write them to ``path`` as a task file."""
    w = summarise(records)
    Path(path).write_text(to_toml(w, source))
    return w


@contextlib.contextmanager
def capture(path: str | os.PathLike[str] | None = None) -> Iterator[Recorder]:
    """Record every torch.nn.functional.scaled_dot_product_attention call made inside the block (SDPA still
    computes it); at the end, write them to ``path`` as a task file for `evoforge run --task`. Yields the
    Recorder (``records()``: the calls so far)."""
    recorder = Recorder()
    recorder.install()
    try:
        yield recorder
    finally:
        recorder.uninstall()
        if path is not None:
            write([{**r, "pid": os.getpid()} for r in recorder.records()], path, "evoforge.capture()")


def read_toml(path: Path) -> dict[str, Any]:
    """A captured workload's TOML, parsed; TaskError if it can't be read."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ImportError:
            raise TaskError(f"{path}: reading TOML on Python 3.10 needs `pip install tomli`") from None
    try:
        return tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise TaskError(f"{path}: not a readable TOML file ({exc})") from None


def _int(table: dict[str, Any], key: str, where: str) -> int:
    value = table.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise TaskError(f"{where}: `{key}` must be a positive integer, got {value!r}")
    return value


def task_from_capture(path: Path, index: int | None) -> TaskSpec:
    """Class ``index`` (1-based; None: the only one) of a captured workload as a task: one shape, or a
    multi-shape task over the shapes marked evolve = true."""
    if not path.is_file():
        raise TaskError(f"{path}: no such captured workload (write one with `evoforge capture -- python ...`)")
    data = read_toml(path)
    classes = data.get("class")
    if not isinstance(classes, list) or not classes:
        raise TaskError(f"{path}: no [[class]] of calls an evolved kernel can take (see its [[unsupported]] "
                        "tables: those calls run SDPA)")
    if index is None and len(classes) > 1:
        listed = "; ".join(f"{n}: {_describe_table(c)}" for n, c in enumerate(classes, 1))
        raise TaskError(f"{path} holds {len(classes)} shape classes ({listed}); evolve each with --task {path}:N, "
                        "then export them together: evoforge best RUN1 RUN2 ... --export kernel.py")
    index = index or 1
    if not 1 <= index <= len(classes):
        raise TaskError(f"{path}: no class {index} (it has {len(classes)})")
    where = f"{path}, class {index}"
    cls = classes[index - 1]
    shapes = [s for s in cls.get("shape") or [] if s.get("evolve", True)]
    if not shapes:
        raise TaskError(f"{where}: no shape is marked evolve = true")
    if not isinstance(cls.get("causal"), bool) or cls.get("dtype") not in ("fp16", "bf16", "fp32"):
        raise TaskError(f"{where}: needs causal = true/false and dtype = \"fp16\", \"bf16\" or \"fp32\"")
    head_dim = _int(cls, "head_dim", where)
    args = []
    for s in shapes:
        dims = {key: _int(s, key, where) for key in ("batch", "heads", "kv_heads", "q_len", "seq_len")}
        args.append("attention:" + ",".join(f"{key}={val}" for key, val in dims.items())
                    + f",head_dim={head_dim},causal={str(cls['causal']).lower()},dtype={cls['dtype']}")
    specs = [builtin_task(a) for a in args]
    if len(specs) == 1:
        return specs[0]
    floor = data.get("floor", 0.0)
    if not isinstance(floor, (int, float)) or isinstance(floor, bool) or not 0.0 <= floor < 100.0:
        raise TaskError(f"{path}: floor must be a number between 0 and 100, got {floor!r}")
    return multi_shape_task(f"{path}:{index}", specs, float(floor))


def _describe_table(c: dict[str, Any]) -> str:
    return f"head dim {c.get('head_dim')}, {c.get('dtype')}, {'causal' if c.get('causal') else 'not causal'}, " \
           f"{c.get('calls', '?')} calls"
