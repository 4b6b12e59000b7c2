"""Per-request scheduling state: typed values that producers write and filters and scorers read.

A ``DataKey`` names a value and carries its type, so ``cycle.get(INFLIGHT_LOAD)`` is typed
without casts. Per-endpoint data is one mapping per key, keyed by ``Endpoint.key``: a producer
writes it once for all candidates, instead of copying every endpoint to attach attributes.
One ``CycleState`` lives for one request (all its profiles and hooks), then is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Generic, TypeVar, cast

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "INFLIGHT_LOAD",
    "PREFIX_MATCH",
    "CycleState",
    "DataKey",
    "InFlightLoad",
    "PrefixMatch",
]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class DataKey(Generic[T]):
    name: str

    def __repr__(self) -> str:
        return f"DataKey({self.name!r})"


class CycleState:
    __slots__ = ("_values", "empty_profiles")

    def __init__(self) -> None:
        self._values: dict[DataKey[object], object] = {}
        # Profiles that found no endpoint, with the filter that removed the last one.
        self.empty_profiles: dict[str, str | None] = {}

    def put(self, key: DataKey[T], value: T) -> None:
        self._values[cast("DataKey[object]", key)] = value

    def get(self, key: DataKey[T]) -> T | None:
        return cast("T | None", self._values.get(cast("DataKey[object]", key)))

    def __contains__(self, key: DataKey[object]) -> bool:
        return key in self._values


@dataclass(frozen=True, slots=True)
class InFlightLoad:
    """Work the router has sent to an endpoint and not yet seen finish."""

    requests: int
    tokens: int


@dataclass(frozen=True, slots=True)
class PrefixMatch:
    """How much of the request's prompt an endpoint is believed to have cached."""

    match_blocks: int
    total_blocks: int
    block_size_tokens: int


INFLIGHT_LOAD: Final[DataKey[Mapping[str, InFlightLoad]]] = DataKey("InFlightLoadKey")
PREFIX_MATCH: Final[DataKey[Mapping[str, PrefixMatch]]] = DataKey("PrefixCacheMatchInfoKey")
