"""vLLM's error responses: the body shape, the types, and the texts clients see.

Since vLLM 0.10.1 every error body is ``{"error": {"message", "type", "param", "code"}}`` with
``code`` equal to the HTTP status. Two families of messages exist and routers meet both:

- request-shape errors found while decoding the body (FastAPI's validation): type
  ``"Bad Request"`` and a pydantic-style message, ``1 validation error:\\n  {'type': 'missing',
  'loc': 'body.messages', 'msg': 'Field required', 'input': '<dict of 2 items>'}``;
- errors from vLLM's own checks (model, sampling parameters, context length): type
  ``"BadRequestError"`` or ``"NotFoundError"``, and for parameter errors a
  ``(parameter=..., value=...)`` suffix.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

__all__ = ["ApiError", "error_body", "shape_error"]

_JSON: Final = msgspec.json.Encoder()
_TYPES: Final = {
    400: "BadRequestError",
    401: "UnauthorizedError",
    404: "NotFoundError",
    405: "Method Not Allowed",
    409: "ConflictError",
    413: "BadRequestError",
    429: "RateLimitError",
    500: "InternalServerError",
    503: "ServiceUnavailableError",
}


def error_body(
    status: int, message: str, err_type: str | None = None, param: str | None = None
) -> bytes:
    return _JSON.encode(
        {
            "error": {
                "message": message,
                "type": err_type or _TYPES.get(status, "BadRequestError"),
                "param": param,
                "code": status,
            }
        }
    )


class ApiError(Exception):
    """A request vLLM would refuse, with the status and body it would answer."""

    def __init__(
        self, status: int, message: str, param: str | None = None, err_type: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.err_type = err_type

    @classmethod
    def parameter(
        cls, message: str, param: str | None, value: object = None, status: int = 400
    ) -> ApiError:
        """A sampling/context check failure, with vLLM's ``(parameter=, value=)`` suffix."""
        parts = [f"parameter={param}"] if param else []
        if value is not None:
            parts.append(f"value={value}")
        suffix = f" ({', '.join(parts)})" if parts else ""
        return cls(status, message + suffix, param, "BadRequestError")

    def body(self) -> bytes:
        return error_body(self.status, self.message, self.err_type, self.param)


def _summary(value: Any) -> str:
    if isinstance(value, dict):
        return repr(f"<dict of {len(value)} items>")
    if isinstance(value, list):
        return repr(f"<list of {len(value)} items>")
    if isinstance(value, str) and len(value) > 200:
        return repr(value[:200] + "...[truncated]")
    return repr(value)


def shape_error(
    loc: str, kind: str, msg: str, value: Any, ctx: dict[str, str] | None = None
) -> ApiError:
    """A body that does not fit the request schema, worded as FastAPI reports it."""
    entry = f"{{'type': '{kind}', 'loc': '{loc}', 'msg': '{msg}', 'input': {_summary(value)}"
    if ctx:
        entry += ", 'ctx': " + repr(ctx)
    return ApiError(400, f"1 validation error:\n  {entry}}}", loc, "Bad Request")
