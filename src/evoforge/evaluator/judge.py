"""The judge: everything that decides a score, in a process where no candidate code ever runs.

An evaluation of one task (:class:`Evaluator`) goes like this, all in the driver's process:

1. **Inputs and references.** The task is loaded here. Seeds are drawn here (never written anywhere a
   worker can read), inputs are made here when they are needed (on the device), and the reference
   output of every input set is computed here, in float64 on a CPU and float32 on a GPU, from the
   judge's own copy of the inputs. References are kept in host memory and never shared.
2. **One worker per entry.** Every candidate and every baseline gets its own worker process
   (:mod:`evoforge.evaluator.process`), so no entry can reach another's code. The judge shares with
   all of them one pool of input/output slots (:mod:`evoforge.evaluator.channel`).
3. **Checks.** For each check case the judge writes the inputs into a slot, poisons the slot's outputs
   (NaN), asks the worker to call the model on that slot, and compares what the slot then holds with
   its reference. It also checks that the inputs are unchanged. A problem whose one input set is over
   :data:`evoforge.evaluator.memory.RESIDENT_INPUT_LIMIT` keeps no case's inputs between checks: each case
   keeps its seed, and its inputs are re-drawn (bitwise the same) on the device for the check, then freed.
4. **Timing.** Blocks of calls, interleaved across entries in alternating order (see
   :func:`evoforge.timing.round_orders`). Before each block every slot the block uses gets fresh values
   from a fresh seed, and its outputs are poisoned; so no two calls of a block see the same input, and
   no value is ever seen twice. After each block the judge compares a random sample of the block's
   outputs with their references (a call the worker cannot tell from a check), and checks the latencies
   the worker reports against its own clock: the wall time of the whole block, from request to reply,
   less the per-call overhead it measures for the baselines. A disagreement beyond noise is
   ``rejected``. In graph mode the judge checks the captured graph itself: fresh inputs in its input
   slots, one replay, outputs compared.
5. **Verdict.** Statistics are computed here from the raw latencies; fitness by
   :func:`evoforge.fitness.score`, every entry in the same mode.

A worker's replies are data. A failure it reports can only fail its own entry; nothing it says can
make an entry ``ok``.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import math
import os
import random
import shutil
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from evoforge.cache import cache_root, warm_bytecode
from evoforge.candidate import Candidate
from evoforge.evaluator import guards, sandbox
from evoforge.evaluator.channel import Layout, SharedPool, views
from evoforge.evaluator.compare import compare, nondeterminism, worst
from evoforge.evaluator.config import EvalConfig, EvalReport, EvaluatorError
from evoforge.evaluator.process import KEPT, SPARES, WorkerLost, WorkerProcess, spare_key, worker_env
from evoforge.fitness import combine, fitness_mode, score
from evoforge.results import STATUSES, CaseCheck, EvalResult
from evoforge.shapes import is_multi, shape_specs
from evoforge.task import (
    TaskError,
    TaskSpec,
    draw_inputs,
    edge_inputs,
    init_inputs,
    load_task,
    make_inputs,
    needs_cuda,
    tensor_bytes,
)
from evoforge.timing import TimingConfig, cpu_l2_bytes, round_orders, summarize

_FAILURES = set(STATUSES) - {"ok"}
# The judge's clock check: unreported time per call tolerated beyond the baselines' overhead, in us and as
# a share of the reported latency, by (on a GPU, mode). An eager rep's overhead (flush, two device
# synchronisations, the output's copy to the host) is large and noisy under the H200 machines' gVisor: an
# honest candidate measured more than 2 us over the baselines there, so eager allows 20 us or half the
# latency. A graph block's overhead is spread over its 40 calls: 2 us or a quarter held for every
# candidate of the H200 runs.
_ABSOLUTE = {(True, "graph"): 2.0, (True, "eager"): 20.0, (False, "graph"): 2000.0, (False, "eager"): 2000.0}
_RELATIVE = {(True, "graph"): 0.25, (True, "eager"): 0.5, (False, "graph"): 2.0, (False, "eager"): 2.0}
_REPORTED = {}  # sandbox layers already announced by this process: once per process is enough


@dataclass
class _Entry:
    candidate: Candidate
    role: str
    worker: WorkerProcess | None = None
    result: EvalResult | None = None  # set once the entry has failed (or at the end)
    checks: list[dict[str, Any]] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    samples: dict[str, list[float]] = field(default_factory=dict)
    overheads: dict[str, list[float]] = field(default_factory=dict)  # judge's wall minus reported, per call
    timing_errors: dict[str, str] = field(default_factory=dict)
    kernels: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    outputs_seen: list[tuple[Any, ...]] = field(default_factory=list)  # fingerprints of correct outputs
    hidden: bool = False  # the clock's reference of an evaluation without baselines: timed, not reported
    fresh: bool = False  # reloaded into a fresh worker by the clock check's third look

    @property
    def keeps_worker(self) -> bool:
        """A baseline's worker is kept for the next evaluation of the task; the clock's hidden reference, like
        a candidate, gets a fresh one that is closed after."""
        return self.role == "baseline" and not self.hidden

    @property
    def name(self) -> str:
        return self.candidate.name

    @property
    def alive(self) -> bool:
        return self.result is None

    def job(self) -> dict[str, Any]:
        c = self.candidate
        return {"name": c.name, "source": c.source, "hash": c.hash, "language": c.language, "role": self.role}


class Evaluator:
    """Evaluate candidates against a task, beside the task's baselines, each in a worker of its own."""

    def __init__(self, task: TaskSpec, config: EvalConfig | None = None,
                 progress: Callable[[str], None] | None = None, cancel: threading.Event | None = None) -> None:
        self.task = task
        self.config = config or EvalConfig()
        self.progress = progress or (lambda message: None)
        self.cancel = cancel  # set from another thread: running workers are killed, EvaluatorError raised

    def evaluate(self, candidates: list[Candidate], baselines: list[Candidate] = ()) -> EvalReport:  # type: ignore[assignment]
        if is_multi(self.task):
            return self._evaluate_shapes(candidates, baselines)
        entries = [_Entry(c, "candidate") for c in candidates] + [_Entry(b, "baseline") for b in baselines]
        if not entries:
            raise ValueError("nothing to evaluate")
        if candidates and not baselines:
            # The clock check needs an honest reference for the time a worker spends outside its reported
            # latencies (copies, synchronisation, the channel): with no baselines, the task's own Model,
            # timed like one and left out of the report (the candidates are not ranked against it); a worker of
            # its own, started fresh and closed after, as a candidate's.
            from evoforge.tasks import TASK_MODEL_SOURCE

            reference = Candidate(name="clock-reference", source=TASK_MODEL_SOURCE, lineage={"baseline": True})
            if reference.name not in {c.name for c in candidates}:
                entries.append(_Entry(reference, "baseline", hidden=True))
        names = [e.name for e in entries]
        if len(set(names)) != len(names):
            raise ValueError(f"entry names must be unique: {names}")
        network, writes = self.isolated_network(), self.restricted_writes()
        self._announce_sandbox()
        session = _Session(self, entries, network, writes)
        try:
            return session.run()
        finally:
            session.close()

    def _evaluate_shapes(self, candidates: list[Candidate], baselines: list[Candidate]) -> EvalReport:
        """A multi-shape task: every shape evaluated on its own, folded by evoforge.fitness.combine."""
        specs = shape_specs(self.task)
        reports = []
        for i, spec in enumerate(specs):
            self.progress(f"shape {i + 1}/{len(specs)}: {spec.name}")
            reports.append(Evaluator(spec, self.config, self.progress, self.cancel).evaluate(candidates, baselines))
        names = [s.name for s in specs]
        env = {**reports[0].env, "shapes": names}
        profile: dict[str, float] = {}
        for rep in reports:
            for kind, seconds in rep.profile.items():
                profile[kind] = profile.get(kind, 0.0) + seconds
        return EvalReport(results=combine([r.results for r in reports], names, float(self.task.params.get("floor", 0))),
                          env=env, seeds=[s for r in reports for s in r.seeds], workers=sum(r.workers for r in reports),
                          profile=profile)

    def precompile(self, candidates: list[Candidate]) -> dict[str, Any]:
        """Compile the Triton kernels of ``candidates`` without running them, in a worker of its own
        (same sandbox and limits): inputs stay on the CPU and every Triton launch becomes a warm-up
        (compile only), so nothing runs on the GPU and a timing worker on it is undisturbed. The compiled
        kernels land in Triton's on-disk cache, where the workers that check and time these candidates
        find them. Best effort: whatever fails here is compiled (and judged) by those workers.
        Returns counts: kernels compiled, entries compiled/failed/skipped, and the worker's seconds."""
        if is_multi(self.task):  # kernels specialise per shape: compile for each
            counts: dict[str, Any] = {}
            for spec in shape_specs(self.task):
                shape = Evaluator(spec, self.config, self.progress, self.cancel)
                for key, value in shape.precompile(candidates).items():
                    if isinstance(value, bool):
                        counts[key] = counts.get(key, True) and value
                    elif isinstance(value, (int, float)):
                        counts[key] = counts.get(key, 0) + value
            return counts
        triton = [c for c in candidates if c.language == "triton"]
        if self.config.sandbox != "none":
            from evoforge.evaluator.precheck import precheck

            triton = [c for c in triton if precheck(c.source) is None]
        if not triton:
            return {"kernels": 0, "compiled": 0, "failed": 0, "skipped": len(candidates)}
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="evoforge-judge-") as tmp:
            task = load_task(self.task, module_name=f"evoforge_judge_{uuid.uuid4().hex}", directory=Path(tmp))
            init, inputs = init_inputs(task), _shapes_of(task)
        env = worker_env(self.config)
        warm_bytecode(env, self.progress)
        worker = WorkerProcess(self.config, env, self.isolated_network(), self.restricted_writes(), self.cancel)
        clean, records = True, []
        try:
            worker.start()
            worker.ready(self.config.startup_timeout_s)
            reply = worker.request({"op": "precompile", "task": self.task.to_dict(),
                                    "device": _worker_device(self.config),
                                    "init_inputs": [encode(x) for x in init], "inputs": inputs,
                                    "entries": [_Entry(c, "candidate").job() for c in triton],
                                    "compile_timeout_s": self.config.compile_timeout_s},
                                   self.config.compile_timeout_s * len(triton), "precompile")
            records = [r for r in reply.get("records", []) if isinstance(r, dict)]
        except WorkerLost:
            clean = False
        finally:
            worker.close()
        compiled = sum(r.get("status") == "compiled" for r in records)
        kernels = sum(r["kernels"] for r in records if isinstance(r.get("kernels"), int))
        return {"kernels": kernels, "compiled": compiled,
                "failed": len(triton) - compiled, "skipped": len(candidates) - len(triton),
                "worker_seconds": {"precompile": time.monotonic() - started}, "clean": clean and bool(records)}

    # ---------------------------------------------------------------- sandbox layers
    def restricted_writes(self) -> bool:
        """Whether workers' writes are confined (Landlock); raises for strict without it."""
        return self._layer(sandbox.write_restriction_unavailable, "cannot confine workers' writes here")

    def isolated_network(self) -> bool:
        """Whether workers get a network namespace of their own; raises for strict without one."""
        return self._layer(sandbox.network_isolation_unavailable, "no network isolation here")

    def _layer(self, unavailable: Callable[[], str | None], refusal: str) -> bool:
        """Whether a sandbox layer applies: never with ``none``; where ``unavailable()`` says it can't,
        skipped with ``basic`` (and said so) and refused with ``strict``."""
        if self.config.sandbox not in sandbox.SANDBOXES:
            choices = ", ".join(sandbox.SANDBOXES)
            raise EvaluatorError(f"unknown sandbox {self.config.sandbox!r} (choose from {choices})")
        if self.config.sandbox == "none":
            return False
        reason = unavailable()
        if reason and self.config.sandbox == "strict":
            raise EvaluatorError(f"--sandbox strict: {refusal}: {reason}")
        return reason is None

    def _announce_sandbox(self) -> None:
        """``basic`` runs without the layers this machine lacks: say which, once per process."""
        if self.config.sandbox != "basic":
            return
        missing = sandbox.missing_layers()
        key = tuple(missing)
        if missing and key not in _REPORTED:
            _REPORTED[key] = True
            self.progress("sandbox basic: running without " + "; ".join(missing)
                          + " (--sandbox strict refuses to run without them)")


