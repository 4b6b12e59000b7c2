"""``queue-scorer``: prefer the endpoints with the shortest waiting queue.

Min-max normalised over the candidates, so the shortest queue scores 1 and the longest 0 whatever
their absolute sizes; when all queues are equal every endpoint scores 1. Queue sizes are the
model servers' own reports (``waiting_queue_size``), so they lag the router's decisions by up to
one scrape.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from llmd_router.framework import Category, NoParams, Plugin, Stability
from llmd_router.plugins.scorers import fewer_is_better

if TYPE_CHECKING:
    from collections.abc import Sequence

    from llmd_router.datalayer.endpoints import Endpoint
    from llmd_router.framework import CycleState
    from llmd_router.parsing.request import InferenceRequest

__all__ = ["QueueScorer"]


class QueueScorer(Plugin[NoParams]):
    """``(max - q) / (max - min)`` over the candidates' waiting queue sizes ``q``; 1.0 when all
    are equal."""

    TYPE: ClassVar[str] = "queue-scorer"
    Params: ClassVar[type[Any]] = NoParams
    STABILITY: ClassVar[Stability] = Stability.BETA
    category: ClassVar[Category] = Category.DISTRIBUTION

    def score(
        self, cycle: CycleState, request: InferenceRequest, endpoints: Sequence[Endpoint]
    ) -> Sequence[float]:
        return fewer_is_better([e.metrics.waiting_queue_size for e in endpoints])
