"""Every failure the router reports, as one tree with the HTTP status it maps to.

::

    RouterError                 (500 Internal)
    ├── BadRequest              400  body not parseable, model missing, unsupported payload
    ├── PayloadTooLarge         413  request body over the configured limit
    ├── PreconditionFailed      412  a conditional request cannot be served as asked
    ├── ResourceExhausted       429  saturated, shed, or no endpoint survived the filters
    ├── ServiceUnavailable      503  no candidate endpoints (empty pool or subset)
    └── Internal                500  a bug or an unexpected state

An error becomes an Envoy ImmediateResponse at the ext-proc boundary with the body
``inference error: <Code> - <message>`` (llm-d's exact text) and, when the error carries a drop
reason, the header ``x-llm-d-request-dropped-reason``. Foreign exceptions are translated where they
enter (parsing, scheduling); anything untranslated is an ``Internal`` error, never a crash.
"""

from __future__ import annotations

from typing import ClassVar, Final

__all__ = [
    "DROPPED_REASON_HEADER",
    "BadRequest",
    "Internal",
    "PayloadTooLarge",
    "PreconditionFailed",
    "ResourceExhausted",
    "RouterError",
    "ServiceUnavailable",
]

DROPPED_REASON_HEADER: Final = "x-llm-d-request-dropped-reason"


class RouterError(Exception):
    """Base of the router's errors. ``code`` is llm-d's error code name, ``status`` the HTTP
    status of the immediate response, ``dropped_reason`` the value of the drop-reason header."""

    code: ClassVar[str] = "Internal"
    status: ClassVar[int] = 500

    def __init__(self, message: str, *, dropped_reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.dropped_reason = dropped_reason

    def body(self) -> bytes:
        """The immediate-response body, as llm-d writes it."""
        return f"inference error: {self.code} - {self.message}".encode()

    def headers(self) -> list[tuple[str, str]]:
        if self.dropped_reason is None:
            return []
        return [(DROPPED_REASON_HEADER, self.dropped_reason)]


class BadRequest(RouterError):
    code = "BadRequest"
    status = 400


class PayloadTooLarge(RouterError):
    code = "PayloadTooLarge"
    status = 413


class PreconditionFailed(RouterError):
    code = "PreconditionFailed"
    status = 412


class ResourceExhausted(RouterError):
    code = "ResourceExhausted"
    status = 429


class ServiceUnavailable(RouterError):
    code = "ServiceUnavailable"
    status = 503


class Internal(RouterError):
    code = "Internal"
    status = 500
