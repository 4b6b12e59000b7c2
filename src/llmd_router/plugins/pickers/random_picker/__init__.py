"""``random-picker``: endpoints drawn uniformly at random, scores ignored.

llm-d shuffles the candidates and keeps the first ``maxNumOfEndpoints``; drawing a sample of that
size without replacement gives the same distribution without shuffling the whole list.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from llmd_router.plugins.pickers import Picker

if TYPE_CHECKING:
    from collections.abc import Sequence

    from llmd_router.datalayer.endpoints import Endpoint
    from llmd_router.framework import CycleState
    from llmd_router.parsing.request import InferenceRequest

__all__ = ["RandomPicker"]


class RandomPicker(Picker):
    """``maxNumOfEndpoints`` distinct endpoints, uniformly at random, in random order."""

    TYPE: ClassVar[str] = "random-picker"

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
            return (self.rng.choice(endpoints),)
        return tuple(self.rng.sample(endpoints, min(self.limit, len(endpoints))))
