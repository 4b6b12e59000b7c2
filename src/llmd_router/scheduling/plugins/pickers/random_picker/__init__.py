"""``random-picker``: endpoints drawn uniformly at random, scores ignored.

llm-d shuffles the candidates and keeps the first ``maxNumOfEndpoints``; drawing a sample of that
size without replacement gives the same distribution without shuffling the whole list.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any, ClassVar

from llmd_router.scheduling.framework import Params, Plugin, Stability

if TYPE_CHECKING:
    from collections.abc import Sequence

    from llmd_router.datalayer.endpoints import Endpoint
    from llmd_router.parsing.request import InferenceRequest
    from llmd_router.scheduling.framework import CycleState

__all__ = ["RandomPicker", "RandomPickerParams"]


class RandomPickerParams(Params, frozen=True):
    max_num_of_endpoints: int = 1  # <= 0 means 1, as in llm-d


class RandomPicker(Plugin[RandomPickerParams]):
    """``maxNumOfEndpoints`` distinct endpoints, uniformly at random, in random order."""

    TYPE: ClassVar[str] = "random-picker"
    Params: ClassVar[type[Any]] = RandomPickerParams
    STABILITY: ClassVar[Stability] = Stability.BETA

    def __init__(self, name: str, params: RandomPickerParams) -> None:
        super().__init__(name, params)
        self.limit = max(1, params.max_num_of_endpoints)
        self.rng = random.Random()

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
