"""``running-requests-size-scorer``: prefer the endpoints running the fewest requests.

The same min-max normalisation as ``queue-scorer``, over the model servers' reported running
batch size (``running_requests``) instead of the waiting queue: the endpoint running the fewest
scores 1, the most 0; all equal scores 1.
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

__all__ = ["RunningRequestsSizeScorer"]


class RunningRequestsSizeScorer(Plugin[NoParams]):
    """``(max - r) / (max - min)`` over the candidates' running request counts ``r``; 1.0 when
    all are equal."""

    TYPE: ClassVar[str] = "running-requests-size-scorer"
    Params: ClassVar[type[Any]] = NoParams
    STABILITY: ClassVar[Stability] = Stability.BETA
    category: ClassVar[Category] = Category.DISTRIBUTION

    def score(
        self, cycle: CycleState, request: InferenceRequest, endpoints: Sequence[Endpoint]
    ) -> Sequence[float]:
        return fewer_is_better([e.metrics.running_requests for e in endpoints])
