"""The KV event subscriber over real ZMQ sockets on loopback: per-endpoint and central
sockets, gaps and restarts, malformed messages, endpoints that leave."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
import zmq
import zmq.asyncio

from llmd_router import testing
from llmd_router.datalayer.kvevents import BlockStored
from llmd_router.datalayer.kvevents.subscriber import KVEventSubscriber, KVSubscription

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from llmd_router.datalayer.kvevents import KVEventBatch


WARM_UP = 7  # the data-parallel rank warm-up messages go as


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Sink:
    kv_subscription: KVSubscription
    batches: list[tuple[str, str, KVEventBatch]] = field(default_factory=list)
    resets: list[tuple[str, str]] = field(default_factory=list)

    def kv_batch(self, server: str, model: str, batch: KVEventBatch) -> None:
        self.batches.append((server, model, batch))

    def kv_reset(self, server: str, reason: str) -> None:
        self.resets.append((server, reason))


def stored(*hashes: int, parent: int | None = None) -> dict[str, Any]:
    return {
        "type": "BlockStored",
        "block_hashes": list(hashes),
        "parent_block_hash": parent,
        "token_ids": list(range(4 * len(hashes))),
        "block_size": 4,
        "lora_id": None,
        "medium": "GPU",
        "lora_name": None,
    }


class Publisher:
    """A model server's publisher, as vLLM's: PUB, [topic, seq (8 bytes BE), msgpack batch]."""

    def __init__(self, context: zmq.asyncio.Context, address: str, *, bind: bool, topic: str):
        self.socket = context.socket(zmq.PUB)
        if bind:
            self.socket.bind(address)
        else:
            self.socket.connect(address)
        self.topic = topic.encode()
        self.seq = 0

    async def send(self, *events: dict[str, Any], seq: int | None = None, rank: int = 0) -> None:
        number = self.seq if seq is None else seq
        self.seq = number + 1
        payload = msgspec.msgpack.encode([1.0, list(events), rank])
        await self.socket.send_multipart([self.topic, number.to_bytes(8, "big"), payload])

    async def send_raw(self, frames: list[bytes]) -> None:
        await self.socket.send_multipart(frames)

    async def warm_up(self, sink: Sink) -> None:
        """Send until one arrives (a SUB misses what comes before it joins), as another data
        parallel rank, whose sequence is its own; then forget what the sink got."""
        for seq in range(500):
            await self.send(seq=seq, rank=WARM_UP)
            await asyncio.sleep(0.01)
            if any(b.data_parallel_rank == WARM_UP for _, _, b in sink.batches):
                break
        else:
            raise AssertionError("the subscriber never received the warm-up")
        self.seq = 0
        await asyncio.sleep(0.05)  # the warm-ups still on their way
        sink.batches.clear()
        sink.resets.clear()

    def close(self) -> None:
        self.socket.close(0)


@pytest.fixture
async def context() -> AsyncIterator[zmq.asyncio.Context]:
    ctx = zmq.asyncio.Context()
    yield ctx
    ctx.term()


async def until(predicate, seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


async def test_a_per_endpoint_socket_reads_that_endpoints_publisher(context: zmq.asyncio.Context):
    port = free_port()
    endpoint = testing.endpoint(1, address="127.0.0.1", port=8000)
    sink = Sink(KVSubscription(pod_port=port))
    subscriber = KVEventSubscriber(lambda: [endpoint])
    publisher = Publisher(context, f"tcp://127.0.0.1:{port}", bind=True, topic="kv@whatever@m")
    try:
        async with testing.task_owner() as owner:
            subscriber.configure([sink])
            subscriber.endpoint_added(endpoint)
            subscriber.start(owner)
            await publisher.warm_up(sink)
            await publisher.send(stored(1, 2))
            await publisher.send(stored(3, parent=2))
            await until(lambda: len(sink.batches) == 2)
            server, model, batch = sink.batches[0]
            # The socket's endpoint is the server, whatever the topic says.
            assert server == endpoint.key and model == "m"
            assert isinstance(batch.events[0], BlockStored)
            assert batch.events[0].block_hashes == (1, 2)
            assert sink.resets == []
            # Lost messages: the sequence skips 5 numbers; the server is reset, then indexed.
            await publisher.send(stored(9), seq=publisher.seq + 5)
            await until(lambda: len(sink.batches) == 3)
            assert sink.resets == [(endpoint.key, "5 messages were lost")]
            # A restarted publisher counts from 0 again.
            await publisher.send(stored(1), seq=0)
            await until(lambda: len(sink.batches) == 4)
            assert sink.resets[-1] == (endpoint.key, "its publisher restarted")
            # A malformed message is counted and dropped; the loop goes on.
            await publisher.send_raw([b"kv@x@m", b"\x00" * 8, b"\xc1not msgpack"])
            await publisher.send(stored(2, parent=1))
            await until(lambda: len(sink.batches) == 5)
            stats = subscriber.statistics()
            assert stats["malformed"] == 1 and stats["gaps"] == 1 and stats["restarts"] == 1
            assert stats["lostMessages"] == 5
            (socket_stats,) = stats["sockets"].values()
            assert socket_stats["mode"] == "connect" and socket_stats["server"] == endpoint.key
            # The endpoint leaves: its socket closes and the sinks forget it.
            subscriber.endpoint_removed(endpoint)
            assert sink.resets[-1] == (endpoint.key, "it left the pool")
            await until(lambda: not subscriber.statistics()["sockets"])
    finally:
        publisher.close()
        subscriber.close()


async def test_a_central_socket_names_servers_by_topic(context: zmq.asyncio.Context):
    port = free_port()
    a = testing.endpoint(1, address="127.0.0.1", port=8001)
    b = testing.endpoint(2, address="127.0.0.2", port=8002)
    sink = Sink(KVSubscription(bind=f"tcp://127.0.0.1:{port}", pod_port=None))
    subscriber = KVEventSubscriber(lambda: [a, b])
    address = f"tcp://127.0.0.1:{port}"
    by_key = Publisher(context, address, bind=False, topic=f"kv@{a.key}@m")
    by_address = Publisher(context, address, bind=False, topic="kv@127.0.0.2@m")
    stranger = Publisher(context, address, bind=False, topic="kv@no-model-part")
    try:
        async with testing.task_owner() as owner:
            subscriber.configure([sink])
            subscriber.endpoint_added(a)
            subscriber.endpoint_added(b)
            subscriber.start(owner)
            await by_key.warm_up(sink)
            await by_address.warm_up(sink)
            await by_key.send(stored(1))
            await by_address.send(stored(2))
            await until(lambda: len(sink.batches) == 2)
            # A topic that does not name a server (not kv@<pod>@<model>) is counted, dropped.
            for _ in range(100):
                await stranger.send(stored(3))
                await asyncio.sleep(0.01)
                if subscriber.statistics().get("unknownTopic"):
                    break
            assert len(sink.batches) == 2
            assert sorted(s for s, _, _ in sink.batches) == sorted([a.key, b.key])
            # Two publishers on one socket keep their own sequences: no false gaps.
            assert sink.resets == []
            # A new configuration without the sink closes its socket.
            subscriber.configure([])
            await until(lambda: not subscriber.statistics()["sockets"])
    finally:
        for p in (by_key, by_address, stranger):
            p.close()
        subscriber.close()


async def test_a_failing_sink_does_not_stop_the_others(context: zmq.asyncio.Context):
    port = free_port()
    endpoint = testing.endpoint(1, address="127.0.0.1", port=8000)

    class Broken(Sink):
        def kv_batch(self, server: str, model: str, batch: KVEventBatch) -> None:
            raise RuntimeError("a bug")

    good = Sink(KVSubscription(pod_port=port))
    broken = Broken(KVSubscription(pod_port=port))
    subscriber = KVEventSubscriber(lambda: [endpoint])
    publisher = Publisher(context, f"tcp://127.0.0.1:{port}", bind=True, topic="kv@p@m")
    try:
        async with testing.task_owner() as owner:
            subscriber.configure([broken, good])
            subscriber.endpoint_added(endpoint)
            subscriber.start(owner)
            await publisher.warm_up(good)
            await publisher.send(stored(1))
            await until(lambda: len(good.batches) == 1)
            assert subscriber.statistics()["sinkErrors"] >= 1
            assert len(subscriber.statistics()["sockets"]) == 1
    finally:
        publisher.close()
        subscriber.close()
