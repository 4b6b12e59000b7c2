"""The collector: per-endpoint polling, failures, and the lifecycle of its loops."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from typing import TYPE_CHECKING, Any

from llmd_router import testing
from llmd_router.datalayer import Endpoint, EndpointStore, Signals
from llmd_router.datalayer.collector import Collector, SourceBinding
from llmd_router.testing import task_owner
from tests.waiting import eventually

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


class FakeSource:
    """Answers polls from a table the test edits; records what happened."""

    output = "numbers"

    def __init__(self, name: str = "fake", interval_s: float | None = None) -> None:
        self.name = name
        self.interval_s = interval_s
        self.answers: dict[str, Any] = {}  # endpoint id -> value, or an Exception to raise
        self.hang: set[str] = set()
        self.polls: dict[str, int] = {}
        self.forgotten: list[str] = []
        self.closed = False

    async def poll(self, endpoint: Endpoint) -> Any:
        self.polls[endpoint.id] = self.polls.get(endpoint.id, 0) + 1
        if endpoint.id in self.hang:
            await asyncio.Event().wait()
        answer = self.answers.get(endpoint.id, 1)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def forget(self, endpoint: Endpoint) -> None:
        self.forgotten.append(endpoint.id)

    def close(self) -> None:
        self.closed = True


class QueueExtractor:
    """Reads the polled number as the waiting queue, or fails on negative numbers."""

    name = "queue"
    input = "numbers"

    def extract(self, data: Any, endpoint: Endpoint, now: float) -> Signals:
        if data < 0:
            return Signals(errors=[f"negative: {data}"])
        return Signals(
            metrics=dataclasses.replace(endpoint.metrics, waiting_queue_size=data, updated_at=now)
        )


class Broken:
    name = "broken"
    input = "numbers"

    def extract(self, data: Any, endpoint: Endpoint, now: float) -> Signals:
        raise RuntimeError("bug")


def bind(source: FakeSource, *extractors: Any) -> SourceBinding:
    return SourceBinding(source, "fake-source", tuple((e, e.name) for e in extractors))


class Pool:
    """A store whose endpoints a collector polls, as the router wires them."""

    def __init__(self, collector: Collector, store: EndpointStore) -> None:
        self.collector = collector
        self.store = store

    def add(self, name: str, port: int = 8000) -> None:
        self.store.upsert(testing.endpoint(name=name, address="10.0.0.1", port=port))

    def __getitem__(self, name: str) -> Endpoint:
        """The endpoint's current snapshot."""
        endpoint = self.store.by_id(f"default/{name}")
        assert endpoint is not None
        return endpoint


@contextlib.asynccontextmanager
async def polling(bindings: list[SourceBinding], **options: Any) -> AsyncIterator[Pool]:
    store = EndpointStore()
    collector = Collector(store, bindings, **options)
    store.on_added = collector.watch
    store.on_removed = collector.unwatch
    async with task_owner() as owner:
        collector.start(owner)
        try:
            yield Pool(collector, store)
        finally:
            collector.close()


async def test_each_endpoint_is_polled_and_its_signals_updated():
    source = FakeSource()
    source.answers = {"default/a": 3, "default/b": 5}
    async with polling([bind(source, QueueExtractor())], interval_s=0.01) as pool:
        pool.add("a")
        pool.add("b", 8001)
        await eventually(lambda: pool["a"].metrics.updated_at > 0)
        await eventually(lambda: pool["b"].metrics.updated_at > 0)
        assert (pool["a"].metrics.waiting_queue_size, pool["b"].metrics.waiting_queue_size) == (
            3,
            5,
        )
        before = source.polls["default/a"]
        await eventually(lambda: source.polls["default/a"] >= before + 3)  # it keeps polling
        assert pool["a"].signal_error == ""
    assert source.closed


async def test_failed_polls_are_counted_and_keep_the_last_report():
    source = FakeSource()
    errors: list[str] = []
    source.answers["default/a"] = 7
    async with polling(
        [bind(source, QueueExtractor())], interval_s=0.01, on_poll_error=errors.append
    ) as pool:
        pool.add("a")
        await eventually(lambda: pool["a"].metrics.waiting_queue_size == 7)
        last = pool["a"].metrics.updated_at
        source.answers["default/a"] = ConnectionRefusedError("connection refused")
        await eventually(lambda: len(errors) >= 2)
        # At most one good poll raced the switch.
        assert pool["a"].metrics.updated_at <= last + 0.05
        frozen = pool["a"].metrics.updated_at
        await eventually(lambda: len(errors) >= 4)
        assert pool["a"].metrics.updated_at == frozen
        assert pool["a"].metrics.waiting_queue_size == 7
        assert errors[0] == "fake-source"
        assert "connection refused" in pool["a"].signal_error
        source.answers["default/a"] = 9  # recovers
        await eventually(lambda: pool["a"].metrics.waiting_queue_size == 9)
        assert pool["a"].metrics.updated_at > frozen


