"""What a request's prompt is made of, as bytes: the input of prefix hashing and token estimates.

The rendering is llm-d's token estimator's (four bytes make one token), so prefix keys and token
counts agree with llm-d's approximate producer run without a tokenizer:

- chat: the tools as JSON (when there are any), then each message's role and text, with no
  separators; a media block (image, video, audio) adds one 4-byte placeholder token, aligned,
  from the hash of its URL or data (llm-d adds as many as it estimates the media costs);
- completions: the prompt text; a list of strings is one prompt per string;
- responses: JSON of ``[{instructions}, {tools}, {input}]``, the first two when present;
- conversations: JSON of the items; embeddings: JSON of the input;
- token ids (a completion's or an embedding's) are taken as they are.

Each prompt is either ``bytes`` or a ``list[int]`` of token ids. ``estimate`` makes the
request's ``TokenizedPrompt`` from them without a tokenizer (llm-d's ``estimate`` backend). Pure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import msgspec
import xxhash

from llmd_router.parsing.request import ApiKind

if TYPE_CHECKING:
    from llmd_router.parsing.request import InferenceRequest

__all__ = ["BYTES_PER_TOKEN", "Prompt", "TokenizedPrompt", "estimate", "prompt_inputs"]

BYTES_PER_TOKEN: Final = 4
_MEDIA: Final = ("image_url", "video_url", "input_audio", "audio_url")
_encode = msgspec.json.encode

Prompt = bytes | list[int]


class TokenizedPrompt(msgspec.Struct, frozen=True):
    """The request's prompts as tokens (several for a completion with a list of strings).

    Each prompt is either token ids (``list[int]``) or, estimated, its bytes at four to a token
    (``bytes``: hashing packs them as 32-bit pseudo-tokens, as llm-d's estimate does).
    ``exact``: every prompt is token ids (the model's own tokens)."""

    prompts: tuple[Prompt, ...]
    token_count: int
    exact: bool = False


def _is_token_ids(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    )


def _media_token(block: dict[str, Any]) -> bytes:
    """One placeholder token for a media block: the low 32 bits of its source's hash."""
    kind = block.get("type")
    source = block.get(kind) if isinstance(kind, str) else None
    if isinstance(source, dict):
        source = source.get("url") or source.get("data")
    raw = source if isinstance(source, str) else _encode(source)
    data = raw.encode() if isinstance(raw, str) else raw
    return (xxhash.xxh64_intdigest(data) & 0xFFFFFFFF).to_bytes(4, "little")


def _chat(request: InferenceRequest) -> bytes:
    parts = bytearray()
    if request.tools:
        parts += _encode(request.tools)
    for message in request.messages or ():
        if not isinstance(message, dict):
            continue
        role, content = message.get("role"), message.get("content")
        if isinstance(role, str):
            parts += role.encode()
        if isinstance(content, str):
            parts += content.encode()
        elif isinstance(content, list):
            for block in content:
                if not isinstance(block, dict):
                    continue
                if block.get("type") == "text" and isinstance(block.get("text"), str):
                    parts += block["text"].encode()
                elif block.get("type") in _MEDIA:
                    parts += bytes(-len(parts) % BYTES_PER_TOKEN)  # aligned to a token
                    parts += _media_token(block)
    return bytes(parts)


def prompt_inputs(request: InferenceRequest) -> list[Prompt]:
    """The request's prompts (several for a completion with a list of strings); none when
    there is nothing to measure."""
    kind = request.kind
    if kind is ApiKind.CHAT_COMPLETIONS:
        chat = _chat(request)
        return [chat] if chat else []
    prompt = request.prompt
    if prompt is None:
        return []
    if _is_token_ids(prompt):
        return [list(prompt)]
    if kind is ApiKind.COMPLETIONS:
        if isinstance(prompt, str):
            return [prompt.encode()] if prompt else []
        if isinstance(prompt, list):
            return [s.encode() for s in prompt if isinstance(s, str) and s]
        return []
    if kind is ApiKind.RESPONSES:
        parts: list[dict[str, Any]] = []
        if request.instructions:
            parts.append({"instructions": request.instructions})
        if request.tools:
            parts.append({"tools": request.tools})
        parts.append({"input": prompt})
        return [_encode(parts)]
    if kind in (ApiKind.EMBEDDINGS, ApiKind.CONVERSATIONS):
        return [_encode(prompt)]
    return []


def estimate(request: InferenceRequest) -> TokenizedPrompt:
    """The request's prompts without a tokenizer: token ids as given, bytes at four to a token."""
    prompts = tuple(prompt_inputs(request))
    count = 0
    exact = bool(prompts)
    for prompt in prompts:
        if isinstance(prompt, list):
            count += len(prompt)
        else:
            count += -(-len(prompt) // BYTES_PER_TOKEN)
            exact = False
    return TokenizedPrompt(prompts, count, exact)
