"""The evaluator's worker: one process that checks and times a list of entries for one task.

Started by :mod:`evoforge.evaluator.runner` as ``python -m evoforge.evaluator.worker JOB.json`` in a
scratch directory. It talks back only through files beside the job: ``progress`` (one line per stage,
so the parent knows whom to blame if this process dies) and ``results.jsonl`` (one JSON record per
finished step). Order of work:

1. load the task, draw every input set (fresh seeds) and compute every reference output in high
   precision, *before* any candidate code is imported;
2. per entry: import/compile, call on each input set, compare with the reference, run the guards;
3. time every entry that passed, interleaved, on a fresh input set (one timing module for all);
4. per timed entry: check once more on another fresh input set (a result cached during timing fails).

A CUDA error or out-of-memory during an entry ends the process after its record is written (exit
code 3): the parent starts a fresh worker for the entries that remain.
"""

from __future__ import annotations

import copy
import faulthandler
import io
import json
import os
import random
import re
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

FATAL_EXIT = 3


class _CappedStream(io.TextIOBase):
    """sys.stdout/sys.stderr for candidate code: keeps the first ``limit`` characters of each
    section (per entry) for its result's logs, passes at most ``file_limit`` characters on to the
    real file, and drops the rest, counting it. A candidate that prints megabytes costs nothing."""

    def __init__(self, fd_stream: Any, limit: int, file_limit: int) -> None:
        self.fd_stream = fd_stream
        self.limit = limit
        self.file_limit = file_limit
        self.written = 0
        self.section: list[str] = []
        self.section_len = 0
        self.dropped = 0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:  # type: ignore[override]
        if self.written < self.file_limit:
            chunk = text[: self.file_limit - self.written]
            self.fd_stream.write(chunk)
            self.written += len(chunk)
        room = self.limit - self.section_len
        if room > 0:
            self.section.append(text[:room])
            self.section_len += min(len(text), room)
        self.dropped += max(len(text) - max(room, 0), 0)
        return len(text)

    def flush(self) -> None:
        self.fd_stream.flush()

    def take(self) -> str:
        text = "".join(self.section)
        if self.dropped:
            text += f"\n[... {self.dropped} more characters dropped]"
        self.section, self.section_len, self.dropped = [], 0, 0
        return text


