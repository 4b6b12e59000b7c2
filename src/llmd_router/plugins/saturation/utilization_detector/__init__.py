"""``utilization-detector``: pool saturation and an endpoint filter from reported metrics.

Each endpoint's load is its fuller resource (a roofline), from what the model server reports:

    score(e)   = max(waiting_queue / queueDepthThreshold, kv_cache_usage / kvCacheUtilThreshold)
    saturation = mean of score(e) over the endpoints, a stale endpoint counting 1.0;
                 1.0 when there are none

An endpoint is stale when it has never reported, or its last report is older than
``metricsStalenessThreshold``: failing closed, so an endpoint the router cannot see is not
mistaken for an idle one.

As a filter it keeps the endpoints that are fresh and below the thresholds stretched by
``headroom``: ``waiting_queue < queueDepthThreshold * (1 + headroom)`` and ``kv_cache_usage <
kvCacheUtilThreshold * (1 + headroom)``. When that keeps none it keeps them all (fail open), so
the scorers pick the least bad.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, ClassVar

from llmd_router.config.durations import parse_duration
from llmd_router.framework import Params, Plugin, Stability

if TYPE_CHECKING:
    from collections.abc import Sequence

    from llmd_router.datalayer.endpoints import Endpoint, EndpointMetrics
    from llmd_router.framework import CycleState
    from llmd_router.parsing.request import InferenceRequest

__all__ = ["UtilizationDetector", "UtilizationDetectorParams"]


class UtilizationDetectorParams(Params, frozen=True):
    queue_depth_threshold: int = 5
    kv_cache_util_threshold: float = 0.8
    metrics_staleness_threshold: str = "200ms"
    headroom: float = 0.0

    def __post_init__(self) -> None:
        if self.queue_depth_threshold <= 0:
            raise ValueError(
                f"queueDepthThreshold must be strictly positive, got {self.queue_depth_threshold}"
            )
        if not 0.0 < self.kv_cache_util_threshold <= 1.0:
            raise ValueError(
                f"kvCacheUtilThreshold must be in (0.0, 1.0], got {self.kv_cache_util_threshold}"
            )
        try:
            staleness = parse_duration(self.metrics_staleness_threshold)
        except ValueError as exc:
            raise ValueError(f"metricsStalenessThreshold: {exc}") from None
        if staleness <= 0:
            raise ValueError(
                "metricsStalenessThreshold must be strictly positive, "
                f"got {self.metrics_staleness_threshold!r}"
            )
        if not (math.isfinite(self.headroom) and self.headroom >= 0.0):
            raise ValueError(f"headroom must be a non-negative value, got {self.headroom}")


class UtilizationDetector(Plugin[UtilizationDetectorParams]):
    """Saturation from queue depth and KV-cache use; filters out stale and overfull endpoints."""

    TYPE: ClassVar[str] = "utilization-detector"
    Params: ClassVar[type[Any]] = UtilizationDetectorParams
    STABILITY: ClassVar[Stability] = Stability.BETA

    def __init__(self, name: str, params: UtilizationDetectorParams) -> None:
        super().__init__(name, params)
        self.clock = time.monotonic
        self._staleness_s = parse_duration(params.metrics_staleness_threshold)
        self._queue_threshold = float(params.queue_depth_threshold)
        self._kv_threshold = params.kv_cache_util_threshold
        self._queue_limit = self._queue_threshold * (1.0 + params.headroom)
        self._kv_limit = self._kv_threshold * (1.0 + params.headroom)
        self._stale_endpoints = 0  # at the last saturation(), as llm-d's stale-endpoints gauge

    def saturation(self, endpoints: Sequence[Endpoint]) -> float:
        if not endpoints:
            self._stale_endpoints = 0
            return 1.0
        now = self.clock()
        total = 0.0
        stale = 0
        for endpoint in endpoints:
            m = endpoint.metrics
            if self._is_stale(m, now):
                total += 1.0
                stale += 1
            else:
                total += max(
                    m.waiting_queue_size / self._queue_threshold,
                    m.kv_cache_usage / self._kv_threshold,
                )
        self._stale_endpoints = stale
        return total / len(endpoints)

    def filter(
        self, cycle: CycleState, request: InferenceRequest, endpoints: Sequence[Endpoint]
    ) -> Sequence[Endpoint]:
        now = self.clock()
        kept = [
            e
            for e in endpoints
            if not self._is_stale(e.metrics, now)
            and e.metrics.waiting_queue_size < self._queue_limit
            and e.metrics.kv_cache_usage < self._kv_limit
        ]
        return kept or endpoints

    def statistics(self) -> dict[str, object]:
        return {"staleEndpoints": self._stale_endpoints}

    def _is_stale(self, metrics: EndpointMetrics, now: float) -> bool:
        return metrics.updated_at == 0.0 or now - metrics.updated_at > self._staleness_s
