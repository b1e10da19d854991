"""What crosses the trust boundary between the judge and a worker: messages and shared tensors.

**Messages** are JSON, one per line, over a socket pair whose judge end never leaves the judge.
The judge sends requests; the worker answers each with one reply. A reply is data only: the judge
parses it as JSON (never pickle), checks its shape, and takes nothing in it as a verdict. A line
longer than :data:`MAX_LINE` or anything that is not a JSON object ends the conversation.

**Tensors** live in memory the judge allocates and shares (:class:`SharedPool`, one anonymous ``memfd``
mapped by both processes): input slots that the judge fills with fresh values right before a request,
and output slots the worker copies a call's result into. The pool never holds a reference output:
references exist only in the judge.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import select
import socket
import time
from dataclasses import dataclass
from typing import Any

import torch

MAX_LINE = 8 * 2**20
CHANNEL_ENV = "EVOFORGE_CHANNEL_FD"  # the worker's end of the socket pair


class ChannelClosed(Exception):
    """The other side went away (or sent something that is not a message)."""


class ChannelTimeout(Exception):
    """No reply within the time limit."""


class Channel:
    """Line-delimited JSON over a connected socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.fds: list[int] = []  # file descriptors received with messages (the judge's pool)

    def send(self, message: dict[str, Any], fds: tuple[int, ...] = ()) -> None:
        """Send one message; ``fds`` travel with it (SCM_RIGHTS): the judge hands a worker its pool this
        way, so a worker kept for the next evaluation can be handed that evaluation's pool."""
        data = (json.dumps(message, allow_nan=True) + "\n").encode()
        try:
            if fds:
                sent = socket.send_fds(self.sock, [data], list(fds))
                data = data[sent:]
            self.sock.sendall(data)
        except OSError as exc:
            raise ChannelClosed(str(exc)) from None

    def receive(self, timeout_s: float | None = None) -> dict[str, Any]:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while b"\n" not in self.buffer:
            if len(self.buffer) > MAX_LINE:
                raise ChannelClosed(f"a message longer than {MAX_LINE} bytes")
            wait = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            ready, _, _ = select.select([self.sock], [], [], wait)
            if not ready:
                raise ChannelTimeout(f"no reply within {timeout_s:g} s")
            try:
                chunk, fds, _, _ = socket.recv_fds(self.sock, 1 << 16, 4)
            except OSError as exc:
                raise ChannelClosed(str(exc)) from None
            self.fds.extend(fds)
            if not chunk:
                raise ChannelClosed("the worker closed its end")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        try:
            message = json.loads(line)
        except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested past the parser's depth
            raise ChannelClosed("a reply that is not JSON") from None
        if not isinstance(message, dict):
            raise ChannelClosed("a reply that is not a JSON object")
        return message

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