class _Worker:
    def __init__(self, job_path: Path) -> None:
        self.dir = job_path.parent
        self.job = json.loads(job_path.read_text())
        self.cfg = self.job["config"]
        self.progress = open(self.dir / "progress", "a", buffering=1)  # noqa: SIM115
        # Seconds spent per kind of stage (startup, load, check, time, recheck): where a worker's time goes.
        self.stage_seconds: dict[str, float] = {}
        self._stage_kind, self._stage_started = "startup", time.perf_counter()
        self.results = open(self.dir / "results.jsonl", "a", buffering=1)  # noqa: SIM115
        limit = int(self.cfg["log_limit_chars"])
        file_limit = int(self.cfg["file_log_limit_chars"])
        self.out = _CappedStream(sys.__stdout__, limit, file_limit)
        self.err = _CappedStream(sys.__stderr__, limit, file_limit)
        sys.stdout, sys.stderr = self.out, self.err  # type: ignore[assignment]

    def stage(self, text: str) -> None:
        now = time.perf_counter()
        kind = self._stage_kind
        self.stage_seconds[kind] = self.stage_seconds.get(kind, 0.0) + now - self._stage_started
        self._stage_kind, self._stage_started = text.split(" ", 1)[0], now
        self.progress.write(text + "\n")
        self.progress.flush()

    def emit(self, record: dict[str, Any]) -> None:
        self.results.write(json.dumps(record, default=_json_default) + "\n")
        self.results.flush()

    def logs(self) -> str:
        out, err = self.out.take(), self.err.take()
        return (out + ("\n" if out and err else "") + err).strip()

    # ---------------------------------------------------------------- main
    def run(self) -> int:
        self.stage("startup")
        import torch

        from evoforge import envinfo, timing
        from evoforge.evaluator import guards
        from evoforge.task import TaskError, TaskSpec, init_inputs, load_task

        self.torch, self.guards, self.timing = torch, guards, timing
        self.device = _pick_device(self.cfg.get("device", "auto"))
        # The reference runs in true fp32/fp64: no TF32 anywhere unless a candidate sets it itself.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")
        if self.job.get("precompile"):
            return self._precompile()
        self.emit({"kind": "env", "env": envinfo.collect(self.device)})

        self.stage("load")
        spec = TaskSpec.from_dict(self.job["task"])
        seed = self.cfg.get("seed")
        self.seed = int(seed) if seed is not None else random.SystemRandom().randrange(1, 2**31 - 1)
        try:
            self.task = load_task(spec, module_name="evoforge_task", directory=self.dir)
            self.init_inputs = init_inputs(self.task)
            self.cases = self._cases()
        except TaskError as exc:
            self.emit({"kind": "job_error", "message": str(exc)})
            return 0
        self.emit({"kind": "seed", "seed": self.seed})
        self.logs()

        # Importing torch._dynamo legitimately wraps a few torch functions; do it before the
        # snapshot so a candidate that uses torch.compile is not mistaken for one that patches torch.
        import torch._dynamo

        self.patch_state = guards.patch_snapshot()
        self.flag_state = guards.flags_snapshot()
        if self.cfg["sandbox"] != "none":
            guards.install_audit_guard()  # sandbox: frames, gc, ctypes refused to candidate code from here on
        models: dict[int, Any] = {}
        for index, entry in enumerate(self.job["entries"]):
            self.stage(f"check {index}")
            record, model = self._check(entry, index)
            # A C++/CUDA build's compiler output goes last, its error lines at the very end: a repair prompt
            # reads the tail of the logs.
            record["logs"] = "\n".join(x for x in (self.logs(), record.pop("build_log", "")) if x)
            self.emit({"kind": "check", "index": index, **record})
            if record.get("fatal"):
                return FATAL_EXIT
            if model is not None:
                models[index] = model

        self._time(models)
        self.stage("done")
        self.emit({"kind": "profile", "seconds": self.stage_seconds})
        return 0

    # ---------------------------------------------------------------- precompile (no GPU work)
    def _precompile(self) -> int:
        """Compile each entry's Triton kernels without launching them: inputs on the CPU, every Triton
        launch turned into a warm-up (compile for this GPU, don't run). The kernels land in Triton's
        on-disk cache for the worker that will check and time these entries."""
        from evoforge.task import TaskError, TaskSpec, import_source, init_inputs, load_task, make_inputs

        torch = self.torch
        self.stage("load")
        try:
            task = load_task(TaskSpec.from_dict(self.job["task"]), module_name="evoforge_task", directory=self.dir)
            init, inputs = init_inputs(task), make_inputs(task, 0)
        except TaskError as exc:
            self.emit({"kind": "job_error", "message": str(exc)})
            return 0
        launches = _launches_compile_only()
        if self.device.type == "cuda":
            # Triton needs this GPU's context to know its target, but nothing here may run on the GPU
            # (a timing worker may be using it): with no GPU memory to allocate, a candidate that puts
            # its own tensors on the GPU fails here (and is judged by its timing worker) instead.
            try:
                torch.cuda.set_per_process_memory_fraction(0.0, self.device)
            except Exception as exc:
                self.emit({"kind": "job_error", "message": f"cannot fence the GPU off: {_one_line(exc)}"})
                return 0
        for index, entry in enumerate(self.job["entries"]):
            self.stage(f"check {index}")
            started, before = time.perf_counter(), launches["n"]
            status = "compiled"
            try:
                if entry["role"] == "candidate" and self.cfg["sandbox"] != "none":
                    from evoforge.evaluator.precheck import precheck

                    if precheck(entry["source"]):
                        status = "rejected"
                if status == "compiled":
                    if entry.get("language") == "cuda":  # build where the timing worker will look for it
                        self._prepare_extension_build(entry["hash"])
                    module = import_source(entry["source"], f"evoforge_candidate_{entry['hash']}",
                                           f"<{entry['name']}>", self.dir)
                    model = module.ModelNew(*init).eval()
                    with torch.no_grad():
                        model(*[x.clone() if isinstance(x, torch.Tensor) else x for x in inputs])
            except BaseException as exc:  # the timing worker will judge it; here it only did not compile
                status = f"failed: {_one_line(exc)}"
            self.logs()
            self.emit({"kind": "precompiled", "index": index, "status": status,
                       "kernels": launches["n"] - before, "seconds": time.perf_counter() - started})
        self.stage("done")
        self.emit({"kind": "profile", "seconds": self.stage_seconds})
        return 0

    # ---------------------------------------------------------------- inputs and references
    def _cases(self) -> list[dict[str, Any]]:
        from evoforge.task import TaskError, edge_inputs, make_inputs, needs_cuda

        torch = self.torch
        n_random = int(self.cfg.get("n_random", 3))
        draws = [(f"random seed={self.seed + i}", make_inputs(self.task, self.seed + i)) for i in range(n_random)]
        if self.cfg.get("edge_cases", True):
            draws += edge_inputs(self.task, self.seed + n_random)
        ref_dtype = torch.float64 if self.device.type == "cpu" else torch.float32
        torch.manual_seed(self.seed)
        where = self.task.spec.origin
        try:
            base = self.task.model_cls(*self.init_inputs)
        except Exception as exc:
            if message := needs_cuda(where, "constructing Model", exc, self.device.type):
                raise TaskError(message) from None
            raise TaskError(f"{where}: constructing Model raised {_one_line(exc)}") from None
        if self.device.type == "cuda":
            self._check_memory(draws, base, ref_dtype)
        reference = copy.deepcopy(base).to(device=self.device, dtype=ref_dtype).eval()
        native = base.to(self.device).eval()
        cases = [c for i, (name, inputs) in enumerate(draws)
                 if (c := self._case(name, inputs, reference, native, ref_dtype, repeat=i == 0))]
        self.timing_inputs = [_to(x, self.device) for x in make_inputs(self.task, self.seed + 1000)]
        final = self._case("after timing", make_inputs(self.task, self.seed + 2000), reference, native, ref_dtype)
        if final is None:
            raise TaskError(f"{self.task.spec.origin}: Model's output has NaN/Inf on random inputs")
        self.final_case = final
        return cases

    def _check_memory(self, draws: list[tuple[str, list[Any]]], model: Any, ref_dtype: Any) -> None:
        """Refuse, with the amount needed, a task whose input sets and weights can't fit on the GPU."""
        from evoforge.task import check_fits, reference_bytes, tensor_bytes

        torch = self.torch
        ref_size = torch.empty((), dtype=ref_dtype).element_size()
        sets = [inputs for _, inputs in draws]
        n_sets = len(sets) + 2  # plus the timing set and the after-timing set
        per_set = max(tensor_bytes(s) + reference_bytes(s, ref_size) for s in sets)
        weights = sum(p.numel() * (p.element_size() + ref_size) for p in model.parameters())
        free, _ = torch.cuda.mem_get_info(self.device)
        check_fits(self.task.spec.origin, n_sets * per_set + weights, free, torch.cuda.get_device_name(self.device),
                   f"{n_sets} input sets of {per_set / 2**30:.2f} GiB (with their {ref_dtype} reference copies) "
                   f"and the Model's weights in both precisions ({weights / 2**30:.2f} GiB)")
        self.memory_plan = n_sets * per_set + weights

    def _case(self, name: str, inputs: list[Any], reference: Any, native: Any, ref_dtype: Any,
              repeat: bool = False) -> dict | None:
        """One input set with its high-precision reference output and the native output dtypes. With
        ``repeat`` the reference runs twice on the same inputs: a Model that is itself nondeterministic
        (random ops in its forward) can't be a reference, and is refused."""
        from evoforge.task import TaskError, needs_cuda

        torch = self.torch
        where = self.task.spec.origin
        try:
            dev_inputs = [_to(x, self.device) for x in inputs]
            hi_inputs = [_to(x, self.device, ref_dtype) for x in inputs]
            with torch.no_grad():
                ref = self.guards.tensors_in(reference(*hi_inputs))
                again = self.guards.tensors_in(reference(*hi_inputs)) if repeat else None
                like = self.guards.tensors_in(native(*dev_inputs))
        except Exception as exc:
            if message := needs_cuda(where, "Model", exc, self.device.type):
                raise TaskError(message) from None
            if "out of memory" in str(exc).lower() and self.device.type == "cuda":
                planned = getattr(self, "memory_plan", 0)
                raise TaskError(f"{where}: the task does not fit in GPU memory: its Model ran out of memory on "
                                f"{name} ({_one_line(exc)}); inputs and weights alone need {planned / 2**30:.2f} "
                                "GiB; make get_inputs() smaller") from None
            raise TaskError(f"{where}: Model raised on its own inputs ({name}): {_one_line(exc)}") from None
        if again is not None and (diff := _nondeterminism(torch, ref, again, like, self.task.tolerance)):
            raise TaskError(f"{where}: Model is nondeterministic: two calls on the same inputs differ ({diff}); "
                            "a reference must give the same output for the same inputs (no random ops in forward)")
        if not ref:
            raise TaskError(f"{self.task.spec.origin}: Model's forward returned no tensor")
        if not all(bool(torch.isfinite(r).all()) for r in ref if r.is_floating_point()):
            if name.startswith("random"):
                raise TaskError(f"{self.task.spec.origin}: Model's output has NaN/Inf on random inputs")
            return None  # an edge case the reference itself can't represent is no test
        # The task's own Model, run in its native dtype, sets a floor under the tolerance: a case on
        # which the specification itself is off by more than the dtype's atol is judged at twice
        # the Model's own error, so the bar never asks more than the task's precision can give.
        native_err = [
            float((n.to(r.dtype) - r).abs().max()) if r.is_floating_point() and n.numel() and n.shape == r.shape
            else 0.0
            for n, r in zip(like, ref, strict=False)
        ]
        return {"name": name, "inputs": dev_inputs, "ref": ref, "native_err": native_err,
                "expect": [(tuple(t.shape), t.dtype) for t in like]}

    # ---------------------------------------------------------------- checking
    def _check(self, entry: dict[str, Any], index: int = 0) -> tuple[dict[str, Any], Any]:
        from evoforge.task import import_source

        torch, guards = self.torch, self.guards
        started = time.perf_counter()
        record: dict[str, Any] = {"checks": []}

        def done(status: str, detail: str, **extra: Any) -> tuple[dict[str, Any], Any]:
            if status != "crashed" and (refused := guards.audit_violation()):  # sandbox: whatever it caused
                status, detail = "rejected", refused
            record.update(status=status, detail=detail, seconds=time.perf_counter() - started, **extra)
            # After a crash (out of memory, CUDA error, exit) this process is suspect: the parent
            # starts a fresh worker for the entries that remain.
            record["fatal"] = status == "crashed"
            return record, None

        name = entry["name"]
        if entry["role"] == "candidate" and self.cfg["sandbox"] != "none":
            from evoforge.evaluator.precheck import precheck

            if reason := precheck(entry["source"]):
                return done("rejected", reason)
        native = entry.get("language") == "cuda"
        if native:
            # C++/CUDA sources are built while the module is imported: a stage with its own time limit.
            self.stage(f"compile {index}")
            self._prepare_extension_build(entry["hash"])
        try:
            module = import_source(entry["source"], f"evoforge_candidate_{entry['hash']}", f"<{name}>", self.dir)
        except SyntaxError as exc:
            return done("compile_error", f"syntax error at line {exc.lineno}: {exc.msg}")
        except BaseException as exc:
            if native:
                record["build_log"] = compiler_log(str(exc))
            return self._failure(done, exc, "compile_error", "importing the candidate raised")
        if native:
            self.stage(f"check {index}")
        cls = getattr(module, "ModelNew", None)
        if not isinstance(cls, type) or not issubclass(cls, torch.nn.Module):
            return done("compile_error", "the source defines no `class ModelNew(nn.Module)`")
        try:
            torch.manual_seed(self.seed)
            model = cls(*self.init_inputs).to(self.device).eval()
        except BaseException as exc:
            return self._failure(done, exc, "compile_error", "constructing ModelNew raised")
        if reason := guards.patched(self.patch_state) or guards.audit_violation():
            return done("rejected", reason)

        history: list[tuple[list[Any], list[Any]]] = []
        for case in self.cases:
            verdict = self._call_and_compare(model, case, history, record)
            if verdict is not None:
                return done(*verdict, **_worst(record["checks"]))
        worst = _worst(record["checks"])
        record.update(status="ok", detail="", seconds=time.perf_counter() - started, **worst)
        return record, model

    def _call_and_compare(self, model: Any, case: dict[str, Any], history: list[Any],
                          record: dict[str, Any]) -> tuple[str, str] | None:
        """Call the model on one case; return (status, detail) on failure, None if it passed."""
        torch, guards = self.torch, self.guards
        # The candidate gets its own copies: one that writes its inputs can't spoil the case for
        # the entries after it, and the pristine originals show what it changed.
        pristine = case["inputs"]
        inputs = [x.clone() if isinstance(x, torch.Tensor) else x for x in pristine]
        guards.poison_allocator([t.numel() * t.element_size() for t in case["ref"]], self.device)
        try:
            with torch.no_grad():
                out = model(*inputs)
            _sync(torch, self.device)
        except BaseException as exc:
            failure = self._classify(exc, "runtime_error")
            return failure[0], f"{case['name']}: {failure[1]}"
        if reason := guards.flags_changed(self.flag_state) or guards.audit_violation(self._files()):
            return "rejected", reason
        if reason := guards.patched(self.patch_state):
            return "rejected", reason
        if reason := guards.inputs_written(inputs, pristine):
            return "rejected", reason
        outs = guards.tensors_in(out)
        check = _compare(torch, outs, case, self.task.tolerance)
        record["checks"].append(check)
        if not check["ok"]:
            for earlier, _ in history:
                if len(earlier) == len(outs) and all(
                        guards.same_bits(a, b) for a, b in zip(earlier, outs, strict=True)):
                    return "rejected", f"{case['name']}: returned the result of an earlier call (result reuse)"
            return "incorrect", f"{case['name']}: {check['detail']}"
        for earlier, snapshot in history:
            try:
                kept = all(guards.same_bits(a, b) for a, b in zip(earlier, snapshot, strict=True))
            except RuntimeError as exc:  # torch refuses to read an output that a CUDA graph replay overwrote
                kept, why = False, f" ({_one_line(exc)[:160]})"
            else:
                why = ""
            if not kept:
                return "rejected", f"a later call overwrote the output returned by an earlier call{why}"
        history.append((outs, [t.clone() for t in outs]))
        return None

    def _files(self) -> set[str] | None:
        """sandbox: during a check, every refused reach is the entry's; at recheck, only its file's."""
        if getattr(self, "_recheck_file", None) is None:
            return None
        return {self._recheck_file}

    def _classify(self, exc: BaseException, default: str) -> tuple[str, str]:
        """Status and one-line detail for an exception raised by candidate code."""
        text = _one_line(exc)
        kind = type(exc).__name__
        lowered = text.lower()
        if isinstance(exc, MemoryError) or "out of memory" in lowered or "can't allocate memory" in lowered:
            return "crashed", f"out of memory: {text}"
        if "error building extension" in lowered and self._cuda_compile_only and "cannot find -l" in str(exc):
            return "runtime_error", ("the CUDA sources compiled, but this CPU-only build of torch cannot link or run "
                                     f"them; evaluate on a GPU ({text})")
        if "compilationerror" in kind.lower() or "ptxas" in lowered or "error building extension" in lowered:
            return "compile_error", text
        if self.device.type == "cuda" and (_cuda_broken(self.torch, self.device) or "cuda error" in lowered):
            return "crashed", f"CUDA error: {text}"
        if isinstance(exc, SystemExit):
            return "crashed", f"called exit ({exc.code})"
        return default, text

    _cuda_compile_only = False

    def _prepare_extension_build(self, content_hash: str) -> None:
        """Point torch's extension builder at this candidate's own build directory (keyed by its content
        hash, under evoforge's cache: a later worker evaluating the same source reuses the objects). On a
        CPU-only build of torch with a CUDA toolkit installed, CUDA sources are still compiled, so their
        compile errors are real ones; such a build can't link or run them."""
        from evoforge.cache import clear_stale_locks, extension_build_dir

        build = extension_build_dir(content_hash)
        clear_stale_locks(build, float(self.cfg.get("compile_timeout_s", 600.0)))
        os.environ["TORCH_EXTENSIONS_DIR"] = str(build)
        from torch.utils import cpp_extension

        if getattr(cpp_extension, "CUDA_HOME", None) is None and (home := _cuda_toolkit()):
            cpp_extension.CUDA_HOME = home
            os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "9.0")
            self._cuda_compile_only = True

    def _failure(self, done: Any, exc: BaseException, default: str, what: str) -> tuple[dict[str, Any], Any]:
        status, detail = self._classify(exc, default)
        if "error building extension" in detail.lower() and (errors := compiler_errors(str(exc), 1)):
            detail = f"building the C++/CUDA extension failed: {errors[0]}"
        return done(status, f"{what}: {detail}", traceback=_tail(traceback.format_exc()))

    # ---------------------------------------------------------------- timing
    def _time(self, models: dict[int, Any]) -> None:
        torch, timing = self.torch, self.timing
        if not models:
            return
        names = {index: self.job["entries"][index]["name"] for index in models}
        by_name = {names[i]: i for i in models}
        inputs = self.timing_inputs

        def call(model: Any) -> Any:
            def run() -> Any:
                with torch.no_grad():
                    return model(*inputs)
            return run

        modes = tuple(self.cfg.get("modes", timing.MODES))
        if self.device.type != "cuda":
            modes = tuple(m for m in modes if m == "eager") or ("eager",)
        config = timing.TimingConfig(**self.cfg.get("timing", {}))
        self.stage("time")
        results = timing.measure(
            {names[i]: call(m) for i, m in models.items()},
            device=self.device, modes=modes, config=config,
            on_switch=lambda name, mode: self.stage(f"time {by_name[name]} {mode}"),
        )
        if self.device.type == "cuda" and _cuda_broken(torch, self.device):
            # Someone broke the context while being timed: blame the last one on the progress line.
            raise RuntimeError("CUDA context broken during timing")
        for index, model in models.items():
            self.stage(f"recheck {index}")
            record = {"checks": []}
            entry = self.job["entries"][index]
            self._recheck_file = str(self.dir / f"evoforge_candidate_{entry['hash']}.py")  # sandbox
            verdict = self._call_and_compare(model, self.final_case, [], record)
            if verdict is not None and verdict[0] in ("incorrect", "rejected"):
                verdict = ("rejected", f"wrong after being timed ({verdict[1]})")
            if refused := self.guards.audit_violation(self._files()):  # sandbox: also what it did while timed
                verdict = ("rejected", refused)
            if verdict is None and self.job["entries"][index]["role"] != "baseline":
                # Baselines are PyTorch's own paths: trusted, and the profiler is not cheap.
                verdict = self._side_stream_verdict(model, record)
            timed = results[names[index]]
            record.setdefault("guard_note", None)
            self.emit({
                "kind": "timing", "index": index,
                "timing": {m: asdict(s) for m, s in timed.items() if not isinstance(s, str)},
                "timing_errors": {m: s for m, s in timed.items() if isinstance(s, str)},
                "final": {"status": verdict[0], "detail": verdict[1]} if verdict else None,
                "checks": record["checks"], "logs": self.logs(), "guard_note": record["guard_note"],
                "kernels": record.get("kernels", []),
            })

    def _side_stream_verdict(self, model: Any, record: dict[str, Any]) -> tuple[str, str] | None:
        """Profile one call for work left on a side stream. Runs after all timing is done: a
        profiler session leaves CUPTI overhead on every later launch in this process."""
        if self.device.type != "cuda" or not self.cfg.get("side_stream_guard", True):
            return None
        try:
            kernels: list[dict[str, Any]] = []
            reason = self.guards.side_stream_work(model, self.final_case["inputs"], self.device, kernels)
            record["kernels"] = kernels
        except Exception as exc:  # the profiler is a helper, not the judge: note it and go on
            record["guard_note"] = f"side-stream guard unavailable: {_one_line(exc)}"
            return None
        return ("rejected", reason) if reason else None


