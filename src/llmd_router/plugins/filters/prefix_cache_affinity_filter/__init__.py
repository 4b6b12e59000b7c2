"""``prefix-cache-affinity-filter``: keep the endpoints that hold the prompt, until they are busy.

An endpoint is *sticky* when it holds at least ``affinityThreshold`` of the request's prompt
blocks (``match_blocks / total_blocks`` of a prefix producer's ``PrefixMatch``). The filter keeps
only the sticky endpoints, unless

- there are at most one candidate, or the threshold is ``<= 0``;
- a draw below ``explorationProbability`` says to explore this time;
- no endpoint is sticky;
- the affinity would cost too much: with ``maxTTFTPenaltyMs > 0`` and some endpoint not sticky,
  the best sticky endpoint's TTFT estimate exceeds the best other's by more than
  ``maxTTFTPenaltyMs``.

In each of those cases every candidate is kept. The TTFT estimate is the endpoint's queued
prefill work at the fleet's prefill rate: ``in-flight tokens / peakPrefillThroughput * 1000``
ms (the in-flight load producer's count; prompt tokens leave it at the response's first chunk).
So a hot prefix stays on the endpoints that hold it while they keep up, and spills to others
once waiting there would cost more than computing the prefix again elsewhere. Paired with
``token-load-scorer`` this is llm-d's "sticky until saturated".
"""

from __future__ import annotations

import math
import random
from collections import Counter
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal

import msgspec

from llmd_router.framework import (
    INFLIGHT_LOAD,
    DataKey,
    Params,
    Plugin,
    Stability,
    prefix_match_key,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from llmd_router.datalayer.endpoints import Endpoint
    from llmd_router.framework import CycleState, InFlightLoad, PrefixMatch
    from llmd_router.parsing.request import InferenceRequest

__all__ = ["PrefixCacheAffinityFilter", "PrefixCacheAffinityFilterParams"]

# Calibrated by llm-d for Qwen 32B on two H100s (TP=2) with vLLM 0.19, in tokens a second.
DEFAULT_PEAK_PREFILL_THROUGHPUT: Final = 15928.0


class PrefixCacheAffinityFilterParams(Params, frozen=True):
    affinity_threshold: float = 0.80
    exploration_probability: float = 0.0
    max_ttft_penalty_ms: float = msgspec.field(default=18000.0, name="maxTTFTPenaltyMs")
    ttft_source: Literal["prefillThroughput", "latencyPredictor"] = msgspec.field(
        default="prefillThroughput", name="ttftSource"
    )
    peak_prefill_throughput: float = DEFAULT_PEAK_PREFILL_THROUGHPUT
    prefix_match_info_producer_name: str = ""
    latency_prediction_info_producer_name: str = ""
    in_flight_load_producer_name: str = ""  # accepted; there is one in-flight load producer

    def __post_init__(self) -> None:
        def finite(name: str, value: float) -> None:
            if not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value}")

        finite("affinityThreshold", self.affinity_threshold)
        finite("maxTTFTPenaltyMs", self.max_ttft_penalty_ms)
        finite("peakPrefillThroughput", self.peak_prefill_throughput)
        if self.affinity_threshold > 1.0:
            raise ValueError(f"affinityThreshold must be <= 1.0, got {self.affinity_threshold}")
        p = self.exploration_probability
        if not (math.isfinite(p) and 0.0 <= p <= 1.0):
            raise ValueError(f"explorationProbability must be in [0, 1], got {p}")
        if self.max_ttft_penalty_ms < 0:
            raise ValueError(f"maxTTFTPenaltyMs must be >= 0, got {self.max_ttft_penalty_ms}")
        if self.peak_prefill_throughput < 0:
            raise ValueError(
                f"peakPrefillThroughput must be >= 0, got {self.peak_prefill_throughput}"
            )
        if self.ttft_source == "latencyPredictor" and self.max_ttft_penalty_ms > 0:
            raise ValueError(
                "ttftSource latencyPredictor needs a latency predictor, which this version "
                "does not have; use prefillThroughput (the default), or maxTTFTPenaltyMs: 0"
            )
        if self.max_ttft_penalty_ms > 0 and self.peak_prefill_throughput == 0:
            raise ValueError(
                "peakPrefillThroughput must be > 0 when ttftSource is prefillThroughput"
            )


class PrefixCacheAffinityFilter(Plugin[PrefixCacheAffinityFilterParams]):
    """Only the endpoints holding ``affinityThreshold`` of the prompt, while the TTFT they
    cost stays within ``maxTTFTPenaltyMs`` of the best other endpoint's."""

    TYPE: ClassVar[str] = "prefix-cache-affinity-filter"
    Params: ClassVar[type[Any]] = PrefixCacheAffinityFilterParams
    STABILITY: ClassVar[Stability] = Stability.BETA

    def __init__(self, name: str, params: PrefixCacheAffinityFilterParams) -> None:
        super().__init__(name, params)
        self.key = prefix_match_key(params.prefix_match_info_producer_name)
        gated = params.max_ttft_penalty_ms > 0
        self.consumes: tuple[DataKey[Any], ...] = (
            (self.key, INFLIGHT_LOAD) if gated else (self.key,)
        )
        self.rng = random.Random()
        # How often each rule decided: what /debug/plugins shows of this filter.
        self.outcomes: Counter[str] = Counter()

    def filter(
        self, cycle: CycleState, request: InferenceRequest, endpoints: Sequence[Endpoint]
    ) -> Sequence[Endpoint]:
        params = self.params
        if len(endpoints) <= 1 or params.affinity_threshold <= 0:
            self.outcomes["pass"] += 1
            return endpoints
        explore = params.exploration_probability
        if explore > 0 and self.rng.random() < explore:
            self.outcomes["explored"] += 1
            return endpoints
        matches = cycle.get(self.key) or {}
        threshold = params.affinity_threshold
        sticky = [e for e in endpoints if _share(matches.get(e.key)) >= threshold]
        if not sticky:
            self.outcomes["none-sticky"] += 1
            return endpoints
        if params.max_ttft_penalty_ms > 0 and len(sticky) < len(endpoints):
            loads = cycle.get(INFLIGHT_LOAD) or {}
            held = {e.key for e in sticky}
            best_sticky = min(self._ttft_ms(loads, e) for e in sticky)
            best_other = min(self._ttft_ms(loads, e) for e in endpoints if e.key not in held)
            if best_sticky - best_other > params.max_ttft_penalty_ms:
                self.outcomes["saturated"] += 1
                return endpoints
        self.outcomes["sticky"] += 1
        return sticky

    def statistics(self) -> Mapping[str, object]:
        """How many requests each rule decided: kept to the sticky endpoints (``sticky``), all
        kept because none was sticky, because the sticky ones were saturated, by exploration,
        or because there was nothing to choose from (``pass``)."""
        return {"outcomes": dict(self.outcomes)}

    def _ttft_ms(self, loads: Mapping[str, InFlightLoad], endpoint: Endpoint) -> float:
        load = loads.get(endpoint.key)
        tokens = load.tokens if load is not None else 0
        return tokens / self.params.peak_prefill_throughput * 1000.0


def _share(match: PrefixMatch | None) -> float:
    if match is None or match.total_blocks <= 0:
        return 0.0
    return match.match_blocks / match.total_blocks
