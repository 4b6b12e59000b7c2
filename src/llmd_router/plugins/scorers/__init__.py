"""Scorers: rate each candidate endpoint in [0, 1] for one concern."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from llmd_router.framework import Category, NoParams, Plugin, Stability

if TYPE_CHECKING:
    from collections.abc import Sequence

    from llmd_router.datalayer.endpoints import Endpoint
    from llmd_router.framework import CycleState
    from llmd_router.parsing.request import InferenceRequest

__all__ = ["FewerIsBetterScorer", "fewer_is_better"]


def fewer_is_better(values: Sequence[float]) -> list[float]:
    """llm-d's min-max score of a load: ``(max - v) / (max - min)``; 1.0 for all when equal."""
    if not values:
        return []
    low, high = min(values), max(values)
    if high == low:
        return [1.0] * len(values)
    span = high - low
    return [(high - v) / span for v in values]


class FewerIsBetterScorer(Plugin[NoParams]):
    """The min-max score (``fewer_is_better``) of one load signal, which ``loads`` reads."""

    Params: ClassVar[type[Any]] = NoParams
    STABILITY: ClassVar[Stability] = Stability.BETA
    category: ClassVar[Category] = Category.DISTRIBUTION

    def loads(self, endpoints: Sequence[Endpoint]) -> list[float]:
        """Each endpoint's load (a list comprehension over the candidates: the hot loop)."""
        raise NotImplementedError

    def score(
        self, cycle: CycleState, request: InferenceRequest, endpoints: Sequence[Endpoint]
    ) -> Sequence[float]:
        return fewer_is_better(self.loads(endpoints))
