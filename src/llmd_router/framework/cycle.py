"""Per-request scheduling state: typed values that producers write and filters and scorers read.

A ``DataKey`` names a value and carries its type, so ``cycle.get(INFLIGHT_LOAD)`` is typed
without casts. Per-endpoint data is one mapping per key, keyed by ``Endpoint.key``: a producer
writes it once for all candidates, instead of copying every endpoint to attach attributes.
One ``CycleState`` lives for one request (all its profiles and hooks), then is dropped.

A request's outputs beyond its endpoint live here too (``outputs``), never on the request: the
headers pre-request hooks add to or remove from the forwarded request, the headers the client
gets on the response, and what the request costs endpoints while it is in flight. The director
turns them into the decision and the in-flight charges when the request is routed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar, cast

from llmd_router.datalayer.inflight import InFlightCharge, InFlightLoad
from llmd_router.parsing.prompt import TokenizedPrompt

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "INFLIGHT_LOAD",
    "PREFIX_MATCH",
    "TOKENIZED_PROMPT",
    "UNCACHED_TOKENS",
    "CycleState",
    "DataKey",
    "InFlightLoad",
    "PrefixMatch",
    "RequestOutputs",
    "TokenizedPrompt",
    "is_prefix_match_key",
    "prefix_match_key",
]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class DataKey(Generic[T]):
    """``explained``: per-endpoint data (a mapping by ``Endpoint.key``) that decision
    explanations show for each candidate."""

    name: str
    explained: bool = field(default=False, compare=False)

    def __repr__(self) -> str:
        return f"DataKey({self.name!r})"


class RequestOutputs:
    """What the hooks decided for a request besides its endpoint."""

    __slots__ = ("charges", "remove_headers", "response_headers", "set_headers")

    def __init__(self) -> None:
        self.set_headers: dict[str, str] = {}  # added to the request forwarded upstream
        self.remove_headers: set[str] = set()  # removed from it (a client's own copy included)
        self.response_headers: dict[str, str] = {}  # for the client, on the response
        self.charges: list[InFlightCharge] = []  # beyond the one request on the chosen endpoint

    def set_header(self, name: str, value: str) -> None:
        self.set_headers[name] = value
        self.remove_headers.discard(name)

    def remove_header(self, name: str) -> None:
        self.set_headers.pop(name, None)
        self.remove_headers.add(name)

    def set_response_header(self, name: str, value: str) -> None:
        self.response_headers[name] = value

    def charge(
        self, key: str, *, requests: int = 0, tokens: int = 0, until_first_chunk: bool = False
    ) -> None:
        """Count ``requests`` and ``tokens`` in flight to endpoint ``key`` until the request
        ends, or with ``until_first_chunk`` until its response's first chunk reaches the router
        (the end, when the response does not pass through it). The router releases them then,
        exactly once. A charge of nothing is not recorded."""
        if requests or tokens:
            self.charges.append(InFlightCharge(key, requests, tokens, until_first_chunk))

    def charges_for(self, primary_key: str) -> tuple[InFlightCharge, ...]:
        """Everything a request routed to ``primary_key`` costs while in flight: one request
        there, and what the hooks charged."""
        return (InFlightCharge(primary_key, requests=1), *self.charges)


class CycleState:
    __slots__ = ("_values", "empty_profiles", "outputs")

    def __init__(self) -> None:
        self._values: dict[DataKey[object], object] = {}
        # Profiles that found no endpoint, with the filter that removed the last one.
        self.empty_profiles: dict[str, str | None] = {}
        self.outputs = RequestOutputs()

    def put(self, key: DataKey[T], value: T) -> None:
        self._values[cast("DataKey[object]", key)] = value

    def get(self, key: DataKey[T]) -> T | None:
        return cast("T | None", self._values.get(cast("DataKey[object]", key)))

    def __contains__(self, key: DataKey[object]) -> bool:
        return key in self._values

    def explained(self) -> dict[str, Mapping[str, object]]:
        """The explained per-endpoint data of this request, by key name."""
        return {
            key.name: cast("Mapping[str, object]", value)
            for key, value in self._values.items()
            if key.explained
        }


@dataclass(frozen=True, slots=True)
class PrefixMatch:
    """How much of the request's prompt an endpoint is believed to have cached."""

    match_blocks: int
    total_blocks: int
    block_size_tokens: int


INFLIGHT_LOAD: Final[DataKey[Mapping[str, InFlightLoad]]] = DataKey("InFlightLoadKey", True)
TOKENIZED_PROMPT: Final[DataKey[TokenizedPrompt]] = DataKey("TokenizedPromptDataKey")
# Per candidate: the prompt tokens it would have to compute (the prompt less the prefix it is
# believed to hold), from the in-flight load producer.
UNCACHED_TOKENS: Final[DataKey[Mapping[str, int]]] = DataKey("UncachedRequestTokensDataKey", True)
DEFAULT_PREFIX_PRODUCER: Final = "approx-prefix-cache-producer"


def prefix_match_key(producer: str = "") -> DataKey[Mapping[str, PrefixMatch]]:
    """The key a prefix producer writes its matches under, by the producer's name (llm-d's
    ``PrefixCacheMatchInfoDataKey/<name>``); empty: the default producer's."""
    return DataKey(f"PrefixCacheMatchInfoDataKey/{producer or DEFAULT_PREFIX_PRODUCER}", True)


PREFIX_MATCH: Final = prefix_match_key()


def is_prefix_match_key(key: DataKey[Any]) -> bool:
    """Whether ``key`` holds a prefix producer's matches."""
    return key.name.startswith("PrefixCacheMatchInfoDataKey/")