# -------------------------------------------------------------------- helpers
def _launches_compile_only() -> dict[str, int]:
    """Make every Triton launch in this process a warm-up: compile (into the on-disk cache), never run.
    Counts the launches it turned into compiles. Under TRITON_INTERPRET nothing compiles; launches are
    skipped all the same."""
    counter = {"n": 0}
    try:
        from triton.runtime import autotuner, jit
    except Exception:
        return counter
    original = jit.JITFunction.run

    def compile_only(self: Any, *args: Any, grid: Any, warmup: bool, **kwargs: Any) -> Any:
        counter["n"] += 1
        return original(self, *args, grid=grid, warmup=True, **kwargs)

    jit.JITFunction.run = compile_only  # type: ignore[method-assign]
    autotuner.Autotuner.run = lambda self, *args, **kwargs: self.warmup(*args, **kwargs)  # type: ignore[method-assign]
    try:
        from triton.runtime import interpreter

        def skip(self: Any, *args: Any, grid: Any, warmup: bool, **kwargs: Any) -> None:
            counter["n"] += 1

        interpreter.InterpretedFunction.run = skip  # type: ignore[method-assign]
    except Exception:
        pass
    return counter


def _pick_device(name: str) -> Any:
    import torch

    if name == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", 0)
    return device


