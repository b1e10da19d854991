"""Memory: what one evaluation of a problem holds on the GPU and in host memory, known before any worker starts.

A problem's :class:`Footprint` is measured without allocating it: the Model and the inputs are made on
PyTorch's ``meta`` device (shapes and dtypes, no data) and one forward call is traced, recording the bytes
alive after each operation, so the peak of one eager call (its outputs and intermediates) is known. Where the
trace can't run (an operation with no meta kernel, a value read with ``.item()``), the outputs and the working
set are taken to be the size of the inputs, and the footprint says so (``measured`` is False).

:func:`plan` adds up what one evaluation holds, as the judge builds it (judge.py):

- **the judge, on the device**: the check cases' input sets it holds (:func:`resident_cases`: every one of the
  ``cases``, or, for a problem whose one input set is over :data:`RESIDENT_INPUT_LIMIT`, only those of the checks
  running at once: such a case keeps the seed its inputs were drawn from and the judge re-draws them when it
  checks it), the staging copy of the pool's input slots, the reference Model's weights (in the reference's
  precision) and the native Model's, and for each check running at once (at most one per slot) the entry's
  outputs, the reference moved there (a re-drawn case's computed there: its inputs in the reference's precision
  and the reference call's peak) and one chunk of the comparison (:data:`evoforge.evaluator.compare.CHUNK`
  elements per temporary);
- **each worker, on the device**: its CUDA runtime (:data:`RUNTIME_BYTES`, an allowance: context, cuBLAS
  workspace, the L2 flush buffer), the Model's weights, a device copy of every slot's inputs, the outputs of a
  call per slot (graph mode captures one call per slot and keeps its outputs) and one call's working set. A
  baseline worker kept from the last evaluation (``kept``) makes the new slots' copies before it lets go of the
  old ones, whose blocks its caching allocator keeps: it is counted with its slots twice;
- **host memory**: the reference outputs of every case (the judge keeps them on the host; a re-drawn case's are
  not kept but computed again on the device when it is checked, counted with the check) and the pool of slots,
  which every worker maps, so the pool also counts against a worker's memory limit (``--memory-mb``). The
  available host memory bounds the slots; only a worker's limit is a reason to refuse (see :func:`host_refusal`).

Workers of one evaluation are alive together (their timing is interleaved), so the device must hold the judge
and every worker at once; the slots are what gives. :func:`fit` picks the most slots that fit, and
:func:`entries_that_fit` how many entries (candidates and baselines) fit with one slot each: the search caps its
batches at that, and a problem where even one candidate beside the baselines can't fit is refused up front,
in one line, with the numbers (:func:`refusal`).

The sizes are estimates: the caching allocator rounds and fragments, and a candidate may allocate more than
the task's Model. Plans keep :data:`HEADROOM` of the free memory unplanned for that.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import uuid
from dataclasses import asdict, dataclass
from typing import Any

import torch

from evoforge.evaluator.compare import CHUNK
from evoforge.task import TaskError, TaskSpec, init_inputs, load_task, make_inputs, tensor_bytes

GIB = 2**30
RUNTIME_BYTES = GIB  # a worker's CUDA context, cuBLAS workspace and L2 flush buffer (about 0.6 GiB on an H100)
HEADROOM = 0.10  # share of the free memory a plan leaves to fragmentation and candidates' extra allocations
WORKER_HOST_BYTES = 2 * GIB  # a worker's own resident memory (torch, Triton) besides the pool it maps
COMPARE_TEMPORARIES = 6  # tensors of one chunk's size the comparison makes (difference, bounds, masks)
# One input set larger than this: the judge keeps no check case's inputs resident on the device but re-draws them
# from the case's seed when it checks the case (judge._Session._redraw), so it holds one input set per check
# running at once instead of one per case (KernelBench's 4096 x 393216 fp32 Softmax: 6 GiB a set, 5 cases). The
# same bytes as evolve.PRECOMPILE_INPUT_LIMIT: below it a problem's cases cost little to keep, and re-drawing them
# costs a draw per check.
RESIDENT_INPUT_LIMIT = 256 * 2**20


@dataclass(frozen=True)
class Footprint:
    """One input set, one call and the weights of a problem, in bytes."""

    inputs: int  # one input set, as get_inputs() makes it
    outputs: int  # one call's outputs, in the Model's own dtypes
    ref_outputs: int  # the same outputs in the reference's precision (float32 on a GPU, float64 on a CPU)
    ref_inputs: int  # extra bytes of an input set cast to the reference's precision (0 when already in it)
    weights: int  # the Model's parameters and buffers
    working: int  # peak bytes one eager call allocates (outputs and intermediates), beyond inputs and weights
    measured: bool = True  # False: the meta trace could not run; outputs and working set taken as the inputs'

    @property
    def scale(self) -> float:
        """How much larger the reference's tensors are than the Model's own (2 for float16 on a GPU)."""
        return self.ref_outputs / self.outputs if self.outputs else 1.0

    @property
    def slot(self) -> int:
        return self.inputs + self.outputs

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Plan:
    """What one evaluation holds with ``slots`` pool slots and ``workers`` workers (bytes)."""

    footprint: Footprint
    slots: int
    workers: int
    cases: int
    judge_device: int
    worker_device: int
    host: int  # the judge's references and the pool
    pool: int
    kept: int = 0  # kept baseline workers' previous slots' copies, still cached in their processes
    resident: int = 0  # the check cases whose input sets the judge holds on the device at once (of ``cases``)

    @property
    def device(self) -> int:
        return self.judge_device + self.workers * self.worker_device + self.kept

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "device": self.device}


def plan(fp: Footprint, *, slots: int, workers: int, cases: int, parallel: int = 1, kept: int = 0) -> Plan:
    """What the judge and ``workers`` workers hold with ``slots`` slots and ``cases`` check cases (their references
    on the host, their input sets on the device as :func:`resident_cases` says); ``parallel``: checks the judge may
    run at once (one per slot at most); ``kept``: how many of the workers are baselines kept from the last
    evaluation (their last slots' copies still cached)."""
    slots, workers, kept = max(int(slots), 1), max(int(workers), 0), min(max(int(kept), 0), max(int(workers), 0))
    checks = max(1, min(slots, int(parallel)))
    held = resident_cases(fp, cases, checks)
    compare = COMPARE_TEMPORARIES * min(fp.ref_outputs, CHUNK * 8)
    # a check holds the entry's outputs, the reference (moved there from the host; or, for a re-drawn case,
    # computed there: its inputs cast to the reference's precision and the reference call's peak) and a chunk
    reference = fp.ref_outputs if not redraws(fp.inputs) else fp.ref_inputs + max(int(fp.working * fp.scale),
                                                                                  fp.ref_outputs)
    judge = (held * fp.inputs + slots * fp.inputs + int(fp.weights * (1 + fp.scale))
             + checks * (fp.outputs + reference + compare))
    # computing a reference: the inputs in its precision, two reference calls (one repeated) and a native call
    # (cases whose inputs are re-drawn are made one at a time, so at most ``held`` sets exist then too)
    judge = max(judge, held * fp.inputs + fp.ref_inputs + int(fp.weights * (1 + fp.scale))
                + int(2 * fp.working * fp.scale) + fp.working)
    worker = RUNTIME_BYTES + fp.weights + slots * fp.slot + fp.working
    pool = slots * fp.slot
    return Plan(fp, slots, workers, cases, judge, worker, host_references(fp, cases) + pool, pool,
                kept * slots * fp.slot, held)


def host_references(fp: Footprint, cases: int) -> int:
    """The check cases' references the judge keeps in host memory: every case's, except where the cases are
    re-drawn (:func:`redraws`): their references are computed again on the device with the inputs."""
    return 0 if redraws(fp.inputs) else max(int(cases), 0) * fp.ref_outputs


def redraws(input_bytes: int) -> bool:
    """Whether a problem whose one input set is ``input_bytes`` has its check cases' inputs re-drawn from their
    seeds when checked, none resident (over :data:`RESIDENT_INPUT_LIMIT`), rather than all kept on the device."""
    return int(input_bytes) > RESIDENT_INPUT_LIMIT


def resident_cases(fp: Footprint, cases: int, checks: int) -> int:
    """Input sets of check cases the judge holds on the device at once: all ``cases``; or, where they are re-drawn
    (:func:`redraws`), one per check running at once (``checks``: at most one per slot), each from its draw to the
    end of its check. Draws are made one at a time; the temporaries of one draw (the default edge case makes its
    set and then the set times 8) are left to the headroom."""
    cases = max(int(cases), 0)
    return min(cases, max(int(checks), 1)) if redraws(fp.inputs) else cases


def fit(fp: Footprint, *, free: int, workers: int, cases: int, wanted: int, parallel: int = 1,
        host_free: int | None = None, worker_limit: int | None = None, kept: int = 0) -> int:
    """The most slots (at most ``wanted``) with which the judge and ``workers`` workers fit in ``free`` device
    bytes (less the headroom), the pool and references in ``host_free`` host bytes, and the pool within a
    worker's memory limit (``worker_limit`` bytes); 0 when not even one slot fits."""
    room = int(free * (1 - HEADROOM))
    best = 0
    lo, hi = 1, max(int(wanted), 1)
    while lo <= hi:  # every term grows with the slots: bisect
        mid = (lo + hi) // 2
        p = plan(fp, slots=mid, workers=workers, cases=cases, parallel=parallel, kept=kept)
        ok = p.device <= room
        if host_free is not None:
            ok = ok and p.host <= int(host_free * (1 - HEADROOM))
        if worker_limit is not None:
            ok = ok and p.pool + WORKER_HOST_BYTES <= worker_limit
        if ok:
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    return best


def entries_that_fit(fp: Footprint, *, free: int, cases: int, parallel: int = 1, kept: int = 0) -> int:
    """How many workers (entries: candidates and baselines, ``kept`` of them kept baseline workers) fit on the
    device beside the judge, one slot each."""
    room = int(free * (1 - HEADROOM))
    fixed = plan(fp, slots=1, workers=kept, cases=cases, parallel=parallel, kept=kept)
    if fixed.device >= room:
        return 0
    return kept + (room - fixed.device) // fixed.worker_device


def describe(p: Plan, where: str = "the GPU") -> str:
    """The plan's device bytes in words: judge and per worker."""
    fp = p.footprint
    guess = "" if fp.measured else " (the Model could not be traced on the meta device: outputs taken as inputs)"
    kept = f", and kept baselines {_gib(p.kept)} of their last slots" if p.kept else ""
    resident = (f"{p.cases} check cases resident" if p.resident >= p.cases else
                f"{p.resident} of {p.cases} check cases resident at a time, their inputs re-drawn for each check")
    return (f"input sets of {_gib(fp.inputs)}, outputs of {_gib(fp.outputs)}, one call's working set "
            f"{_gib(fp.working)}, weights {_gib(fp.weights)}{guess}: the judge holds {_gib(p.judge_device)} "
            f"({resident}, {p.slots} slot(s)) and each worker {_gib(p.worker_device)}{kept} on {where}")


def refusal(where: str, p: Plan, free: int, device_name: str, baselines: int, candidates: int | None = None) -> str:
    """The one line that says a problem can't be evaluated on this device and what to change."""
    room = int(free * (1 - HEADROOM))
    n = candidates if candidates is not None else max(p.workers - baselines, 0)
    fix = "make get_inputs() smaller (or use a GPU with more memory)"
    if p.judge_device + p.kept < room:
        k = (room - p.judge_device - p.kept) // max(p.worker_device, 1)
        if k > baselines:
            fix = f"at most {k} workers fit: run with --batch-size {k - baselines}"
        else:
            fix = (f"only {k} worker(s) fit beside the judge and {baselines} baseline(s) need one each; "
                   "make get_inputs() smaller (or use a GPU with more memory)")
    return (f"{where}: the task does not fit in GPU memory: {n} candidate(s) beside {baselines} baseline(s) need "
            f"{_gib(p.device)} ({describe(p, device_name)}), {_gib(free)} free, {_gib(room)} usable; {fix}")


def host_refusal(where: str, p: Plan, worker_limit: int) -> str | None:
    """The one line that says one slot can't fit a worker's memory limit (every worker maps the whole pool), else
    None. Host memory itself only bounds the slots (:func:`fit`): MemAvailable is no limit to refuse on, since on
    some machines (the lent GPU machines among them) memory starts small and grows as it is used."""
    if p.pool + WORKER_HOST_BYTES > worker_limit:
        return (f"{where}: the task does not fit in a worker's memory limit: one slot (an input set and its "
                f"outputs) is {_gib(p.pool)}, plus about {_gib(WORKER_HOST_BYTES)} of the worker's own, against "
                f"--memory-mb {worker_limit // 2**20}; raise --memory-mb or make get_inputs() smaller")
    return None


def host_available() -> int | None:
    """MemAvailable from /proc/meminfo, in bytes (None where there is no such file)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def cases_of(n_random: int, edge_cases: bool) -> int:
    """The judge's check cases (input sets with a reference each): the random ones, one edge set, and the final
    recheck's. How many of them are on the device at once is :func:`resident_cases`'."""
    return int(n_random) + (1 if edge_cases else 0) + 1


def upfront(spec: TaskSpec, config: Any, device: str, baselines: int, batch: int) -> tuple[int | None, str]:
    """Before any work (no input set made, no worker started): the task's footprint traced on the meta device,
    against the free memory of every GPU the run may use. Returns the most candidates a batch may hold beside
    ``baselines`` baselines (None: ``batch`` fits, or the footprint can't be known here) and a note saying why;
    raises TaskError (one line: what doesn't fit, the numbers, what to change) when not even one candidate fits
    beside the baselines, or one slot doesn't fit a worker's memory limit or the host. Where keeping baseline
    workers from one batch to the next is what doesn't fit, it turns ``config.keep_baselines`` off (``config`` is
    this run's EvalConfig) and says so in the note; baseline workers kept by an earlier run in this process (a
    batch's previous problem) are closed first."""
    if not device.startswith("cuda") or not torch.cuda.is_available():
        return None, ""
    fp = measure_task(spec)
    if fp is None:
        return None, ""
    devices = [torch.device(device)] if ":" in device else [torch.device("cuda", i)
                                                             for i in range(torch.cuda.device_count())]

    def least_free() -> tuple[int, str]:
        # What this process's allocator caches but no longer uses (an earlier problem's references and check
        # cases, in a batch) is free for the workers, which are other processes: release it before reading.
        gc.collect()
        torch.cuda.empty_cache()
        return min((torch.cuda.mem_get_info(d)[0], torch.cuda.get_device_name(d)) for d in devices)

    free, name = least_free()
    cases = cases_of(config.n_random, config.edge_cases)
    parallel = max(1, config.parallel_workers or (os.cpu_count() or 1))
    kept = baselines if config.keep_baselines else 0
    one = plan(fp, slots=1, workers=baselines + 1, cases=cases, parallel=parallel, kept=kept)
    if message := host_refusal(spec.origin, one, config.memory_limit_mb * 2**20):
        raise TaskError(message)
    fits = entries_that_fit(fp, free=free, cases=cases, parallel=parallel, kept=kept)
    if fits < batch + baselines:
        from evoforge.evaluator.process import KEPT

        if KEPT.workers:  # baseline workers kept from an earlier run of this process (a batch's last problem)
            KEPT.close_all()
            free, name = least_free()
            fits = entries_that_fit(fp, free=free, cases=cases, parallel=parallel, kept=kept)
    unkept = ""
    if fits < batch + baselines and kept and entries_that_fit(fp, free=free, cases=cases, parallel=parallel) > fits:
        config.keep_baselines = False  # a kept worker's last slots stay cached beside its new ones: not worth it here
        kept, unkept = 0, "; baseline workers are not kept from one batch to the next (their last slots stay cached)"
        one = plan(fp, slots=1, workers=baselines + 1, cases=cases, parallel=parallel)
        fits = entries_that_fit(fp, free=free, cases=cases, parallel=parallel)
    if fits >= batch + baselines:
        return None, (f"memory: {describe(one, name)}{unkept}" if unkept else "")
    if fits <= baselines:  # said of the smallest evaluation: one candidate, no baseline worker kept
        least = plan(fp, slots=1, workers=baselines + 1, cases=cases, parallel=parallel)
        raise TaskError(refusal(spec.origin, least, free, name, baselines, candidates=1))
    cap = fits - baselines
    return cap, (f"memory: {describe(one, name)}, {_gib(free)} free: {fits} workers fit, so batches hold at most "
                 f"{cap} candidate(s) beside {baselines} baseline(s) (a batch of {batch} would not fit){unkept}")


# ---------------------------------------------------------------- measuring a footprint
def measure(model: torch.nn.Module, inputs: list[Any], ref_dtype: torch.dtype) -> Footprint:
    """The footprint of ``model`` called on ``inputs`` (real or meta tensors, any device), traced on the meta
    device: nothing of the inputs' or outputs' size is allocated."""
    in_bytes = tensor_bytes(inputs)
    ref_extra = sum(_numel(x) * (_size(ref_dtype) - x.element_size()) for x in inputs
                    if isinstance(x, torch.Tensor) and x.is_floating_point() and x.element_size() < _size(ref_dtype))
    state = list(model.named_parameters()) + list(model.named_buffers())
    weights = sum(_numel(t) * t.element_size() for _, t in state)
    try:
        outs, peak = _trace(model, inputs, state)
    except Exception:
        return Footprint(in_bytes, in_bytes, in_bytes + ref_extra, ref_extra, weights, in_bytes, measured=False)
    out_bytes = sum(_numel(t) * t.element_size() for t in outs)
    ref_out = sum(_numel(t) * (_size(ref_dtype) if t.is_floating_point() else t.element_size()) for t in outs)
    return Footprint(in_bytes, out_bytes, ref_out, ref_extra, weights, max(peak, out_bytes))


def measure_task(spec: TaskSpec, ref_dtype: torch.dtype = torch.float32) -> Footprint | None:
    """A task's footprint before anything of its size exists: its Model and inputs made on the meta device.
    None where the task can't make them there (a get_inputs() that moves tensors to a device itself, say):
    the judge then measures the real first input set before any worker starts."""
    name = f"evoforge_memory_{uuid.uuid4().hex}"
    try:
        task = load_task(spec, check_inputs=False, module_name=name)
        with torch.device("meta"):
            init = init_inputs(task)
            model = task.model_cls(*init)
            inputs = make_inputs(task, seed=0)
        if not all(x.device.type == "meta" for x in inputs if isinstance(x, torch.Tensor)):
            return None
    except Exception:  # a task that can't be made here (TaskError included): the judge measures it for real
        return None
    finally:
        sys.modules.pop(name, None)
    return measure(model, inputs, ref_dtype)


def _trace(model: torch.nn.Module, inputs: list[Any], state: list[tuple[str, torch.Tensor]]
           ) -> tuple[list[torch.Tensor], int]:
    from torch.func import functional_call

    from evoforge.evaluator import guards

    meta = [x.to("meta") if isinstance(x, torch.Tensor) else x for x in inputs]
    swapped = {name: t.to("meta") for name, t in state}
    # views of the inputs and weights (a transposed weight, a reshaped input) allocate nothing
    tracker = _LiveBytes([t for t in [*meta, *swapped.values()] if isinstance(t, torch.Tensor)])
    with torch.no_grad(), tracker:
        outs = guards.tensors_in(functional_call(model, swapped, tuple(meta)))
    if not outs:
        raise ValueError("no tensor returned")
    return outs, tracker.peak


class _LiveBytes(contextlib.AbstractContextManager):
    """Bytes of the storages operations create while it is active, and their peak (freed storages are dropped
    as they expire, checked at every operation)."""

    def __init__(self, existing: list[torch.Tensor]) -> None:
        from torch.multiprocessing.reductions import StorageWeakRef
        from torch.utils._python_dispatch import TorchDispatchMode

        tracker = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
                out = func(*args, **(kwargs or {}))
                tracker.record(out)
                return out

        self.mode = Mode()
        self.live: dict[int, tuple[Any, int]] = {}
        self.existing = [StorageWeakRef(t.untyped_storage()) for t in existing]  # kept: their ids stay theirs
        self.known = {ref.cdata for ref in self.existing}
        self.bytes = 0
        self.peak = 0

    def record(self, out: Any) -> None:
        from torch.multiprocessing.reductions import StorageWeakRef
        from torch.utils._pytree import tree_leaves

        for key, (ref, nbytes) in list(self.live.items()):
            if ref.expired():
                del self.live[key]
                self.bytes -= nbytes
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            ref = StorageWeakRef(storage)
            if ref.cdata in self.live or ref.cdata in self.known:
                continue
            nbytes = storage.nbytes()
            self.live[ref.cdata] = (ref, nbytes)
            self.bytes += nbytes
        self.peak = max(self.peak, self.bytes)

    def __enter__(self) -> _LiveBytes:
        self.mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.mode.__exit__(*exc)


def _numel(t: torch.Tensor) -> int:
    return int(t.numel())


def _size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _gib(n: float) -> str:
    return f"{n / GIB:.2f} GiB"


def parallel_checks() -> int:
    """Checks the judge may run at once: one per CPU core (judge._start_workers' default)."""
    return os.cpu_count() or 1
