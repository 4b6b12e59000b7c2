"""The router's KV event subscriber: ZMQ SUB sockets that read the model servers' KV events and
hand each decoded batch to the prefix indexes that asked for them.

Theory of operation. Plugins that index KV events (``KVEventSink``) say where the events come
from (``KVSubscription``): a central endpoint the router binds and servers connect to
(``zmqEndpoint``), and/or a port on every endpoint of the pool that the router connects to
(``discoverPods``, llm-d's default, port 5557). ``configure`` is called with the sinks of each
new configuration; the subscriber opens one SUB socket per central endpoint and, while
endpoints are known, one per endpoint and port, each read by its own supervised loop
(``TaskOwner``), and closes what is no longer asked for.

Which server a message is from: for a per-endpoint socket, that endpoint (its ``ip:port``
key, whatever the topic says); for a central one, the topic's ``kv@<pod>@<model>`` pod part,
taken as an endpoint key, or as an endpoint's address when one endpoint has it; messages of a
topic of another shape are counted and dropped.

Sequence numbers. Each publisher numbers its messages 0, 1, 2, ... (per data-parallel rank). A
number that skips ahead means messages were lost (ZMQ drops at its high-water mark, or while
reconnecting); one that goes back means the publisher restarted (an empty cache). Either way,
what the index holds for that server can no longer be trusted: every sink is told to reset the
server (``kv_reset``), and indexing resumes from the message at hand. A malformed message is
counted and dropped; a sink that fails on a batch is logged and counted; neither stops the
loop. When an endpoint leaves the pool its socket is closed and the sinks forget it.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

import zmq
import zmq.asyncio

from llmd_router.datalayer.kvevents.decode import MalformedEvent, decode_message, parse_topic

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from llmd_router.datalayer.endpoints import Endpoint
    from llmd_router.datalayer.kvevents.decode import KVEventBatch
    from llmd_router.tasks import Loop, Ready, TaskOwner

__all__ = ["DEFAULT_POD_PORT", "KVEventSink", "KVEventSubscriber", "KVSubscription"]

_log = logging.getLogger(__name__)

DEFAULT_POD_PORT: Final = 5557
RCVHWM: Final = 100_000  # vLLM's publisher high-water mark


@dataclass(frozen=True, slots=True)
class KVSubscription:
    """Where a sink's events come from."""

    bind: str | None = None  # a central endpoint the router binds (tcp://0.0.0.0:5557)
    pod_port: int | None = DEFAULT_POD_PORT  # connect to every endpoint's address on this port
    topic_filter: str = "kv@"


@runtime_checkable
class KVEventSink(Protocol):
    """A plugin that indexes KV events."""

    kv_subscription: KVSubscription

    def kv_batch(self, server: str, model: str, batch: KVEventBatch) -> None:
        """A batch of ``server``'s events (``model``: the topic's, may be empty)."""
        ...

    def kv_reset(self, server: str, reason: str) -> None:
        """What is known of ``server`` is not to be trusted (a gap, a restart) or it left."""
        ...


@dataclass(slots=True)
class _Source:
    """One SUB socket and what came through it."""

    name: str
    address: str
    binds: bool
    endpoint_key: str | None  # the server, for a per-endpoint socket
    topic_filter: str
    loop: Loop | None = None
    socket: zmq.asyncio.Socket | None = None
    messages: int = 0
    # (server, data-parallel rank) -> the last sequence number seen
    last: dict[tuple[str, int | None], int] = field(default_factory=dict)


