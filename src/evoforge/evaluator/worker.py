"""The untrusted side: one process that imports ONE entry's code and runs the calls the judge asks for.

Started by :mod:`evoforge.evaluator.process` as ``python -m evoforge.evaluator.worker`` in a scratch
directory, with one end of a socket pair (its file descriptor in ``EVOFORGE_CHANNEL_FD``) and nothing
else: no seed, no job file, no reference. Everything it knows comes from the judge's requests, and
everything it says goes back as data (see :mod:`evoforge.evaluator.channel`):

- ``load``: the task's module and the entry's source; open the judge's pool of input/output slots;
  import and construct ``ModelNew``. Answers a failure status, or ready.
- ``run``: call the model once per listed slot on that slot's inputs, copy each result into the slot's
  outputs, and report the per-call latencies its clock measured (CUDA events, or ``perf_counter_ns``).
- ``graph_prepare`` / ``graph``: capture, then replay, a CUDA graph of calls on fixed slots (the
  graph writes its results into the slots itself) and report the replays' latencies.
- ``profile``: one profiled call, for work left on a side stream and the kernels' names.

Nothing in here decides anything: the judge compares the slots' contents with references it alone
holds, and checks the reported latencies against its own clock. The guards that run here (patched
torch functions, changed global flags, the audit hook, outputs overwritten by a later call) are cheap
early rejections whose only power is to fail the entry.
"""

from __future__ import annotations

import faulthandler
import io
import os
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any

FATAL_EXIT = 3


class _CappedStream(io.TextIOBase):
    """sys.stdout/sys.stderr for candidate code: passes at most ``file_limit`` characters on to the real
    file (which the judge reads the tail of) and drops the rest, counting it."""

    def __init__(self, fd_stream: Any, file_limit: int) -> None:
        self.fd_stream = fd_stream
        self.file_limit = file_limit
        self.written = 0
        self.dropped = 0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:  # type: ignore[override]
        if self.written < self.file_limit:
            chunk = text[: self.file_limit - self.written]
            self.fd_stream.write(chunk)
            self.written += len(chunk)
            self.dropped += len(text) - len(chunk)
        else:
            if not self.dropped:
                self.fd_stream.write("\n")
            self.dropped += len(text)
            self.fd_stream.write(f"\r[... {self.dropped} more characters dropped]")
        return len(text)

    def flush(self) -> None:
        self.fd_stream.flush()


