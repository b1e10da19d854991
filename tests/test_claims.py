"""Significance everywhere a speedup is claimed (issue 23, item 2): an unchanged PyTorch path is never the
run's best, and a win inside the noise says "not significant" in the console, report.html, fitness.png
and the exported module's docstring."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace

import pytest

from evoforge import claims
from evoforge.candidate import Candidate
from evoforge.cli.output import best_line, progress_line
from evoforge.evaluator.result import EvalResult
from evoforge.mutators.base import Individual, Mutator
from evoforge.report import evidence, export_module, headline, write_report
from evoforge.search import Search, SearchConfig
from evoforge.store import RunStore
from evoforge.timing import TimingStats

SDPA = "import torch\nclass ModelNew(torch.nn.Module):\n    def forward(self, q, k, v):\n        return q\n"
KERNEL = "import torch\nclass ModelNew(torch.nn.Module):\n    def forward(self, q, k, v):\n        return q + 0\n"


def stats(median: float, spread: float) -> TimingStats:
    return TimingStats(mode="eager", clock="perf_counter", device="cpu", reps=10, median_us=median,
                       min_us=median - spread, q1_us=median - spread / 2, q3_us=median + spread / 2,
                       iqr_us=spread, mean_us=median, flush_bytes=0)


def result(cand: Candidate, fitness: float, significant: bool, median: float) -> EvalResult:
    return EvalResult(name=cand.name, hash=cand.hash, status="ok", language=cand.language,
                      timing={"eager": stats(median, 20.0)}, fitness=fitness, fitness_mode="eager",
                      best_baseline="sdpa_flash", significant=significant,
                      speedup={"eager": {"sdpa_flash": fitness}})


def test_the_claimed_fitness_counts_a_win_only_beyond_noise_and_never_pytorchs_own() -> None:
    """What --target and --plateau read."""
    assert claims.claimed_fitness(1.4, significant=True) == 1.4
    assert claims.claimed_fitness(1.4, significant=False) == 1.0  # inside the noise: PyTorch's speed
    assert claims.claimed_fitness(0.7, significant=False) == 0.7  # slower is slower, noise or not
    assert claims.claimed_fitness(1.4, significant=True, pytorch_path=True) == 0.0


def test_a_torch_candidate_with_a_baselines_source_is_a_pytorch_path() -> None:
    cand = Candidate(name="torch-sdpa_default", source=SDPA)
    assert claims.is_pytorch_path(cand.language, cand.hash, None, {cand.hash})
    assert claims.is_pytorch_path("torch", "other", {"kind": "torch", "variant": "flash_bf16"}, set())
    assert not claims.is_pytorch_path("torch", "other", {"kind": "generic"}, {cand.hash})
    assert not claims.is_pytorch_path("triton", cand.hash, None, {cand.hash})  # a kernel is never one


def test_claim_words_and_crown() -> None:
    assert claims.claim(1.24, False) == "not significant: the spreads overlap"
    assert claims.claim(1.24, True) == "faster, significant"
    assert claims.claim(0.9, False) == "not faster than PyTorch"
    assert claims.claim(3.0, True, pytorch_path=True) == claims.PYTORCH_PATH
    assert not claims.beats_pytorch(3.0, True, pytorch_path=True) and not claims.beats_pytorch(1.2, False)
    items = [("torch", 1.24, True), ("kernel", 0.5, False), ("kernel2", 0.4, False)]
    assert claims.crown(items, lambda i: i[1], lambda i: i[2]) == ("kernel", 0.5, False)
    assert claims.crown(items[:1], lambda i: i[1], lambda i: i[2]) == ("torch", 1.24, True)
    assert claims.crown([], lambda i: 0.0, lambda i: False) is None


@pytest.fixture
def noisy_run(tmp_path: Path) -> tuple[RunStore, str]:
    """Issue 23's warm demo: torch-sdpa_default at 1.242x over sdpa_flash (not significant) and an evolved
    kernel at 0.5x; the sdpa_default baseline has the torch candidate's source."""
    store = RunStore(tmp_path / "runs.db")
    run_id = store.create_run({"name": "attention-tiny", "params": {"family": "other"}}, {})
    torch_path = Candidate(name="torch-sdpa_default", source=SDPA, language="torch",
                           genome={"kind": "torch", "variant": "sdpa_default"})
    kernel = Candidate(name="kernel", source=KERNEL, language="torch")
    for cand in (torch_path, kernel):
        store.add_candidate(run_id, cand, 0)
    store.add_evaluation(run_id, result(torch_path, 1.242, False, 62.4), 0)
    store.add_evaluation(run_id, result(kernel, 0.5, False, 150.0), 0)
    for name, source, median in (("sdpa_default", SDPA, 46.1), ("sdpa_flash", SDPA + "# flash\n" + "x = 1\n", 77.5)):
        base = Candidate(name=name, source=source, language="torch")
        store.add_evaluation(run_id, EvalResult(name=name, hash=base.hash, status="ok", role="baseline",
                                                timing={"eager": stats(median, 5.0)}), 0)
    store.update_run(run_id, status="finished", note="reached 1 generations")
    return store, run_id


