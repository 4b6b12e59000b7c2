"""Choosing the parser for a request by its path.

Each parser claims path suffixes; the longest claimed suffix that ends the path wins, whatever
the order of the list. A suffix must start at a path segment (``/v1/xcompletions`` is not
``completions``; llm-d's matcher does not check this). The first parser that claims nothing is the
fallback for every other path, and parsers listed after it are never reached. With no fallback,
a path nobody claims is a 400.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from llmd_router.errors import BadRequest

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from llmd_router.parsing.request import InferenceRequest

__all__ = ["Parser", "ParserSet"]

_log = logging.getLogger(__name__)


@runtime_checkable
class Parser(Protocol):
    """Turns a request body into an InferenceRequest. ``claims`` are the path suffixes it serves;
    a parser that claims none is the fallback for every path no other parser claims. (A plugin
    contract; the framework re-exports it with the others.)"""

    name: str
    claims: tuple[str, ...]

    def parse(
        self, path: str, headers: Mapping[str, str], body: bytes, request_id: str
    ) -> InferenceRequest: ...


class ParserSet:
    def __init__(self, parsers: Sequence[Parser]) -> None:
        self.parsers: tuple[Parser, ...] = ()
        self.fallback: Parser | None = None
        claims: list[tuple[str, Parser]] = []
        for parser in parsers:
            if self.fallback is not None:
                _log.warning(
                    "parser %r comes after the fallback parser %r and is never used",
                    parser.name,
                    self.fallback.name,
                )
                continue
            self.parsers += (parser,)
            if not parser.claims:
                self.fallback = parser
            claims.extend((suffix.strip("/"), parser) for suffix in parser.claims)
        # Longest first; for equal suffixes the earlier parser wins.
        self._claims = sorted(claims, key=lambda c: -len(c[0]))

    def resolve(self, path: str) -> Parser:
        """The parser for ``path`` (query string already removed). Raises BadRequest."""
        trimmed = path.rstrip("/")
        for suffix, parser in self._claims:
            if trimmed == suffix or trimmed.endswith("/" + suffix):
                return parser
        if self.fallback is not None:
            return self.fallback
        raise BadRequest(f"no parser registered matching path suffix for: {path}")
