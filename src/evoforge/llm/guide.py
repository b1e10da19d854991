"""EvoEngineer's solution-guiding layer: what information guides the next candidate.

Three configurations, as in the paper:

- ``free``: the task context only (the reference ``Model``, shapes, dtype, the GPU and its limits,
  the fitness rule, the harness's rules);
- ``insight``: plus optimisation insights, seeded from the seed's three levels (algorithmic,
  implementation, hardware) and distilled from every evaluated candidate: what helped (speedup and
  the model's own one-line rationale), what broke and why (compile error, max error, the guard that
  fired);
- ``full``: plus a few historical high-fitness solutions with their measured latency, and the
  parent's evaluation feedback including its performance profile (top kernels by device time).

Insights are a bounded, deduplicated list, recomputed from the run's history, so a resumed run sees
the same list.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from evoforge.results import Individual

GUIDES = ("free", "insight", "full")
LANGUAGE_NAMES = {"triton": "Triton", "cuda": "CUDA C++", "torch": "PyTorch", "any": "PyTorch, Triton or CUDA C++"}

SEED_INSIGHTS = [
    "algorithmic: fuse Q·Kᵀ, softmax and ·V into one kernel with an online (running max / running sum) "
    "softmax so the S×S score matrix never reaches global memory; tile over keys; split the keys across "
    "programs (split-KV, then a small combining step) when batch×heads is too small to fill the GPU; "
    "skip fully masked blocks under a causal mask",
    "implementation: accumulate in fp32; use exp2 with log2(e) folded into the scale; load K already "
    "transposed through strides; keep tiles in registers/shared memory; pipeline loads (tl.range "
    "num_stages, TMA descriptors on Hopper); avoid masks when the shape divides the block",
    "hardware: tune BLOCK_M, BLOCK_N, num_warps and num_stages to the GPU's shared memory and registers; "
    "launch overhead dominates small problems, so few kernels and little host-side Python per call win",
]
MAX_INSIGHTS = 24


@dataclass
class TaskContext:
    """What every prompt states about the task and the machine."""

    task_name: str
    reference_source: str
    inputs: list[str]  # "Tensor[1, 8, 512, 64] float16", one per forward() argument
    init_inputs: list[str]
    dtype: str
    device: str  # "NVIDIA H100 80GB HBM3 (sm_90, 132 SMs, 228 KiB shared memory per SM)" or "CPU"
    language: str  # what to write: "triton", "cuda", "torch" or "any"
    tolerance: str  # "atol 2e-3, rtol 2e-3 (float16)"
    fitness_rule: str
    notes: list[str] = field(default_factory=list)

    @property
    def language_name(self) -> str:
        return LANGUAGE_NAMES[self.language]


def describe(value: Any) -> str:
    import torch

    if isinstance(value, torch.Tensor):
        return f"Tensor[{', '.join(str(s) for s in value.shape)}] {str(value.dtype).removeprefix('torch.')}"
    return f"{type(value).__name__} = {value!r}"[:80]


@dataclass
class Insight:
    text: str
    kind: str  # "seed", "success", "failure"
    source: str | None = None


def _first_line(text: str, limit: int = 240) -> str:
    lines = [ln.strip() for ln in (text or "").strip().splitlines() if ln.strip()]
    return (lines[0] if lines else "")[:limit]


def _error_line(ind: Individual) -> str:
    """The most telling line of a failure: the detail, else the last error-looking log line."""
    r = ind.result
    detail = _first_line(r.detail)
    errors = [ln.strip() for ln in (r.logs or "").splitlines() if re.search(r"error|Error|exception", ln)]
    if errors and errors[-1][:200] not in detail:
        detail = f"{detail}; {errors[-1][:200]}" if detail else errors[-1][:200]
    return detail or r.status


def distill(ind: Individual) -> Insight | None:
    """One evaluated candidate -> what it teaches (None for a seed with nothing to say)."""
    lineage = ind.candidate.lineage
    tried = lineage.get("thought") or lineage.get("mutation")
    tried = f" (tried: {tried})" if tried and tried != "seed" else ""
    r = ind.result
    if r.ok:
        mode = r.fitness_mode or "eager"
        if r.fitness <= 0:
            return None
        verdict = "helped" if r.fitness >= 1.0 else "was slower than PyTorch"
        return Insight(f"{verdict}: {ind.candidate.name} ran at {r.fitness:.2f}x the best PyTorch path "
                       f"({r.best_baseline}, {mode} mode){tried}", "success", ind.candidate.hash)
    err = f", max abs error {r.max_abs_err:.2e}" if r.status == "incorrect" and r.max_abs_err is not None else ""
    return Insight(f"broke: {ind.candidate.name} -> {r.status}{err}: {_error_line(ind)}{tried}",
                   "failure", ind.candidate.hash)


def _key(text: str) -> str:
    """Dedup key: the insight with names, numbers and hashes blurred."""
    text = re.sub(r"0x[0-9a-f]+|[0-9a-f]{16}|\d+(\.\d+)?(e-?\d+)?", "#", text.lower())
    return re.sub(r"^(helped|broke|was slower than pytorch): \S+", "", text).strip()


def insights(history: list[Individual], limit: int = MAX_INSIGHTS) -> list[Insight]:
    """The seed's three levels plus what the history teaches: the best successes and the most recent
    distinct failures, deduplicated, at most ``limit`` in all."""
    seeds = [Insight(t, "seed") for t in SEED_INSIGHTS]
    # Rank: successes by fitness, failures by recency; of two alike, the better (or newer) stays.
    by_key: dict[str, tuple[float, int, Insight]] = {}
    for order, ind in enumerate(history):
        if ind.candidate.lineage.get("baseline"):
            continue
        found = distill(ind)
        if found is None:
            continue
        score = ind.result.fitness if found.kind == "success" else -1.0
        key = _key(found.text)
        if key not in by_key or (score, order) >= by_key[key][:2]:
            by_key[key] = (score, order, found)
    learned = list(by_key.values())
    room = max(limit - len(seeds), 0)
    successes = sorted((x for x in learned if x[2].kind == "success"), key=lambda x: (-x[0], -x[1]))
    failures = sorted((x for x in learned if x[2].kind == "failure"), key=lambda x: -x[1])
    half = room // 2
    picked = successes[: max(half, room - len(failures))]
    picked += failures[: room - len(picked)]
    return seeds + [x[2] for x in sorted(picked, key=lambda x: x[1])]


def feedback(ind: Individual) -> dict[str, Any]:
    """A parent's evaluation, for the ``full`` configuration and for repair prompts."""
    r = ind.result
    out: dict[str, Any] = {"status": r.status, "detail": _first_line(r.detail, 400)}
    if r.ok:
        out["latency_us"] = {m: round(s.median_us, 2) for m, s in r.timing.items()}
        out["fitness"] = round(r.fitness, 3)
        out["best_baseline"] = r.best_baseline
        out["kernels"] = r.kernels[:5]
    else:
        if r.max_abs_err is not None:
            out["max_abs_err"] = r.max_abs_err
        logs = (r.logs or "").strip()
        out["logs"] = logs[-2000:] if logs else ""
    return out


