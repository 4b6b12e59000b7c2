"""``burst-prefix-cache-producer``: requests that arrive together and share a prompt go to the
same endpoint, so a prefix no endpoint holds yet is computed once (llm-d's, for the n samples of
an RL rollout or a fan-out of one document).

Theory of operation. Requests are collected for ``windowDurationMs`` (the first of a batch
starts the window; a full batch, ``maxBatchSize``, lets the next request go on without this
producer's data). When the window closes, the batch is placed at once, and every request of it
resumes with its placement:

- Requests with identical block keys (``TOKENIZED_PROMPT`` keyed as the approximate producer
  keys it, in blocks of ``blockSizeTokens``) form a group; a group of two or more is a unit. A
  request alone is a unit only with ``minColocateBlocks > 0`` and when it shares that many
  leading blocks with another request of the batch.
- Units are placed longest prompt first, groups before lone requests. A unit goes to the
  endpoint that already holds (from this batch) the most of its leading blocks, at least
  ``minColocateBlocks`` of them and while that endpoint is under its fair share of the batch
  (``ceil(total / endpoints)``); otherwise to the least loaded endpoint (this batch's load, in
  requests or, with ``balanceBy: tokens``, uncached blocks; then fewer running requests; then
  name). ``maxPerReplica`` caps how many of one unit go to one endpoint (the rest spill over).
- Each request's candidates get ``PrefixMatch(total, total, B)`` on its endpoint and
  ``PrefixMatch(0, total, B)`` elsewhere (0 everywhere when it was not placed), under this
  producer's key: score them with ``prefix-cache-scorer`` and ``prefixMatchInfoProducerName``.

There is no index and nothing is kept between batches. Each request waits up to the window
(the director gives it ``windowDurationMs + 300 ms``).
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal

from llmd_router.framework import (
    TOKENIZED_PROMPT,
    DataKey,
    Params,
    Plugin,
    PrefixMatch,
    Stability,
    prefix_match_key,
)
from llmd_router.plugins.producers.approx_prefix_cache_producer import request_keys

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from llmd_router.datalayer.endpoints import Endpoint
    from llmd_router.framework import CycleState
    from llmd_router.parsing.request import InferenceRequest

__all__ = ["BurstPrefixCacheProducer", "BurstPrefixCacheProducerParams", "assign"]

UNLIMITED: Final = -1
DEFAULT_MAX_BLOCKS: Final = 2048
TIMEOUT_MARGIN_S: Final = 0.3  # llm-d's produceTimeoutMargin


class BurstPrefixCacheProducerParams(Params, frozen=True):
    window_duration_ms: int = 100
    max_per_replica: int = UNLIMITED
    block_size_tokens: int = 64
    max_prefix_tokens_to_match: int = 0
    min_colocate_blocks: int = 0
    max_batch_size: int = 1000
    balance_by: Literal["requests", "tokens"] = "requests"

    def __post_init__(self) -> None:
        if not 0 < self.window_duration_ms <= 10_000:
            raise ValueError(f"windowDurationMs must be in 1..10000, got {self.window_duration_ms}")
        if self.max_per_replica != UNLIMITED and self.max_per_replica < 1:
            raise ValueError(
                f"maxPerReplica must be -1 (unlimited) or >= 1, got {self.max_per_replica}"
            )
        if self.block_size_tokens <= 0:
            raise ValueError(f"blockSizeTokens must be > 0, got {self.block_size_tokens}")
        tokens = self.max_prefix_tokens_to_match
        if tokens < 0:
            raise ValueError(f"maxPrefixTokensToMatch must be >= 0, got {tokens}")
        if 0 < tokens < self.block_size_tokens:
            raise ValueError(
                f"maxPrefixTokensToMatch ({tokens}) must be 0 or >= blockSizeTokens "
                f"({self.block_size_tokens}): a smaller value keys no block"
            )
        if self.min_colocate_blocks < 0:
            raise ValueError(f"minColocateBlocks must be >= 0, got {self.min_colocate_blocks}")
        if self.max_batch_size != UNLIMITED and self.max_batch_size < 1:
            raise ValueError(
                f"maxBatchSize must be -1 (unlimited) or >= 1, got {self.max_batch_size}"
            )


@dataclass(eq=False, slots=True)
class Entry:
    """One request of a batch: its keys (one chain per prompt), candidates, and placement."""

    keys: list[list[int]]
    endpoints: Sequence[Endpoint]
    assigned: Endpoint | None = None

    @property
    def blocks(self) -> int:
        return sum(len(chain) for chain in self.keys)

    def leading(self, n: int) -> tuple[int, ...]:
        flat = [k for chain in self.keys for k in chain]
        return tuple(flat[:n])


@dataclass(slots=True)
class _Batch:
    entries: list[Entry] = field(default_factory=list)
    sealed: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False


def _longest(holders: dict[int, set[str]], entry: Entry) -> dict[str, int]:
    """The leading blocks of ``entry`` each endpoint holds in this batch."""
    matched: dict[str, int] = {}
    for chain in entry.keys:
        for key in chain:
            held = holders.get(key)
            if not held:
                return matched
            for name in held:
                matched[name] = matched.get(name, 0) + 1
    return matched


def _less(a: Endpoint, b: Endpoint, load: Mapping[str, int]) -> bool:
    ka = (load.get(a.key, 0), a.metrics.running_requests, a.key)
    kb = (load.get(b.key, 0), b.metrics.running_requests, b.key)
    return ka < kb


def _least_loaded(
    endpoints: Sequence[Endpoint], per: Mapping[str, int], cap: int, load: Mapping[str, int]
) -> Endpoint:
    allowed = [e for e in endpoints if cap == UNLIMITED or per.get(e.key, 0) < cap]
    best = None
    for e in allowed or endpoints:
        if best is None or _less(e, best, load):
            best = e
    assert best is not None
    return best


def _units(
    groups: Mapping[tuple[int, ...], list[Entry]], min_colocate: int
) -> list[tuple[int, ...]]:
    """The groups placed together: groups of two or more, then (with ``min_colocate``) lone
    requests sharing that many leading blocks with another; longest first."""
    shared: set[tuple[int, ...]] = set()
    if min_colocate > 0:
        signatures: dict[tuple[int, ...], int] = {}
        for key, members in groups.items():
            if len(key) >= min_colocate:
                sig = key[:min_colocate]
                signatures[sig] = signatures.get(sig, 0) + len(members)
        shared = {k for k in groups if len(k) >= min_colocate and signatures[k[:min_colocate]] >= 2}
    together = [k for k, m in groups.items() if len(m) >= 2]
    alone = [k for k, m in groups.items() if len(m) == 1 and k in shared]
    together.sort(key=len, reverse=True)  # stable: arrival order among equals
    alone.sort(key=len, reverse=True)
    return together + alone


@dataclass(slots=True)
class _Placement:
    """A batch being placed: its endpoints, rules, and what is placed so far."""

    endpoints: Sequence[Endpoint]
    cap: int
    min_colocate: int
    by_tokens: bool
    fair: int
    holders: dict[int, set[str]] = field(default_factory=dict)
    load: dict[str, int] = field(default_factory=dict)

    def holder(self, matches: Mapping[str, int], per: Mapping[str, int]) -> Endpoint | None:
        """The endpoint holding most of the unit's leading blocks (at least ``min_colocate``),
        under its fair share and cap."""
        target: Endpoint | None = None
        best = 0
        for endpoint in self.endpoints:
            m = matches.get(endpoint.key, 0)
            if self.cap != UNLIMITED and per.get(endpoint.key, 0) >= self.cap:
                continue
            if self.load.get(endpoint.key, 0) >= self.fair or m < self.min_colocate:
                continue
            if target is None or m > best or (m == best and _less(endpoint, target, self.load)):
                target, best = endpoint, m
        return target

    def place(self, key: tuple[int, ...], members: list[Entry]) -> None:
        load = self.load
        wanted = self.min_colocate > 0 or self.by_tokens
        matches = _longest(self.holders, members[0]) if wanted else {}
        prefer = self.min_colocate > 0
        per: dict[str, int] = {}
        i = 0
        while i < len(members):
            target = self.holder(matches, per) if prefer else None
            if target is None:
                target = _least_loaded(self.endpoints, per, self.cap, load)
            run = len(members) - i
            if self.cap != UNLIMITED:
                run = min(run, max(self.cap - per.get(target.key, 0), 1))
            for member in members[i : i + run]:
                member.assigned = target
            first = per.get(target.key, 0) == 0
            per[target.key] = per.get(target.key, 0) + run
            if not self.by_tokens:
                load[target.key] = load.get(target.key, 0) + run
            elif first:
                cost = max(len(key) - matches.get(target.key, 0), 0)
                load[target.key] = load.get(target.key, 0) + cost
            i += run
            prefer = False  # only the first endpoint gets the prefix preference
        for member in members:
            if member.assigned is not None:
                for chain in member.keys:
                    for k in chain:
                        self.holders.setdefault(k, set()).add(member.assigned.key)


def assign(entries: Sequence[Entry], cap: int, min_colocate: int, by_tokens: bool) -> None:
    """Place a sealed batch (``Entry.assigned``); llm-d's algorithm."""
    groups: dict[tuple[int, ...], list[Entry]] = {}
    for entry in entries:
        if entry.blocks:
            groups.setdefault(entry.leading(entry.blocks), []).append(entry)
    endpoints = next((entry.endpoints for entry in entries if entry.endpoints), ())
    if not groups or not endpoints:
        return
    units = _units(groups, min_colocate)
    if not units:
        return
    total = sum(len(k) if by_tokens else len(groups[k]) for k in units)
    placement = _Placement(
        endpoints, cap, min_colocate, by_tokens, fair=math.ceil(total / len(endpoints))
    )
    for key in units:
        placement.place(key, groups[key])


