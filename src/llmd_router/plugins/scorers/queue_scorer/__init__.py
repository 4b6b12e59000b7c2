"""``queue-scorer``: prefer the endpoints with the shortest waiting queue.

Min-max normalised over the candidates, so the shortest queue scores 1 and the longest 0 whatever
their absolute sizes; when all queues are equal every endpoint scores 1. Queue sizes are the
model servers' own reports (``waiting_queue_size``), so they lag the router's decisions by up to
one scrape.
"""

from __future__ import annotations

from typing import ClassVar

from llmd_router.plugins.scorers import FewerIsBetterScorer, metric

__all__ = ["QueueScorer"]


class QueueScorer(FewerIsBetterScorer):
    """``(max - q) / (max - min)`` over the candidates' waiting queue sizes ``q``; 1.0 when all
    are equal."""

    TYPE: ClassVar[str] = "queue-scorer"
    SIGNAL = metric("waiting_queue_size")
