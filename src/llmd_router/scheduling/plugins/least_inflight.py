"""The first scheduler: the candidate with the fewest requests in flight, ties broken at random.

In-flight counts are the router's own (incremented when a request is routed, decremented when it
finishes), so they react to every decision at once, before any model server reports its queue.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Final

from llmd_router.scheduling.framework import ProfileResult, SchedulingResult

if TYPE_CHECKING:
    from collections.abc import Sequence

    from llmd_router.datalayer.endpoints import Endpoint
    from llmd_router.parsing.request import InferenceRequest

__all__ = ["TYPE", "LeastInflightScheduler"]

TYPE: Final = "least-inflight"
PROFILE: Final = "default"


class LeastInflightScheduler:
    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def schedule(
        self, request: InferenceRequest, candidates: Sequence[Endpoint]
    ) -> SchedulingResult:
        least = min(e.inflight for e in candidates)
        tied = [e for e in candidates if e.inflight == least]
        chosen = tied[0] if len(tied) == 1 else self._rng.choice(tied)
        return SchedulingResult(PROFILE, {PROFILE: ProfileResult((chosen,))})