def _to(x: Any, device: Any, dtype: Any = None) -> Any:
    import torch

    if not isinstance(x, torch.Tensor):
        return x
    if dtype is not None and x.is_floating_point():
        return x.to(device=device, dtype=dtype)
    return x.to(device)


def _sync(torch: Any, device: Any) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _cuda_broken(torch: Any, device: Any) -> bool:
    try:
        torch.cuda.synchronize(device)
        torch.zeros(1, device=device).add_(1).item()
        return False
    except Exception:
        return True


def _compare(torch: Any, outs: list[Any], case: dict[str, Any], tolerance: Any) -> dict[str, Any]:
    """Compare outputs with the high-precision reference: shape, dtype, NaN/Inf, then atol/rtol."""
    ref, expect = case["ref"], case["expect"]

    def result(ok: bool, detail: str = "", max_abs: float | None = None, max_rel: float | None = None) -> dict:
        return {"case": case["name"], "ok": ok, "detail": detail, "max_abs_err": max_abs, "max_rel_err": max_rel}

    if len(outs) != len(ref):
        return result(False, f"returned {len(outs)} tensors, expected {len(ref)}")
    worst_abs = worst_rel = 0.0
    for i, (out, r) in enumerate(zip(outs, ref, strict=True)):
        if tuple(out.shape) != tuple(r.shape):
            return result(False, f"output {i} has shape {tuple(out.shape)}, expected {tuple(r.shape)}")
        if expect and out.dtype != expect[i][1]:
            return result(False, f"output {i} has dtype {out.dtype}, expected {expect[i][1]}")
        if out.device != r.device:
            out = out.to(r.device)
        if not r.is_floating_point():
            if not bool(torch.equal(out.to(r.dtype), r)):
                return result(False, f"output {i} differs (exact comparison for non-float outputs)")
            continue
        if not bool(torch.isfinite(out).all()):
            bad = int((~torch.isfinite(out)).sum())
            return result(False, f"output {i} has {bad} NaN/Inf values")
        atol, rtol = tolerance(out.dtype)
        native = case.get("native_err", [])
        if i < len(native) and native[i] == native[i]:
            atol = max(atol, 2.0 * native[i])
        diff = (out.to(r.dtype) - r).abs()
        allowed = atol + rtol * r.abs()
        worst_abs = max(worst_abs, float(diff.max()) if diff.numel() else 0.0)
        worst_rel = max(worst_rel, float((diff / r.abs().clamp_min(max(atol, 1e-12))).max()) if diff.numel() else 0.0)
        if not bool((diff <= allowed).all()):
            n_bad = int((diff > allowed).sum())
            return result(False, f"output {i}: {n_bad}/{diff.numel()} values off, max abs error {worst_abs:.3g} "
                                 f"(atol {atol:g}, rtol {rtol:g})", worst_abs, worst_rel)
    return result(True, "", worst_abs, worst_rel)