class KVEventSubscriber:
    def __init__(
        self,
        endpoints: Callable[[], Sequence[Endpoint]],
        *,
        context: zmq.asyncio.Context | None = None,
    ) -> None:
        self._endpoints = endpoints
        self._context = context
        self._owner: TaskOwner | None = None
        self._sinks: tuple[KVEventSink, ...] = ()
        self._sources: dict[str, _Source] = {}  # by name
        self._known: dict[str, Endpoint] = {}  # endpoints by id, while in the pool
        self.counts: Counter[str] = Counter()  # messages, batches, malformed, gaps, restarts, ...

    # ------------------------------------------------------------------ wiring

    def start(self, owner: TaskOwner) -> None:
        """Open what the sinks ask for, reading each socket in a loop of ``owner``'s."""
        self._owner = owner
        self._sync()

    def configure(self, sinks: Iterable[KVEventSink]) -> None:
        """The sinks of the configuration now serving (each reload)."""
        self._sinks = tuple(sinks)
        self._sync()

    def endpoint_added(self, endpoint: Endpoint) -> None:
        self._known[endpoint.id] = endpoint
        self._sync()

    def endpoint_removed(self, endpoint: Endpoint) -> None:
        self._known.pop(endpoint.id, None)
        self._sync()
        self._reset(endpoint.key, "it left the pool")

    def close(self) -> None:
        for source in list(self._sources.values()):
            self._close(source)
        if self._context is not None:
            self._context.term()
            self._context = None

    @property
    def sinks(self) -> tuple[KVEventSink, ...]:
        return self._sinks

    # ------------------------------------------------------------------ reading

    def receive(self, source_name: str, frames: list[bytes]) -> None:
        """One message from a socket: decoded, checked for gaps, handed to the sinks."""
        source = self._sources.get(source_name)
        if source is None:
            return
        self.counts["messages"] += 1
        source.messages += 1
        try:
            message = decode_message(frames)
        except MalformedEvent as exc:
            self.counts["malformed"] += 1
            if self.counts["malformed"] <= 10 or self.counts["malformed"] % 1000 == 0:
                _log.warning(
                    "KV events from %s: a malformed message dropped: %s", source.address, exc
                )
            return
        parsed = parse_topic(message.topic)
        if source.endpoint_key is not None:
            server, model = source.endpoint_key, parsed[1] if parsed else ""
        elif parsed is None:
            self.counts["unknownTopic"] += 1
            return
        else:
            server, model = self._server_of(parsed[0]), parsed[1]
        batch = message.batch
        self.counts["events"] += len(batch.events)
        if batch.skipped:
            self.counts["unknownEvents"] += batch.skipped
        stream = (server, batch.data_parallel_rank)
        last = source.last.get(stream)
        source.last[stream] = message.seq
        if last is not None and message.seq != last + 1:
            if message.seq > last + 1:
                self.counts["gaps"] += 1
                self.counts["lostMessages"] += message.seq - last - 1
                self._reset(server, f"{message.seq - last - 1} messages were lost")
            else:
                self.counts["restarts"] += 1
                self._reset(server, "its publisher restarted")
        for sink in self._sinks:
            try:
                sink.kv_batch(server, model, batch)
            except Exception:  # noqa: BLE001  one index's bug must not stop the others
                self.counts["sinkErrors"] += 1
                _log.exception("KV events of %s: %r failed on a batch", server, sink)

    def _server_of(self, pod: str) -> str:
        """A topic's pod id as an endpoint key, when it names one (by key or address)."""
        known = self._known.values()
        if any(e.key == pod for e in known):
            return pod
        matching = [e.key for e in known if e.address == pod]
        return matching[0] if len(matching) == 1 else pod

    def _reset(self, server: str, reason: str) -> None:
        _log.info("KV events of %s: its index entries are dropped: %s", server, reason)
        for sink in self._sinks:
            try:
                sink.kv_reset(server, reason)
            except Exception:  # noqa: BLE001
                self.counts["sinkErrors"] += 1
                _log.exception("KV events of %s: %r failed to reset it", server, sink)

    # ------------------------------------------------------------------ sockets

    def _wanted(self) -> dict[str, _Source]:
        wanted: dict[str, _Source] = {}
        for sink in self._sinks:
            sub = sink.kv_subscription
            if sub.bind:
                name = f"bind {sub.bind}"
                wanted.setdefault(name, _Source(name, sub.bind, True, None, sub.topic_filter))
            if sub.pod_port:
                for endpoint in self._known.values():
                    address = f"tcp://{endpoint.address}:{sub.pod_port}"
                    name = f"{endpoint.id} {address}"
                    wanted.setdefault(
                        name, _Source(name, address, False, endpoint.key, sub.topic_filter)
                    )
        return wanted

    def _sync(self) -> None:
        wanted = self._wanted()
        for name in list(self._sources):
            if name not in wanted:
                self._close(self._sources.pop(name))
        if self._owner is None:
            return
        for name, source in wanted.items():
            if name not in self._sources:
                self._sources[name] = source
                source.loop = self._owner.spawn(f"kv-events {name}", self._reader(source))

    def _reader(self, source: _Source) -> Callable[[Ready], Any]:
        async def run(ready: Ready) -> None:
            if self._context is None:
                self._context = zmq.asyncio.Context()
            socket = self._context.socket(zmq.SUB)
            socket.setsockopt(zmq.RCVHWM, RCVHWM)
            socket.setsockopt(zmq.LINGER, 0)
            socket.setsockopt_string(zmq.SUBSCRIBE, source.topic_filter)
            try:
                if source.binds:
                    socket.bind(source.address)
                else:
                    socket.connect(source.address)
                source.socket = socket
                ready()
                while True:
                    frames = await socket.recv_multipart()
                    self.receive(source.name, frames)
            finally:
                source.socket = None
                socket.close(0)

        return run

    def _close(self, source: _Source) -> None:
        if source.loop is not None:
            source.loop.cancel()
            source.loop = None

    def statistics(self) -> dict[str, Any]:
        return {
            **{k: self.counts[k] for k in sorted(self.counts)},
            "sockets": {
                name: {
                    "address": s.address,
                    "mode": "bind" if s.binds else "connect",
                    "server": s.endpoint_key,
                    "messages": s.messages,
                    "open": s.socket is not None,
                }
                for name, s in sorted(self._sources.items())
            },
        }
