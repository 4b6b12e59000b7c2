"""``inflight-load-producer``: work this router has sent to each endpoint and not yet seen end.

Theory of operation. The counts are the router's in-flight ledger (``llmd_router.datalayer
.inflight``), which the endpoint store owns and every routed request is charged to: one request
on the chosen endpoint, charged by the director for every request. This producer adds what only
it knows:

- ``produce`` copies the ledger's counts for the candidates into the cycle (``INFLIGHT_LOAD``),
  which scorers, filters and detectors read.
- ``pre_request`` charges, to the first target of every profile in the result, the tokens the
  request is expected to cost that endpoint, and one request to the target of every profile but
  the primary one (the director charged that). An endpoint chosen by two profiles is counted
  twice, as llm-d counts it (its entries are per endpoint and profile).
- Nothing is needed when the request ends: the router refunds exactly what the request was
  charged, once, however it ends, so the counts return to zero whatever the order.

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

import math
from typing import TYPE_CHECKING, Any, ClassVar

from llmd_router.datalayer.inflight import InFlightLedger
from llmd_router.framework import (
    INFLIGHT_LOAD,
    Params,
    Plugin,
    Stability,
    prefix_match_key,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from llmd_router.datalayer.endpoints import Endpoint
    from llmd_router.datalayer.inflight import InFlightView
    from llmd_router.framework import (
        CycleState,
        DataKey,
        PluginHandle,
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


class InFlightLoadProducerParams(Params, frozen=True):
    add_estimated_output_tokens: bool = False
    output_ratio: float = 1.5
    max_estimated_output_tokens: int | None = None
    # Whose prefix matches discount the cached part of the prompt (empty: the default producer).
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
        self._ledger: InFlightView = InFlightLedger()  # the router's, once bound
        self._prefix = prefix_match_key(params.prefix_match_info_producer_name)

    def bind(self, handle: PluginHandle) -> None:
        self._ledger = handle.inflight

    def produce(
        self, cycle: CycleState, request: InferenceRequest, endpoints: Sequence[Endpoint]
    ) -> None:
        load = self._ledger.load
        cycle.put(INFLIGHT_LOAD, {e.key: load(e.key) for e in endpoints})

    def pre_request(
        self, cycle: CycleState, request: InferenceRequest, result: SchedulingResult
    ) -> None:
        input_tokens = estimate_input_tokens(request)
        output_tokens = self._output_tokens(input_tokens, request.max_tokens)
        matches = cycle.get(self._prefix) or {}
        for name, profile in result.profiles.items():
            if not profile.targets:
                continue
            key = profile.targets[0].key
            tokens = uncached_input_tokens(matches.get(key), input_tokens) + output_tokens
            cycle.outputs.charge(key, requests=int(name != result.primary), tokens=tokens)

    def statistics(self) -> Mapping[str, object]:
        """The busiest endpoints of the ledger, in the shape of llm-d's dump of this plugin."""
        return self._ledger.statistics()

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
