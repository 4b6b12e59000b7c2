"""``load-aware-scorer``: an absolute waiting-queue score, capped at 0.5.

An endpoint with an empty queue scores 0.5; a queue of ``threshold`` or more scores 0, linearly in
between. The ceiling of 0.5 is llm-d's: it leaves room above for endpoints known to have spare
capacity, which the metrics do not report yet. Unlike ``queue-scorer`` the score does not depend
on the other candidates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Final

from llmd_router.framework import Category, Params, Plugin, Stability

if TYPE_CHECKING:
    from collections.abc import Sequence

    from llmd_router.datalayer.endpoints import Endpoint
    from llmd_router.framework import CycleState
    from llmd_router.parsing.request import InferenceRequest

__all__ = ["LoadAwareScorer", "LoadAwareScorerParams"]

DEFAULT_THRESHOLD: Final = 128


class LoadAwareScorerParams(Params, frozen=True):
    threshold: int = DEFAULT_THRESHOLD  # <= 0 means the default, as in llm-d


class LoadAwareScorer(Plugin[LoadAwareScorerParams]):
    """``0.5`` for an empty queue, else ``0.5 * (1 - min(q, threshold) / threshold)``."""

    TYPE: ClassVar[str] = "load-aware-scorer"
    Params: ClassVar[type[Any]] = LoadAwareScorerParams
    STABILITY: ClassVar[Stability] = Stability.BETA
    category: ClassVar[Category] = Category.DISTRIBUTION

    def __init__(self, name: str, params: LoadAwareScorerParams) -> None:
        super().__init__(name, params)
        self.threshold = params.threshold if params.threshold > 0 else DEFAULT_THRESHOLD

    def score(
        self, cycle: CycleState, request: InferenceRequest, endpoints: Sequence[Endpoint]
    ) -> Sequence[float]:
        t = float(self.threshold)
        return [
            0.5 if q == 0 else 0.0 if q >= t else 0.5 * (1.0 - q / t)
            for q in [e.metrics.waiting_queue_size for e in endpoints]
        ]