# -------------------------------------------------------------------- one evaluation
class _Session:
    """One evaluation: the judge's state (task, cases, pool, workers) for one call of evaluate()."""

    def __init__(self, evaluator: Evaluator, entries: list[_Entry], network: bool, writes: bool) -> None:
        self.ev = evaluator
        self.cfg = evaluator.config
        self.entries = entries
        self.network, self.writes = network, writes
        self.progress = evaluator.progress
        self.pool: SharedPool | None = None
        self.graph_calls = 0
        self.graph_groups = 0
        self.slot_locks: list[threading.Lock] = []
        self.tmp = Path(tempfile.mkdtemp(prefix="evoforge-judge-"))
        self.profile: dict[str, float] = {}
        self.profile_lock = threading.Lock()
        self.rng = random.SystemRandom()
        self.workers_started = 0
        self.candidate_env: dict[str, str] = {}  # a candidate worker's environment, and the key of its spares
        self.spare_key = ""
        self.redraw = False  # a large problem: no check case's inputs kept, each re-drawn when checked (_redraw)
        self.draw_lock = threading.Lock()  # re-draws seed torch's RNG: one at a time

    def close(self) -> None:
        for entry in self.entries:
            if entry.worker is None:
                continue
            if entry.keeps_worker and entry.alive and entry.worker.alive and self.cfg.keep_baselines:
                KEPT.give(self._keep_key(entry), entry.worker)
            else:
                entry.worker.close()
            entry.worker = None
        if self.pool is not None:
            self.pool.close()
            self.pool = None
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _stage(self, kind: str, since: float) -> float:
        now = time.monotonic()
        self.profile[kind] = self.profile.get(kind, 0.0) + now - since
        return now

    # ---------------------------------------------------------------- the whole evaluation
    def run(self) -> EvalReport:
        started = time.monotonic()
        self.progress("computing reference outputs")
        self._prepare()
        t = self._stage("load", started)
        self._start_workers()  # each worker is checked as soon as it has loaded, several at once
        t = self._stage("startup", t)  # the wall time of starting, loading and checking every worker
        self._time()
        t = self._stage("time", t)
        for entry in self._alive():
            self.progress(f"rechecking {entry.name}")
            self._recheck(entry)
        self._stage("recheck", t)
        results = [self._result(e) for e in self.entries if not e.hidden]
        redact = sandbox.redactor(os.environ)
        _redact(results, redact)
        env = dict(self.env)
        env["sandbox"] = {"mode": self.cfg.sandbox, "network_isolated": self.network, "writes_restricted": self.writes,
                          "process_cap": "watchdog" if sandbox.process_cap_unavailable() else "cgroup",
                          "missing": sandbox.missing_layers() if self.cfg.sandbox != "none"
                          else ["all (--sandbox none)"]}
        env["judge"] = {"pool_slots": self.pool.layout.slots if self.pool else 0, "graph_calls": self.graph_calls,
                        "graph_groups": self.graph_groups,
                        "samples_per_block": self.cfg.samples_per_block, "cpu_threads": self.cfg.cpu_threads,
                        "clock_reference": next((e.name for e in self.entries if e.hidden), None)}
        score(results, fitness_mode(self.cfg.fitness_mode, env.get("device_type"), self.cfg.modes))
        self.profile["wall"] = time.monotonic() - started
        return EvalReport(results=results, env=env, seeds=[self.seed], workers=self.workers_started,
                          profile=self.profile)

    def _alive(self) -> list[_Entry]:
        return [e for e in self.entries if e.alive]

    def _fail(self, entry: _Entry, status: str, detail: str, logs: str = "", collect: bool = True) -> None:
        """Record an entry's failure and end its worker, keeping what the worker printed (``collect``)."""
        status = status if status in _FAILURES else "runtime_error"
        entry.result = self._base_result(entry, status, detail[:2000])
        if entry.worker is not None:
            if collect:
                entry.logs.append(entry.worker.logs())
            entry.worker.close()
            entry.worker = None
        if logs:
            entry.logs.append(logs)

    def _lost(self, entry: _Entry, lost: WorkerLost) -> None:
        self.progress(f"{entry.name}: {lost.status} ({lost.detail})")
        self._fail(entry, lost.status, lost.detail, lost.logs, collect=False)

    # ---------------------------------------------------------------- inputs and references
    def _prepare(self) -> None:
        cfg = self.cfg
        self.device = _judge_device(cfg.device)
        from evoforge import envinfo

        self.env = envinfo.collect(self.device)
        seed = cfg.seed
        self.seed = int(seed) if seed is not None else self.rng.randrange(1, 2**31 - 1)
        # The reference runs in true fp32/fp64: no TF32 anywhere in the judge.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")
        spec = self.ev.task
        self.task = load_task(spec, check_inputs=False, module_name=f"evoforge_judge_{uuid.uuid4().hex}",
                              directory=self.tmp)
        self.init = init_inputs(self.task)
        self.ref_dtype = torch.float64 if self.device.type == "cpu" else torch.float32
        where = spec.origin
        # Weights come from a seed of the task's own (reference and every entry build the same ones), so a
        # baseline worker kept from the last evaluation of this task holds the right ones; the inputs' seed
        # is fresh and secret.
        self.init_seed = int(hashlib.sha256(spec.source.encode()).hexdigest()[:8], 16)
        torch.manual_seed(self.init_seed)
        try:
            base = self.task.model_cls(*self.init)
        except Exception as exc:
            if message := needs_cuda(where, "constructing Model", exc, self.device.type):
                raise TaskError(message) from None
            raise TaskError(f"{where}: constructing Model raised {_one_line(exc)}") from None
        from evoforge.evaluator import memory

        first = self._draw(self.seed)
        self._layout_args(first)
        self.layout_inputs = [(tuple(x.shape), x.dtype) for x in first if isinstance(x, torch.Tensor)]
        # A large problem keeps no case's inputs: each case keeps the recipe of its draw (its seed; an edge case's
        # index among the task's edge sets too) and is re-drawn, bitwise the same, when it is checked.
        self.redraw = memory.redraws(tensor_bytes(first))
        n_random = int(cfg.n_random)
        edge_seed = self.seed + n_random
        shapes = [x.to("meta") if isinstance(x, torch.Tensor) else x for x in first]  # what the memory check reads
        held = [first]  # the generator below takes it, so that a re-drawn case's set is not kept by this frame
        del first

        def drawn() -> Any:
            """(name, recipe, inputs) of every check case, drawn when asked for."""
            for i in range(n_random):
                seed = self.seed + i
                yield f"random seed={seed}", ("random", seed), held.pop() if i == 0 else self._draw(seed)
            if cfg.edge_cases:  # drawn on the judge's device, as the other cases (a large problem's, not on the CPU)
                edges: list[Any] = self._edges(edge_seed)
                for j in range(len(edges)):
                    (name, x), edges[j] = edges[j], None
                    yield name, ("edge", edge_seed, j), x
                    del x

        # Kept cases are all drawn before the memory is checked; re-drawn ones one at a time, each let go of once
        # its reference is computed.
        draws = drawn() if self.redraw else list(drawn())
        if self.device.type == "cuda":
            self._check_memory(shapes, base)
        self.reference = copy.deepcopy(base).to(device=self.device, dtype=self.ref_dtype).eval()
        self.native = base.to(self.device).eval()
        self.cases = []
        for i, (name, recipe, inputs) in enumerate(draws):
            case = self._case(name, inputs, repeat=i == 0, recipe=recipe) if self._fits_layout(inputs) else None
            del inputs
            if case is not None:
                self.cases.append(case)
        if not self.cases:
            raise TaskError(f"{where}: Model's output has NaN/Inf on random inputs")
        if self.redraw:  # a get_inputs() that does not draw from torch's seeded RNG is refused here, not per check
            self._redraw(self.cases[0]).clear()
        self.final_case = self._case("after timing", self._draw(self.seed + 2000), recipe=("random", self.seed + 2000))
        if self.final_case is None:
            raise TaskError(f"{where}: Model's output has NaN/Inf on random inputs")
        outputs = [(tuple(shape), dtype) for shape, dtype in self.cases[0]["expect"]]
        slots = self._pool_slots(self.layout_inputs, outputs)
        self.pool = SharedPool(Layout(self.layout_inputs, outputs, slots), self.device)
        # Fresh inputs are drawn on the judge's device into a staging copy of the pool's input region, and
        # a block's slots reach the pool in one copy.
        self.stage = torch.empty(self.pool.layout.inputs_bytes, dtype=torch.uint8, device=self.device)
        self.stage_inputs = views(self.stage, {**self.pool.layout.to_dict(), "outputs": []})[0]
        # Graph mode: up to 4 graphs of up to 10 calls each, every call on a slot of its own, replayed
        # back to back in a block; the first replay of a block follows the switch from the judge's (or
        # another worker's) GPU work and is a warm-up, not a sample.
        self.graph_calls = min(10, max(slots // 4, 1))
        self.graph_groups = max(1, min(4, slots // self.graph_calls))

    def _draw(self, seed: int | None) -> list[Any]:
        """One input set, made on the judge's device where the task's get_inputs() lets it: drawn with
        ``seed`` (the check cases, whose seeds the report records), or from the judge's RNG stream as it
        stands (``None``: timed calls; seeded per evaluation from a secret seed, and not reseeded per draw,
        which cost more than the draw)."""
        ctx = torch.device(self.device) if self.device.type == "cuda" else contextlib.nullcontext()
        with ctx:
            inputs = draw_inputs(self.task) if seed is None else make_inputs(self.task, seed)
        return self._on_device(inputs)

    def _edges(self, seed: int) -> list[tuple[str, list[Any]]]:
        """The edge-case input sets drawn with ``seed``, on the judge's device (a large problem's, not on the CPU)."""
        with torch.device(self.device) if self.device.type == "cuda" else contextlib.nullcontext():
            edges = edge_inputs(self.task, seed)
        return [(name, self._on_device(x)) for name, x in edges]

    def _redraw(self, case: dict[str, Any]) -> list[torch.Tensor]:
        """A re-drawn case's input tensors, made again from its recipe on the judge's device: the same seed gives
        the same tensors bitwise (checked on a sample kept from the first draw). One draw at a time, and torch's
        RNG is left as it was (the timed calls' inputs come from its stream)."""
        kind, seed, *index = case["recipe"]
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with self.draw_lock, torch.random.fork_rng(devices=devices, device_type="cuda"):
            if kind == "edge":
                edges = self._edges(seed)
                inputs = edges[index[0]][1]
                del edges
            else:
                inputs = self._draw(seed)
        tensors = [x for x in inputs if isinstance(x, torch.Tensor)]
        del inputs
        if not _same_sample(_sample(tensors), case["sample"]):
            raise TaskError(f"{self.task.spec.origin}: get_inputs() drew different inputs from the same seed "
                            f"({case['name']}); its input sets are over {_resident_limit()}, so the judge re-draws "
                            "each check case's inputs from its seed when it checks it: get_inputs() must draw from "
                            "torch's RNG (seeded with torch.manual_seed)")
        return tensors

    @contextlib.contextmanager
    def _inputs_of(self, case: dict[str, Any]) -> Any:
        """A case's input tensors while they are used: kept ones as they are, re-drawn ones made now and let go
        after (the list emptied, so no name the caller holds keeps them)."""
        if "recipe" not in case:
            yield case["inputs"]
            return
        tensors = self._redraw(case)
        try:
            yield tensors
        finally:
            tensors.clear()

    def _on_device(self, inputs: list[Any]) -> list[Any]:
        return [x.to(self.device).contiguous() if isinstance(x, torch.Tensor) else x for x in inputs]

    def _layout_args(self, first: list[Any]) -> None:
        """How the worker builds a call's arguments: tensors from the slot, everything else as data."""
        template, k = [], 0
        for x in first:
            if isinstance(x, torch.Tensor):
                template.append({"slot": k})
                k += 1
            else:
                template.append({"value": encode(x)})
        self.template = template
        self.scalars = [x for x in first if not isinstance(x, torch.Tensor)]
        self.first_shapes = [(tuple(x.shape), x.dtype) for x in first if isinstance(x, torch.Tensor)]

    def _fits_layout(self, inputs: list[Any]) -> bool:
        """Whether an input set (an edge case of the task's own) has the shapes of get_inputs()'s, so that
        it fits the pool's slots; one that doesn't is left out of the checks."""
        shapes = [(tuple(x.shape), x.dtype) for x in inputs if isinstance(x, torch.Tensor)]
        return shapes == self.first_shapes

    def _pool_slots(self, inputs: list[tuple[tuple[int, ...], torch.dtype]],
                    outputs: list[tuple[tuple[int, ...], torch.dtype]]) -> int:
        """As many slots as the configuration asks, within the memory. On a GPU every worker keeps a device copy
        of every slot (and the judge a staging copy of the inputs): the slots' copies take at most a quarter of
        the device's memory, and the whole evaluation (evoforge.evaluator.memory: the judge, every worker with
        its working set, the pool in host memory and in a worker's memory limit) must fit; on a CPU the pool
        takes at most 1 GiB."""
        from evoforge.evaluator import memory

        per_slot = Layout.slot_bytes(inputs, outputs)
        wanted = int(self.cfg.pool_slots)
        if self.device.type != "cuda":
            return max(1, min(wanted, 2**30 // max(per_slot, 1)))
        fp = _with_outputs(self.footprint, per_slot - _spec_bytes(inputs), self.cases[0]["ref"])
        cases = len(self.cases) + 1  # and the final recheck's
        held_on_host = memory.host_references(fp, cases)  # they exist already: available memory excludes them
        host = memory.host_available()
        parallel = _parallel_checks(self.cfg)
        kept = _kept_here(self)
        one = memory.plan(fp, slots=1, workers=len(self.entries), cases=cases, parallel=parallel, kept=kept)
        budget = _device_budget(self.device) + kept * one.worker_device  # kept workers hold theirs already
        quarter = max(1, budget // (4 * (len(self.entries) + 1) * max(per_slot, 1)))
        slots = memory.fit(fp, free=budget, workers=len(self.entries), cases=cases, wanted=min(wanted, quarter),
                           parallel=parallel, host_free=None if host is None else host + held_on_host,
                           worker_limit=self.cfg.memory_limit_mb * 2**20, kept=kept)
        if slots == 0:
            _refuse_memory(self, one, budget)
        return max(slots, 1)

    def _check_memory(self, inputs: list[Any], model: Any) -> None:
        """Refuse, in one line with the numbers and what to change, a task whose evaluation can't fit with one
        slot: the judge and every worker on the device, or the pool within a worker's memory limit. The footprint
        is traced on the meta device (evoforge.evaluator.memory)."""
        from evoforge.evaluator import memory

        self.footprint = memory.measure(model, inputs, self.ref_dtype)
        cases = memory.cases_of(self.cfg.n_random, self.cfg.edge_cases)
        kept = _kept_here(self)
        p = memory.plan(self.footprint, slots=1, workers=len(self.entries), cases=cases,
                        parallel=_parallel_checks(self.cfg), kept=kept)
        budget = _device_budget(self.device) + kept * p.worker_device  # kept workers hold theirs already
        if p.device > budget * (1 - memory.HEADROOM) and _close_other_kept(self):  # a batch's earlier problems'
            budget = _device_budget(self.device) + kept * p.worker_device
        _refuse_memory(self, p, budget)

    def _reference(self, name: str, inputs: list[Any], repeat: bool = False,
                   native: bool = True) -> tuple[list[Any], list[Any]]:
        """The reference outputs for ``inputs`` (computed twice with ``repeat``) and, with ``native``, the native
        Model's outputs (for their dtypes and its own error)."""
        where = self.task.spec.origin
        try:
            hi_inputs = [x.to(self.ref_dtype) if isinstance(x, torch.Tensor) and x.is_floating_point() else x
                         for x in inputs]
            with torch.no_grad():
                ref = guards.tensors_in(self.reference(*hi_inputs))
                again = guards.tensors_in(self.reference(*hi_inputs)) if repeat else None
                like = guards.tensors_in(self.native(*[x.clone() if isinstance(x, torch.Tensor) else x
                                                       for x in inputs])) if native else []
        except Exception as exc:
            if message := needs_cuda(where, "Model", exc, self.device.type):
                raise TaskError(message) from None
            if "out of memory" in str(exc).lower() and self.device.type == "cuda":
                raise TaskError(f"{where}: the task does not fit in GPU memory: its Model ran out of memory on "
                                f"{name} ({_one_line(exc)}); make get_inputs() smaller") from None
            raise TaskError(f"{where}: Model raised on its own inputs ({name}): {_one_line(exc)}") from None
        if again is not None and (diff := nondeterminism(ref, again, like, self.task.tolerance)):
            raise TaskError(f"{where}: Model is nondeterministic: two calls on the same inputs differ ({diff}); "
                            "a reference must give the same output for the same inputs (no random ops in forward)")
        return ref, like

    def _case(self, name: str, inputs: list[Any], repeat: bool = False,
              recipe: tuple[Any, ...] | None = None, transient: bool = False) -> dict[str, Any] | None:
        """One input set with its reference (kept on the host) and the native output's dtypes. With
        ``repeat`` the reference runs twice: a Model that is itself nondeterministic can't be a reference.
        A ``transient`` case (a timed call's, compared once and dropped) keeps its reference where it was
        computed: on an H200 the round trip to the host and back was most of the time a timed block's check
        took (LayerNorm 16×64×256×256: 59 of a batch's 129 s in time.verify).
        A large problem's case (``self.redraw``) keeps, instead of its inputs, the ``recipe`` of their draw
        (``("random", seed)`` or ``("edge", seed, index)``) and a sample of them to check its re-draws by, and
        of its reference only the shapes (meta tensors): :meth:`_referenced` computes it again, on the judge's
        device, from the re-drawn inputs. On an H200, KernelBench's 6 GiB ReLU spent 22 s making its five
        references when each was moved to the host, 0.4 s when none is
        (benchmarks/results/judge-profile-kernelbench-h200.json)."""
        ref, like = self._reference(name, inputs, repeat)
        where = self.task.spec.origin
        if not ref:
            raise TaskError(f"{where}: Model's forward returned no tensor")
        if not all(bool(torch.isfinite(r).all()) for r in ref if r.is_floating_point()):
            if name.startswith("random"):
                raise TaskError(f"{where}: Model's output has NaN/Inf on random inputs")
            return None  # an edge case the reference itself can't represent is no test
        native_err = _native_err(ref, like)
        tensors = [x for x in inputs if isinstance(x, torch.Tensor)]
        redrawn = bool(self.redraw and recipe)
        kept: dict[str, Any] = {"recipe": recipe, "sample": _sample(tensors)} if redrawn else {"inputs": tensors}
        if transient:
            refs = list(ref)
        elif redrawn:  # computed again with its inputs when checked (_referenced): only its shapes kept
            refs = [r.to("meta") for r in ref]
        else:
            refs = [r.cpu() for r in ref]
        return {"name": name, **kept, "ref": refs, "native_err": native_err,
                "expect": [(tuple(t.shape), t.dtype) for t in like]}

    # ---------------------------------------------------------------- workers
    def _start_workers(self) -> None:
        """Start every entry's worker and load its code, several at a time (compiles overlap)."""
        cfg = self.cfg
        if cfg.sandbox != "none":
            from evoforge.evaluator.precheck import precheck

            for entry in self.entries:
                if entry.role == "candidate" and (reason := precheck(entry.candidate.source)):
                    self._fail(entry, "rejected", reason)
        env = worker_env(cfg)
        warm_bytecode(env, self.progress)  # a trusted import run; sandboxed workers only read what it wrote
        baseline_env = _private_caches(env)
        todo = self._alive()
        assert self.pool is not None
        fresh = []
        for entry in todo:
            if entry.keeps_worker and self._rebind(entry):
                continue
            fresh.append(entry)
        kept = len(todo) - len(fresh)
        self.progress(f"starting {len(fresh)} worker(s)" + (f", {kept} kept" if kept else ""))
        for entry in todo:
            entry.started = time.monotonic()
        # Started from this thread: a worker dies with the thread that forked it (PR_SET_PDEATHSIG), and
        # the loading threads below come and go. At most `parallel` workers start, load and check at once,
        # so a worker's load stage is not slowed by a crowd of others importing torch.
        parallel = max(1, min(len(todo), cfg.parallel_workers or (os.cpu_count() or 1)))
        self.slot_locks = [threading.Lock() for _ in range(self.pool.layout.slots)]
        free = threading.Semaphore(parallel)
        index = {id(e): i for i, e in enumerate(todo)}
        waiting: dict[str, str] = {}  # entry -> its stage, while in flight: what a hang is waiting on
        done = [0]

        def say(entry: _Entry, stage: str | None) -> None:
            with self.profile_lock:
                if stage is None:
                    waiting.pop(entry.name, None)
                    done[0] += 1
                else:
                    waiting[entry.name] = stage
                names = ", ".join(f"{n} ({s})" for n, s in list(waiting.items())[:4])
                more = f" +{len(waiting) - 4} more" if len(waiting) > 4 else ""
                self.progress(f"loaded and checked {done[0]}/{len(todo)}" + (f"; at {names}{more}" if names else ""))

        def load_and_check(entry: _Entry, fresh_worker: bool) -> None:
            try:
                if fresh_worker:
                    say(entry, "starting and loading")
                    self._load(entry)
                if entry.alive:
                    say(entry, "checking")
                    started = time.monotonic()
                    self._check(entry, index[id(entry)] % self.pool.layout.slots)  # type: ignore[union-attr]
                    with self.profile_lock:  # checks overlap: their seconds are summed, not a wall time
                        self._stage("check", started)
            finally:
                say(entry, None)
                free.release()

        key = self.spare_key = spare_key(cfg, env, self.network, self.writes)
        self.candidate_env = env
        candidates = 0
        with ThreadPoolExecutor(max_workers=parallel) as pool:
            futures = []
            for entry in todo:
                free.acquire()
                if self.ev.cancel is not None and self.ev.cancel.is_set():
                    free.release()
                    break
                fresh_worker = entry.worker is None
                if fresh_worker:
                    candidates += entry.role == "candidate"
                    try:
                        self._new_worker(entry, baseline_env if entry.role == "baseline" else env)
                    except OSError as exc:
                        free.release()
                        raise EvaluatorError(f"could not start an evaluation worker: {exc}") from None
                futures.append(pool.submit(load_and_check, entry, fresh_worker))
            spares = self._start_spares(key, env, candidates)
            for future in futures:
                future.result()
        self._spares_ready(spares)
        if self.ev.cancel is not None and self.ev.cancel.is_set():
            raise EvaluatorError("evaluation cancelled")

    def _new_worker(self, entry: _Entry, env: dict[str, str]) -> None:
        """Give ``entry`` a worker that has run nothing: for a candidate a spare that is up (started with this
        evaluation's candidate environment), else a new process with ``env``, started (its OSError propagates)."""
        if entry.role == "candidate" and (spare := SPARES.take(self.spare_key)) is not None:
            spare.cancel = self.ev.cancel
            entry.worker = spare
            self.profile["spares_taken"] = self.profile.get("spares_taken", 0) + 1
        else:
            entry.worker = WorkerProcess(self.cfg, env, self.network, self.writes, self.ev.cancel)
            entry.worker.start()
        self.workers_started += 1

    def _start_spares(self, key: str, env: dict[str, str], candidates: int) -> list[WorkerProcess]:
        """Start the next evaluation's candidate workers while this one's load and check (from this
        thread, which outlives them); returns those started."""
        want = self.cfg.spare_workers
        count = candidates if want is None else int(want)
        if count <= 0 or (self.ev.cancel is not None and self.ev.cancel.is_set()):
            return []
        return SPARES.top_up(key, count, lambda: WorkerProcess(self.cfg, env, self.network, self.writes))

    def _spares_ready(self, spares: list[WorkerProcess]) -> None:
        """Wait until the spares started here have come up, so none is still starting while the judge
        times; one that does not come up is dropped (the next evaluation starts its own)."""
        started = time.monotonic()
        for worker in spares:
            try:
                worker.ready(self.cfg.startup_timeout_s)
            except (WorkerLost, EvaluatorError):
                worker.close()
        if spares:
            self._stage("spares.wait", started)

    def _keep_key(self, entry: _Entry) -> str:
        """What a kept baseline worker must share with this evaluation to serve it."""
        cfg = self.cfg
        parts = [self.ev.task.source, entry.candidate.hash, entry.candidate.source, cfg.device, str(cfg.visible_gpu()),
                 cfg.sandbox, str(cfg.cpu_threads), str(cfg.timing.flush_bytes), str(cfg.memory_limit_mb),
                 str(cfg.max_tasks), str(self.init), str(self.template)]
        return hashlib.sha256("\x00".join(parts).encode()).hexdigest()

    def _rebind(self, entry: _Entry) -> bool:
        """Hand a kept baseline worker this evaluation's pool; False (it is closed) if there is none or it
        failed."""
        assert self.pool is not None and self.pool.fd is not None
        worker = KEPT.take(self._keep_key(entry))
        if worker is None:
            return False
        worker.cancel = self.ev.cancel
        try:
            reply = worker.request({"op": "rebind", "pool": self.pool.describe(), "args": self.template},
                                   self.cfg.timeout_s, "load", fds=(self.pool.fd,))
        except WorkerLost:
            worker.close()
            return False
        if reply.get("failure"):
            worker.close()
            return False
        entry.worker = worker
        return True

    def _load(self, entry: _Entry) -> None:
        """Wait for the worker to come up, then have it import and construct the entry's model."""
        cfg = self.cfg
        assert self.pool is not None and entry.worker is not None
        worker = entry.worker
        try:
            since = time.monotonic()
            worker.ready(cfg.startup_timeout_s)
            with self.profile_lock:  # workers come up side by side: summed seconds, not a wall time
                since = self._stage("worker.ready", since)
            limit = cfg.compile_timeout_s if entry.candidate.language == "cuda" else cfg.timeout_s
            stage = "compile" if entry.candidate.language == "cuda" else "load"
            reply = worker.request({
                "op": "load", "device": _worker_device(cfg), "task": self.ev.task.to_dict(), "entry": entry.job(),
                "pool": self.pool.describe(), "args": self.template, "init_inputs": [encode(x) for x in self.init],
                "init_seed": self.init_seed, "sandbox": cfg.sandbox, "cpu_threads": cfg.cpu_threads,
                "flush_bytes": cfg.timing.flush_bytes, "compile_timeout_s": cfg.compile_timeout_s,
            }, limit, stage, fds=(self.pool.fd,) if self.pool.fd is not None else ())
            with self.profile_lock:
                self._stage("worker.load", since)
        except WorkerLost as lost:
            self._lost(entry, lost)
            return
        except EvaluatorError:
            self._fail(entry, "crashed", "evaluation cancelled")
            return
        self._failed_reply(entry, reply)

    def _failed_reply(self, entry: _Entry, reply: dict[str, Any]) -> bool:
        """Record a failure the worker reported (it can only fail its own entry)."""
        failure = _failure_of(reply)
        if failure is None:
            return False
        logs = "\n".join(str(reply[k])[:20_000] for k in ("traceback", "build_log") if reply.get(k))
        self._fail(entry, *failure, logs)
        return True

    def _ask(self, entry: _Entry, message: dict[str, Any], stage: str) -> dict[str, Any] | None:
        """One request to an entry's worker; None (and the entry failed) if it died or reported a failure."""
        if entry.worker is None:
            return None
        try:
            reply = entry.worker.request(message, self.cfg.timeout_s, stage)
        except WorkerLost as lost:
            self._lost(entry, lost)
            return None
        if self._failed_reply(entry, reply):
            return None
        return reply

    # ---------------------------------------------------------------- slots
    def _fill(self, slot: int, tensors: list[torch.Tensor]) -> None:
        assert self.pool is not None
        for dst, x in zip(self.pool.inputs[slot], tensors, strict=True):
            dst.copy_(x)
        self._poison(slot)

    def _poison(self, slot: int) -> None:
        """Fill a slot's outputs with what no honest call leaves there (NaN, or an extreme value)."""
        assert self.pool is not None
        for out in self.pool.outputs[slot]:
            if out.is_floating_point() or out.is_complex():
                out.fill_(float("nan"))
            elif out.dtype == torch.bool:
                out.fill_(True)
            else:
                out.fill_(torch.iinfo(out.dtype).min)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _snapshot(self, slot: int) -> list[torch.Tensor]:
        assert self.pool is not None
        return [o.to(self.device, copy=True) for o in self.pool.outputs[slot]]

    def _inputs_written(self, slot: int, tensors: list[torch.Tensor]) -> str | None:
        """Whether the slot's inputs still hold what the judge wrote (on a GPU the worker calls on device
        copies, so this catches writes into the shared slot itself; writes into the copies are caught by
        the comparison of the outputs of later calls on that slot's fresh values)."""
        assert self.pool is not None
        return guards.inputs_written(tensors, [x.to(self.device) for x in self.pool.inputs[slot]])

    def _judge(self, entry: _Entry, case: dict[str, Any], outs: list[torch.Tensor], written: str | None,
               record: bool = True) -> tuple[str, str] | None:
        """Compare one call's outputs with the case's reference; (status, detail) when it fails."""
        if written:
            return "rejected", f"{case['name']}: {written}"
        device_case = {**case, "ref": [r.to(self.device) for r in case["ref"]]}
        check = compare(outs, device_case, self.task.tolerance)
        if record:
            entry.checks.append(check)
        if not check["ok"]:
            if _fingerprint(outs) in entry.outputs_seen:
                return "rejected", f"{case['name']}: returned the result of an earlier call (result reuse)"
            return "incorrect", f"{case['name']}: {check['detail']}"
        if record:
            entry.outputs_seen.append(_fingerprint(outs))
        return None

    # ---------------------------------------------------------------- checks
    def _check(self, entry: _Entry, slot: int) -> None:
        """Every check case on one slot (its lock held: checks of several entries run at once)."""
        for case in self.cases:
            if not self._check_case(entry, case, slot=slot):
                return

    def _check_case(self, entry: _Entry, case: dict[str, Any], history: bool = True, slot: int | None = None) -> bool:
        assert self.pool is not None
        slot = self.rng.randrange(self.pool.layout.slots) if slot is None else slot
        with self.slot_locks[slot]:
            return self._check_on(entry, case, history, slot)

    def _check_on(self, entry: _Entry, case: dict[str, Any], history: bool, slot: int) -> bool:
        with self._inputs_of(case) as inputs:  # a re-drawn case's: drawn with the slot's lock held, freed after
            self._fill(slot, inputs)
            self._sync()
            reply = self._ask(entry, {"op": "run", "slots": [slot], "history": history}, "check")
            if reply is None:
                return False
            outs, written = self._snapshot(slot), self._inputs_written(slot, inputs)
            verdict = self._judge(entry, self._referenced(case, inputs), outs, written)
        if verdict is not None:
            self._fail(entry, *verdict)
            return False
        return True

    def _recheck(self, entry: _Entry) -> None:
        if not self._check_case(entry, self.final_case, history=False):
            if entry.result is not None and entry.result.status == "incorrect":
                entry.result.status = "rejected"
                entry.result.detail = f"wrong after being timed ({entry.result.detail})"
            return
        if self.device.type == "cuda" and self.cfg.side_stream_guard and entry.role == "candidate":
            assert self.pool is not None
            slot = 0
            with self._inputs_of(self.final_case) as inputs:
                self._fill(slot, inputs)
                self._sync()
            reply = self._ask(entry, {"op": "profile", "slot": slot}, "recheck")
            if reply is None:
                return
            kernels = reply.get("kernels")
            entry.kernels = [k for k in kernels if isinstance(k, dict)][:10] if isinstance(kernels, list) else []
            if reply.get("unavailable"):  # fail closed: a guard that can't run leaves the entry unverified
                self._fail(entry, "rejected",
                           f"unverified: the side-stream guard could not run ({reply['unavailable']})")
            elif reply.get("side_stream"):
                self._fail(entry, "rejected", str(reply["side_stream"]))

    # ---------------------------------------------------------------- timing
    def _time(self) -> None:
        cfg = self.cfg
        modes = tuple(cfg.modes)
        if self.device.type != "cuda":
            modes = tuple(m for m in modes if m == "eager") or ("eager",)
        tcfg: TimingConfig = cfg.timing
        active: list[tuple[_Entry, str, int]] = []
        for mode in modes:
            for entry in self._alive():
                self.progress(f"timing warm-up of {entry.name} ({mode})")
                reps = self._warm(entry, mode, tcfg)
                if reps:
                    active.append((entry, mode, reps))
        rounds = max(tcfg.rounds, 1)
        for r, order in enumerate(round_orders(active, rounds), 1):
            for entry, mode, reps in order:
                if not entry.alive or mode in entry.timing_errors:
                    continue
                self.progress(f"timing round {r}/{rounds}: {entry.name} ({mode})")
                self._block(entry, mode, math.ceil(reps / rounds))
        self._clock_check([(e, m) for e, m, _ in active])

    def _warm(self, entry: _Entry, mode: str, tcfg: TimingConfig) -> int:
        """Prepare a mode (capture the graph), run the warm-up calls (checked like any) and size the reps
        from the time budget; 0 when the mode can't be timed (its error noted)."""
        assert self.pool is not None
        if mode == "graph":
            groups = self._graph_groups()
            self._fresh_block([s for g in groups for s in g])
            self._sync()
            if self._time_request(entry, mode, {"op": "graph_prepare", "groups": groups}) is None:
                return 0
        wall: list[float] = []  # the worker's wall time per call (the judge's own work left out)
        for _ in range(2):  # the graph's first replays, or the first eager calls, pay for lazy set-up
            if self._block(entry, mode, min(max(tcfg.warmup, 1), self.pool.layout.slots), wall=wall) == 0:
                return 0
        per_call = max(wall[-1], 1e-3) if wall else 1e3  # the last: first calls pay for lazy set-up
        reps = int(tcfg.budget_ms * 1000.0 / per_call)
        return min(max(reps, tcfg.min_reps), tcfg.max_reps)

    def _time_request(self, entry: _Entry, mode: str, message: dict[str, Any]) -> dict[str, Any] | None:
        """One timing request; None when it failed. A wrong, rejected or crashed entry fails; any other
        failure means the mode can't be timed (a capture error, say), noted for the ranking to judge."""
        if entry.worker is None:
            return None
        try:
            reply = entry.worker.request(message, self.cfg.timeout_s, f"time {mode}")
        except WorkerLost as lost:
            self._lost(entry, lost)
            return None
        if (failure := _failure_of(reply)) is None:
            return reply
        if failure[0] in ("incorrect", "rejected", "crashed"):
            self._failed_reply(entry, reply)
        else:
            entry.timing_errors[mode] = failure[1]
        return None

    def _graph_groups(self) -> list[list[int]]:
        """The slots of each captured graph: disjoint, one slot per call."""
        g = self.graph_calls
        return [list(range(i * g, (i + 1) * g)) for i in range(self.graph_groups)]

    def _fresh_block(self, slots: list[int]) -> dict[int, list[torch.Tensor]]:
        """Fresh inputs for these slots, drawn into the staging buffer and copied to the pool in one copy
        per run of consecutive slots; the slots' outputs poisoned. Returns the judge's copies (valid until
        the next block)."""
        assert self.pool is not None
        sets = {}
        for s in slots:
            for dst, x in zip(self.stage_inputs[s], self._fresh_tensors(), strict=True):
                dst.copy_(x)
            sets[s] = self.stage_inputs[s]
        for first, last in _runs(sorted(slots)):
            a, b = self.pool.layout.input_range(first, last)
            self.pool.base[a:b].copy_(self.stage[a:b])
        for s in slots:
            self._poison(s)
        return sets

    def _fresh_tensors(self) -> list[torch.Tensor]:
        """The tensors of a fresh input set for a timed call."""
        return [x for x in self._draw(None) if isinstance(x, torch.Tensor)]

    def _block(self, entry: _Entry, mode: str, n: int, wall: list[float] | None = None,
               overheads: list[float] | None = None) -> int:
        """Time one entry in one mode, in blocks of fresh inputs, until ``n`` samples (eager: calls after a
        block's first; graph: calls); returns them. With ``wall`` (warm-up), nothing is kept but the wall
        time per call of each block; with ``overheads`` (the clock check's second look), nothing but the
        unreported time per call."""
        assert self.pool is not None
        done = 0
        while done < n and entry.alive and mode not in entry.timing_errors:
            k = self.pool.layout.slots
            if mode == "graph":
                slots = [s for g in self._graph_groups() for s in g]
            else:  # a run of consecutive slots from a random start, so their inputs are one copy
                start = self.rng.randrange(k)
                count = min(n - done + 1, k)  # and the block's first call, a warm-up
                slots = [(start + i) % k for i in range(count)]
            t0 = time.monotonic()
            sets = self._fresh_block(slots)
            self._sync()
            t0 = self._stage("time.draw", t0)
            message = {"op": "graph"} if mode == "graph" else {"op": "run", "slots": slots}
            started = time.perf_counter()
            reply = self._time_request(entry, mode, message)
            wall_us = (time.perf_counter() - started) * 1e6
            t0 = self._stage("time.worker", t0)
            if reply is None:
                return done
            samples = self._samples(reply, mode, len(slots))
            if samples is None:
                self._fail(entry, "rejected", f"the worker's timing report for {mode} mode is malformed")
                return done
            per_call, reported = samples
            # The sample of this block's outputs that the judge checks, chosen after the block ran.
            for s in self.rng.sample(slots, min(self.cfg.samples_per_block, len(slots))):
                outs = self._snapshot(s)
                case = self._case_of(sets[s])
                verdict = self._judge(entry, case, outs, self._inputs_written(s, sets[s]), record=False) \
                    if case is not None else None
                if verdict is not None:
                    self._fail(entry, "rejected", f"wrong on a timed call ({verdict[1]})")
                    return done
            self._stage("time.verify", t0)
            if wall is not None:
                wall.append(wall_us / len(slots))
            elif overheads is not None:
                overheads.append((wall_us - reported) / len(slots))
            else:
                entry.samples.setdefault(mode, []).extend(per_call)
                entry.overheads.setdefault(mode, []).append((wall_us - reported) / len(slots))
            done += len(per_call) if mode == "eager" else len(slots)
        return done

    def _args_of(self, tensors: list[torch.Tensor]) -> list[Any]:
        """A call's arguments as the worker builds them: these tensors in the slots, the task's other values."""
        args, k = [], 0
        for item in self.template:
            if "slot" in item:
                args.append(tensors[k])
                k += 1
            else:
                args.append(self.scalars[len(args) - k])
        return args

    def _case_of(self, tensors: list[torch.Tensor]) -> dict[str, Any] | None:
        return self._case("timed call", self._args_of(tensors), transient=True)

    def _referenced(self, case: dict[str, Any], tensors: list[torch.Tensor]) -> dict[str, Any]:
        """``case`` with its reference: a kept one as it is; a re-drawn one's computed again from ``tensors``
        (its re-drawn inputs) on the judge's device, by the same reference Model (checked deterministic on the
        first case when the references were made)."""
        if "recipe" not in case:
            return case
        ref, _ = self._reference(case["name"], self._args_of(tensors), native=False)
        return {**case, "ref": ref}

    def _samples(self, reply: dict[str, Any], mode: str, n: int) -> tuple[list[float], float] | None:
        """(per-call latencies, total reported microseconds) from a worker's reply, or None if malformed."""
        def number(x: Any) -> float | None:
            return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) \
                and x >= 0 else None

        if mode == "graph":
            pairs, flushes = reply.get("pair_us"), reply.get("flush_us")
            groups = self.graph_groups
            if not (isinstance(pairs, list) and isinstance(flushes, list) and len(pairs) == len(flushes) == groups):
                return None
            p = [number(x) for x in pairs]
            f = [number(x) for x in flushes]
            if any(x is None for x in p + f):
                return None
            per_call = [max(a - b, 0.0) / self.graph_calls for a, b in zip(p, f, strict=True)]  # type: ignore[operator]
            return (per_call[1:] if groups > 1 else per_call), sum(p) + sum(f)  # type: ignore[arg-type]
        times = reply.get("times_us")
        if not isinstance(times, list) or len(times) != n:
            return None
        values = [number(t) for t in times]
        if any(v is None for v in values):
            return None
        clean = [v for v in values if v is not None]
        # The first call of a block follows the switch from the judge's (or another worker's) GPU work: a
        # warm-up, checked like the others but not a sample.
        return (clean[1:] if len(clean) > 1 else clean), sum(clean)

    def _clock_check(self, timed: list[tuple[_Entry, str]]) -> None:
        """Check the latencies each worker reported against the judge's clock.

        Per block, the judge measures the wall time from request to reply; less what the worker reported,
        that leaves the per-call overhead (flushes, synchronisation, the channel). Baselines are PyTorch's
        own code, so their overhead is the honest one; a candidate whose overhead exceeds it by more than
        noise did work the worker's clock did not show (or reported less than it measured). Before it is
        rejected the judge looks again: more blocks of it and of every baseline, alternating, and only
        their overheads count (a machine busy with something else during the first blocks, say, is not
        the candidate's doing; a forgery is there again). If the excess is still there, the judge looks a
        third time, in a fresh process (see _fresh_look): a process's own speed is not its code's doing."""
        for mode in {m for _, m in timed}:
            here = [(e, m) for e, m in timed if m == mode and e.overheads.get(m)]
            suspects = self._unreported(here, {id(e): e.overheads[mode] for e, _ in here}, mode)
            if not suspects:
                continue
            baselines = [e for e, _ in here if e.role == "baseline" and e.alive]
            second: dict[int, list[float]] = {}
            for order in round_orders([*baselines, *(e for e, _ in suspects)], 2):
                for entry in order:
                    self._block(entry, mode, 2 * self.graph_calls if mode == "graph" else 8,
                                overheads=second.setdefault(id(entry), []))
            again = [(e, m) for e, m in here if second.get(id(e)) and (e.role == "baseline" or e.alive)]
            confirmed = {id(e): numbers for e, numbers in self._unreported(again, second, mode)}
            for entry, first in suspects:
                if not entry.alive or (id(entry) not in confirmed and second.get(id(entry))):
                    continue
                later = confirmed.get(id(entry), first)
                fresh = self._fresh_look(entry, mode, {id(b): second[id(b)] for b in baselines if second.get(id(b))})
                if fresh is False or not entry.alive:
                    continue
                extra, reported, allowed = fresh or later
                looks = (f"three times, the last in a fresh process (the first time {first[0]:.1f} us more, the "
                         f"second {later[0]:.1f})" if fresh else f"twice (the first time {first[0]:.1f} us more)")
                self._fail(entry, "rejected", (
                    f"its {mode} timings disagree with the judge's clock: {extra:.1f} us per call more than "
                    f"the baselines' overhead went unreported (reported {reported:.1f} us per call; allowed "
                    f"{allowed:.1f} us), timed {looks}"))

    def _fresh_look(self, entry: _Entry, mode: str, honest: dict[int, list[float]]
                    ) -> tuple[float, float, float] | bool | None:
        """The clock check's third look at a candidate whose excess overhead showed twice: its code loaded
        into a fresh worker process, checked on every case, then timed there again in ``mode`` for as many calls
        as all its rounds had, whose samples replace the first process's. A worker process's speed is partly its own:
        on an H200 (2026-11-30) the same honest code's unreported time per graph call was about 23 us in
        some processes and 33 us in others, whichever code they ran, a step beyond the noise of either.
        The excess is judged against ``honest`` (the baselines' overheads of the second look). Returns
        False when the fresh process clears it, (extra, reported, allowed) when the excess is there again,
        None when no third look can be had (no baseline overhead to judge against, or the entry failed on
        the way). A forgery gains nothing: the samples that count are the fresh process's, and their
        overheads are checked like the first's."""
        baselines = [e for e in self.entries if id(e) in honest]
        if not baselines or entry.role != "candidate":
            return None
        started = time.monotonic()
        if not entry.fresh:  # one fresh process per entry, whichever mode asked first
            self.progress(f"clock check: loading {entry.name} into a fresh process to time it again")
            old, entry.worker = entry.worker, None
            if old is not None:
                entry.logs.append(old.logs())  # the first process's output stays in the entry's logs
                old.close()
            try:
                self._new_worker(entry, self.candidate_env)
            except OSError as exc:
                self._fail(entry, "crashed", f"could not start a fresh worker for the clock check: {exc}")
                return None
            entry.fresh = True
            self._load(entry)
            if entry.alive:
                self._check(entry, 0)
        if not entry.alive:
            return None
        entry.samples[mode], entry.overheads[mode] = [], []
        self.progress(f"clock check: timing {entry.name} ({mode}) again in a fresh process")
        if reps := self._warm(entry, mode, self.cfg.timing):  # as many calls as the rounds timed in all
            self._block(entry, mode, reps)
        self._stage("time.fresh", started)
        if not entry.alive or mode in entry.timing_errors or not entry.overheads.get(mode):
            return None
        timed = [(b, mode) for b in baselines] + [(entry, mode)]
        found = self._unreported(timed, {**honest, id(entry): entry.overheads[mode]}, mode)
        return found[0][1] if found else False

    def _unreported(self, timed: list[tuple[_Entry, str]], overheads: dict[int, list[float]], mode: str
                    ) -> list[tuple[_Entry, tuple[float, float, float]]]:
        """The candidates among ``timed`` whose unreported time per call (``overheads``, by entry) exceeds the
        baselines' by more than noise allows, each with (extra, reported, allowed) in us."""
        honest = [statistics.median(overheads[id(e)]) for e, _ in timed if e.role == "baseline"]
        spread = [_iqr(overheads[id(e)]) for e, _ in timed if e.role == "baseline"]
        if not honest:
            pool = [statistics.median(overheads[id(e)]) for e, _ in timed]
            honest = [min(pool)] if pool else []
        if not honest:
            return []
        base = min(honest)
        noise = max(spread) if spread else 0.0
        found = []
        for entry, _ in timed:
            if not entry.alive or entry.role == "baseline":
                continue
            extra = statistics.median(overheads[id(entry)]) - base
            reported = statistics.median(entry.samples[mode]) if entry.samples.get(mode) else 0.0
            allowed = max(self._clock_tolerance_us(mode), _RELATIVE[self.device.type == "cuda", mode] * reported,
                          3 * noise)
            if extra > allowed:
                found.append((entry, (extra, reported, allowed)))
        return found

    def _clock_tolerance_us(self, mode: str) -> float:
        if self.cfg.clock_tolerance_us is not None:
            return float(self.cfg.clock_tolerance_us)
        return _ABSOLUTE[self.device.type == "cuda", mode]

    # ---------------------------------------------------------------- results
    def _base_result(self, entry: _Entry, status: str, detail: str = "") -> EvalResult:
        c = entry.candidate
        return EvalResult(name=c.name, hash=c.hash, status=status, detail=detail, role=entry.role,
                          language=c.language, labels=c.labels)

    def _result(self, entry: _Entry) -> EvalResult:
        result = entry.result or self._base_result(entry, "ok")
        result.checks = [CaseCheck(**{k: c[k] for k in ("case", "ok", "max_abs_err", "max_rel_err", "detail")})
                         for c in entry.checks]
        errs = worst(entry.checks)
        result.max_abs_err, result.max_rel_err = errs["max_abs_err"], errs["max_rel_err"]
        result.seconds = time.monotonic() - entry.started
        if entry.worker is not None:
            entry.logs.insert(0, entry.worker.logs())
        result.logs = "\n".join(x for x in entry.logs if x).strip()[-self.cfg.log_limit_chars:]
        result.kernels = entry.kernels
        if result.ok:
            clock = "cuda_event" if self.device.type == "cuda" else "perf_counter_ns"
            flush = self.cfg.timing.flush_bytes or 2 * (int(self.env.get("l2_bytes") or 0) if self.device.type == "cuda"
                                                         else cpu_l2_bytes())
            result.timing = {m: summarize(v, mode=m, clock=clock, device=str(self.device), flush_bytes=flush)
                             for m, v in entry.samples.items() if v and m not in entry.timing_errors}
            result.timing_errors = dict(entry.timing_errors)
            if not result.timing:
                result.status = "runtime_error"
                result.detail = "could not be timed: " + ("; ".join(f"{m}: {e}" for m, e in entry.timing_errors.items())
                                                          or "no timing samples")
        return result


# -------------------------------------------------------------------- helpers
def encode(value: Any) -> Any:
    """A task's plain argument as JSON for the worker (tensors as nested lists with their dtype)."""
    if isinstance(value, torch.Tensor):
        return {"tensor": value.detach().cpu().tolist(), "dtype": str(value.dtype).removeprefix("torch.")}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TaskError(f"a task argument of type {type(value).__name__} can't be passed to a worker "
                    "(numbers, strings, lists and tensors can)")


def _shapes_of(task: Any) -> list[Any]:
    """A precompile worker's inputs: each tensor's shape and dtype (it makes uninitialised ones: compiling needs
    no values), every other argument as it is. Drawn on the meta device where the task allows, so a problem's
    gigabytes are never made, nor sent as numbers."""
    try:
        with torch.device("meta"):
            inputs = make_inputs(task, 0)
    except Exception:  # a get_inputs() that can't run on the meta device: draw it for real, once
        inputs = make_inputs(task, 0)
    return [{"empty": list(x.shape), "dtype": str(x.dtype).removeprefix("torch.")} if isinstance(x, torch.Tensor)
            else encode(x) for x in inputs]


def _private_caches(env: dict[str, str]) -> dict[str, str]:
    """A baseline worker's environment: Triton's and Inductor's caches of its own, under evoforge's cache,
    which a candidate's worker (confined to the shared ones where Landlock is available) can't write, so a
    planted cache entry can't slow a baseline down."""
    private = dict(env)
    root = cache_root(env) / "baseline-caches"
    for name, sub in (("TRITON_CACHE_DIR", "triton"), ("TORCHINDUCTOR_CACHE_DIR", "inductor")):
        path = root / sub
        with contextlib.suppress(OSError):
            path.mkdir(parents=True, exist_ok=True)
        private[name] = str(path)
    return private


def _failure_of(reply: dict[str, Any]) -> tuple[str, str] | None:
    """(status, detail) of a failure a worker reported, whatever shape its reply has; None if none."""
    failure = reply.get("failure")
    if not failure:
        return None
    parts = failure if isinstance(failure, list) else [failure]
    status = str(parts[0]) if parts and str(parts[0]) in _FAILURES else "runtime_error"
    detail = str(parts[1])[:2000] if len(parts) > 1 else "failed"
    return status, detail


def _fingerprint(outs: list[torch.Tensor]) -> tuple[Any, ...]:
    """Enough of a call's outputs to recognise them again (result reuse), without keeping them."""
    return tuple((tuple(t.shape), str(t.dtype), float(t.double().sum()), float(t.double().abs().sum()),
                  float(t.flatten()[: 64].double().sum()) if t.numel() else 0.0) for t in outs)


def _runs(values: list[int]) -> list[tuple[int, int]]:
    """Sorted integers as (first, last) runs of consecutive values."""
    runs: list[tuple[int, int]] = []
    for v in values:
        if runs and v == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], v)
        else:
            runs.append((v, v))
    return runs


def _spec_bytes(specs: list[tuple[tuple[int, ...], torch.dtype]]) -> int:
    """Bytes of tensors of these shapes and dtypes."""
    return sum(math.prod(shape) * torch.empty((), dtype=dtype).element_size() for shape, dtype in specs)


_SAMPLE = 4096  # elements of each input tensor a re-drawn case keeps, to check its re-draws by


def _sample(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Up to _SAMPLE evenly spaced elements of each tensor, as raw bytes on the host (NaN compares as itself)."""
    out = []
    for t in tensors:
        flat = t.reshape(-1)
        step = max(1, flat.numel() // _SAMPLE)
        out.append(flat[::step][:_SAMPLE].contiguous().cpu().view(torch.uint8).clone())
    return out


def _same_sample(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(a, b, strict=True))


def _resident_limit() -> str:
    """evoforge.evaluator.memory.RESIDENT_INPUT_LIMIT in words (read when asked: tests lower it)."""
    from evoforge.evaluator import memory

    return f"{memory.RESIDENT_INPUT_LIMIT / 2**20:g} MiB"


def _native_err(ref: list[torch.Tensor], like: list[torch.Tensor]) -> list[float]:
    """The task's own Model, run in its native dtype, sets a floor under the tolerance: a case on which
    the specification itself is off by more than the dtype's atol is judged at twice the Model's error."""
    return [float((n.to(r.dtype) - r).abs().max()) if r.is_floating_point() and n.numel() and n.shape == r.shape
            else 0.0 for n, r in zip(like, ref, strict=False)]


def _iqr(values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q3 - q1


def _judge_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise EvaluatorError(f"device {name}: no CUDA device here (use --device cpu)")
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise EvaluatorError(f"device {name}: only {torch.cuda.device_count()} GPU(s) visible")
        return torch.device("cuda", index)
    if device.type != "cpu":
        raise EvaluatorError(f"device {name}: evoforge evaluates on cpu or cuda")
    return device


def _worker_device(config: EvalConfig) -> str:
    """The worker sees exactly one GPU (pinned through CUDA_VISIBLE_DEVICES), always as cuda:0."""
    if config.device == "cpu":
        return "cpu"
    if config.device == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    return "cuda:0"


def _redact(results: list[EvalResult], redact: Callable[[str], str]) -> None:
    """Blank the driver's secrets out of everything a worker wrote into results (see sandbox.redactor)."""
    for r in results:
        r.detail, r.logs = redact(r.detail), redact(r.logs)
        r.timing_errors = {mode: redact(text) for mode, text in r.timing_errors.items()}
        for check in r.checks:
            check.detail = redact(check.detail)
        for kernel in r.kernels:  # kernel names are the candidate's to choose
            if isinstance(kernel.get("name"), str):
                kernel["name"] = redact(kernel["name"])


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:400]}" if lines else type(exc).__name__


def _device_budget(device: torch.device) -> int:
    """Device bytes an evaluation may plan for: what is free, plus what the judge itself holds (its inputs and
    staging, which a plan counts). Blocks the judge's allocator caches but no longer uses are released first:
    workers, in other processes, can't use them."""
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info(device)
    return int(free + torch.cuda.memory_allocated(device))


def _with_outputs(fp: Any, outputs: int, refs: list[torch.Tensor]) -> Any:
    """A footprint with the outputs the reference actually returned (the traced ones may be a guess)."""
    import dataclasses

    ref_outputs = sum(r.numel() * r.element_size() for r in refs)
    return dataclasses.replace(fp, outputs=outputs, ref_outputs=ref_outputs,
                               working=fp.working if fp.measured else max(fp.working, outputs))


def _parallel_checks(cfg: EvalConfig) -> int:
    """Checks the judge may run at once: one per worker loading at once (see _Session._start_workers)."""
    return max(1, cfg.parallel_workers or (os.cpu_count() or 1))


def _baseline_keys(session: Any) -> set[str]:
    if not session.cfg.keep_baselines:
        return set()
    return {session._keep_key(e) for e in session.entries if e.keeps_worker}


def _kept_here(session: Any) -> int:
    """This evaluation's baselines with a worker kept from the last evaluation: alive, so the device's free
    memory already excludes what they hold, and about to make their new slots' copies beside their old ones."""
    keys = _baseline_keys(session)
    if not keys:
        return 0
    with KEPT.lock:
        return len(keys & set(KEPT.workers))


def _close_other_kept(session: Any) -> bool:
    """Close the kept baseline workers of other tasks (a batch's earlier problems, which it does not return to):
    the device memory they hold is this evaluation's. True when one was closed."""
    keys = _baseline_keys(session)
    with KEPT.lock:
        others = [k for k in KEPT.workers if k not in keys]
    closed = False
    for key in others:
        if (worker := KEPT.take(key)) is not None:
            worker.close()
            closed = True
    return closed


def _refuse_memory(session: Any, plan: Any, budget: int) -> None:
    """Raise the one-line TaskError when ``plan`` does not fit the device (``budget`` bytes) or a worker's limit."""
    from evoforge.evaluator import memory

    where = session.task.spec.origin
    if plan.device > budget * (1 - memory.HEADROOM):
        baselines = sum(e.role == "baseline" for e in session.entries)
        raise TaskError(memory.refusal(where, plan, budget, torch.cuda.get_device_name(session.device), baselines))
    if message := memory.host_refusal(where, plan, session.cfg.memory_limit_mb * 2**20):
        raise TaskError(message)
