"""The endpoint store: upsert/delete by id, the key index, lifecycle callbacks, freshness,
frozen snapshots replaced on every write, and the in-flight ledger it owns."""

from __future__ import annotations

import dataclasses

import pytest

from llmd_router import testing
from llmd_router.datalayer import Endpoint, EndpointMetrics, EndpointStore
from llmd_router.datalayer.inflight import InFlightCharge


def ep(name: str, address: str = "10.0.0.1", port: int = 8000, **labels: str) -> Endpoint:
    return testing.endpoint(name=name, address=address, port=port, labels=labels)


def reported(store: EndpointStore, name: str, at: float) -> None:
    store.report(f"default/{name}", metrics=EndpointMetrics(updated_at=at))


def test_upsert_adds_updates_labels_keeps_signals_and_replaces_on_a_new_address():
    store = EndpointStore()
    added: list[str] = []
    removed: list[str] = []
    store.on_added = lambda e: added.append(e.key)
    store.on_removed = lambda e: removed.append(e.key)

    first = store.upsert(ep("a", port=8000, tier="gold"))
    assert first is not None and store.get("10.0.0.1:8000") is first
    store.report("default/a", metrics=EndpointMetrics(waiting_queue_size=3, updated_at=1.0))
    store.inflight.charge([InFlightCharge(first.key, requests=3)])
    same = store.upsert(ep("a", port=8000, tier="silver"))
    assert same is not None and store.get("10.0.0.1:8000") is same
    assert same.labels == {"tier": "silver"} and same.metrics.waiting_queue_size == 3
    assert first.labels == {"tier": "gold"}  # a snapshot never changes
    assert store.inflight.load(same.key).requests == 3
    moved = store.upsert(ep("a", port=8001))
    assert moved is not None and moved.metrics.updated_at == 0.0
    assert store.inflight.load(moved.key).requests == 0
    assert store.get("10.0.0.1:8000") is None and store.get("10.0.0.1:8001") is moved
    assert added == ["10.0.0.1:8000", "10.0.0.1:8001"]
    assert removed == ["10.0.0.1:8000"]


def test_an_address_taken_by_another_id_is_refused():
    store = EndpointStore([ep("a")])
    assert store.upsert(ep("b")) is None
    assert [e.name for e in store.all()] == ["a"]


def test_delete_stops_offering_but_requests_routed_there_finish():
    store = EndpointStore([ep("a"), ep("b", port=8001)])
    gone = store.get("10.0.0.1:8000")
    assert gone is not None
    routed = [InFlightCharge(gone.key, requests=2)]  # requests routed there before it left
    store.inflight.charge(routed)
    assert store.delete("default/a") is gone
    assert [e.name for e in store.candidates(None)] == ["b"]
    assert store.get("10.0.0.1:8000") is None
    store.inflight.refund(routed)  # they finish against the charges they hold
    assert store.inflight.load(gone.key).requests == 0 and len(store.inflight) == 0
    assert store.delete("default/a") is None


def test_replace_keeps_live_state_of_endpoints_that_stay():
    store = EndpointStore([ep("a"), ep("b", port=8001)])
    store.report("default/a", metrics=EndpointMetrics(running_requests=1, updated_at=5.0))
    store.inflight.charge([InFlightCharge("10.0.0.1:8000", requests=1)])
    store.replace([ep("a"), ep("c", port=8002)])
    assert [e.name for e in store.all()] == ["a", "c"]
    a = store.get("10.0.0.1:8000")
    assert a is not None and a.metrics.running_requests == 1
    assert store.inflight.load(a.key).requests == 1


def test_snapshots_are_frozen_and_reports_replace_them():
    store = EndpointStore([ep("a")])
    before = store.all()
    with pytest.raises(dataclasses.FrozenInstanceError):
        before[0].metrics = EndpointMetrics(waiting_queue_size=9)  # type: ignore[misc]
    after = store.report("default/a", metrics=EndpointMetrics(waiting_queue_size=9))
    assert after is not None and after is not before[0]
    assert before[0].metrics.waiting_queue_size == 0  # what a reader holds stays as it was
    assert store.all() == (after,) and store.all() is store.all()  # one tuple until a write
    assert store.report("default/gone", models=("m",)) is None


def test_without_a_threshold_every_endpoint_is_a_candidate():
    store = EndpointStore([ep("a"), ep("b", port=8001)])
    assert len(store.candidates(None, now=1000.0)) == 2


def test_stale_and_never_reported_endpoints_are_not_offered():
    store = EndpointStore(
        [ep("fresh"), ep("old", port=8001), ep("new", port=8002)], staleness_s=2.0
    )
    reported(store, "fresh", at=99.0)
    reported(store, "old", at=97.9)
    assert [e.name for e in store.candidates(None, now=100.0)] == ["fresh"]
    assert store.is_fresh(store.all()[0], 100.0)
    assert not store.is_fresh(store.all()[2], 100.0)  # before its first report
    # The old one reports again: offered again.
    reported(store, "old", at=100.0)
    assert [e.name for e in store.candidates(None, now=100.5)] == ["fresh", "old"]


def test_when_no_candidate_is_fresh_all_are_offered():
    store = EndpointStore([ep("a"), ep("b", port=8001)], staleness_s=2.0)
    assert [e.name for e in store.candidates(None, now=50.0)] == ["a", "b"]
    # ... within the subset the proxy allows.
    assert [e.name for e in store.candidates(["10.0.0.1:8001"], now=50.0)] == ["b"]
    assert list(store.candidates([], now=50.0)) == []


def test_describe_shows_freshness_models_and_errors():
    store = EndpointStore([ep("a")], staleness_s=1.0)
    store.report(
        "default/a",
        metrics=EndpointMetrics(waiting_queue_size=4, updated_at=10.0),
        models=("tiny", "tiny-lora"),
        signal_error="metrics-data-source: HTTP 500",
    )
    store.inflight.charge([InFlightCharge("10.0.0.1:8000", requests=2)])
    (row,) = store.describe(10.5)
    assert row["inflight"] == 2
    assert row["fresh"] is True and row["metricsAgeSeconds"] == 0.5
    assert row["metrics"]["waitingQueueSize"] == 4
    assert row["models"] == ["tiny", "tiny-lora"]
    assert row["signalError"] == "metrics-data-source: HTTP 500"
    assert store.describe(12.0)[0]["fresh"] is False
