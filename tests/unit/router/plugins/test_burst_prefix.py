"""burst-prefix-cache-producer: placement of a batch (llm-d's rules), the window, a full batch,
and the director awaiting a producer that waits."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import msgspec
import pytest

from llmd_router import testing
from llmd_router.datalayer import EndpointStore
from llmd_router.framework import (
    AsyncDataProducer,
    CycleState,
    DataProducer,
    PrefixMatch,
)
from llmd_router.observability.metrics import RouterMetrics
from llmd_router.parsing import parse_request
from llmd_router.plugins.producers.burst_prefix_cache_producer import (
    BurstPrefixCacheProducer,
    Entry,
    assign,
)
from llmd_router.requestcontrol import Director, Outcome

A, B, C = testing.endpoints(3)


def entries(*shapes: tuple[int, ...], endpoints=(A, B, C)) -> list[Entry]:
    """One entry per shape: its block keys."""
    return [Entry([list(shape)], list(endpoints)) for shape in shapes]


def placed(batch: list[Entry]) -> list[str | None]:
    return [e.assigned.name if e.assigned is not None else None for e in batch]


# ---------------------------------------------------------------------------- placement


def test_identical_prompts_go_together_and_groups_spread():
    batch = entries((1, 2, 3), (9, 8), (1, 2, 3), (9, 8), (1, 2, 3), (7,))
    assign(batch, cap=-1, min_colocate=0, by_tokens=False)
    where = placed(batch)
    assert where[0] == where[2] == where[4]  # the longest group first, together
    assert where[1] == where[3] != where[0]  # the next on another endpoint (least loaded)
    assert where[5] is None  # a lone request with no colocation rule is not placed


def test_max_per_replica_spills_a_group_over():
    batch = entries(*[(1, 2)] * 5)
    assign(batch, cap=2, min_colocate=0, by_tokens=False)
    assert sorted(Counter(placed(batch)).values()) == [1, 2, 2]


def test_a_lone_request_sharing_leading_blocks_joins_the_holder():
    batch = entries(
        (1, 2, 3, 4), (1, 2, 3, 4), (9, 9, 9), (9, 9, 9), (1, 2, 5), (6, 7, 8), endpoints=(A, B)
    )
    assign(batch, cap=-1, min_colocate=2, by_tokens=False)
    where = placed(batch)
    # Five placed requests, two endpoints: a fair share of three. The lone request shares
    # blocks 1, 2 with the first group, whose endpoint is under its share: it joins it.
    assert where[0] == where[1] == where[4] != where[2] == where[3]
    assert where[5] is None  # shares nothing with anyone


def test_the_fair_share_stops_colocation():
    # Six requests over three endpoints: a fair share is two. A group of two takes its share;
    # lone requests sharing its prefix then go elsewhere.
    batch = entries((1, 2, 3), (1, 2, 3), (1, 2, 4), (1, 2, 5), (1, 2, 6), (1, 2, 7))
    assign(batch, cap=-1, min_colocate=2, by_tokens=False)
    counts = Counter(placed(batch))
    assert max(counts.values()) <= 2 and len(counts) == 3


def test_ties_go_to_the_endpoint_with_fewer_running_requests():
    busy, idle = testing.endpoint(1, running_requests=9), testing.endpoint(2, running_requests=1)
    batch = entries((1,), (1,), endpoints=(busy, idle))
    assign(batch, cap=-1, min_colocate=0, by_tokens=False)
    assert placed(batch) == [idle.name, idle.name]


def test_balancing_by_tokens_counts_uncached_blocks():
    long_group = (1, 2, 3, 4, 5, 6, 7, 8)
    batch = entries(long_group, long_group, (9,), (9,), (10,), (10,), endpoints=(A, B))
    assign(batch, cap=-1, min_colocate=0, by_tokens=True)
    where = placed(batch)
    # The long group's 8 blocks weigh on one endpoint; both short groups go to the other.
    assert where[2] == where[4] != where[0]


@pytest.mark.parametrize("seed", range(10))
def test_every_placed_request_goes_to_one_of_its_candidates(seed: int):
    rng = random.Random(seed)
    shapes = [tuple(rng.randrange(4) for _ in range(rng.randrange(1, 5))) for _ in range(30)]
    batch = entries(*shapes)
    assign(
        batch,
        cap=rng.choice([-1, 1, 3]),
        min_colocate=rng.randrange(3),
        by_tokens=rng.random() < 0.5,
    )
    for entry in batch:
        assert entry.assigned is None or entry.assigned in entry.endpoints
    groups: dict[tuple[int, ...], int] = Counter(shapes)
    for entry, shape in zip(batch, shapes, strict=True):
        if groups[shape] >= 2:
            assert entry.assigned is not None  # every group is placed


# ---------------------------------------------------------------------------- the window


def completion(prompt: str, model: str = "m"):
    body = msgspec.json.encode({"model": model, "prompt": prompt})
    return parse_request("/v1/completions", {}, body, "r")


def test_kinds_and_timeout():
    p = testing.make(BurstPrefixCacheProducer, windowDurationMs=40)
    assert isinstance(p, AsyncDataProducer) and not isinstance(p, DataProducer)
    assert p.produce_timeout_s == pytest.approx(0.34)


async def test_a_window_of_requests_is_placed_together():
    p = testing.make(BurstPrefixCacheProducer, windowDurationMs=30, blockSizeTokens=4)
    prompts = ["shared prompt of the rollout " * 3] * 4 + ["another document " * 4] * 2
    cycles = [CycleState() for _ in prompts]
    await asyncio.gather(
        *(
            p.produce_async(c, completion(t), [A, B, C])
            for c, t in zip(cycles, prompts, strict=True)
        )
    )
    chosen = []
    for cycle in cycles:
        matches = cycle.get(p.key)
        assert matches is not None
        (target,) = [k for k, m in matches.items() if m.match_blocks]
        total = matches[target].total_blocks
        assert matches[target] == PrefixMatch(total, total, 4)
        chosen.append(target)
    assert len(set(chosen[:4])) == 1 and len(set(chosen[4:])) == 1 and chosen[0] != chosen[4]
    assert p.statistics() == {
        "batches": 1,
        "requests": 6,
        "placed": 6,
        "batchFull": 0,
        "waiting": 0,
    }
    # The next request opens a new batch: alone, it is not placed (zero everywhere).
    cycle = CycleState()
    await p.produce_async(cycle, completion("shared prompt of the rollout " * 3), [A, B, C])
    assert {m.match_blocks for m in cycle.get(p.key).values()} == {0}  # type: ignore[union-attr]


async def test_a_full_batch_lets_the_request_go_on_without_data():
    p = testing.make(BurstPrefixCacheProducer, windowDurationMs=20, maxBatchSize=2)
    first = [p.produce_async(CycleState(), completion("x" * 400), [A, B]) for _ in range(2)]
    waiting = asyncio.gather(*first)
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="batch full"):
        await p.produce_async(CycleState(), completion("x" * 400), [A, B])
    await waiting
    assert p.statistics()["batchFull"] == 1


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"windowDurationMs": 0}, "windowDurationMs must be in 1..10000"),
        ({"windowDurationMs": 10001}, "windowDurationMs must be in 1..10000"),
        ({"maxPerReplica": 0}, "maxPerReplica"),
        ({"blockSizeTokens": 0}, "blockSizeTokens"),
        ({"maxPrefixTokensToMatch": 10}, "must be 0 or >= blockSizeTokens"),
        ({"minColocateBlocks": -1}, "minColocateBlocks"),
        ({"maxBatchSize": 0}, "maxBatchSize"),
        ({"balanceBy": "bytes"}, "balanceBy"),
    ],
)
def test_parameter_errors(raw, message):
    with pytest.raises(msgspec.ValidationError, match=message):
        msgspec.convert(raw, BurstPrefixCacheProducer.Params)


# ---------------------------------------------------------------------------- the director

BURST = """\
plugins:
- type: burst-prefix-cache-producer
  parameters: {windowDurationMs: 30, blockSizeTokens: 4}
