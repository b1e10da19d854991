"""The solution-guiding layer: insights distilled from history, bounded and deduplicated."""

from __future__ import annotations

from evoforge.candidate import Candidate
from evoforge.evaluator.result import EvalResult
from evoforge.llm.guide import MAX_INSIGHTS, SEED_INSIGHTS, context_for, distill, feedback, insights
from evoforge.mutators.base import Individual
from evoforge.tasks import builtin_task
from evoforge.timing import summarize


def individual(name: str, status: str, fitness: float = 0.0, detail: str = "", thought: str | None = None,
               logs: str = "", source: str | None = None) -> Individual:
    cand = Candidate(name=name, source=source or f"class ModelNew: pass  # {name}\n",
                     lineage={"mutator": "llm", "thought": thought} if thought else {"mutator": "llm"})
    result = EvalResult(name=name, hash=cand.hash, status=status, detail=detail, fitness=fitness, logs=logs,
                        best_baseline="sdpa_default" if status == "ok" else None,
                        fitness_mode="graph" if status == "ok" else None)
    if status == "ok":
        result.timing = {"graph": summarize([7.0, 7.1, 6.9], mode="graph", clock="cuda", device="d",
                                            flush_bytes=0)}
        result.kernels = [{"name": "_attn_fwd", "device_us": 6.5, "calls": 1}]
    return Individual(cand, result)


def test_insights_start_from_the_three_levels_and_learn_from_failures_and_wins() -> None:
    history = [
        individual("a", "compile_error", detail="NameError: name 'tl' is not defined", thought="use tl.dot"),
        individual("b", "ok", fitness=1.3, thought="BLOCK_N 128"),
        individual("c", "incorrect", detail="max abs error 0.3 > atol"),
    ]
    texts = [i.text for i in insights(history)]
    assert texts[:3] == SEED_INSIGHTS
    assert any(t == "broke: a -> compile_error: NameError: name 'tl' is not defined (tried: use tl.dot)"
               for t in texts)
    assert any(t.startswith("helped: b ran at 1.30x") and "BLOCK_N 128" in t for t in texts)
    assert any(t.startswith("broke: c -> incorrect") for t in texts)


def test_insights_are_deduplicated_and_bounded() -> None:
    same = [individual(f"x{i}", "compile_error", detail=f"syntax error at line {i}: expected ':'") for i in range(50)]
    wins = [individual(f"w{i}", "ok", fitness=1 + i / 100, thought=f"idea number {chr(65 + i % 26)}{i}")
            for i in range(60)]
    items = insights(same + wins)
    failures = [i for i in items if i.kind == "failure"]
    assert len(failures) == 1  # the same error, blurred line numbers: one insight
    assert len(items) == MAX_INSIGHTS
    successes = [i for i in items if i.kind == "success"]
    assert "w59" in successes[-1].text or any("w59" in s.text for s in successes)  # the best kept


def test_a_baseline_teaches_nothing_and_feedback_carries_the_profile() -> None:
    base = individual("sdpa", "ok", fitness=1.0)
    base.candidate.lineage["baseline"] = True
    assert insights([base]) == insights([])
    good = individual("g", "ok", fitness=1.2)
    assert feedback(good)["kernels"][0]["name"] == "_attn_fwd"
    assert feedback(good)["latency_us"] == {"graph": 7.0}
    bad = individual("b", "runtime_error", detail="boom", logs="line\nRuntimeError: CUDA error: boom")
    assert feedback(bad)["logs"].endswith("RuntimeError: CUDA error: boom")
    assert distill(bad) is not None and "RuntimeError: CUDA error" in distill(bad).text  # type: ignore[union-attr]


def test_the_task_context_describes_inputs_tolerance_and_device() -> None:
    ctx = context_for(builtin_task("attention-tiny"), "cpu", "triton")
    assert ctx.inputs == ["Tensor[1, 2, 64, 32] float16"] * 3
    assert ctx.tolerance == "atol 0.002, rtol 0.002 for float16 outputs"
    assert "class Model" in ctx.reference_source and ctx.device.startswith("CPU")
    assert ctx.language_name == "Triton"
