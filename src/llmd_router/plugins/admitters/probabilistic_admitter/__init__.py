"""``probabilistic-admitter``: shed sheddable requests with a probability that rises with load.

Requests with priority >= 0 are always admitted, and so is every request when there are no
candidates. A request with priority < 0 is refused with probability

    saturation = mean over candidates of max(waiting_queue / queueDepthThreshold,
                                              kv_cache_usage / kvCacheUtilThreshold)
    p          = min(saturation ** power * k, 1)

where an endpoint that has never reported metrics counts 1.0. With the defaults nothing is shed
below a saturation of about 0.08, and everything is shed from (1/k) ** (1/power) ~ 0.34.
"""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING, Any, ClassVar

from llmd_router.framework import Params, Plugin, Stability

if TYPE_CHECKING:
    from collections.abc import Sequence

    from llmd_router.datalayer.endpoints import Endpoint
    from llmd_router.framework import CycleState
    from llmd_router.parsing.request import InferenceRequest

__all__ = ["ProbabilisticAdmitter", "ProbabilisticAdmitterParams"]


class ProbabilisticAdmitterParams(Params, frozen=True):
    queue_depth_threshold: int = 5
    kv_cache_util_threshold: float = 0.8
    power: float = 5.0
    k: float = 300.0

    def __post_init__(self) -> None:
        if self.queue_depth_threshold <= 0:
            raise ValueError(f"queueDepthThreshold must be > 0, got {self.queue_depth_threshold}")
        for name, value in (
            ("kvCacheUtilThreshold", self.kv_cache_util_threshold),
            ("power", self.power),
            ("k", self.k),
        ):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be > 0, got {value}")


class ProbabilisticAdmitter(Plugin[ProbabilisticAdmitterParams]):
    """Refuses requests with priority < 0 at random, more often as the candidates fill up."""

    TYPE: ClassVar[str] = "probabilistic-admitter"
    Params: ClassVar[type[Any]] = ProbabilisticAdmitterParams
    STABILITY: ClassVar[Stability] = Stability.BETA

    def __init__(self, name: str, params: ProbabilisticAdmitterParams) -> None:
        super().__init__(name, params)
        self.rng = random.Random()

    def admit(
        self, cycle: CycleState, request: InferenceRequest, endpoints: Sequence[Endpoint]
    ) -> str | None:
        if request.priority >= 0 or not endpoints:
            return None
        saturation = _saturation(endpoints, self.params)
        probability = _shed_probability(saturation, self.params)
        if self.rng.random() < probability:
            return (
                f"probabilistic-admitter: rejected, saturation={saturation:.3f} "
                f"prob={probability:.2f}"
            )
        return None


def _saturation(endpoints: Sequence[Endpoint], params: ProbabilisticAdmitterParams) -> float:
    """Mean of each endpoint's fuller resource; never-reported endpoints count 1.0."""
    queue_threshold = float(params.queue_depth_threshold)
    kv_threshold = params.kv_cache_util_threshold
    total = 0.0
    for endpoint in endpoints:
        m = endpoint.metrics
        if m.updated_at == 0.0:
            total += 1.0
        else:
            total += max(m.waiting_queue_size / queue_threshold, m.kv_cache_usage / kv_threshold)
    return total / len(endpoints)


def _shed_probability(saturation: float, params: ProbabilisticAdmitterParams) -> float:
    try:
        return min(math.pow(saturation, params.power) * params.k, 1.0)
    except OverflowError:  # Go's math.Pow gives +Inf here
        return 1.0
