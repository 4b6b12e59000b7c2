"""What the transport and the request lifecycle hand each other: a decision, an outcome."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

    from llmd_router.parsing.usage import Usage

__all__ = ["Decision", "Ended", "Outcome"]


@dataclass(frozen=True, slots=True)
class Decision:
    """Where a request goes and what changes on the way."""

    destination: str  # "ip:port[,ip:port...]": primary first, then fallbacks
    body: bytes
    body_mutated: bool = False
    set_headers: tuple[tuple[str, str], ...] = ()
    remove_headers: tuple[str, ...] = ()
    response_headers: tuple[tuple[str, str], ...] = ()  # for the client, on the response
    dynamic_metadata: Mapping[str, str] | None = None  # extra keys under envoy.lb
    response_model: tuple[str, str] | None = None  # (name upstream uses, name client sent)


@dataclass(slots=True)
class Outcome:
    """How far an exchange got; read when it ends."""

    decided: bool = False
    # Envoy announced that the response passes through this stream (any response body mode
    # but NONE); False when it said NONE or said nothing.
    response_on_stream: bool = False
    immediate_status: int | None = None
    response_status: int | None = None
    response_streaming: bool = False
    response_complete: bool = False
    response_bytes: int = 0
    usage: Usage | None = None
    protocol_error: str | None = None


@dataclass(frozen=True, slots=True)
class Ended:
    """The proxy's word that a routed request ended (one entry of Envoy's access log)."""

    exchange_id: str
    status: int | None  # None: no response reached the client (it went away first)
    response_bytes: int = 0
