"""``running-requests-size-scorer``: prefer the endpoints running the fewest requests.

The same min-max normalisation as ``queue-scorer``, over the model servers' reported running
batch size (``running_requests``) instead of the waiting queue: the endpoint running the fewest
scores 1, the most 0; all equal scores 1.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from llmd_router.plugins.scorers import FewerIsBetterScorer

if TYPE_CHECKING:
    from collections.abc import Sequence

    from llmd_router.datalayer.endpoints import Endpoint

__all__ = ["RunningRequestsSizeScorer"]


class RunningRequestsSizeScorer(FewerIsBetterScorer):
    """``(max - r) / (max - min)`` over the candidates' running request counts ``r``; 1.0 when
    all are equal."""

    TYPE: ClassVar[str] = "running-requests-size-scorer"

    def loads(self, endpoints: Sequence[Endpoint]) -> list[float]:
        return [e.metrics.running_requests for e in endpoints]
