"""``inflight-load-producer``: work this router has sent to each endpoint and not yet seen end.

Theory of operation. Two counters per endpoint key, requests and estimated tokens, live in one
dict of immutable ``InFlightLoad`` values; an endpoint with nothing in flight has no entry, so
the dict stays as small as the set of busy endpoints.

- ``produce`` copies the counters of the candidates into the cycle (``INFLIGHT_LOAD``), which
  scorers, filters and detectors read.
- ``pre_request`` adds, for the first target of every profile in the result, one request and the
  tokens the request is expected to cost that endpoint. An endpoint chosen by two profiles is
  counted twice, as llm-d counts it (its entries are per endpoint and profile). What was added is
  written to ``request.extra[self.name]``.
- ``response_complete`` (once per routed request, however it ends) takes that record back out of
  ``request.extra`` and subtracts exactly it, so the counters return to zero once every request
  has ended, whatever the order. Counters never go below zero.

Token estimate (llm-d ``SimpleTokenEstimator`` and ``estimateRequestTokens``):

    input    = max(body_bytes // 4, 1), or 0 for a request without a body
    indexed  = total_blocks * block_size
    uncached = (total_blocks - match_blocks) * block_size + max(input - indexed, 0)
               when the cycle has a PrefixMatch for the endpoint (block_size > 0), else input
    output   = min(round(input * outputRatio), max_tokens, maxEstimatedOutputTokens)
               when addEstimatedOutputTokens, else 0
    tokens   = uncached + output

llm-d reads ``input`` from the tokenized prompt (0 when there is none); this router has no
tokenizer, so it uses llm-d's earlier estimate from the request size.
"""

from __future__ import annotations

import heapq
import math
from typing import TYPE_CHECKING, Any, ClassVar, Final

from llmd_router.framework import (
    INFLIGHT_LOAD,
    PREFIX_MATCH,
    InFlightLoad,
    Params,
    Plugin,
    Stability,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from llmd_router.datalayer.endpoints import Endpoint
    from llmd_router.framework import (
        Completion,
        CycleState,
        DataKey,
        PrefixMatch,
        SchedulingResult,
    )
    from llmd_router.parsing.request import InferenceRequest

__all__ = [
    "InFlightLoadProducer",
    "InFlightLoadProducerParams",
    "estimate_input_tokens",
    "uncached_input_tokens",
]

NONE: Final = InFlightLoad(requests=0, tokens=0)
MAX_STATISTICS_ENDPOINTS: Final = 100  # llm-d's maxDebugDumpEndpoints


class InFlightLoadProducerParams(Params, frozen=True):
    add_estimated_output_tokens: bool = False
    output_ratio: float = 1.5
    max_estimated_output_tokens: int | None = None
    # There is one PREFIX_MATCH key per cycle, so this selects nothing here; accepted so that
    # llm-d configurations load.
    prefix_match_info_producer_name: str = ""
    # Accepted for llm-d configurations; there is no other replica to share counters with.
    sync_cross_replica_state: bool = True

    def __post_init__(self) -> None:
        if not (math.isfinite(self.output_ratio) and self.output_ratio >= 0):
            raise ValueError(f"outputRatio must be non-negative, got {self.output_ratio}")
        if self.max_estimated_output_tokens is not None and self.max_estimated_output_tokens < 0:
            raise ValueError(
                "maxEstimatedOutputTokens must be non-negative, "
                f"got {self.max_estimated_output_tokens}"
            )


def estimate_input_tokens(request: InferenceRequest) -> int:
    """About four bytes of body per token; at least one token when there is a body."""
    size = request.size
    return max(size // 4, 1) if size > 0 else 0


def uncached_input_tokens(match: PrefixMatch | None, input_tokens: int) -> int:
    """The prompt tokens an endpoint must compute, less the prefix it is believed to hold. The
    tail beyond the blocks the prefix index looked at is added back from ``input_tokens``."""
    if match is None or match.block_size_tokens <= 0:
        return max(input_tokens, 0)
    indexed = match.total_blocks * match.block_size_tokens
    uncached = max(indexed - match.match_blocks * match.block_size_tokens, 0)
    return uncached + max(input_tokens - indexed, 0)


class InFlightLoadProducer(Plugin[InFlightLoadProducerParams]):
    """Per-endpoint requests and estimated tokens in flight, counted by this router."""

    TYPE: ClassVar[str] = "inflight-load-producer"
    Params: ClassVar[type[Any]] = InFlightLoadProducerParams
    STABILITY: ClassVar[Stability] = Stability.BETA
    produces: ClassVar[tuple[DataKey[Any], ...]] = (INFLIGHT_LOAD,)
    # PREFIX_MATCH is read when present (in pre_request, when the cycle is complete) but not
    # required: declaring it would make the framework create a prefix producer for it.
    consumes: ClassVar[tuple[DataKey[Any], ...]] = ()

    def __init__(self, name: str, params: InFlightLoadProducerParams) -> None:
        super().__init__(name, params)
        self._loads: dict[str, InFlightLoad] = {}

    def load(self, key: str) -> InFlightLoad:
        """What is in flight to the endpoint ``key`` now."""
        return self._loads.get(key, NONE)

    def produce(
        self, cycle: CycleState, request: InferenceRequest, endpoints: Sequence[Endpoint]
    ) -> None:
        loads = self._loads
        cycle.put(INFLIGHT_LOAD, {e.key: loads.get(e.key, NONE) for e in endpoints})

    def pre_request(
        self, cycle: CycleState, request: InferenceRequest, result: SchedulingResult
    ) -> None:
        input_tokens = estimate_input_tokens(request)
        output_tokens = self._output_tokens(input_tokens, request.max_tokens)
        matches = cycle.get(PREFIX_MATCH) or {}
        added: list[tuple[str, int]] = request.extra.setdefault(self.name, [])
        for profile in result.profiles.values():
            if not profile.targets:
                continue
            key = profile.targets[0].key
            tokens = uncached_input_tokens(matches.get(key), input_tokens) + output_tokens
            held = self._loads.get(key, NONE)
            self._loads[key] = InFlightLoad(held.requests + 1, held.tokens + tokens)
            added.append((key, tokens))

    def response_complete(
        self, request: InferenceRequest, result: SchedulingResult, completion: Completion
    ) -> None:
        added: list[tuple[str, int]] = request.extra.pop(self.name, None) or []
        for key, tokens in added:
            held = self._loads.get(key)
            if held is None:
                continue
            left = InFlightLoad(max(held.requests - 1, 0), max(held.tokens - tokens, 0))
            if left == NONE:
                del self._loads[key]
            else:
                self._loads[key] = left

    def statistics(self) -> dict[str, object]:
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

    def _output_tokens(self, input_tokens: int, max_tokens: int | None) -> int:
        params = self.params
        if not params.add_estimated_output_tokens or input_tokens <= 0:
            return 0
        estimate = math.floor(input_tokens * params.output_ratio + 0.5)  # Go's math.Round
        if max_tokens is not None and 0 <= max_tokens < estimate:
            estimate = max_tokens
        cap = params.max_estimated_output_tokens
        if cap is not None and cap < estimate:
            estimate = cap
        return estimate
