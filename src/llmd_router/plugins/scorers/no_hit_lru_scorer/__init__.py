"""``no-hit-lru-scorer``: spread cold requests over the endpoints least recently given one.

A request is *cold* when no candidate has any prefix-cache hit (``PREFIX_MATCH`` ``match_blocks``
> 0); with no prefix data at all it is cold too. A cold request fills an endpoint's KV cache
with new blocks, so cold requests should rotate across endpoints.

Warm request: every candidate scores 0.5 (no opinion; the prefix scorer decides).
Cold request, ``n`` candidates (``n == 1``: 1.0): the candidates never given a cold request come
first, in candidate order, scoring ``1 - i/(n-1)`` for the i-th of them; a candidate that was
given one scores ``1 - (never_used + pos)/(n-1)``, floored at 0, where ``pos`` is its position
in the LRU of all tracked endpoints (0 = least recent). ``pre_request`` moves the endpoint
chosen for the primary profile, and the one chosen for a profile named ``prefill``, to the
most-recent end, for cold requests only. The LRU holds at most ``lruSize`` endpoint ids; the
least recent is dropped first.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Any, ClassVar, Final

from llmd_router.framework import (
    Category,
    DataKey,
    Params,
    Plugin,
    Stability,
    prefix_match_key,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from llmd_router.datalayer.endpoints import Endpoint
    from llmd_router.framework import CycleState, SchedulingResult
    from llmd_router.parsing.request import InferenceRequest

__all__ = ["NoHitLRUParams", "NoHitLRUScorer"]

DEFAULT_LRU_SIZE: Final = 1024
PREFILL_PROFILE: Final = "prefill"  # hard-coded in llm-d too


class NoHitLRUParams(Params, frozen=True):
    prefix_plugin_type: str = "prefix-cache-scorer"  # deprecated in llm-d, never read
    prefix_plugin_name: str = "prefix-cache-scorer"  # deprecated in llm-d, never read
    lru_size: int = DEFAULT_LRU_SIZE  # <= 0: the default, as in llm-d
    prefix_match_info_producer_name: str = ""  # whose matches tell a cold request (empty: default)


class NoHitLRUScorer(Plugin[NoHitLRUParams]):
    """Favours, for requests no endpoint has cached, the endpoints least recently given one."""

    TYPE: ClassVar[str] = "no-hit-lru-scorer"
    Params: ClassVar[type[Any]] = NoHitLRUParams
    STABILITY: ClassVar[Stability] = Stability.BETA
    category: ClassVar[Category] = Category.DISTRIBUTION

    def __init__(self, name: str, params: NoHitLRUParams) -> None:
        super().__init__(name, params)
        self._prefix = prefix_match_key(params.prefix_match_info_producer_name)
        self.consumes: tuple[DataKey[Any], ...] = (self._prefix,)
        self._capacity = params.lru_size if params.lru_size > 0 else DEFAULT_LRU_SIZE
        self._lru: OrderedDict[str, None] = OrderedDict()  # endpoint id, least recent first
        self._cold: DataKey[bool] = DataKey(f"{self.TYPE}/{name}/cold")

    def statistics(self) -> Mapping[str, int]:
        return {"tracked": len(self._lru), "capacity": self._capacity}

    def lru(self) -> list[str]:
        """The tracked endpoint ids, least recently given a cold request first."""
        return list(self._lru)

    def score(
        self, cycle: CycleState, request: InferenceRequest, endpoints: Sequence[Endpoint]
    ) -> Sequence[float]:
        matches = cycle.get(self._prefix) or {}
        cold = not any(
            (m := matches.get(e.key)) is not None and m.match_blocks > 0 for e in endpoints
        )
        cycle.put(self._cold, cold)
        n = len(endpoints)
        if not cold:
            return [0.5] * n
        if n == 1:
            return [1.0]
        position = {endpoint_id: i for i, endpoint_id in enumerate(self._lru)}
        never_used = sum(1 for e in endpoints if e.id not in position)
        scores: list[float] = []
        rank_of_next_new = 0
        for e in endpoints:
            pos = position.get(e.id)
            if pos is None:
                rank = rank_of_next_new
                rank_of_next_new += 1
            else:
                rank = never_used + pos
            scores.append(max(0.0, 1.0 - rank / (n - 1)))
        return scores

    def pre_request(
        self, cycle: CycleState, request: InferenceRequest, result: SchedulingResult
    ) -> None:
        if not cycle.get(self._cold):  # warm, or never scored: leave the LRU alone
            return
        for profile_name in (result.primary, PREFILL_PROFILE):
            profile = result.profiles.get(profile_name)
            if profile is not None and profile.targets:
                self._touch(profile.targets[0].id)

    def _touch(self, endpoint_id: str) -> None:
        self._lru[endpoint_id] = None
        self._lru.move_to_end(endpoint_id)
        while len(self._lru) > self._capacity:
            self._lru.popitem(last=False)
