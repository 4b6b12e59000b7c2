"""The router's one count of work in flight: requests and estimated tokens per endpoint.

Theory of operation. The endpoint store owns one ``InFlightLedger``. A routed request is charged
to it once, when its decision goes out, with every ``InFlightCharge`` its scheduling produced:
the director's one request on the chosen endpoint, plus what data producers added (the
in-flight load producer's token estimates, and one request on the target of each other profile,
such as a prefill endpoint). When the request settles (however it ends, exactly once) the same
charges are refunded, so the counts return to zero when nothing is in flight, whatever the order
of arrivals and ends. A charge may instead last until the response's first chunk (the prompt's
tokens, computed by then, and a prefill endpoint's request): it is refunded then, and not again
at the end. An endpoint with nothing in flight has no entry.

Everything that needs the count reads this ledger: scorers and filters (through the in-flight
load producer's per-request copy), saturation detectors, the debug pages. Writes happen only in
``charge`` and ``refund``, from the request lifecycle.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, Final, Protocol

import msgspec

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = ["NOTHING", "InFlightCharge", "InFlightLedger", "InFlightLoad", "InFlightView"]

MAX_STATISTICS_ENDPOINTS: Final = 100  # llm-d's maxDebugDumpEndpoints


class InFlightLoad(msgspec.Struct, frozen=True):
    """Work the router has sent to an endpoint and not yet seen finish."""

    requests: int
    tokens: int


NOTHING: Final = InFlightLoad(requests=0, tokens=0)


class InFlightCharge(msgspec.Struct, frozen=True):
    """What one request costs one endpoint while it is in flight: until the request ends, or,
    with ``until_first_chunk``, until its response's first chunk (its prompt is computed then)."""

    key: str  # the endpoint's ip:port
    requests: int = 0
    tokens: int = 0
    until_first_chunk: bool = False


class InFlightView(Protocol):
    """Reading the ledger: what plugins are given."""

    def load(self, key: str) -> InFlightLoad: ...

    def statistics(self) -> Mapping[str, object]: ...


class InFlightLedger:
    def __init__(self) -> None:
        self._loads: dict[str, InFlightLoad] = {}

    def load(self, key: str) -> InFlightLoad:
        """What is in flight to the endpoint ``key`` now."""
        return self._loads.get(key, NOTHING)

    def loads(self, keys: Iterable[str]) -> dict[str, InFlightLoad]:
        loads = self._loads
        return {key: loads.get(key, NOTHING) for key in keys}

    def charge(self, charges: Iterable[InFlightCharge]) -> None:
        loads = self._loads
        for c in charges:
            held = loads.get(c.key, NOTHING)
            loads[c.key] = InFlightLoad(held.requests + c.requests, held.tokens + c.tokens)

    def refund(self, charges: Iterable[InFlightCharge]) -> None:
        """Take back exactly what ``charge`` added; counts never go below zero."""
        loads = self._loads
        for c in charges:
            held = loads.get(c.key)
            if held is None:
                continue
            left = InFlightLoad(max(held.requests - c.requests, 0), max(held.tokens - c.tokens, 0))
            if left == NOTHING:
                del loads[c.key]
            else:
                loads[c.key] = left

    def __len__(self) -> int:
        """How many endpoints have work in flight."""
        return len(self._loads)

    def total(self) -> InFlightLoad:
        """Everything in flight, over every endpoint."""
        loads = self._loads.values()
        return InFlightLoad(sum(x.requests for x in loads), sum(x.tokens for x in loads))

    def snapshot(self) -> Mapping[str, InFlightLoad]:
        return dict(self._loads)

    def statistics(self) -> Mapping[str, object]:
        """The busiest endpoints (requests + tokens, then key), at most 100, in the shape of
        llm-d's ``/debug/plugins/state`` dump."""
        busiest = heapq.nsmallest(
            MAX_STATISTICS_ENDPOINTS,
            self._loads.items(),
            key=lambda item: (-(item[1].requests + item[1].tokens), item[0]),
        )
        return {
            "endpoints": [
                {"endpoint": key, "requests": load.requests, "tokens": load.tokens}
                for key, load in busiest
            ],
            "totalEndpoints": len(self._loads),
            "maxEndpoints": MAX_STATISTICS_ENDPOINTS,
            "truncated": len(self._loads) > MAX_STATISTICS_ENDPOINTS,
        }
