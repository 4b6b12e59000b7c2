"""Scorers: rate each candidate endpoint in [0, 1] for one concern."""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING, Any, ClassVar

from llmd_router.framework import Category, NoParams, Plugin, Stability

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from llmd_router.datalayer.endpoints import Endpoint, EndpointMetrics
    from llmd_router.framework import CycleState
    from llmd_router.parsing.request import InferenceRequest

__all__ = ["FewerIsBetterScorer", "fewer_is_better", "metric"]


def fewer_is_better(values: Sequence[float]) -> list[float]:
    """llm-d's min-max score of a load: ``(max - v) / (max - min)``; 1.0 for all when equal."""
    if not values:
        return []
    low, high = min(values), max(values)
    if high == low:
        return [1.0] * len(values)
    span = high - low
    return [(high - v) / span for v in values]


def metric(name: str) -> Callable[[EndpointMetrics], float]:
    """Reads one field of an endpoint's reported metrics."""
    read: Callable[[EndpointMetrics], float] = operator.attrgetter(name)
    return read


class FewerIsBetterScorer(Plugin[NoParams]):
    """The min-max score (``fewer_is_better``) of one reported load signal, ``SIGNAL``."""

    SIGNAL: ClassVar[Callable[[EndpointMetrics], float]]
    Params: ClassVar[type[Any]] = NoParams
    STABILITY: ClassVar[Stability] = Stability.BETA
    category: ClassVar[Category] = Category.DISTRIBUTION

    def score(
        self, cycle: CycleState, request: InferenceRequest, endpoints: Sequence[Endpoint]
    ) -> Sequence[float]:
        signal = type(self).SIGNAL
        return fewer_is_better([signal(e.metrics) for e in endpoints])
