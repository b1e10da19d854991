"""Shared by the benchmark scripts: kernel sources evaluated through evoforge's evaluator (isolated worker,
correctness checks, eager and graph timing) beside SDPA's default, cuDNN and flash backends, one fresh
worker per repeat (source_variants.py, prototypes.py, template_ab.py); and, for scripts that time in
their own process with ``timing.measure`` (floor.py, bandwidth.py, mma_prototype.py), a rendered
kernel's ``ModelNew`` and SDPA's paths as callables."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from evoforge.candidate import Candidate
from evoforge.evaluator import EvalConfig, Evaluator
from evoforge.task import TaskSpec, import_source
from evoforge.tasks import baselines_for

Row = tuple[str, float | None, float | None, float | None, str]  # status, graph us, eager us, max abs err, detail


def time_sources(spec: TaskSpec, sources: dict[str, str], repeats: int) -> tuple[dict[str, Any], dict[str, list[Row]]]:
    """The last repeat's environment and, per name (the sources' and the baselines'), one row per repeat."""
    cands = [Candidate(name=n, source=s, language="triton") for n, s in sources.items()]
    baselines = [b for b in baselines_for(spec) if b.name in ("sdpa_default", "sdpa_cudnn", "sdpa_flash")]
    rows: dict[str, list[Row]] = {}
    env: dict[str, Any] = {}
    for _ in range(repeats):
        report = Evaluator(spec, EvalConfig(device="cuda")).evaluate(cands, baselines).to_dict()
        env = report["env"]
        for r in report["results"]:
            t = r.get("timing") or {}
            rows.setdefault(r["name"], []).append(
                (r["status"], (t.get("graph") or {}).get("median_us"), (t.get("eager") or {}).get("median_us"),
                 r.get("max_abs_err"), (r.get("detail") or "")[:300]))
    return env, rows


def print_rows(rows: dict[str, list[Row]], width: int = 15) -> None:
    for name, reps in rows.items():
        print(f"{name:{width}}", " | ".join(f"{s} graph={g and round(g, 2)} eager={e and round(e, 1)} "
                                            f"err={m and round(m, 5)} {d}" for s, g, e, m, d in reps))


def load_model(source: str, name: str) -> Any:
    """``ModelNew()`` of a kernel source, imported in this process. Triton reads a kernel's source from
    its file, so the file is written to a directory that outlives the run (it is small)."""
    return import_source(source, name, name, Path(tempfile.mkdtemp(prefix=f"evoforge-{name}-"))).ModelNew()


def sdpa_paths(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs: Any) -> dict[str, Callable[[], Any]]:
    """SDPA on these inputs through its cuDNN and flash backends and its default dispatch."""
    sdpa = torch.nn.functional.scaled_dot_product_attention
    backends = torch.nn.attention.SDPBackend

    def pinned(backend: Any) -> Callable[[], Any]:
        def run() -> Any:
            with torch.nn.attention.sdpa_kernel(backend):
                return sdpa(q, k, v, **kwargs)
        return run

    return {"sdpa_cudnn": pinned(backends.CUDNN_ATTENTION), "sdpa_flash": pinned(backends.FLASH_ATTENTION),
            "sdpa_default": lambda: sdpa(q, k, v, **kwargs)}
