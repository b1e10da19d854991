"""Wiring for ``evoforge run`` / ``resume``: config, the generation evaluator, mutator and store.

Config comes from ``evoforge.toml`` (a ``[run]`` table) with command-line flags overriding it; the
full resolved config is stored with the run, so ``resume`` continues exactly what was started.

- ``RunConfig``: every setting of a run (``load_config_file``, ``parse_duration``, ``check_device``).
- ``start(config, store)`` / ``resume(store, run_id, overrides)``: check the config and task, record the run
  (or take a stopped run's lease) and ``prepare`` it: the task (``resolve``; its kind's parameters and
  baselines, ``tasks.kind_of``), the mutator (by name from ``registry.MUTATORS``: template, generic, llm,
  mixed, or a plugin's), and the ``GenerationEvaluator`` that measures each batch beside the re-ranked
  baselines (``fitness``) through the ``evaluator``.
- ``session(store, run_id)``: the lease's heartbeat, and how the session ended, around the search.
- ``make_executor`` (by name from ``registry.EXECUTORS``: local or ray) and ``search_for``: the ``search.Search``
  of this session.

The command line (``cli.run``, ``cli.live``) and ``batch.run_batch`` call these in that order; this module
sits above search, mutators, executors, stores and the evaluator, and below nothing but the interface.
"""

from __future__ import annotations

import importlib.util
import os
import random
import re
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from evoforge.candidate import Candidate
from evoforge.evaluator import EvalConfig, EvalReport, Evaluator
from evoforge.executor import Executor, LocalExecutor, RayExecutor, local_slots
from evoforge.fitness import fastest_baselines, fitness_mode
from evoforge.kernels.flash_attention import HardwareLimits
from evoforge.mutators import GenericMutator, MixedMutator, Mutator, TemplateMutator
from evoforge.registry import EXECUTORS, MUTATORS, ExecutorContext, F, MutatorContext, Registry
from evoforge.resolve import resolve_task
from evoforge.results import EvalResult
from evoforge.search import Progress, Search, SearchConfig, restore_rng
from evoforge.store import Store
from evoforge.task import TaskError, TaskSpec, load_task
from evoforge.tasks import baselines_for, kind_of
from evoforge.timing import TimingConfig

# Mutators by name (evoforge.registry.MUTATORS): template, the built-in one (the attention template for
# attention tasks, generic for any other); generic; llm; mixed; and any a plugin registers.


