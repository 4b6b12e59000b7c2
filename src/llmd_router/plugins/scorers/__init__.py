"""Scorers: rate each candidate endpoint in [0, 1] for one concern."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["fewer_is_better"]


def fewer_is_better(values: Sequence[float]) -> list[float]:
    """llm-d's min-max score of a load: ``(max - v) / (max - min)``; 1.0 for all when equal."""
    if not values:
        return []
    low, high = min(values), max(values)
    if high == low:
        return [1.0] * len(values)
    span = high - low
    return [(high - v) / span for v in values]
