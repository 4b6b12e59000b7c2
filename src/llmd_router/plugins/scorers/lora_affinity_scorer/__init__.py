"""``lora-affinity-scorer``: prefer the endpoints that have the request's LoRA adapter loaded.

Four tiers, from the adapters a model server reports as running and waiting to load: the
adapter is running (1.0); the server has a free adapter slot, so loading it costs no eviction
(0.8); the adapter is already queued to load on a server with no free slot (0.6); otherwise 0.
The adapter name is the request's target model (after any model rewrite).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from llmd_router.framework import Category, NoParams, Plugin, Stability

if TYPE_CHECKING:
    from collections.abc import Sequence

    from llmd_router.datalayer.endpoints import Endpoint
    from llmd_router.framework import CycleState
    from llmd_router.parsing.request import InferenceRequest

__all__ = ["LoraAffinityScorer"]


class LoraAffinityScorer(Plugin[NoParams]):
    """With ``m`` the request's target model: ``1.0`` if ``m`` in active models; else ``0.8`` if
    ``len(active) + len(waiting) < max_active_models``; else ``0.6`` if ``m`` in waiting models;
    else ``0.0``."""

    TYPE: ClassVar[str] = "lora-affinity-scorer"
    Params: ClassVar[type[Any]] = NoParams
    STABILITY: ClassVar[Stability] = Stability.BETA
    category: ClassVar[Category] = Category.AFFINITY

    def score(
        self, cycle: CycleState, request: InferenceRequest, endpoints: Sequence[Endpoint]
    ) -> Sequence[float]:
        model = request.target_model or ""
        return [_tier(model, e) for e in endpoints]


def _tier(model: str, endpoint: Endpoint) -> float:
    m = endpoint.metrics
    if model in m.active_models:
        return 1.0
    if len(m.active_models) + len(m.waiting_models) < m.max_active_models:
        return 0.8
    if model in m.waiting_models:
        return 0.6
    return 0.0
