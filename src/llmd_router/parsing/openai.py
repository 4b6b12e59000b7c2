"""OpenAI request bodies into an InferenceRequest, following llm-d's openai-parser.

The API is chosen by the request path's suffix (``/v1/chat/completions``,
``/v1/projects/x/chat/completions``, ...); the longest claimed suffix wins, and it must start at a
path-segment boundary (llm-d's matcher does not check that, so ``/v1/xcompletions`` would match
there). A path no suffix claims is passed through: scheduled, its body forwarded unread.

Only the fields routing needs are decoded (msgspec skips the rest, so a 100k-token prompt costs
one pass over the bytes), and the body is forwarded byte for byte unless the model name is
rewritten. Any malformed input becomes our own ``BadRequest`` with llm-d's message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import msgspec

from llmd_router.errors import BadRequest
from llmd_router.headers import FAIRNESS_ID, MODEL_REWRITE, OBJECTIVE, control_header
from llmd_router.parsing.request import ApiKind, InferenceRequest

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["api_kind", "parse_request", "request_path"]

_SUFFIXES: Final = {
    "chat/completions": ApiKind.CHAT_COMPLETIONS,
    "chat/completions/render": ApiKind.CHAT_COMPLETIONS,
    "completions": ApiKind.COMPLETIONS,
    "completions/render": ApiKind.COMPLETIONS,
    "embeddings": ApiKind.EMBEDDINGS,
    "responses": ApiKind.RESPONSES,
    "conversations": ApiKind.CONVERSATIONS,
}
# Longest first, so that "chat/completions" is tried before "completions".
_BY_LENGTH: Final = sorted(_SUFFIXES, key=len, reverse=True)


class _Body(msgspec.Struct):
    """The fields of an OpenAI request the router reads; everything else is skipped."""

    model: Any = msgspec.UNSET
    stream: Any = False
    messages: Any = msgspec.UNSET
    prompt: Any = msgspec.UNSET
    input: Any = msgspec.UNSET
    items: Any = msgspec.UNSET
    max_tokens: Any = None
    max_completion_tokens: Any = None
    tools: Any = None
    instructions: Any = None
    cache_salt: Any = None


_DECODER: Final = msgspec.json.Decoder(_Body)
_ANY: Final = msgspec.json.Decoder()
_ENCODER: Final = msgspec.json.Encoder()


def request_path(headers: Mapping[str, str]) -> str:
    """The request path: ``:path``, else ``x-original-path``, else ``x-forwarded-path``."""
    path = (
        headers.get(":path")
        or headers.get("x-original-path")
        or headers.get("x-forwarded-path")
        or "/v1/completions"
    )
    return path.split("?", 1)[0]


def api_kind(path: str) -> ApiKind:
    """The API a path addresses, by its longest claimed suffix; PASSTHROUGH if none."""
    trimmed = path.rstrip("/")
    for suffix in _BY_LENGTH:
        if trimmed == suffix or trimmed.endswith("/" + suffix):
            return _SUFFIXES[suffix]
    return ApiKind.PASSTHROUGH


def _nonempty_prompt(value: Any) -> bool:
    """A prompt or embedding input: a string, or a non-empty list of strings or of token ids."""
    if isinstance(value, str):
        return bool(value)
    if not isinstance(value, list) or not value:
        return False
    if all(isinstance(v, str) for v in value):
        return True
    return all(isinstance(v, int) and not isinstance(v, bool) for v in value)


def _valid_messages(value: Any) -> bool:
    if not isinstance(value, list) or not value:
        return False
    for message in value:
        if not isinstance(message, dict):
            return False
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            return False
    return True


def _int_or_none(value: Any, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"invalid request: {field} must be an integer")
    return value


def parse_request(
    path: str, headers: Mapping[str, str], body: bytes, request_id: str
) -> InferenceRequest:
    """Parse an OpenAI request. Raises ``BadRequest`` for anything malformed."""
    kind = api_kind(path)
    fairness_id = control_header(headers, FAIRNESS_ID) or "default-flow"
    objective = control_header(headers, OBJECTIVE)
    if kind is ApiKind.PASSTHROUGH:
        return InferenceRequest(
            request_id, path, kind, headers, body, fairness_id=fairness_id, objective=objective
        )
    try:
        parsed = _DECODER.decode(body)
    except msgspec.DecodeError as exc:
        raise BadRequest(f"error unmarshaling request body: {exc}") from None
    messages, prompt, max_tokens = _payload(kind, parsed)
    model = parsed.model
    if not isinstance(model, str) or not model:
        raise BadRequest("model not found in request body")
    request = InferenceRequest(
        request_id,
        path,
        kind,
        headers,
        body,
        model=model,
        target_model=model,
        stream=parsed.stream is True,
        max_tokens=max_tokens,
        messages=messages,
        prompt=prompt,
        fairness_id=fairness_id,
        objective=objective,
        tools=parsed.tools,
        instructions=parsed.instructions if kind is ApiKind.RESPONSES else None,
        cache_salt=parsed.cache_salt if isinstance(parsed.cache_salt, str) else None,
    )
    rewrite = control_header(headers, MODEL_REWRITE)
    if rewrite and rewrite != model:
        return rewrite_model(request, rewrite)
    return request


def _payload(kind: ApiKind, parsed: _Body) -> tuple[list[Any] | None, Any, int | None]:
    """What the prompt is, by API: (messages, prompt, max_tokens). Raises BadRequest."""
    if kind is ApiKind.CHAT_COMPLETIONS:
        if not _valid_messages(parsed.messages):
            raise BadRequest("invalid chat completions request: must have valid messages field")
        max_tokens = _int_or_none(parsed.max_completion_tokens, "max_completion_tokens")
        if max_tokens is None:
            max_tokens = _int_or_none(parsed.max_tokens, "max_tokens")
        return parsed.messages, None, max_tokens
    if kind is ApiKind.COMPLETIONS:
        if not _nonempty_prompt(parsed.prompt):
            raise BadRequest("invalid completions request: must have prompt field")
        return None, parsed.prompt, _int_or_none(parsed.max_tokens, "max_tokens")
    if kind is ApiKind.EMBEDDINGS:
        if not _nonempty_prompt(parsed.input):
            raise BadRequest("invalid embeddings request: must have input field")
        return None, parsed.input, None
    if kind is ApiKind.RESPONSES:
        if parsed.input is msgspec.UNSET or parsed.input is None:
            raise BadRequest("invalid responses request: must have input field")
        return None, parsed.input, None
    if not isinstance(parsed.items, list) or not parsed.items:  # conversations
        raise BadRequest("invalid conversations request: must have items field")
    return None, parsed.items, None


def rewrite_model(request: InferenceRequest, model: str) -> InferenceRequest:
    """The request pointed at ``model``: the only change the router makes to a body."""
    document = _ANY.decode(request.body)
    document["model"] = model
    return request.replace(body=_ENCODER.encode(document), body_mutated=True, target_model=model)
