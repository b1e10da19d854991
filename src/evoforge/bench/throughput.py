"""``evoforge bench throughput``: where a search's time goes, and how many evaluations a minute it makes.

``profile_run`` reads one run from its store: per generation its seconds, the judge's seconds per stage summed
over the generation's workers (``worker.ready``: waiting for a worker to come up, about zero for one started ahead
as a spare; ``worker.load``; ``check``; ``spares_taken`` and ``spares.wait``) beside the separate compile process's
seconds, and the run's evaluations per minute. ``search_profile`` makes one short ``evoforge run`` in a fresh folder
and profiles it. ``executor_configs`` runs the same short evolution once per executor configuration, each from an
empty Triton cache: ``serial`` (compile in the timing worker), ``precompile`` (a separate process compiles the
batch) and ``overlap`` (the next batch compiles while this one is timed), with evaluations per minute (overall and
per slot), the idle share per slot and the mean seconds per batch in each stage. Scaling over GPUs is
``benchmarks/scale.py``'s record.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from statistics import mean
from typing import Any

from evoforge.store import RunStore

CONFIGS = {
    "serial": ["--no-precompile", "--prefetch", "0"],
    "precompile": ["--precompile", "--prefetch", "0"],
    "overlap": ["--precompile", "--prefetch", "1"],
}


def _run(flags: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "evoforge.cli", "run", "--json", *flags], cwd=cwd, env=env,
                          capture_output=True, text=True, check=False)


def profile_run(db: Path, run_id: str) -> dict[str, Any]:
    """One stored run's profile: its environment, evaluations per minute and per generation the stage seconds."""
    store = RunStore(db)
    record = store.run(run_id)
    compiles = {e["generation"]: e for e in store.events(run_id, "precompile")}
    profiles: dict[int, dict] = {}
    for e in store.events(run_id, "profile"):
        profiles.setdefault(e["generation"], e["seconds"])  # a generation's first batch, as before
    generations = []
    for gen in store.events(run_id, "generation"):
        profile = profiles.get(gen["generation"], {})
        compiled = compiles.get(gen["generation"], {})
        generations.append({"generation": gen["generation"], "evaluated": gen["evaluated"],
                            "seconds": gen["seconds"],
                            "worker_stages": {k: round(v, 2) for k, v in profile.items() if k != "slot"},
                            "compile_process_seconds": compiled.get("seconds"),
                            "kernels_compiled": compiled.get("compiled")})
    throughput = store.events(run_id, "throughput")[-1]
    return {"date": record.env.get("date"), "device": record.env, "run": run_id,
            "evals_per_min": throughput["evals_per_min"], "evaluations": throughput["evaluations"],
            "generations": generations}


def search_profile(task: str = "attention-long", generations: int = 3, population: int = 8, seed: int = 0,
                   budget: str | None = None, extra: Iterable[str] = ()) -> dict[str, Any]:
    """One short ``evoforge run`` in a fresh folder, profiled (see profile_run), with its flags and wall time."""
    more = [*(["--budget", budget] if budget else []), *extra]
    with tempfile.TemporaryDirectory(prefix="evoforge-profile-") as tmp:
        started = time.monotonic()
        proc = _run(["--task", task, "--generations", str(generations), "--population", str(population),
                     "--seed", str(seed), *more], Path(tmp))
        wall = time.monotonic() - started
        if proc.returncode not in (0, 1):
            raise RuntimeError(f"evoforge run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        profile = profile_run(Path(tmp) / ".evoforge" / "runs.db", json.loads(proc.stdout)["run"])
    head = {"date": profile.pop("date"), "device": profile.pop("device"), "task": task, "flags": more,
            "run_wall_s": round(wall, 1)}
    profile.pop("run")
    return {**head, **profile}


def profile_lines(profile: dict[str, Any]) -> list[str]:
    lines = [f"gen {g['generation']}: {g['evaluated']} evaluated in {g['seconds']:.1f} s, "
             f"worker {g['worker_stages']}, compile process {g['compile_process_seconds']}"
             for g in profile["generations"]]
    return [*lines, f"{profile['evaluations']} evaluations, {profile['evals_per_min']:.1f}/min"]


def executor_config(name: str, flags: list[str], *, generations: int = 6, population: int = 8, seed: int = 0,
                    extra: Iterable[str] = ()) -> dict[str, Any]:
    """One configuration's short evolution, in a fresh folder with an empty Triton cache."""
    with tempfile.TemporaryDirectory(prefix=f"evoforge-bench-{name}-") as tmp:
        env = {**os.environ, "TRITON_CACHE_DIR": str(Path(tmp) / "triton-cache")}
        proc = _run(["--generations", str(generations), "--population", str(population), "--seed", str(seed),
                     *flags, *extra], Path(tmp), env)
        if proc.returncode not in (0, 1):
            raise RuntimeError(f"{name}: evoforge run failed ({proc.returncode}): {proc.stderr[-2000:]}")
        summary = json.loads(proc.stdout)
        store = RunStore(Path(tmp) / ".evoforge" / "runs.db")
        (throughput,) = store.events(summary["run"], "throughput")
        profiles = [e["seconds"] for e in store.events(summary["run"], "profile")]
        stages = sorted({k for p in profiles for k in p if k != "slot"})
        precompiled = store.events(summary["run"], "precompile")
        record = store.run(summary["run"])
        return {
            "config": name, "flags": flags, "summary": summary, "device": record.env,
            "evals_per_min": throughput["evals_per_min"],
            "evals_per_min_per_slot": throughput["evals_per_min_per_slot"],
            "elapsed_s": throughput["elapsed_s"], "per_slot": throughput["per_slot"],
            "stage_seconds_mean_per_batch": {k: round(mean(p.get(k, 0.0) for p in profiles), 3) for k in stages},
            "precompiled_batches": len(precompiled),
            "precompiled_kernels": sum(e.get("kernels", 0) for e in precompiled),
        }


def executor_configs(names: Iterable[str], *, generations: int = 6, population: int = 8, seed: int = 0,
                     extra: Iterable[str] = ()) -> dict[str, Any]:
    extra = list(extra)
    results = [executor_config(name, CONFIGS[name], generations=generations, population=population, seed=seed,
                               extra=extra) for name in names if name]
    return {"kind": "executor-throughput", "generations": generations, "population": population, "seed": seed,
            "extra_flags": extra, "results": results}


def config_lines(record: dict[str, Any]) -> list[str]:
    return [f"{r['config']:>10}: {r['evals_per_min']:.1f} evals/min ({r['evals_per_min_per_slot']:.1f} per slot), "
            f"stages per batch {r['stage_seconds_mean_per_batch']}, precompiled kernels {r['precompiled_kernels']}"
            for r in record["results"]]
