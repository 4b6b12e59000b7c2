"""``queue-scorer``: prefer the endpoints with the shortest waiting queue.

Min-max normalised over the candidates, so the shortest queue scores 1 and the longest 0 whatever
their absolute sizes; when all queues are equal every endpoint scores 1. Queue sizes are the
model servers' own reports (``waiting_queue_size``), so they lag the router's decisions by up to
one scrape.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from llmd_router.plugins.scorers import FewerIsBetterScorer

if TYPE_CHECKING:
    from collections.abc import Sequence

    from llmd_router.datalayer.endpoints import Endpoint

__all__ = ["QueueScorer"]


class QueueScorer(FewerIsBetterScorer):
    """``(max - q) / (max - min)`` over the candidates' waiting queue sizes ``q``; 1.0 when all
    are equal."""

    TYPE: ClassVar[str] = "queue-scorer"

    def loads(self, endpoints: Sequence[Endpoint]) -> list[float]:
        return [e.metrics.waiting_queue_size for e in endpoints]