def _nondeterminism(torch: Any, first: list[Any], second: list[Any], like: list[Any], tolerance: Any) -> str | None:
    """How two reference runs on the same inputs differ beyond the task's tolerance (exactly for non-float
    outputs), or None when they agree."""
    if len(first) != len(second):
        return f"{len(first)} vs {len(second)} output tensors"
    for i, (a, b) in enumerate(zip(first, second, strict=True)):
        if a.shape != b.shape:
            return f"output {i} has shape {tuple(a.shape)} then {tuple(b.shape)}"
        if not a.is_floating_point():
            if not bool(torch.equal(a, b)):
                return f"output {i}: {int((a != b).sum())}/{a.numel()} values differ"
            continue
        atol, rtol = tolerance(like[i].dtype if i < len(like) else a.dtype)
        diff = (a - b).abs()
        # equal infinities and NaN in both runs agree; NaN in one run only is a difference
        bad = ~((diff <= atol + rtol * b.abs()) | (a == b) | (a.isnan() & b.isnan()))
        if bool(bad.any()):
            worst = float(diff[bad].nan_to_num(float("inf")).max())
            return f"output {i}: {int(bad.sum())}/{a.numel()} values, max difference {worst:.3g}"
    return None


def _worst(checks: list[dict[str, Any]]) -> dict[str, float | None]:
    """Largest errors over the cases compared so far (None where no case got that far)."""
    out: dict[str, float | None] = {}
    for key in ("max_abs_err", "max_rel_err"):
        values = [c[key] for c in checks if c.get(key) is not None and c[key] == c[key]]
        out[key] = max(values) if values else None
    return out