@dataclass
class RunConfig:
    task: str | None = None  # None: "attention" with a GPU, "attention-tiny" without
    generations: int = 10
    population: int = 8
    elites: int = 3
    budget: str | None = None  # wall clock, e.g. "10m", "90s", "1h"
    max_evals: int | None = None
    target_fitness: float | None = None
    plateau: int | None = None
    seed: int = 0
    mutator: str = "template"
    device: str = "auto"
    timeout_s: float = 300.0
    budget_ms: float = 100.0
    keep_baselines: int = 3  # after generation 0, re-time only the fastest baselines each generation
    sandbox: str = "basic"
    # ---- executor (where batches run; see executor.py)
    executor: str = "local"  # local | ray
    address: str | None = None  # ray: "auto" (default) or HOST:PORT of a running cluster
    workers: int | None = None  # slots: CPU workers without a GPU (default 1); at most this many GPUs/Ray tasks
    prefetch: int = 0  # batches proposed ahead of a free slot (their compile overlaps the current timing)
    batch_size: int | None = None  # candidates per batch (a generation goes as several; the budget can cut between)
    problems_at_once: int = 1  # a --task-dir batch: problems run at once, one per GPU (batch.run_in_lanes)
    precompile: bool | None = None  # compile Triton kernels in a separate process first (default: on with CUDA)
    # The LLM mutator (``mutator = "llm"`` or ``"mixed"``); the key is read from the environment only.
    llm_model: str | None = None  # name[:weight][@price_in/price_out], comma-separated for an ensemble
    llm_base_url: str | None = None  # any OpenAI-compatible endpoint; default $OPENAI_BASE_URL or OpenAI's
    llm_api_key_env: str = "OPENAI_API_KEY"
    llm_guide: str = "full"  # free | insight | full (EvoEngineer's solution-guiding configurations)
    llm_language: str = "triton"  # triton | cuda | torch | any
    llm_share: float = 0.5  # with mutator = "mixed": the share of proposals asked of the LLM
    llm_seed_candidates: int = 4  # from-scratch candidates asked for in generation 0
    llm_concurrency: int = 4
    llm_timeout_s: float = 120.0
    llm_retries: int = 4
    llm_temperature: float = 0.7
    llm_reply_tokens: int = 8192
    llm_max_tokens: int | None = None  # budget over the run (input + output tokens)
    llm_max_cost: float | None = None  # budget over the run, by the models' prices
    llm_prompts: str | None = None  # a directory of templates overriding the built-in ones

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TaskError(f"unknown run setting(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        return cls(**data)

    def search_config(self) -> SearchConfig:
        return SearchConfig(generations=self.generations, population=self.population, elites=self.elites,
                            budget_s=parse_duration(self.budget) if self.budget else None,
                            max_evals=self.max_evals, target_fitness=self.target_fitness,
                            plateau=self.plateau, seed=self.seed, later_baselines=self.keep_baselines,
                            batch_size=self.batch_size)


def parse_duration(text: str) -> float:
    """'10m' -> 600.0; also 's', 'h' and plain seconds."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smh]?)\s*", str(text))
    if not match:
        raise TaskError(f"budget {text!r}: expected a duration such as 90s, 10m or 1h")
    value, unit = float(match.group(1)), match.group(2) or "s"
    return value * {"s": 1, "m": 60, "h": 3600}[unit]


def load_config_file(path: Path | None) -> dict[str, Any]:
    """The ``[run]`` table of an evoforge.toml ({} when there is no file)."""
    if path is None:
        default = Path("evoforge.toml")
        if not default.exists():
            return {}
        path = default
    if not path.exists():
        raise TaskError(f"{path}: no such config file")
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError:
            raise TaskError(f"{path}: reading TOML on Python 3.10 needs `pip install tomli`") from None
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise TaskError(f"{path}: not valid TOML ({exc})") from None
    table = data.get("run", {})
    if not isinstance(table, dict):
        raise TaskError(f"{path}: [run] must be a table")
    return table


def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if has_cuda() else "cpu"
    return device


_DEVICE = re.compile(r"cpu|auto|cuda(:[0-9]+)?")


def check_device(device: str, local: bool = True) -> str:
    """``device`` if this machine has it (``local=False``: only its form, for a Ray cluster's devices), else
    a one-line TaskError: auto, cpu, cuda and cuda:N are the devices evoforge runs on."""
    if not _DEVICE.fullmatch(device):
        raise TaskError(f"--device {device}: not a device evoforge runs on (auto, cpu, cuda or cuda:N)")
    if not local or not device.startswith("cuda"):
        return device
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise TaskError(f"--device {device}: no CUDA device here (torch {torch.__version__}); "
                        "use --device cpu or auto")
    index = int(device.partition(":")[2] or 0)
    if index >= count:
        raise TaskError(f"--device {device}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    return device


class Terminated(BaseException):
    """Raised in the main thread by the SIGTERM/SIGHUP handler ``on_signals`` installs, so a run ends as a
    Ctrl-C does: workers killed, the run recorded as interrupted. Like KeyboardInterrupt it is not an
    Exception, so no ``except Exception`` swallows it."""

    def __init__(self, signame: str) -> None:
        super().__init__(signame)
        self.signame = signame


@contextmanager
def on_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP raise :class:`Terminated` in the main thread while the body runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise Terminated(signal.Signals(signum).name)

    wanted = [signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    saved = {sig: signal.signal(sig, handler) for sig in wanted}
    try:
        yield
    finally:
        for sig, previous in saved.items():
            signal.signal(sig, previous)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:500] if text else type(exc).__name__


@contextmanager
def session(store: Store, run_id: str) -> Iterator[None]:
    """One session of a run whose lease this process holds (``start`` or ``resume`` took it): a heartbeat
    while the body runs, then the lease given back with how the session ended: the search records
    ``finished`` itself; Ctrl-C and SIGTERM leave it ``interrupted``, an error ``failed``, each with a note."""
    beat = store.heartbeat(run_id)
    ending: dict[str, Any] = {}
    try:
        with on_signals():
            yield
    except KeyboardInterrupt:
        ending = {"status": "interrupted", "note": "interrupted (SIGINT, Ctrl-C)"}
        raise
    except Terminated as exc:
        ending = {"status": "interrupted", "note": f"terminated ({exc.signame})"}
        raise
    except BaseException as exc:
        ending = {"status": "failed", "note": _one_line(exc)}
        raise
    finally:
        beat.stop()
        store.release(run_id, **ending)


@dataclass
class Prepared:
    spec: TaskSpec
    mutator: Mutator
    evaluate: GenerationEvaluator
    rng: random.Random
    device: str
    # issue 22: the most candidates a batch may hold for the judge and every worker to fit in GPU memory (None:
    # no limit), and why (evoforge.evaluator.memory.upfront)
    batch_cap: int | None = None
    memory_note: str = ""


class GenerationEvaluator:
    """One worker per generation (a batch): the generation's candidates beside the baselines. Generation 0
    times every baseline; later generations re-time the fastest ``keep`` of the last ranking, plus
    any baseline that a candidate duplicates (so a PyTorch path proposed as a candidate meets its
    twin), and re-rank. With several device models (a mixed cluster) the ranking is kept per model and a
    batch takes the union of every model's fastest, so each model times the baselines it ranks best.

    It is the executors' planner: ``plan`` picks a batch's baselines and ``absorb`` takes its report, both
    in the driver; calling it evaluates one batch here and now (the serial path)."""

    def __init__(self, spec: TaskSpec, config: EvalConfig, baselines: list[Candidate], keep: int,
                 fastest: list[str] | None = None, progress: Callable[[str], None] | None = None,
                 on_baselines: Callable[[list[str], dict[str, Any]], None] | None = None,
                 on_profile: Callable[[int, dict[str, float]], None] | None = None) -> None:
        self.spec, self.config, self.baselines, self.keep = spec, config, baselines, keep
        self.on_profile = on_profile
        self.fastest = fastest
        self.fastest_by_model: dict[str, list[str]] = {}
        self.progress = progress
        self.on_baselines = on_baselines
        self.env: dict[str, Any] = {}

    def plan(self, candidates: list[Candidate]) -> list[Candidate]:
        """The baselines a batch of these candidates is timed beside."""
        twins = {c.hash for c in candidates}
        keep = None if self.fastest is None else set(self.fastest)
        for names in self.fastest_by_model.values():
            keep = (keep or set()) | set(names)
        return [b for b in self.baselines if keep is None or b.name in keep or b.hash in twins]

    def absorb(self, generation: int, report: EvalReport, where: dict[str, Any] | None = None
               ) -> tuple[list[EvalResult], list[EvalResult]]:
        """Split a batch's report into candidates' and baselines' results, tag each with the node and
        device that measured it, record the profile, and re-rank the baselines."""
        n = sum(r.role == "candidate" for r in report.results)
        where = where or {}
        for result in report.results:
            result.where = {k: v for k, v in where.items() if k in ("slot", "host", "device_name") and v}
        self.env = report.env
        if self.on_profile:
            self.on_profile(generation, {**report.profile, **({"slot": where["slot"]} if "slot" in where else {})})
        results, bases = report.results[:n], report.results[n:]
        mode = fitness_mode(self.config.fitness_mode, report.env.get("device_type"), self.config.modes)
        fastest = fastest_baselines(bases, mode, self.keep) or [b.name for b in self.baselines[: self.keep]]
        model = str(report.env.get("device_name") or report.env.get("device_type") or "?")
        self.fastest_by_model[model] = fastest
        if fastest != self.fastest:
            self.fastest = fastest
            if self.on_baselines:
                self.on_baselines(fastest, report.env)
        return results, bases

    def __call__(self, candidates: list[Candidate], generation: int) -> tuple[list[EvalResult], list[EvalResult]]:
        report = Evaluator(self.spec, self.config, progress=self.progress).evaluate(candidates, self.plan(candidates))
        return self.absorb(generation, report, {"slot": self.config.device, **_where(report.env)})


def _where(env: dict[str, Any]) -> dict[str, Any]:
    return {"host": env.get("host"), "device_name": env.get("device_name")}


def default_task(device: str) -> str:
    return "attention" if device.startswith("cuda") else "attention-tiny"


def _load(task: str) -> tuple[TaskSpec, Any]:
    """The task, loaded and checked, and its kind's parameters (AttentionParams for the attention family, None
    for a KernelBench file). Every mutator takes any task: the built-in one is the attention template where
    the parameters are attention's and the generic mutator for the others."""
    spec = resolve_task(task)
    load_task(spec)
    return spec, kind_of(spec).params(spec)


def builtin_mutator(name: str, spec: TaskSpec, params: Any, rng: random.Random,
                    device: str, limits: HardwareLimits | None) -> Mutator:
    """The built-in mutator: the attention template for attention tasks, generic otherwise."""
    if name == "template" and TemplateMutator.takes(params) and limits is not None:
        return TemplateMutator(rng, params, limits)
    return GenericMutator.for_task(rng, spec, device)


@MUTATORS.register("template")
def _template(ctx: MutatorContext) -> Mutator:
    return builtin_mutator("template", ctx.spec, ctx.params, ctx.rng, ctx.device, ctx.limits)


@MUTATORS.register("generic")
def _generic(ctx: MutatorContext) -> Mutator:
    return builtin_mutator("generic", ctx.spec, ctx.params, ctx.rng, ctx.device, ctx.limits)


@MUTATORS.register("llm")
def _llm(ctx: MutatorContext) -> Mutator:
    return _llm_mutator(ctx.config, ctx.spec, ctx.device, ctx.store, ctx.run_id, ctx.rng)


@MUTATORS.register("mixed")
def _mixed(ctx: MutatorContext) -> Mutator:
    share = ctx.config.llm_share
    return MixedMutator(ctx.rng, [(_template(ctx), 1.0 - share), (_llm(ctx), share)])


def _registered(registry: Registry[F], name: str) -> F:
    """The part registered as ``name``; TaskError (one line naming the ones there are) if none is."""
    try:
        return registry.get(name)
    except LookupError as exc:
        raise TaskError(str(exc)) from None


def _check_mutator(config: RunConfig) -> None:
    _registered(MUTATORS, config.mutator)
    if config.mutator in ("llm", "mixed"):
        from evoforge.llm.guide import GUIDES, LANGUAGE_NAMES

        if not config.llm_model:
            raise TaskError(f"--mutator {config.mutator} needs --model NAME (any model the endpoint serves; "
                            "name[:weight][@price_in/price_out], comma-separated for an ensemble)")
        if config.llm_guide not in GUIDES:
            raise TaskError(f"unknown LLM guide {config.llm_guide!r} (available: {', '.join(GUIDES)})")
        if config.llm_language not in LANGUAGE_NAMES:
            raise TaskError(f"unknown LLM language {config.llm_language!r} (available: {', '.join(LANGUAGE_NAMES)})")
        if not 0 < config.llm_share <= 1:
            raise TaskError(f"llm_share must be in (0, 1], got {config.llm_share}")


def _llm_mutator(config: RunConfig, spec: TaskSpec, device: str, store: Store, run_id: str,
                 rng: random.Random) -> Mutator:
    """The LLM mutator, its budget carried over from the calls this run already made."""
    from evoforge.llm.client import Budget, LLMClient, LLMConfig, parse_models
    from evoforge.llm.guide import context_for
    from evoforge.llm.prompts import Prompts
    from evoforge.mutators.llm import LLMMutator

    llm = LLMConfig(models=parse_models(config.llm_model or ""), base_url=config.llm_base_url,
                    api_key_env=config.llm_api_key_env, concurrency=config.llm_concurrency,
                    timeout_s=config.llm_timeout_s, retries=config.llm_retries, temperature=config.llm_temperature,
                    max_reply_tokens=config.llm_reply_tokens, max_tokens=config.llm_max_tokens,
                    max_cost=config.llm_max_cost)
    calls = store.llm_calls(run_id)
    budget = Budget(llm.max_tokens, llm.max_cost, tokens=sum(c["tokens_in"] + c["tokens_out"] for c in calls),
                    cost=sum(c["cost"] for c in calls))
    # The reference itself as generation 0's torch candidate: something valid to mutate from.
    reference = Candidate(name="reference-model", language="torch",
                          source=spec.source.rstrip() + "\n\n\nclass ModelNew(Model):\n    pass\n",
                          lineage={"mutation": "seed", "level": "seed", "mutator": "llm"})
    return LLMMutator(rng, LLMClient(llm, budget), Prompts(config.llm_prompts),
                      context_for(spec, device, config.llm_language), config.llm_guide,
                      record=lambda call: store.add_llm_call(run_id, call), seeds=[reference],
                      seed_generations=config.llm_seed_candidates)


def prepare(config: RunConfig, store: Store, run_id: str, rng: random.Random,
            progress: Callable[[str], None] | None = None) -> Prepared:
    """Everything to search ``run_id`` in this process."""
    _check_mutator(config)
    device = resolve_device(config.device)
    spec, params = _load(config.task or default_task(device))
    if device == "cpu":
        # Triton kernels run on CPU tensors through the interpreter: slow, but the same code path.
        os.environ.setdefault("TRITON_INTERPRET", "1")
        limits = HardwareLimits(interpreter=True)
    else:
        import torch

        limits = HardwareLimits.for_device(torch.cuda.get_device_properties(torch.device(device)))
    # On a GPU, the next generation's candidate workers start while this one's load and check (their
    # start is most of a generation's start-up there); a 2-core CPU machine has no cores to spare.
    eval_config = EvalConfig(device=device, timeout_s=config.timeout_s, sandbox=config.sandbox,
                             timing=TimingConfig(budget_ms=config.budget_ms),
                             spare_workers=None if device != "cpu" else 0)
    fastest = None
    for event in store.events(run_id, "baselines"):
        fastest = event["names"]

    def remember(names: list[str], env: dict[str, Any]) -> None:
        store.add_event(run_id, "baselines", names=names)
        store.update_run(run_id, env=env)

    def profile(generation: int, seconds: dict[str, float]) -> None:
        store.add_event(run_id, "profile", generation=generation, seconds=seconds)

    evaluate = GenerationEvaluator(spec, eval_config, baselines_for(spec, device), config.keep_baselines, fastest,
                                   progress, remember, profile)
    batch_cap, memory_note = _fit_memory(config, spec, eval_config, device, len(evaluate.baselines))
    if batch_cap is not None:
        store.add_event(run_id, "memory", batch_cap=batch_cap, note=memory_note)
    make_mutator = _registered(MUTATORS, config.mutator)
    mutator = make_mutator(MutatorContext(config, spec, params, rng, device, limits, store, run_id))
    return Prepared(spec, mutator, evaluate, rng, device, batch_cap, memory_note)


def _fit_memory(config: RunConfig, spec: TaskSpec, eval_config: EvalConfig, device: str,
                baselines: int) -> tuple[int | None, str]:
    """Before any work, whether a batch fits in GPU memory beside the baselines (issue 22): the largest batch
    that does, or a TaskError saying what doesn't fit and what to change. Only where this machine runs the
    batches (a Ray cluster's GPUs are not this machine's)."""
    if device == "cpu" or config.executor == "ray":
        return None, ""
    from evoforge.evaluator import memory

    return memory.upfront(spec, eval_config, device, baselines, config.batch_size or config.population)


def create(config: RunConfig, store: Store) -> tuple[str, RunConfig]:
    """Check the config and task, then record a new run, held by this process: its id and its config with the
    task resolved. ``start`` goes on to prepare its search; a batch's problems at once stop here (the child
    that searches the run prepares it, its memory plan against the one GPU it sees)."""
    _check_mutator(config)
    check_executor(config)
    check_device(config.device, local=config.executor != "ray")
    task = config.task or default_task(resolve_device(config.device))
    resolved = RunConfig.from_dict({**config.to_dict(), "task": task})
    spec, _ = _load(resolved.task)
    run_id = store.create_run({"name": spec.name, "arg": resolved.task, "origin": spec.origin, "params": spec.params},
                              resolved.to_dict())
    return run_id, resolved


def start(config: RunConfig, store: Store, progress: Callable[[str], None] | None = None) -> tuple[str, Prepared]:
    """Check the config and task first, then create the run record and everything to search it."""
    run_id, resolved = create(config, store)
    try:
        return run_id, prepare(resolved, store, run_id, random.Random(resolved.seed), progress)
    except BaseException as exc:  # the run never started: say so, and let it go
        store.release(run_id, status="failed", note=f"failed to start: {_one_line(exc)}")
        raise


def check_executor(config: RunConfig) -> None:
    _registered(EXECUTORS, config.executor)
    if config.workers is not None and config.workers < 1:
        raise TaskError(f"workers = {config.workers}: need at least one")
    if config.prefetch < 0:
        raise TaskError(f"prefetch = {config.prefetch}: must be 0 or more")
    if config.batch_size is not None and config.batch_size < 1:
        raise TaskError(f"batch_size = {config.batch_size}: need at least one candidate per batch")
    if config.problems_at_once < 1:
        raise TaskError(f"problems_at_once = {config.problems_at_once}: need at least one")
    if config.address and config.executor != "ray":
        raise TaskError("--address is for --executor ray")
    if config.executor == "ray" and importlib.util.find_spec("ray") is None:
        raise TaskError("--executor ray needs Ray: pip install 'evoforge[ray]'")


@EXECUTORS.register("local")
def _local(ctx: ExecutorContext) -> Executor:
    """Local slots: this machine's GPUs, or CPU workers."""
    config, prepared = ctx.config, ctx.prepared
    devices = local_slots(prepared.device, config.workers)
    on_gpu = devices[0].startswith("cuda")
    precompile = on_gpu if config.precompile is None else config.precompile
    if config.precompile is None and precompile and _large_inputs(prepared.spec):
        precompile = False
    return LocalExecutor(prepared.evaluate, devices, prefetch=config.prefetch, precompile=precompile)


@EXECUTORS.register("ray")
def _ray(ctx: ExecutorContext) -> Executor:
    """A Ray cluster's GPUs (or CPUs)."""
    config, prepared = ctx.config, ctx.prepared
    return RayExecutor(prepared.evaluate, config.address or "auto", config.workers, config.prefetch, prepared.device)


def make_executor(config: RunConfig, prepared: Prepared) -> Executor:
    """The executor the config asks for, from the registry (evoforge.registry.EXECUTORS)."""
    check_executor(config)
    return _registered(EXECUTORS, config.executor)(ExecutorContext(config, prepared))


PRECOMPILE_INPUT_LIMIT = 256 * 2**20


def _large_inputs(spec: TaskSpec) -> bool:
    """Whether one input set is over PRECOMPILE_INPUT_LIMIT bytes. The compile worker gets the inputs' shapes
    and makes them on the CPU, where each candidate's own torch work runs on them for real (only Triton
    launches are compile-only): for a KernelBench-size input set (gigabytes) that is gigabytes of CPU memory
    and seconds of CPU work per candidate, so precompile is off by default for such a problem (issue 22)."""
    from evoforge.evaluator import memory

    fp = memory.measure_task(spec)
    return fp is not None and fp.inputs > PRECOMPILE_INPUT_LIMIT


def search_for(store: Store, run_id: str, prepared: Prepared, config: RunConfig,
               on_progress: Callable[[Progress], None] | None = None, executor: Executor | None = None,
               started: float | None = None) -> Search:
    """The search of this session; ``started`` (time.monotonic()) is when its ``--budget`` clock started
    (the command's start, so loading the task and starting the executor count), default when it runs."""
    search_config = config.search_config()
    if prepared.batch_cap is not None:  # the judge and every worker of a batch must fit in GPU memory
        search_config = replace(search_config, batch_size=min(search_config.batch_size or prepared.batch_cap,
                                                              prepared.batch_cap))
    return Search(store, run_id, prepared.mutator, prepared.evaluate, search_config, prepared.rng,
                  on_progress, executor or make_executor(config, prepared), started=started)


def resume(store: Store, run_id: str, overrides: dict[str, Any],
           progress: Callable[[str], None] | None = None) -> tuple[RunConfig, Prepared, str]:
    """Take the run's lease (refused while another process runs it) and prepare this session. The
    wall-clock budget is this session's: ``budget`` when given, else none (the budget of an earlier
    session does not apply again); ``generations`` and ``max_evals`` raise the run's limits."""
    record = store.run(run_id, skip_empty=False)
    given = {k: v for k, v in overrides.items() if v is not None}
    if given.get("executor") == "local":
        given.setdefault("address", None)  # a run moved off its Ray cluster
    stored = RunConfig.from_dict({**record.config, **given})  # what the run was last asked for
    config = RunConfig.from_dict({**stored.to_dict(), "budget": given.get("budget")})  # this session
    check_executor(config)
    check_device(config.device, local=config.executor != "ray")
    store.claim(record.id)
    try:
        rng = restore_rng(record.rng) if record.rng else random.Random(config.seed)
        prepared = prepare(config, store, record.id, rng, progress)
        store.update_run(record.id, config=stored.to_dict(), status="running", note=None)
    except BaseException:
        store.release(record.id)  # the run is as it was; this session never started
        raise
    return config, prepared, record.id