class BurstPrefixCacheProducer(Plugin[BurstPrefixCacheProducerParams]):
    """Per candidate, whether the request's batch placed it there (all its blocks) or not."""

    TYPE: ClassVar[str] = "burst-prefix-cache-producer"
    Params: ClassVar[type[Any]] = BurstPrefixCacheProducerParams
    STABILITY: ClassVar[Stability] = Stability.ALPHA
    consumes: ClassVar[tuple[DataKey[Any], ...]] = (TOKENIZED_PROMPT,)

    def __init__(self, name: str, params: BurstPrefixCacheProducerParams) -> None:
        super().__init__(name, params)
        self.key = prefix_match_key(name)
        self.produces: tuple[DataKey[Any], ...] = (self.key,)
        self.window_s = params.window_duration_ms / 1000
        self.produce_timeout_s = self.window_s + TIMEOUT_MARGIN_S
        tokens = params.max_prefix_tokens_to_match
        self.max_blocks = tokens // params.block_size_tokens if tokens else DEFAULT_MAX_BLOCKS
        self._batch: _Batch | None = None
        self.batches = 0
        self.requests = 0
        self.placed = 0
        self.full = 0  # requests that found the batch full

    async def produce_async(
        self, cycle: CycleState, request: InferenceRequest, endpoints: Sequence[Endpoint]
    ) -> None:
        size = self.params.block_size_tokens
        keys = request_keys(request, size, self.max_blocks, cycle.get(TOKENIZED_PROMPT))
        entry = Entry(keys, endpoints)
        batch = self._batch
        if batch is None:
            batch = self._batch = _Batch()
            asyncio.get_running_loop().call_later(self.window_s, self._seal, batch)
        limit = self.params.max_batch_size
        if limit != UNLIMITED and len(batch.entries) >= limit:
            self.full += 1
            raise RuntimeError(f"burst prefix batch full: maxBatchSize {limit} reached")
        batch.entries.append(entry)
        self.requests += 1
        await batch.sealed.wait()
        total = entry.blocks
        assigned = entry.assigned.key if entry.assigned is not None else None
        none = PrefixMatch(0, total, size)
        whole = PrefixMatch(total, total, size)
        cycle.put(self.key, {e.key: whole if e.key == assigned else none for e in endpoints})

    def _seal(self, batch: _Batch) -> None:
        if batch.closed:
            return
        batch.closed = True
        if self._batch is batch:
            self._batch = None
        params = self.params
        try:
            assign(
                batch.entries,
                params.max_per_replica,
                params.min_colocate_blocks,
                params.balance_by == "tokens",
            )
        finally:
            self.batches += 1
            self.placed += sum(1 for e in batch.entries if e.assigned is not None)
            batch.sealed.set()

    def statistics(self) -> Mapping[str, object]:
        return {
            "batches": self.batches,
            "requests": self.requests,
            "placed": self.placed,
            "batchFull": self.full,
            "waiting": len(self._batch.entries) if self._batch is not None else 0,
        }