# ---------------------------------------------------------------- shared tensors
@dataclass(frozen=True)
class TensorSpec:
    """Where one tensor lives in a pool: byte offset, shape, dtype (as torch names it)."""

    offset: int
    shape: tuple[int, ...]
    dtype: str

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    @property
    def nbytes(self) -> int:
        n = 1
        for size in self.shape:
            n *= size
        return n * torch.empty((), dtype=self.torch_dtype).element_size()

    def to_dict(self) -> dict[str, Any]:
        return {"offset": self.offset, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TensorSpec:
        return cls(int(data["offset"]), tuple(int(s) for s in data["shape"]), str(data["dtype"]))


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


class Layout:
    """K slots, each an input set (the task's input tensors) and an output set (the reference's
    output tensors, in the dtypes the task's own Model returns), packed into one byte range: every slot's
    inputs first, then every slot's outputs, so consecutive slots' inputs are one range (one copy)."""

    ALIGN = 256

    def __init__(self, inputs: list[tuple[tuple[int, ...], torch.dtype]],
                 outputs: list[tuple[tuple[int, ...], torch.dtype]], slots: int) -> None:
        self.slots = slots
        self.inputs: list[list[TensorSpec]] = []
        self.outputs: list[list[TensorSpec]] = []
        offset = 0

        def place(shape: tuple[int, ...], dtype: torch.dtype) -> TensorSpec:
            nonlocal offset
            spec = TensorSpec(offset, tuple(shape), dtype_name(dtype))
            offset += -(-max(spec.nbytes, 1) // self.ALIGN) * self.ALIGN
            return spec

        for _ in range(slots):
            self.inputs.append([place(s, d) for s, d in inputs])
        self.inputs_bytes = offset
        for _ in range(slots):
            self.outputs.append([place(s, d) for s, d in outputs])
        self.nbytes = max(offset, self.ALIGN)

    def input_range(self, first: int, last: int) -> tuple[int, int]:
        """Byte range of the inputs of slots first..last (inclusive)."""
        per_slot = self.inputs_bytes // max(self.slots, 1)
        return first * per_slot, (last + 1) * per_slot

    @staticmethod
    def slot_bytes(inputs: list[tuple[tuple[int, ...], torch.dtype]],
                   outputs: list[tuple[tuple[int, ...], torch.dtype]]) -> int:
        return Layout(inputs, outputs, 1).nbytes

    def to_dict(self) -> dict[str, Any]:
        return {"slots": self.slots, "nbytes": self.nbytes,
                "inputs": [[t.to_dict() for t in s] for s in self.inputs],
                "outputs": [[t.to_dict() for t in s] for s in self.outputs]}


def views(base: torch.Tensor, layout_dict: dict[str, Any]) -> tuple[list[list[torch.Tensor]], list[list[torch.Tensor]]]:
    """The input and output slot tensors of a pool's byte tensor ``base``."""

    def view(spec_dict: dict[str, Any]) -> torch.Tensor:
        spec = TensorSpec.from_dict(spec_dict)
        raw = base[spec.offset: spec.offset + spec.nbytes]
        return raw.view(spec.torch_dtype).view(spec.shape)

    inputs = [[view(t) for t in slot] for slot in layout_dict["inputs"]]
    outputs = [[view(t) for t in slot] for slot in layout_dict["outputs"]]
    return inputs, outputs


class SharedPool:
    """The judge's side of a pool: one anonymous memfd in host memory, which the worker maps too.

    Host memory on a GPU as well: CUDA IPC is refused in some sandboxes (cuIpcOpenMemHandle returned
    CUDA_ERROR_INVALID_VALUE on the H200 machines, which run under gVisor), while a memfd works wherever
    Linux does. The worker copies a slot's inputs to the GPU before a block of calls and the outputs back
    after, outside its timed region; the judge's clock sees those copies as overhead, alike for every
    entry."""

    def __init__(self, layout: Layout, device: torch.device) -> None:
        self.layout = layout
        self.device = device
        self.fd: int | None = os.memfd_create("evoforge-pool", 0)
        os.ftruncate(self.fd, layout.nbytes)
        self._map = mmap.mmap(self.fd, layout.nbytes)
        self.base = torch.frombuffer(self._map, dtype=torch.uint8)
        self.inputs, self.outputs = views(self.base, layout.to_dict())

    def describe(self) -> dict[str, Any]:
        return {"layout": self.layout.to_dict()}

    def close(self) -> None:
        self.inputs, self.outputs = [], []
        self.base = torch.empty(0)
        if self.fd is not None:
            with contextlib.suppress(BufferError, ValueError):
                self._map.close()
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None


def open_pool(description: dict[str, Any], fd: int) -> tuple[list[list[torch.Tensor]], list[list[torch.Tensor]]]:
    """The worker's side: map the judge's pool (``fd``, received with the request) and return (input
    slots, output slots), in host memory."""
    layout = description["layout"]
    mapped = mmap.mmap(fd, int(layout["nbytes"]))
    os.close(fd)  # the mapping keeps the memory
    return views(torch.frombuffer(mapped, dtype=torch.uint8), layout)
