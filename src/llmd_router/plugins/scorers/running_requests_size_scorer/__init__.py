"""``running-requests-size-scorer``: prefer the endpoints running the fewest requests.

The same min-max normalisation as ``queue-scorer``, over the model servers' reported running
batch size (``running_requests``) instead of the waiting queue: the endpoint running the fewest
scores 1, the most 0; all equal scores 1.
"""

from __future__ import annotations

from typing import ClassVar

from llmd_router.plugins.scorers import FewerIsBetterScorer, metric

__all__ = ["RunningRequestsSizeScorer"]


class RunningRequestsSizeScorer(FewerIsBetterScorer):
    """``(max - r) / (max - min)`` over the candidates' running request counts ``r``; 1.0 when
    all are equal."""

    TYPE: ClassVar[str] = "running-requests-size-scorer"
    SIGNAL = metric("running_requests")
