"""``prefix-cache-scorer``: prefer the endpoints believed to hold more of the request's prefix.

Reads the ``PrefixMatch`` a prefix producer wrote for each candidate (by default the
``approx-prefix-cache-producer``, which the pipeline adds when nothing produces it)::

    ratio  = match_blocks / total_blocks
    length = min(1, match_blocks * block_size_tokens / matchLengthScaleTokens) ** 2
    score  = matchLengthWeight * length + (1 - matchLengthWeight) * ratio

With the default weight 0 the score is the matched share of the prompt. A candidate without a
match, or a request with no blocks, scores 0.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any, ClassVar

from llmd_router.framework import Category, DataKey, Params, Plugin, Stability, prefix_match_key

if TYPE_CHECKING:
    from collections.abc import Sequence

    from llmd_router.datalayer.endpoints import Endpoint
    from llmd_router.framework import CycleState, PrefixMatch
    from llmd_router.parsing.request import InferenceRequest

__all__ = ["PrefixCacheScorer", "PrefixCacheScorerParams"]

_log = logging.getLogger(__name__)


class PrefixCacheScorerParams(Params, frozen=True):
    prefix_match_info_producer_name: str = ""  # empty: the default producer's matches
    match_length_weight: float = 0.0
    match_length_scale_tokens: int = 8192
    # Before llm-d split the index out of the scorer (2026), these were the scorer's; they
    # belong to approx-prefix-cache-producer now. Accepted, with a warning, and not used here.
    hash_block_size: int | None = None
    block_size: int | None = None
    block_size_tokens: int | None = None
    max_prefix_blocks_to_match: int | None = None
    lru_capacity_per_server: int | None = None

    def legacy(self) -> list[str]:
        return [
            name
            for name, value in (
                ("hashBlockSize", self.hash_block_size),
                ("blockSize", self.block_size),
                ("blockSizeTokens", self.block_size_tokens),
                ("maxPrefixBlocksToMatch", self.max_prefix_blocks_to_match),
                ("lruCapacityPerServer", self.lru_capacity_per_server),
            )
            if value is not None
        ]

    def __post_init__(self) -> None:
        weight = self.match_length_weight
        if not (math.isfinite(weight) and 0.0 <= weight <= 1.0):
            raise ValueError(f"matchLengthWeight must be in [0, 1], got {weight}")
        if weight > 0 and self.match_length_scale_tokens <= 0:
            raise ValueError(
                "matchLengthScaleTokens must be > 0 when matchLengthWeight is set, "
                f"got {self.match_length_scale_tokens}"
            )


class PrefixCacheScorer(Plugin[PrefixCacheScorerParams]):
    """``w * min(1, matched tokens / scale) ** 2 + (1 - w) * matched blocks / total blocks``."""

    TYPE: ClassVar[str] = "prefix-cache-scorer"
    Params: ClassVar[type[Any]] = PrefixCacheScorerParams
    STABILITY: ClassVar[Stability] = Stability.BETA
    category: ClassVar[Category] = Category.AFFINITY

    def __init__(self, name: str, params: PrefixCacheScorerParams) -> None:
        super().__init__(name, params)
        legacy = params.legacy()
        if legacy:
            _log.warning(
                "plugin %r: %s belong to approx-prefix-cache-producer now; they are ignored "
                "here (configure that producer to set them)",
                name,
                ", ".join(legacy),
            )
        self.key = prefix_match_key(params.prefix_match_info_producer_name)
        self.consumes: tuple[DataKey[Any], ...] = (self.key,)

    def score(
        self, cycle: CycleState, request: InferenceRequest, endpoints: Sequence[Endpoint]
    ) -> Sequence[float]:
        matches = cycle.get(self.key)
        if not matches:
            return [0.0] * len(endpoints)
        weight = self.params.match_length_weight
        scored: dict[int, float] = {}  # producers share one match among many candidates
        out = []
        for e in endpoints:
            match = matches.get(e.key)
            score = scored.get(id(match))
            if score is None:
                score = scored[id(match)] = self._score(match, weight)
            out.append(score)
        return out

    def _score(self, match: PrefixMatch | None, weight: float) -> float:
        if match is None or match.total_blocks <= 0:
            return 0.0
        ratio = match.match_blocks / match.total_blocks
        if weight <= 0 or match.block_size_tokens <= 0:
            return ratio
        tokens = match.match_blocks * match.block_size_tokens
        length = min(1.0, tokens / self.params.match_length_scale_tokens) ** 2
        return weight * length + (1.0 - weight) * ratio
