"""vLLM 0.32's response bodies and server-sent-event chunks, field for field.

Whole responses carry every field, nulls included (vLLM dumps its pydantic models whole). Stream
chunks carry only the fields vLLM sets, in its order:

- chat: one role chunk per choice on the first output (``delta: {role, content: ""}``), then one
  chunk per text delta (``finish_reason: null`` and no ``stop_reason``); the last chunk of a choice
  carries ``finish_reason`` and ``stop_reason`` (and ``system_fingerprint`` when no usage chunk
  follows);
- completions: every chunk has ``text, logprobs, finish_reason, stop_reason, prompt_token_ids,
  token_ids``;
- with ``stream_options.include_usage`` a final chunk with ``choices: []`` and the usage, whose
  keys come in vLLM's order (prompt, total, completion); with ``continuous_usage_stats`` every
  chunk also carries the running usage of its choice;
- then ``data: [DONE]``.

Chunks are built from pre-encoded prefixes: a token costs one JSON string encoding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import msgspec

if TYPE_CHECKING:
    from collections.abc import Sequence

    from llmd_sim.generation import OutputPlan
    from llmd_sim.openai.requests import Kind

__all__ = ["SYSTEM_FINGERPRINT", "Choice", "ChunkEncoder", "chat_response", "completion_response"]

SYSTEM_FINGERPRINT: Final = "vllm-0.32.0-5e1d0c3a"
_JSON: Final = msgspec.json.Encoder()
_FINGERPRINT_FIELD: Final = b',"system_fingerprint":"' + SYSTEM_FINGERPRINT.encode() + b'"'


@dataclass(frozen=True, slots=True)
class Choice:
    """What one finished sequence contributes to a whole response."""

    index: int
    plan: OutputPlan


def _details(kind: Kind, cached: int, *, with_nulls: bool) -> dict[str, Any]:
    if kind == "completion":
        return {"cached_tokens": cached}
    details: dict[str, Any] = {"cached_tokens": cached, "created_cache_tokens": 0}
    if with_nulls:
        details["multimodal_tokens"] = None
    return details


def _usage(
    kind: Kind, prompt: int, completion: int, cached: int | None, *, with_nulls: bool
) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "total_tokens": prompt + completion,
        "completion_tokens": completion,
    }
    if cached is not None:
        usage["prompt_tokens_details"] = _details(kind, cached, with_nulls=with_nulls)
    elif with_nulls:
        usage["prompt_tokens_details"] = None
    if with_nulls:
        usage["completion_tokens_details"] = None
    return usage


def chat_response(
    request_id: str,
    created: int,
    model: str,
    choices: Sequence[Choice],
    prompt_tokens: int,
    cached: int | None,
) -> bytes:
    completion = sum(len(c.plan) for c in choices)
    return _JSON.encode(
        {
            "id": request_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": c.index,
                    "message": {
                        "role": "assistant",
                        "content": c.plan.text,
                        "refusal": None,
                        "annotations": None,
                        "audio": None,
                        "function_call": None,
                        "reasoning": None,
                    },
                    "logprobs": None,
                    "finish_reason": c.plan.finish_reason,
                    "stop_reason": c.plan.stop_reason,
                    "token_ids": None,
                    "routed_experts": None,
                }
                for c in choices
            ],
            "service_tier": None,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "usage": _usage("chat", prompt_tokens, completion, cached, with_nulls=True),
            "prompt_logprobs": None,
            "prompt_token_ids": None,
            "prompt_text": None,
            "kv_transfer_params": None,
            "ec_transfer_params": None,
            "metrics": None,
        }
    )


def completion_response(
    request_id: str,
    created: int,
    model: str,
    choices: Sequence[Choice],
    prompt_tokens: int,
    cached: int | None,
) -> bytes:
    completion = sum(len(c.plan) for c in choices)
    return _JSON.encode(
        {
            "id": request_id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": c.index,
                    "text": c.plan.text,
                    "logprobs": None,
                    "finish_reason": c.plan.finish_reason,
                    "stop_reason": c.plan.stop_reason,
                    "token_ids": None,
                    "prompt_logprobs": None,
                    "prompt_token_ids": None,
                    "routed_experts": None,
                }
                for c in choices
            ],
            "service_tier": None,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "usage": _usage("completion", prompt_tokens, completion, cached, with_nulls=True),
            "kv_transfer_params": None,
            "ec_transfer_params": None,
            "metrics": None,
        }
    )


class ChunkEncoder:
    """The ``data: ...`` frames of one streamed response."""

    __slots__ = ("_head", "_kind")

    DONE: Final = b"data: [DONE]\n\n"

    def __init__(self, kind: Kind, request_id: str, created: int, model: str) -> None:
        self._kind: Kind = kind
        obj = "chat.completion.chunk" if kind == "chat" else "text_completion"
        self._head = b'data: {"id":%s,"object":"%s","created":%d,"model":%s,"choices":[' % (
            _JSON.encode(request_id),
            obj.encode(),
            created,
            _JSON.encode(model),
        )

    @staticmethod
    def running_usage(prompt: int, completion: int) -> bytes:
        """The per-chunk usage of ``continuous_usage_stats``."""
        return (
            b'{"prompt_tokens":%d,"total_tokens":%d,"completion_tokens":%d,'
            b'"completion_tokens_details":null}' % (prompt, prompt + completion, completion)
        )

    def role(self, index: int, usage: bytes | None = None) -> bytes:
        """The first chunk of a chat choice: the assistant role and empty content."""
        extra = b',"usage":' + usage if usage is not None else b""
        return (
            self._head + b'{"index":%d,"delta":{"role":"assistant","content":""},'
            b'"logprobs":null,"finish_reason":null}]%s,"prompt_token_ids":null,'
            b'"prompt_text":null}\n\n' % (index, extra)
        )

    def token(
        self,
        index: int,
        text: str,
        finish_reason: str | None = None,
        stop_reason: str | int | None = None,
        usage: bytes | None = None,
        fingerprint: bool = False,
    ) -> bytes:
        """A chunk with ``text`` for choice ``index``; a choice's last one has a finish reason."""
        encoded = _JSON.encode(text)
        if finish_reason is None:
            ending = (
                b'"finish_reason":null,"token_ids":null}'
                if self._kind == "chat"
                else b'"finish_reason":null,"stop_reason":null,"prompt_token_ids":null,'
                b'"token_ids":null}'
            )
        else:
            ending = b'"finish_reason":"%s","stop_reason":%s,%s"token_ids":null}' % (
                finish_reason.encode(),
                _JSON.encode(stop_reason),
                b"" if self._kind == "chat" else b'"prompt_token_ids":null,',
            )
        if self._kind == "chat":
            choice = b'{"index":%d,"delta":{"content":%s},"logprobs":null,' % (index, encoded)
        else:
            choice = b'{"index":%d,"text":%s,"logprobs":null,' % (index, encoded)
        tail = b"]"
        if usage is not None:
            tail += b',"usage":' + usage
        if fingerprint:
            tail += _FINGERPRINT_FIELD
        return self._head + choice + ending + tail + b"}\n\n"

    def usage(self, prompt: int, completion: int, cached: int | None) -> bytes:
        """The final usage chunk of ``stream_options.include_usage``."""
        usage = _usage(self._kind, prompt, completion, cached, with_nulls=False)
        return self._head + b'],"usage":' + _JSON.encode(usage) + _FINGERPRINT_FIELD + b"}\n\n"
