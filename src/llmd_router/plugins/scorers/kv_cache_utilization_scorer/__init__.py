"""``kv-cache-utilization-scorer``: prefer the endpoints with the most free KV cache.

The score is the free fraction of the KV cache as the model server last reported it. Unlike the
queue scorer it is absolute, not relative to the other candidates: an endpoint at 90% usage
scores 0.1 even if every other one is fuller.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from llmd_router.framework import Category, NoParams, Plugin, Stability

if TYPE_CHECKING:
    from collections.abc import Sequence

    from llmd_router.datalayer.endpoints import Endpoint
    from llmd_router.framework import CycleState
    from llmd_router.parsing.request import InferenceRequest

__all__ = ["KVCacheUtilizationScorer"]


class KVCacheUtilizationScorer(Plugin[NoParams]):
    """``1 - kv_cache_usage`` (usage a fraction in [0, 1])."""

    TYPE: ClassVar[str] = "kv-cache-utilization-scorer"
    Params: ClassVar[type[Any]] = NoParams
    STABILITY: ClassVar[Stability] = Stability.BETA
    category: ClassVar[Category] = Category.DISTRIBUTION

    def score(
        self, cycle: CycleState, request: InferenceRequest, endpoints: Sequence[Endpoint]
    ) -> Sequence[float]:
        return [1.0 - e.metrics.kv_cache_usage for e in endpoints]