def device_description(device: str) -> str:
    import torch

    if not device.startswith("cuda"):
        return ("CPU (no GPU on this machine: Triton kernels run in Triton's CPU interpreter, "
                "TRITON_INTERPRET=1, slowly; timings are CPU wall-clock timings)")
    props = torch.cuda.get_device_properties(torch.device(device))
    smem = getattr(props, "shared_memory_per_block_optin", 0)
    smem_text = f", {smem // 1024} KiB shared memory per block" if smem else ""
    return (f"{props.name} (sm_{props.major}{props.minor}, {props.multi_processor_count} SMs, "
            f"{props.total_memory // 2**30} GiB{smem_text})")


def context_for(spec: Any, device: str, language: str) -> TaskContext:
    """The task context of every prompt: the reference source, the inputs as shapes and dtypes, the
    tolerance, the device and the fitness rule."""
    import torch

    from evoforge.task import load_task

    loaded = load_task(spec, check_inputs=False)
    torch.manual_seed(0)
    inputs = list(loaded.get_inputs())
    init = list(loaded.get_init_inputs())
    floating = [x.dtype for x in inputs if isinstance(x, torch.Tensor) and x.is_floating_point()]
    dtype = floating[0] if floating else torch.float32
    atol, rtol = loaded.tolerance(dtype)
    dtype_name = str(dtype).removeprefix("torch.")
    if device.startswith("cuda"):
        rule = ("fitness = latency of the fastest PyTorch path for this task (every SDPA backend, FlexAttention, "
                "torch.compile, the task's Model, timed live in the same process) / your latency; latencies are "
                "medians of CUDA-event timings of CUDA-graph replays with a cold L2; 0 if incorrect. Higher is "
                "better; above 1.0 beats PyTorch.")
    else:
        rule = ("fitness = latency of the fastest PyTorch path for this task (timed live in the same process) / "
                "your latency, wall-clock on the CPU; 0 if incorrect.")
    return TaskContext(
        task_name=spec.name, reference_source=spec.source, inputs=[describe(x) for x in inputs],
        init_inputs=[describe(x) for x in init], dtype=dtype_name, device=device_description(device),
        language=language, tolerance=f"atol {atol:g}, rtol {rtol:g} for {dtype_name} outputs", fitness_rule=rule,
    )