def _cuda_toolkit() -> str | None:
    """A CUDA toolkit's root (the directory with bin/nvcc), or None."""
    import shutil

    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(str(Path(nvcc).resolve().parents[1]))
    for root in candidates:
        if root and (Path(root) / "bin" / "nvcc").is_file():
            return root
    return None


_ERROR_LINE = re.compile(r"\berror\b|undefined reference|cannot find -l", re.IGNORECASE)


def compiler_errors(text: str, limit: int = 30) -> list[str]:
    """The compiler's error lines (ninja's and torch's own wrappers left out), in order."""
    found = []
    for line in text.splitlines():
        line = line.strip()
        if _ERROR_LINE.search(line) and not line.startswith(("Error building extension", "FAILED:", "ninja:")) \
                and " -c " not in line:
            found.append(line[:300])
    return found[:limit]


def compiler_log(text: str, limit: int = 12_000) -> str:
    """A compiler's output for the result's logs: the whole output when short, else its head and tail with
    how much was cut in between; then its error lines again, last, where a reader of the tail finds them."""
    text = text.strip()
    errors = compiler_errors(text)
    if len(text) > limit:
        head, tail = text[: limit * 2 // 3], text[-(limit // 3):]
        text = f"{head}\n[... {len(text) - len(head) - len(tail)} characters cut ...]\n{tail}"
    summary = ("\n\ncompiler errors:\n" + "\n".join(errors)) if errors else ""
    return "compiler output:\n" + text + summary


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:400]}" if lines else type(exc).__name__


def _tail(text: str, limit: int = 4000) -> str:
    return text if len(text) <= limit else "..." + text[-limit:]


def _json_default(value: Any) -> Any:
    return str(value)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv if argv is None else argv
    faulthandler.enable(file=sys.__stderr__)
    worker = _Worker(Path(argv[1]))
    code = worker.run()
    sys.stdout.flush()
    sys.stderr.flush()
    return code


if __name__ == "__main__":
    # os._exit, not sys.exit: a candidate's atexit hooks or threads must not hold the worker open.
    status = main()
    os._exit(status)
