"""``max-score-picker``: the highest-scored endpoints, ties broken at random.

llm-d shuffles the candidates, then stable-sorts them by score (highest first) and keeps the top
``maxNumOfEndpoints``: among equal scores every order is equally likely. Picking one endpoint
(the usual case) needs no sort: the tied best are collected in one pass and one is drawn, which
has the same distribution at O(n). For more, only the endpoints that can make the cut are
shuffled and sorted.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, ClassVar

from llmd_router.plugins.pickers import Picker

if TYPE_CHECKING:
    from collections.abc import Sequence

    from llmd_router.datalayer.endpoints import Endpoint
    from llmd_router.framework import CycleState
    from llmd_router.parsing.request import InferenceRequest

__all__ = ["MaxScorePicker"]


class MaxScorePicker(Picker):
    """The ``maxNumOfEndpoints`` highest-scored endpoints, best first; equal scores in random
    order."""

    TYPE: ClassVar[str] = "max-score-picker"

    def pick(
        self,
        cycle: CycleState,
        request: InferenceRequest,
        endpoints: Sequence[Endpoint],
        scores: Sequence[float],
    ) -> tuple[Endpoint, ...]:
        if not endpoints:
            return ()
        if self.limit == 1:
            best = max(scores)
            tied = [i for i, s in enumerate(scores) if s == best]
            if tied:  # empty only if the best "score" is NaN: fall through to the sort
                return (endpoints[tied[0] if len(tied) == 1 else self.rng.choice(tied)],)
        n = len(endpoints)
        if self.limit < n:
            # Only endpoints scoring at least the limit-th best can be picked: shuffle and sort
            # those. Ties at the cut-off are all kept, so which of them make it stays random.
            cut = heapq.nlargest(self.limit, scores)[-1]
            order = [i for i, s in enumerate(scores) if s >= cut]
            if len(order) < self.limit:  # NaN scores compare false: take everything
                order = list(range(n))
        else:
            order = list(range(n))
        self.rng.shuffle(order)
        order.sort(key=scores.__getitem__, reverse=True)  # stable, also when reversed
        return tuple(endpoints[i] for i in order[: self.limit])