- type: prefix-cache-scorer
  parameters: {prefixMatchInfoProducerName: burst-prefix-cache-producer}
- type: queue-scorer
schedulingProfiles:
- name: default
  plugins:
  - {pluginRef: prefix-cache-scorer, weight: 3}
  - {pluginRef: queue-scorer, weight: 1}
"""


async def test_the_director_awaits_the_window_and_routes_the_burst_together():
    store = EndpointStore(testing.endpoints(4))
    pipeline = testing.pipeline(BURST, inflight=store.inflight)
    assert pipeline.awaiting == frozenset({"burst-prefix-cache-producer"})
    director = Director(store, pipeline, RouterMetrics(), rng=random.Random(1))
    headers = {":path": "/v1/completions"}
    body = msgspec.json.encode({"model": "m", "prompt": "the same long prompt " * 20})
    with pytest.raises(RuntimeError, match="route_async"):
        director.route(headers, body, {}, has_body=True, received_at=0.0)
    routed = await asyncio.gather(
        *(director.route_async(headers, body, {}, has_body=True, received_at=0.0) for _ in range(6))
    )
    assert len({record.endpoint.key for _, record in routed}) == 1
    for _, record in routed:
        director.settlement.settle(record, Outcome(decided=True))
    assert len(store.inflight) == 0


async def test_a_producer_that_takes_too_long_is_skipped(caplog: pytest.LogCaptureFixture):
    store = EndpointStore(testing.endpoints(2))
    pipeline = testing.pipeline(BURST, inflight=store.inflight)
    burst = pipeline.plugins["burst-prefix-cache-producer"].instance
    burst.produce_timeout_s = 0.001  # shorter than its window
    director = Director(store, pipeline, RouterMetrics(), rng=random.Random(1))
    body = msgspec.json.encode({"model": "m", "prompt": "p " * 50})
    _, record = await director.route_async(
        {":path": "/v1/completions"}, body, {}, has_body=True, received_at=0.0
    )
    assert record.endpoint in store.all()
    assert "took more than" in caplog.text
