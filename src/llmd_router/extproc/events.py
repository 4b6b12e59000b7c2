"""The typed messages of an ext-proc stream: what Envoy tells us, and what we answer.

These are our own values, independent of the protobufs; ``codec.py`` translates both ways.
Header keys are lower case; values are ``str`` (Envoy's ``raw_value`` decoded as latin-1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from collections.abc import Mapping

    from llmd_router.types import Metadata

__all__ = [
    "Action",
    "BodyChunk",
    "BodyMode",
    "BodyResponse",
    "Event",
    "HeadersResponse",
    "ImmediateResponse",
    "NeedDecision",
    "Phase",
    "RequestBody",
    "RequestHeaders",
    "RequestTrailers",
    "ResponseBody",
    "ResponseHeaders",
    "ResponseTrailers",
    "TrailersResponse",
]

Phase = Literal["request", "response"]
# How Envoy sends a body (its ProcessingMode.BodySendMode), as announced on the first message.
BodyMode = Literal[
    "none", "streamed", "buffered", "buffered_partial", "full_duplex_streamed", "grpc"
]

# ----------------------------------------------------------------------------- inbound


@dataclass(frozen=True, slots=True)
class RequestHeaders:
    headers: dict[str, str]
    end_of_stream: bool
    metadata: Metadata = field(default_factory=dict)
    request_body_mode: BodyMode | None = None  # None: Envoy did not say (before 1.33)
    response_body_mode: BodyMode | None = None


@dataclass(frozen=True, slots=True)
class RequestBody:
    body: bytes
    end_of_stream: bool
    metadata: Metadata = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RequestTrailers:
    metadata: Metadata = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ResponseHeaders:
    headers: dict[str, str]
    end_of_stream: bool
    metadata: Metadata = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ResponseBody:
    body: bytes
    end_of_stream: bool


@dataclass(frozen=True, slots=True)
class ResponseTrailers:
    pass


Event = (
    RequestHeaders
    | RequestBody
    | RequestTrailers
    | ResponseHeaders
    | ResponseBody
    | ResponseTrailers
)

# ----------------------------------------------------------------------------- outbound


@dataclass(frozen=True, slots=True)
class HeadersResponse:
    phase: Phase
    set_headers: tuple[tuple[str, str], ...] = ()
    clear_route_cache: bool = False
    dynamic_metadata: Mapping[str, Mapping[str, str]] | None = None
    remove_headers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BodyChunk:
    """A ``streamed_response`` body chunk (FULL_DUPLEX_STREAMED)."""

    phase: Phase
    body: bytes
    end_of_stream: bool
    dynamic_metadata: Mapping[str, Mapping[str, str]] | None = None


@dataclass(frozen=True, slots=True)
class BodyResponse:
    """An answer to a buffered body: headers may still change (the request has not left), and
    the body is replaced only when ``body`` is given."""

    phase: Phase
    set_headers: tuple[tuple[str, str], ...] = ()
    clear_route_cache: bool = False
    dynamic_metadata: Mapping[str, Mapping[str, str]] | None = None
    body: bytes | None = None
    remove_headers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TrailersResponse:
    phase: Phase


@dataclass(frozen=True, slots=True)
class ImmediateResponse:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class NeedDecision:
    """The request is complete: the caller must route it and call ``decide`` or ``fail``.

    Like h11's NEED_DATA, this is returned, never awaited: the protocol does no I/O."""

    headers: Mapping[str, str]
    body: bytes
    metadata: Metadata
    has_body: bool


Action = (
    HeadersResponse | BodyChunk | BodyResponse | TrailersResponse | ImmediateResponse | NeedDecision
)