def test_evidence_never_crowns_an_unchanged_pytorch_path(noisy_run: tuple[RunStore, str]) -> None:
    store, run_id = noisy_run
    data = evidence(store, run_id)
    rows = {r["name"]: r for r in data["candidates"]}
    assert rows["torch-sdpa_default"]["pytorch_path"] and rows["torch-sdpa_default"]["claim"] == claims.PYTORCH_PATH
    assert data["best"]["name"] == "kernel" and data["best"]["claim"] == "not faster than PyTorch"
    assert data["generations"][0]["best_so_far"] == 0.5  # the plot's line follows evolved candidates only
    assert "torch-sdpa_default" not in headline(data["best"])


def test_report_and_export_say_not_significant(noisy_run: tuple[RunStore, str], tmp_path: Path) -> None:
    store, run_id = noisy_run
    rows = store.evaluations(run_id)
    # the evolved kernel wins inside the noise: fitness above 1, spreads overlapping
    kernel = next(r for r, _ in rows if r.name == "kernel")
    kernel.fitness, kernel.significant = 1.1, False
    store.db.execute("DELETE FROM evaluations WHERE run_id = ? AND role = 'candidate' AND result_json LIKE ?",
                     (run_id, '%"name": "kernel"%'))
    store.add_evaluation(run_id, kernel, 0)
    data = evidence(store, run_id)
    assert data["best"]["name"] == "kernel"
    assert headline(data["best"]).endswith("not significant: the spreads overlap; nothing beat PyTorch beyond noise")
    paths = write_report(store, run_id, tmp_path / "rep")
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "not significant" in page and "an unchanged PyTorch path" in page
    assert any(p.name == "fitness.png" for p in paths) or not any(p.suffix == ".png" for p in paths)
    text = export_module(store, run_id)
    assert text.startswith('"""Evolved by evoforge') and "1.100x over sdpa_flash" in text
    assert "not significant" in text.split('"""')[1]


def test_export_of_only_a_pytorch_path_says_so(noisy_run: tuple[RunStore, str]) -> None:
    store, run_id = noisy_run
    store.db.execute("DELETE FROM evaluations WHERE run_id = ? AND result_json LIKE ?",
                     (run_id, '%"name": "kernel"%'))
    data = evidence(store, run_id)
    assert data["best"]["name"] == "torch-sdpa_default"
    assert headline(data["best"]).startswith("no evolved kernel was valid")
    text = export_module(store, run_id)
    assert text.startswith('"""Exported by evoforge') and claims.PYTORCH_PATH in text.split("\n")[0]


class _Nothing(Mutator):
    name = "nothing"

    def seed(self) -> list[Candidate]:
        return []

    def propose(self, parents: list[Individual], population: list[Individual], n: int) -> list[Candidate]:
        return []


def test_the_console_best_line_follows_the_crowned_candidate(noisy_run: tuple[RunStore, str]) -> None:
    store, run_id = noisy_run
    search = Search(store, run_id, _Nothing(random.Random(0)), lambda *a: None, SearchConfig(), random.Random(0))
    search._load()
    assert search.best().candidate.name == "torch-sdpa_default"  # selection still sees it
    assert search.crowned().candidate.name == "kernel"  # reports never crown it
    p = search._progress(0.0, 2, [1.0], "done")
    assert p.best_name == "kernel" and p.best_claim == "not faster than PyTorch"
    final = SimpleNamespace(best_name="kernel", best_fitness=1.1, best_baseline="sdpa_flash", best_latency_us=62.4,
                            best_significant=False, best_claim=claims.claim(1.1, False), valid=2, evaluated=2)
    line = best_line(final)
    assert "not significant" in line and line.endswith("nothing beat PyTorch beyond noise")
    live = SimpleNamespace(generation=0, best_fitness=1.1, best_latency_us=62.4, best_name="kernel", valid=2,
                           evaluated=2, evals_per_min=1.0, slots=1, queue=0, idle_frac=0.0, eta_s=None,
                           best_significant=False)
    assert "1.10× (not significant)" in progress_line(live, 3)
    only_torch = SimpleNamespace(**{**vars(final), "best_name": "torch-sdpa_default",
                                    "best_claim": claims.PYTORCH_PATH})
    assert "no evolved kernel was valid" in best_line(only_torch)
