"""Token usage from model-server responses: a whole JSON body, or a server-sent-event stream.

The stream scanner is fed body chunks as they pass. Unlike llm-d's parser it reassembles events
split across chunks, and it decodes only lines that mention ``"usage"`` (vLLM sends usage in the
last data event), so a 256-chunk stream costs a few byte searches, not 256 JSON decodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import msgspec

__all__ = ["SseUsageScanner", "Usage", "usage_from_json"]

_DECODER: Final = msgspec.json.Decoder()
_MAX_PENDING: Final = 1 << 20  # a line longer than this is not an SSE event we care about


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    cached_tokens: int | None = None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _from_object(usage: Any, obj_type: Any = None) -> Usage | None:
    """Map a ``usage`` object. Responses/conversations use input/output tokens; chat and
    completions use prompt/completion tokens; otherwise whichever is present."""
    if not isinstance(usage, dict):
        return None
    if isinstance(obj_type, str) and obj_type.startswith(("response", "conversation")):
        prompt, completion = usage.get("input_tokens"), usage.get("output_tokens")
    else:
        prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
        completion = usage.get("completion_tokens", usage.get("output_tokens"))
    cached = None
    for key in ("prompt_tokens_details", "input_tokens_details", "prompt_token_details"):
        details = usage.get(key)
        if isinstance(details, dict) and _int(details.get("cached_tokens")) is not None:
            cached = _int(details["cached_tokens"])
            break
    return Usage(_int(prompt), _int(completion), _int(usage.get("total_tokens")), cached)


def usage_from_json(body: bytes) -> Usage | None:
    """Usage from a complete JSON response, or None if it has none or is not JSON."""
    if b'"usage"' not in body:
        return None
    try:
        document = _DECODER.decode(body)
    except msgspec.DecodeError:
        return None
    if not isinstance(document, dict):
        return None
    return _from_object(document.get("usage"), document.get("object"))


class SseUsageScanner:
    """Watches an SSE body for usage. ``usage`` holds the last one seen; ``events`` counts
    ``data:`` events."""

    __slots__ = ("_pending", "events", "usage")

    def __init__(self) -> None:
        self._pending = b""
        self.usage: Usage | None = None
        self.events = 0

    def feed(self, chunk: bytes) -> None:
        data = self._pending + chunk if self._pending else chunk
        end = data.rfind(b"\n")
        if end < 0:
            self._pending = data if len(data) <= _MAX_PENDING else b""
            return
        self._pending = data[end + 1 :]
        lines = data[:end]
        self.events += lines.startswith(b"data:") + lines.count(b"\ndata:")
        if b'"usage"' not in lines:
            return
        for line in lines.split(b"\n"):
            if b'"usage"' in line and line.startswith(b"data:"):
                self._event(line[5:].strip())

    def finish(self) -> None:
        """The stream ended: a last event without a trailing newline still counts."""
        if self._pending:
            pending, self._pending = self._pending, b""
            self.feed(pending + b"\n")

    def _event(self, payload: bytes) -> None:
        try:
            document = _DECODER.decode(payload)
        except msgspec.DecodeError:
            return
        if not isinstance(document, dict):
            return
        found = _from_object(document.get("usage"), document.get("object"))
        if found is None and document.get("type") == "response.completed":
            response = document.get("response")
            if isinstance(response, dict):
                found = _from_object(response.get("usage"), "response")
        if found is not None:
            self.usage = found