async def test_a_hung_poll_times_out_without_delaying_other_endpoints():
    source = FakeSource()
    source.hang.add("default/slow")
    async with polling([bind(source, QueueExtractor())], interval_s=0.01, timeout_s=0.05) as pool:
        pool.add("slow")
        pool.add("quick", 8001)
        await eventually(lambda: source.polls.get("default/quick", 0) >= 10)
        await eventually(lambda: "no response within 0.05s" in pool["slow"].signal_error)
        assert pool["slow"].metrics.updated_at == 0


async def test_extraction_errors_are_counted_and_a_broken_extractor_does_not_stop_others():
    source = FakeSource()
    source.answers["default/a"] = 4
    failures: list[tuple[str, str]] = []
    async with polling(
        [bind(source, Broken(), QueueExtractor())],
        interval_s=0.01,
        on_extract_error=lambda s, e: failures.append((s, e)),
    ) as pool:
        pool.add("a")
        await eventually(lambda: pool["a"].metrics.waiting_queue_size == 4 and bool(failures))
        assert failures[0] == ("fake-source", "broken")
        assert "RuntimeError: bug" in pool["a"].signal_error


async def test_unwatch_stops_polling_and_releases_the_connection():
    source = FakeSource()
    async with polling([bind(source, QueueExtractor())], interval_s=0.01) as pool:
        pool.add("a")
        await eventually(lambda: source.polls.get("default/a", 0) >= 2)
        pool.collector.unwatch(pool["a"])
        assert source.forgotten == ["default/a"]
        count = source.polls["default/a"]
        await asyncio.sleep(0.05)
        assert source.polls["default/a"] == count
        assert pool.collector.statistics()["endpoints"] == 0


async def test_a_source_with_its_own_interval_is_polled_less_often():
    every_tick = FakeSource("every-tick")
    slower = FakeSource("slower", interval_s=0.05)  # every 5th tick of 10 ms
    async with polling([bind(every_tick, QueueExtractor()), bind(slower)], interval_s=0.01) as pool:
        pool.add("a")
        await eventually(lambda: every_tick.polls.get("default/a", 0) >= 20)
        assert 2 <= slower.polls["default/a"] <= every_tick.polls["default/a"] // 5 + 1


async def test_new_bindings_apply_and_unbound_sources_are_closed():
    old, new = FakeSource("old"), FakeSource("new")
    async with polling([bind(old, QueueExtractor())], interval_s=0.01) as pool:
        collector = pool.collector
        pool.add("a")
        await eventually(lambda: old.polls.get("default/a", 0) >= 1)
        collector.replace_bindings([bind(new, QueueExtractor())])
        assert (old.closed, new.closed) == (True, False)
        await eventually(lambda: new.polls.get("default/a", 0) >= 2)
        collector.replace_bindings([])  # nothing to poll: no tasks
        assert new.closed
        count = new.polls["default/a"]
        await asyncio.sleep(0.05)
        assert new.polls["default/a"] == count
        renewed = FakeSource("renewed")
        collector.replace_bindings([bind(renewed)])  # watched endpoints are polled again
        await eventually(lambda: renewed.polls.get("default/a", 0) >= 1)


async def test_an_endpoint_that_moves_to_a_new_address_is_polled_there():
    source = FakeSource()
    async with polling([bind(source, QueueExtractor())], interval_s=0.01) as pool:
        pool.add("a", 8000)
        await eventually(lambda: pool["a"].metrics.updated_at > 0)
        pool.add("a", 8001)  # same id, another server: the old loop stops, a new one starts
        assert pool["a"].key == "10.0.0.1:8001" and pool["a"].metrics.updated_at == 0
        await eventually(lambda: pool["a"].metrics.updated_at > 0)
        assert source.forgotten == ["default/a"]
        assert pool.collector.statistics()["endpoints"] == 1
