"""``token-load-scorer``: prefer the endpoints with the fewest tokens in flight.

Counting tokens rather than requests weighs a 100k-token prompt as the load it is. The load of
an endpoint is the router's own count of tokens in flight to it (``INFLIGHT_LOAD.tokens``) plus
what this request would add there (``UNCACHED_TOKENS``: its prompt less the prefix the endpoint
is believed to hold), as llm-d's: an endpoint that holds the prefix is charged less for it. The
score falls linearly from 1 (no load) to 0 at ``queueThresholdTokens`` and stays 0 beyond, so it
is absolute, not relative to the other candidates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Final

from llmd_router.framework import (
    INFLIGHT_LOAD,
    UNCACHED_TOKENS,
    Category,
    InFlightLoad,
    Params,
    Plugin,
    Stability,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from llmd_router.datalayer.endpoints import Endpoint
    from llmd_router.framework import CycleState, DataKey
    from llmd_router.parsing.request import InferenceRequest

__all__ = ["TokenLoadScorer", "TokenLoadScorerParams"]

DEFAULT_QUEUE_THRESHOLD_TOKENS: Final = 4_194_304  # 128 requests of 32k tokens
_IDLE: Final = InFlightLoad(requests=0, tokens=0)


class TokenLoadScorerParams(Params, frozen=True):
    queue_threshold_tokens: int = DEFAULT_QUEUE_THRESHOLD_TOKENS  # <= 0: the default, as llm-d
    in_flight_load_producer_name: str = ""  # accepted; there is one in-flight load producer


class TokenLoadScorer(Plugin[TokenLoadScorerParams]):
    """``1 - min(tokens, T) / T`` with ``tokens`` the endpoint's in-flight tokens plus the
    request's uncached tokens there, and ``T`` = ``queueThresholdTokens``; 1.0 when
    ``tokens <= 0``."""

    TYPE: ClassVar[str] = "token-load-scorer"
    Params: ClassVar[type[Any]] = TokenLoadScorerParams
    STABILITY: ClassVar[Stability] = Stability.BETA
    category: ClassVar[Category] = Category.DISTRIBUTION
    consumes: ClassVar[tuple[DataKey[Any], ...]] = (INFLIGHT_LOAD, UNCACHED_TOKENS)

    def __init__(self, name: str, params: TokenLoadScorerParams) -> None:
        super().__init__(name, params)
        threshold = params.queue_threshold_tokens
        self.threshold = threshold if threshold > 0 else DEFAULT_QUEUE_THRESHOLD_TOKENS

    def score(
        self, cycle: CycleState, request: InferenceRequest, endpoints: Sequence[Endpoint]
    ) -> Sequence[float]:
        loads = cycle.get(INFLIGHT_LOAD) or {}
        uncached = cycle.get(UNCACHED_TOKENS) or {}
        t = float(self.threshold)
        return [
            1.0 if tokens <= 0 else 0.0 if tokens >= t else 1.0 - tokens / t
            for tokens in [
                loads.get(e.key, _IDLE).tokens + uncached.get(e.key, 0) for e in endpoints
            ]
        ]
