"""``weighted-random-picker``: endpoints drawn at random with probability proportional to score.

llm-d uses weighted sampling without replacement (Efraimidis-Spirakis A-Res): each endpoint with
a positive score ``w`` gets the key ``U ** (1 / w)`` (``U`` uniform in (0, 1), a 0 replaced by
1e-10), endpoints with score <= 0 get key 0, and the largest keys win. With no positive score at
all it behaves as ``random-picker``.

For one endpoint, A-Res's winner is endpoint ``i`` with probability ``w_i / sum(w)`` exactly, so
that case is a single cumulative-weight draw instead of a power and a sort per endpoint. When
more endpoints are asked for than have a positive score, the zero-scored ones fill the remaining
places in random order (llm-d leaves their order to an unstable sort).
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

__all__ = ["WeightedRandomPicker"]


class WeightedRandomPicker(Picker):
    """``maxNumOfEndpoints`` distinct endpoints, each drawn with probability proportional to its
    score among those not yet drawn; uniform when no score is positive."""

    TYPE: ClassVar[str] = "weighted-random-picker"

    def pick(
        self,
        cycle: CycleState,
        request: InferenceRequest,
        endpoints: Sequence[Endpoint],
        scores: Sequence[float],
    ) -> tuple[Endpoint, ...]:
        if not endpoints:
            return ()
        rng = self.rng
        positive = [i for i, s in enumerate(scores) if s > 0.0]
        if not positive:  # llm-d delegates to random-picker
            if self.limit == 1:
                return (rng.choice(endpoints),)
            return tuple(rng.sample(endpoints, min(self.limit, len(endpoints))))
        if self.limit == 1:
            weights = [scores[i] for i in positive]
            return (endpoints[rng.choices(positive, weights=weights)[0]],)
        keyed = [((rng.random() or 1e-10) ** (1.0 / scores[i]), i) for i in positive]
        chosen = [i for _, i in heapq.nlargest(self.limit, keyed)]
        missing = self.limit - len(chosen)
        if missing > 0:
            rest = [i for i, s in enumerate(scores) if not s > 0.0]
            chosen += rng.sample(rest, min(missing, len(rest)))
        return tuple(endpoints[i] for i in chosen)
