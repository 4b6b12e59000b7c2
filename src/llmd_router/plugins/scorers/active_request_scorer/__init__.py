"""``active-request-scorer``: prefer the endpoints with the fewest requests in flight.

The counts are the router's own (``INFLIGHT_LOAD``, kept by the in-flight load producer), so the
score reacts to every routing decision at once, unlike metrics a model server reports. An
endpoint with at most ``idleThreshold`` requests is idle and scores 1. A busy one scores relative
to the busiest candidate, from ``maxBusyScore`` (almost idle) down to 0 (the busiest), which leaves
a gap between idle and busy endpoints when ``maxBusyScore`` < 1.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar, Final

from llmd_router.framework import (
    INFLIGHT_LOAD,
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

__all__ = ["ActiveRequestScorer", "ActiveRequestScorerParams"]

_log = logging.getLogger(__name__)
_IDLE: Final = InFlightLoad(requests=0, tokens=0)


class ActiveRequestScorerParams(Params, frozen=True):
    idle_threshold: int = 0
    max_busy_score: float = 1.0
    request_timeout: str | None = None  # deprecated in llm-d, ignored
    in_flight_load_producer_name: str = ""  # accepted; there is one in-flight load producer

    def __post_init__(self) -> None:
        if self.idle_threshold < 0:
            raise ValueError(f"idleThreshold must be >= 0, got {self.idle_threshold}")
        if not 0.0 <= self.max_busy_score <= 1.0:
            raise ValueError(f"maxBusyScore must be in [0, 1], got {self.max_busy_score}")


class ActiveRequestScorer(Plugin[ActiveRequestScorerParams]):
    """``1.0`` if ``n <= idleThreshold``, else ``(max_n - n) / max_n * maxBusyScore``, where ``n``
    is the endpoint's requests in flight and ``max_n`` the largest ``n`` among the candidates."""

    TYPE: ClassVar[str] = "active-request-scorer"
    Params: ClassVar[type[Any]] = ActiveRequestScorerParams
    STABILITY: ClassVar[Stability] = Stability.BETA
    category: ClassVar[Category] = Category.DISTRIBUTION
    consumes: ClassVar[tuple[DataKey[Any], ...]] = (INFLIGHT_LOAD,)

    def __init__(self, name: str, params: ActiveRequestScorerParams) -> None:
        super().__init__(name, params)
        if params.request_timeout is not None:
            _log.warning(
                "plugin %r: requestTimeout is deprecated and ignored; requests in flight are "
                "tracked by the in-flight load producer",
                name,
            )

    def score(
        self, cycle: CycleState, request: InferenceRequest, endpoints: Sequence[Endpoint]
    ) -> Sequence[float]:
        loads = cycle.get(INFLIGHT_LOAD) or {}
        counts = [loads.get(e.key, _IDLE).requests for e in endpoints]
        idle = self.params.idle_threshold
        busiest = max(counts, default=0)
        if busiest <= idle:
            return [1.0] * len(counts)
        top = float(busiest)  # > idle >= 0
        cap = self.params.max_busy_score
        return [1.0 if n <= idle else (busiest - n) / top * cap for n in counts]
