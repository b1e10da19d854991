"""What crosses the trust boundary: the channel takes only JSON objects, a worker's failure report of any
shape can only fail its own entry, and the pool's slots are laid out so a block's inputs are one range."""

from __future__ import annotations

import socket

import pytest
import torch

from evoforge.evaluator.channel import Channel, ChannelClosed, ChannelTimeout, Layout, SharedPool, open_pool
from evoforge.evaluator.judge import _failure_of, _runs


def _pair() -> tuple[Channel, socket.socket]:
    ours, theirs = socket.socketpair()
    return Channel(ours), theirs


@pytest.mark.parametrize("line", [b"not json\n", b"[1, 2]\n", b"\xff\xfe\n", b"[" * 100_000 + b"\n"])
def test_anything_but_a_json_object_ends_the_conversation(line: bytes) -> None:
    channel, worker = _pair()
    worker.sendall(line)
    with pytest.raises(ChannelClosed):
        channel.receive(5)


def test_a_silent_worker_times_out_and_a_closed_one_is_closed() -> None:
    channel, worker = _pair()
    with pytest.raises(ChannelTimeout):
        channel.receive(0.05)
    worker.close()
    with pytest.raises(ChannelClosed):
        channel.receive(1)


def test_a_pool_travels_with_a_message_and_maps_to_the_same_memory() -> None:
    layout = Layout([((2, 3), torch.float32), ((4,), torch.int64)], [((3,), torch.float16)], slots=3)
    pool = SharedPool(layout, torch.device("cpu"))
    judge, worker_sock = _pair()
    worker = Channel(worker_sock)
    judge.send({"op": "load", "pool": pool.describe()}, fds=(pool.fd,))  # type: ignore[arg-type]
    message = worker.receive(5)
    assert len(worker.fds) == 1
    inputs, outputs = open_pool(message["pool"], worker.fds.pop())
    pool.inputs[1][0].copy_(torch.arange(6.0).view(2, 3))
    assert torch.equal(inputs[1][0], torch.arange(6.0).view(2, 3))  # the judge's write, seen by the worker
    outputs[2][0].fill_(7)
    assert torch.equal(pool.outputs[2][0], torch.full((3,), 7, dtype=torch.float16))  # and back
    pool.close()
    assert pool.fd is None


def test_consecutive_slots_inputs_are_one_byte_range() -> None:
    layout = Layout([((5,), torch.float32)], [((2,), torch.float32)], slots=4)
    a, b = layout.input_range(1, 2)
    assert a == layout.inputs[1][0].offset and b == layout.inputs[3][0].offset
    assert layout.outputs[0][0].offset >= layout.inputs_bytes  # the outputs come after every input
    assert _runs([0, 1, 2, 5, 7, 8]) == [(0, 2), (5, 5), (7, 8)]


@pytest.mark.parametrize(("reply", "expected"), [
    ({}, None),
    ({"failure": ["incorrect", "off"]}, ("incorrect", "off")),
    ({"failure": ["ok", "I am fine"]}, ("runtime_error", "I am fine")),  # a worker can't report itself ok
    ({"failure": 5}, ("runtime_error", "failed")),
    ({"failure": [None]}, ("runtime_error", "failed")),
    ({"failure": ["rejected", "x" * 10_000]}, ("rejected", "x" * 2000)),
])
def test_a_failure_report_of_any_shape_only_fails(reply: dict, expected: tuple[str, str] | None) -> None:
    assert _failure_of(reply) == expected