class Failure(Exception):
    """An entry failed: (status, detail) for the judge."""

    def __init__(self, status: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.detail, self.extra = status, detail, extra


class Worker:
    def __init__(self, sock: socket.socket) -> None:
        from evoforge.evaluator.channel import Channel

        self.channel = Channel(sock)
        self.model: Any = None
        self.graph: dict[str, Any] | None = None
        self.history: tuple[list[Any], list[Any]] | None = None
        self.compile_only = False

    # ---------------------------------------------------------------- the loop
    def serve(self) -> int:
        import torch

        self.torch = torch
        # torch._dynamo wraps a few torch functions when imported: import it before the guards' snapshot,
        # and here, under the startup stage's limit rather than the candidate's load stage.
        import torch._dynamo

        self.channel.send({"ready": True, "pid": os.getpid()})
        while True:
            request = self.channel.receive()
            op = request.get("op")
            if op == "exit":
                return 0
            handler = getattr(self, f"op_{op}", None)
            if handler is None:
                self.channel.send({"failure": ["runtime_error", f"unknown request {op!r}"]})
                continue
            try:
                reply = handler(request)
            except Failure as exc:
                reply = {"failure": [exc.status, exc.detail], **exc.extra}
            except BaseException as exc:
                status, detail = self._classify(exc, "runtime_error")
                reply = {"failure": [status, f"{request.get('what', op)}: {detail}"],
                         "traceback": _tail(traceback.format_exc())}
            guards = getattr(self, "guards", None)
            if reply.get("failure") and reply["failure"][0] != "crashed" and guards is not None \
                    and (refused := guards.audit_violation()):
                reply["failure"] = ["rejected", refused]  # what failed was the sandbox refusing it
            fatal = reply.get("failure", [""])[0] == "crashed"
            self.channel.send(reply)
            if fatal:  # out of memory, CUDA error, exit(): this process is suspect
                return FATAL_EXIT

    # ---------------------------------------------------------------- load
    def op_load(self, request: dict[str, Any]) -> dict[str, Any]:
        torch = self.torch
        from evoforge.evaluator import guards
        from evoforge.task import TaskSpec, load_task

        self.guards = guards
        self.device = torch.device(request["device"])
        if self.device.type == "cpu" and request.get("cpu_threads"):
            torch.set_num_threads(int(request["cpu_threads"]))
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")
        here = Path.cwd()
        # The task's module, as "evoforge_task": the task_model baselines subclass its Model.
        load_task(TaskSpec.from_dict(request["task"]), check_inputs=False, module_name="evoforge_task",
                  directory=here)
        self._bind(request)
        init = [_decode(x) for x in request["init_inputs"]]
        from evoforge import timing

        self.clock = timing.make_clock(self.device, request.get("flush_bytes"))
        self.patch_state = guards.patch_snapshot()
        self.flag_state = guards.flags_snapshot()
        if request["sandbox"] != "none":
            guards.install_audit_guard()
        entry = request["entry"]
        native = entry.get("language") == "cuda"
        if native:
            from evoforge.evaluator.native import prepare_extension_build

            self.compile_only = prepare_extension_build(entry["hash"], float(request.get("compile_timeout_s", 600)))
        self.module_file = str(here / f"evoforge_candidate_{entry['hash']}.py")
        from evoforge.task import import_source

        try:
            module = import_source(entry["source"], f"evoforge_candidate_{entry['hash']}", f"<{entry['name']}>", here)
        except SyntaxError as exc:
            raise Failure("compile_error", f"syntax error at line {exc.lineno}: {exc.msg}") from None
        except BaseException as exc:
            extra: dict[str, Any] = {"traceback": _tail(traceback.format_exc())}
            detail = self._classify(exc, "compile_error")
            if native:
                from evoforge.evaluator.native import compiler_errors, compiler_log

                extra["build_log"] = compiler_log(str(exc))
                if "error building extension" in detail[1].lower() and (errors := compiler_errors(str(exc), 1)):
                    detail = (detail[0], f"building the C++/CUDA extension failed: {errors[0]}")
            raise Failure(detail[0], f"importing the candidate raised: {detail[1]}", **extra) from None
        cls = getattr(module, "ModelNew", None)
        if not isinstance(cls, type) or not issubclass(cls, torch.nn.Module):
            raise Failure("compile_error", "the source defines no `class ModelNew(nn.Module)`")
        try:
            torch.manual_seed(int(request["init_seed"]))
            self.model = cls(*init).to(self.device).eval()
        except BaseException as exc:
            status, detail = self._classify(exc, "compile_error")
            raise Failure(status, f"constructing ModelNew raised: {detail}",
                          traceback=_tail(traceback.format_exc())) from None
        self._guard()
        return {"loaded": True}

    def _bind(self, request: dict[str, Any]) -> None:
        """Map this evaluation's pool (its fd came with the request) and make the slots' device copies."""
        from evoforge.evaluator.channel import open_pool

        if not self.channel.fds:
            raise Failure("crashed", "the judge's pool did not arrive with the request")
        fd = self.channel.fds.pop()
        self.host_inputs, self.outputs = open_pool(request["pool"], fd)
        # A device copy of every slot's inputs, made once, filled per block. The pool stays pageable:
        # page-locking it (cudaHostRegister) leaves a sticky "already mapped" error when a range is
        # registered twice, which the next kernel launch then raises.
        if self.device.type == "cuda":
            self.inputs = [[t.to(self.device) for t in slot] for slot in self.host_inputs]
        else:
            self.inputs = self.host_inputs
        self.args_template = request["args"]
        self.graph = None
        self.history = None

    def op_rebind(self, request: dict[str, Any]) -> dict[str, Any]:
        """A kept baseline worker, handed the next evaluation's pool: same model, new slots."""
        if self.model is None:
            raise Failure("runtime_error", "nothing loaded to rebind")
        self._bind(request)
        self._guard()
        return {"loaded": True}

    # ---------------------------------------------------------------- calls
    def _stage_in(self, slots: list[int]) -> None:
        """Copy the judge's fresh values of these slots to their device copies (outside any timed region)."""
        if self.inputs is self.host_inputs:
            return
        for slot in slots:
            for dst, src in zip(self.inputs[slot], self.host_inputs[slot], strict=True):
                dst.copy_(src)
        self.torch.cuda.synchronize(self.device)

    def _args(self, slot: int) -> list[Any]:
        tensors = self.inputs[slot]
        return [tensors[x["slot"]] if "slot" in x else _decode(x["value"]) for x in self.args_template]

    def _call(self, slot: int) -> list[Any]:
        with self.torch.no_grad():
            return self.guards.tensors_in(self.model(*self._args(slot)))

    def _fits(self, outs: list[Any], slot: int) -> None:
        """Fail unless one call's outputs fit the slot's outputs (count, shapes, dtypes)."""
        expected = self.outputs[slot]
        if len(outs) != len(expected):
            raise Failure("incorrect", f"returned {len(outs)} tensors, expected {len(expected)}")
        for i, (out, dst) in enumerate(zip(outs, expected, strict=True)):
            if tuple(out.shape) != tuple(dst.shape):
                raise Failure("incorrect", f"output {i} has shape {tuple(out.shape)}, expected {tuple(dst.shape)}")
            if out.dtype != dst.dtype:
                raise Failure("incorrect", f"output {i} has dtype {out.dtype}, expected {dst.dtype}")

    def _deliver(self, outs: list[Any], slot: int) -> None:
        """Copy one call's outputs into the slot's outputs, after checking they fit."""
        self._fits(outs, slot)
        for out, dst in zip(outs, self.outputs[slot], strict=True):
            dst.copy_(out)

    def op_run(self, request: dict[str, Any]) -> dict[str, Any]:
        """Eager calls, one per listed slot, each timed by this process's clock."""
        torch, clock = self.torch, self.clock
        times: list[float] = []
        check_history = bool(request.get("history"))
        slots = [int(s) for s in request["slots"]]
        self._stage_in(slots)
        for slot in slots:
            holder: list[list[Any]] = []
            try:
                times.append(clock.rep(lambda s=slot, h=holder: h.append(self._call(s)), "eager"))
            except Failure:
                raise
            except BaseException as exc:
                status, detail = self._classify(exc, "runtime_error")
                raise Failure(status, detail, traceback=_tail(traceback.format_exc())) from None
            outs = holder[0]
            self._deliver(outs, slot)
            if check_history:
                self._check_history(outs)
                if self.inputs is not self.host_inputs and \
                        (reason := self.guards.inputs_written([h.to(self.device) for h in self.host_inputs[slot]],
                                                          self.inputs[slot])):
                    raise Failure("rejected", reason)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self._guard()
        return {"times_us": times}

    def _check_history(self, outs: list[Any]) -> None:
        guards = self.guards
        if self.history is not None:
            earlier, snapshot = self.history
            try:
                kept = all(guards.same_bits(a, b) for a, b in zip(earlier, snapshot, strict=True))
            except RuntimeError:
                kept = False
            if not kept:
                raise Failure("rejected", "a later call overwrote the output returned by an earlier call")
            if len(earlier) == len(outs) and all(a.data_ptr() == b.data_ptr()
                                                 for a, b in zip(earlier, outs, strict=True)):
                raise Failure("rejected", "returned the result of an earlier call again (result reuse)")
        self.history = (outs, [t.clone() for t in outs])

    def _guard(self) -> None:
        guards = self.guards
        reason = guards.flags_changed(self.flag_state) or guards.patched(self.patch_state) \
            or guards.audit_violation()
        if reason:
            raise Failure("rejected", reason)

    # ---------------------------------------------------------------- graphs
    def op_graph_prepare(self, request: dict[str, Any]) -> dict[str, Any]:
        """Capture, for each group of slots, a graph of [flush, call on slot s] for every slot s of the
        group, and one graph of the flushes alone (subtracted by the judge). After a block of replays the
        results are copied to the slots' outputs, outside the timing."""
        torch = self.torch
        if self.device.type != "cuda":
            raise Failure("runtime_error", "graph mode needs a CUDA device")
        groups = [[int(s) for s in group] for group in request["groups"]]
        every = [s for group in groups for s in group]
        self._stage_in(every)
        flush = self.clock.flush_buffer
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(2):
                for s in every:
                    self._deliver(self._call(s), s)
        torch.cuda.current_stream(self.device).wait_stream(side)
        torch.cuda.synchronize(self.device)
        graphs, statics = [], []
        for group in groups:
            graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(graph):
                    for s in group:
                        flush.zero_()
                        statics.append((s, self._call(s)))
            except Exception as exc:
                if "unjoined" in str(exc):  # cudaErrorStreamCaptureUnjoined: its work outlived the call
                    raise Failure("rejected", "left GPU work running on a side stream after returning (the graph "
                                  f"capture ended with work it never joined: {_one_line(exc)})") from None
                raise
            graphs.append(graph)
        flushes = torch.cuda.CUDAGraph()
        with torch.cuda.graph(flushes):
            for _ in groups[0]:
                flush.zero_()
        deliveries, stage = self._deliveries(statics)
        torch.cuda.synchronize(self.device)
        self.graph = {"graphs": graphs, "flushes": flushes, "deliveries": deliveries, "stage": stage,
                      "slots": every}
        self._guard()
        return {"captured": len(every)}

    def op_graph(self, request: dict[str, Any]) -> dict[str, Any]:
        """Replay every group's graph once, back to back, each timed after a timed replay of the flushes."""
        torch = self.torch
        if self.graph is None:
            raise Failure("runtime_error", "no graph captured")
        g = self.graph
        clock = self.clock
        self._stage_in(g["slots"])
        pairs, flushes = [], []
        for graph in g["graphs"]:
            flushes.append(clock.elapsed_us(g["flushes"].replay))
            pairs.append(clock.elapsed_us(graph.replay))
        if g["stage"] is not None:
            g["stage"].replay()
        for src, dst in g["deliveries"]:
            dst.copy_(src)
        torch.cuda.synchronize(self.device)
        self._guard()
        return {"pair_us": pairs, "flush_us": flushes}

    def _deliveries(self, statics: list[tuple[int, list[Any]]]) -> tuple[list[tuple[Any, Any]], Any]:
        """How a block's results reach the slots' outputs (host memory) after the replays: (device source,
        host destination) pairs, and a graph that first copies each non-contiguous output into a contiguous
        device buffer of its own (None if there is none).

        The judge's clock check counts the host's time between request and reply that the worker's clock did
        not show, so what the delivery costs must not depend on what the candidate returns. Copying a
        non-contiguous tensor (channels-last, transposed, expanded) to the host allocates and launches a
        layout kernel per copy, tens of microseconds a call more than a contiguous tensor's plain copy: on an
        H200 (2026-11-30) a compiled channels-last convolution, honest, was rejected for 19 us per call of
        unreported time. One replay of a captured graph does those layout copies for the whole block, so every
        entry's delivery is contiguous copies of the same sizes."""
        torch = self.torch
        deliveries, relayout = [], []
        for s, outs in statics:
            self._fits(outs, s)
            for out, dst in zip(outs, self.outputs[s], strict=True):
                if out.is_contiguous():
                    deliveries.append((out, dst))
                else:
                    buffer = torch.empty(tuple(out.shape), dtype=out.dtype, device=out.device)
                    relayout.append((buffer, out))
                    deliveries.append((buffer, dst))
        if not relayout:
            return deliveries, None
        stage = torch.cuda.CUDAGraph()
        with torch.cuda.graph(stage):
            for buffer, out in relayout:
                buffer.copy_(out)
        return deliveries, stage

    # ---------------------------------------------------------------- profile
    def op_profile(self, request: dict[str, Any]) -> dict[str, Any]:
        if self.device.type != "cuda":
            return {"side_stream": None, "kernels": []}
        kernels: list[dict[str, Any]] = []
        self._stage_in([int(request["slot"])])
        try:
            reason = self.guards.side_stream_work(self.model, self._args(int(request["slot"])), self.device, kernels)
        except Exception as exc:  # a guard that can't run fails closed: the judge leaves the entry unverified
            return {"unavailable": _one_line(exc), "kernels": []}
        self._guard()
        return {"side_stream": reason, "kernels": kernels}

    # ---------------------------------------------------------------- precompile
    def op_precompile(self, request: dict[str, Any]) -> dict[str, Any]:
        """Compile each entry's Triton kernels without launching them (inputs on the CPU, every Triton
        launch a warm-up), into Triton's on-disk cache for the workers that will check and time them."""
        torch = self.torch
        from evoforge.task import TaskSpec, import_source, load_task

        here = Path.cwd()
        device = torch.device(request["device"])
        load_task(TaskSpec.from_dict(request["task"]), check_inputs=False, module_name="evoforge_task",
                  directory=here)
        launches = _launches_compile_only()
        if device.type == "cuda":
            # Triton needs this GPU's context to know its target, but nothing here may run on the GPU.
            torch.cuda.set_per_process_memory_fraction(0.0, device)
        init = [_decode(x) for x in request["init_inputs"]]
        inputs = [_decode(x) for x in request["inputs"]]
        records = []
        for entry in request["entries"]:
            started, before = time.perf_counter(), launches["n"]
            status = "compiled"
            try:
                if entry.get("language") == "cuda":
                    from evoforge.evaluator.native import prepare_extension_build

                    prepare_extension_build(entry["hash"], float(request.get("compile_timeout_s", 600)))
                module = import_source(entry["source"], f"evoforge_candidate_{entry['hash']}", f"<{entry['name']}>",
                                       here)
                model = module.ModelNew(*init).eval()
                with torch.no_grad():
                    model(*[x.clone() if isinstance(x, torch.Tensor) else x for x in inputs])
            except BaseException as exc:  # the timing worker will judge it; here it only did not compile
                status = f"failed: {_one_line(exc)}"
            records.append({"status": status, "kernels": launches["n"] - before,
                            "seconds": time.perf_counter() - started})
        return {"records": records}

    # ---------------------------------------------------------------- helpers
    def _classify(self, exc: BaseException, default: str) -> tuple[str, str]:
        """Status and one-line detail for an exception raised by candidate code."""
        text = _one_line(exc)
        kind = type(exc).__name__
        lowered = text.lower()
        if isinstance(exc, MemoryError) or "out of memory" in lowered or "can't allocate memory" in lowered:
            return "crashed", f"out of memory: {text}"
        if "error building extension" in lowered and self.compile_only and "cannot find -l" in str(exc):
            return "runtime_error", ("the CUDA sources compiled, but this CPU-only build of torch cannot link or run "
                                     f"them; evaluate on a GPU ({text})")
        if "compilationerror" in kind.lower() or "ptxas" in lowered or "error building extension" in lowered:
            return "compile_error", text
        device = getattr(self, "device", None)
        if device is not None and device.type == "cuda" \
                and (_cuda_broken(self.torch, device) or "cuda error" in lowered):
            return "crashed", f"CUDA error: {text}"
        if isinstance(exc, SystemExit):
            return "crashed", f"called exit ({exc.code})"
        return default, text


# -------------------------------------------------------------------- helpers
def _decode(value: Any) -> Any:
    """A value the judge encoded (see evoforge.evaluator.judge.encode)."""
    if isinstance(value, dict) and "tensor" in value:
        import torch

        return torch.tensor(value["tensor"], dtype=getattr(torch, value["dtype"]))
    if isinstance(value, dict) and "empty" in value:  # a shape and dtype: values don't matter (precompile)
        import torch

        shape, dtype = [int(n) for n in value["empty"]], getattr(torch, value["dtype"])
        # floats uninitialised (never touched unless used); integers zero, so an index input stays in range
        return torch.empty(shape, dtype=dtype) if dtype.is_floating_point else torch.zeros(shape, dtype=dtype)
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _launches_compile_only() -> dict[str, int]:
    """Make every Triton launch in this process a warm-up: compile (into the on-disk cache), never run."""
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


def _cuda_broken(torch: Any, device: Any) -> bool:
    try:
        torch.cuda.synchronize(device)
        torch.zeros(1, device=device).add_(1).item()
        return False
    except Exception:
        return True


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:400]}" if lines else type(exc).__name__


def _tail(text: str, limit: int = 4000) -> str:
    return text if len(text) <= limit else "..." + text[-limit:]


def main() -> int:
    faulthandler.enable(file=sys.__stderr__)
    from evoforge.evaluator.channel import CHANNEL_ENV

    fd = int(os.environ.pop(CHANNEL_ENV))
    sock = socket.socket(fileno=fd)
    file_limit = int(os.environ.pop("EVOFORGE_LOG_LIMIT", "1000000"))
    sys.stdout = _CappedStream(sys.__stdout__, file_limit)  # type: ignore[assignment]
    sys.stderr = _CappedStream(sys.__stderr__, file_limit)  # type: ignore[assignment]
    try:
        return Worker(sock).serve()
    except Exception as exc:  # the channel went away: the judge is gone or gave up on us
        print(f"worker: {_one_line(exc)}", file=sys.__stderr__)
        return 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


if __name__ == "__main__":
    # os._exit, not sys.exit: a candidate's atexit hooks or threads must not hold the worker open.
    os._exit(main())
