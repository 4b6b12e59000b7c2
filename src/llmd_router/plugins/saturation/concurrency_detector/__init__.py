"""``concurrency-detector``: pool saturation and an endpoint filter from this router's own count
of work in flight, which moves with every routing decision instead of waiting for a scrape.

With ``capacity`` = ``maxConcurrency`` (requests) or ``maxTokenConcurrency`` (tokens):

    requests, tokens:  saturation = sum of in-flight / (number of endpoints * capacity)
    hybrid:            saturation = mean over endpoints of max(requests / maxConcurrency,
                                                               tokens / maxTokenConcurrency)
    no endpoints:      saturation = 1.0

As a filter it keeps the endpoints whose in-flight load is below ``int(capacity * (1 +
headroom))`` (both limits in hybrid mode). It does not fail open: it may keep none.

Where the load comes from. The filter reads ``INFLIGHT_LOAD`` from the cycle, written by
``inflight-load-producer``, and the router's in-flight ledger when the cycle has none.
``saturation()`` is given only endpoints, so it reads the ledger, which every routed request is
charged to (one request on its endpoint). Tokens are charged only by an in-flight load producer,
so the tokens and hybrid modes need one in the configuration: without it they are refused at
start-up. ``inFlightLoadProducerName``, when set, must name such a producer.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from llmd_router.config import ConfigError
from llmd_router.datalayer.inflight import NOTHING, InFlightLedger
from llmd_router.framework import (
    INFLIGHT_LOAD,
    Params,
    Plugin,
    Produces,
    Stability,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from llmd_router.datalayer.endpoints import Endpoint
    from llmd_router.datalayer.inflight import InFlightLoad, InFlightView
    from llmd_router.framework import CycleState, DataKey, PluginHandle
    from llmd_router.parsing.request import InferenceRequest

__all__ = ["ConcurrencyDetector", "ConcurrencyDetectorParams"]


class ConcurrencyDetectorParams(Params, frozen=True):
    concurrency_mode: Literal["requests", "tokens", "hybrid"] = "requests"
    max_concurrency: int = 100
    max_token_concurrency: int = 1_000_000
    headroom: float = 0.0
    # Whose live counters saturation() reads; empty: the one producer of INFLIGHT_LOAD.
    in_flight_load_producer_name: str = ""

    def __post_init__(self) -> None:
        if self.max_concurrency <= 0:
            raise ValueError(
                f"maxConcurrency must be strictly positive, got {self.max_concurrency}"
            )
        if self.max_token_concurrency <= 0:
            raise ValueError(
                f"maxTokenConcurrency must be strictly positive, got {self.max_token_concurrency}"
            )
        if not (math.isfinite(self.headroom) and self.headroom >= 0.0):
            raise ValueError(f"headroom must be a non-negative value, got {self.headroom}")


class ConcurrencyDetector(Plugin[ConcurrencyDetectorParams]):
    """Saturation from requests or tokens in flight; filters out endpoints at their limit."""

    TYPE: ClassVar[str] = "concurrency-detector"
    Params: ClassVar[type[Any]] = ConcurrencyDetectorParams
    STABILITY: ClassVar[Stability] = Stability.BETA
    consumes: ClassVar[tuple[DataKey[Any], ...]] = (INFLIGHT_LOAD,)

    def __init__(self, name: str, params: ConcurrencyDetectorParams) -> None:
        super().__init__(name, params)
        self._ledger: InFlightView = InFlightLedger()  # the router's, once bound
        self._mode = params.concurrency_mode
        self._max_requests = params.max_concurrency
        self._max_tokens = params.max_token_concurrency
        # Go truncates the stretched limits to integers: int64(float64(capacity) * (1 + h)).
        self._request_limit = int(params.max_concurrency * (1.0 + params.headroom))
        self._token_limit = int(params.max_token_concurrency * (1.0 + params.headroom))

    def bind(self, handle: PluginHandle) -> None:
        """Read the router's ledger; check the producer that charges tokens to it."""
        where = f"plugin {self.name!r} (type {self.TYPE!r})"
        plugins = handle.plugins
        wanted = self.params.in_flight_load_producer_name
        if wanted:
            found = plugins.get(wanted)
            if found is None:
                raise ConfigError(f"{where}: inFlightLoadProducerName: no plugin named {wanted!r}")
            if not _produces_load(found):
                raise ConfigError(
                    f"{where}: inFlightLoadProducerName: plugin {wanted!r} does not produce "
                    f"{INFLIGHT_LOAD.name!r}"
                )
        producers = [p for p in plugins.values() if _produces_load(p)]
        if not wanted and len(producers) > 1:
            names = ", ".join(repr(getattr(p, "name", "?")) for p in producers)
            raise ConfigError(
                f"{where}: several plugins produce {INFLIGHT_LOAD.name!r} ({names}); "
                "name one in inFlightLoadProducerName"
            )
        if not producers and self._mode != "requests":
            raise ConfigError(
                f"{where}: concurrencyMode {self._mode!r} needs the live counters of an "
                f"{INFLIGHT_LOAD.name!r} producer, such as inflight-load-producer (it estimates "
                "the tokens)"
            )
        self._ledger = handle.inflight

    def saturation(self, endpoints: Sequence[Endpoint]) -> float:
        if not endpoints:
            return 1.0
        loads = self._live_loads(endpoints)
        if self._mode == "requests":
            return sum(x.requests for x in loads) / (len(loads) * self._max_requests)
        if self._mode == "tokens":
            return sum(x.tokens for x in loads) / (len(loads) * self._max_tokens)
        return sum(
            max(x.requests / self._max_requests, x.tokens / self._max_tokens) for x in loads
        ) / len(loads)

    def filter(
        self, cycle: CycleState, request: InferenceRequest, endpoints: Sequence[Endpoint]
    ) -> Sequence[Endpoint]:
        produced = cycle.get(INFLIGHT_LOAD)
        if produced is None:
            loads = self._live_loads(endpoints)
        else:
            loads = [produced.get(e.key, NOTHING) for e in endpoints]
        request_limit, token_limit = self._request_limit, self._token_limit
        if self._mode == "requests":
            return [e for e, x in zip(endpoints, loads, strict=True) if x.requests < request_limit]
        if self._mode == "tokens":
            return [e for e, x in zip(endpoints, loads, strict=True) if x.tokens < token_limit]
        return [
            e
            for e, x in zip(endpoints, loads, strict=True)
            if x.requests < request_limit and x.tokens < token_limit
        ]

    def _live_loads(self, endpoints: Sequence[Endpoint]) -> list[InFlightLoad]:
        load = self._ledger.load
        return [load(e.key) for e in endpoints]


def _produces_load(plugin: object) -> bool:
    return isinstance(plugin, Produces) and INFLIGHT_LOAD in plugin.produces
