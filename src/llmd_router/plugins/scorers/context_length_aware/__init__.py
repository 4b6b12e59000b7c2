"""``context-length-aware``: send a prompt to the endpoints labelled for its length.

Each endpoint may carry a label (default ``llm-d.ai/context-length-range``) with the range of
prompt lengths, in tokens, it is meant for: ``"min-max"``, e.g. ``"0-2048"``. Short prompts can
then go to small-memory servers and long ones to servers provisioned for them.

As a scorer (always), an endpoint whose range contains the prompt scores in (0.3, 1]: higher for
narrower ranges (specialists beat generalists) and for more headroom above the prompt. An
endpoint whose range misses it scores in (0, 0.3], higher the nearer the prompt is to the range,
so an over-long prompt still goes to the endpoint with the longest range. An unlabelled endpoint
scores a neutral 0.5; a label that does not parse scores 0. As a filter (only with
``enableFiltering``), it keeps unlabelled endpoints and those whose range contains the prompt.

The prompt length is estimated as llm-d's default tokenizer-free ``estimate`` token producer
does: 4 bytes of UTF-8 per token, rounded up, over the message roles and text (chat), the prompt
text (completions), or the JSON of the input (embeddings, responses, conversations); token-id
prompts count their ids. Request fields the parser does not keep (chat ``tools``, responses
``instructions``) and multimodal placeholders are not counted.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, ClassVar, Final

import msgspec

from llmd_router.framework import Category, Params, Plugin, Stability
from llmd_router.parsing.request import ApiKind

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from llmd_router.datalayer.endpoints import Endpoint
    from llmd_router.framework import CycleState
    from llmd_router.parsing.request import InferenceRequest

__all__ = ["ContextLengthAware", "ContextLengthAwareParams", "context_length"]

DEFAULT_LABEL: Final = "llm-d.ai/context-length-range"
_BYTES_PER_TOKEN: Final = 4
_MAX_FALLBACK_SCORE: Final = 0.3
_INT: Final = re.compile(r"\+?[0-9]+")  # Go's strconv.Atoi, minus the sign "-" never reaches
_INT64_MAX: Final = 2**63 - 1


class ContextLengthAwareParams(Params, frozen=True):
    label: str = DEFAULT_LABEL
    enable_filtering: bool = False

    def __post_init__(self) -> None:
        if not self.label:
            raise ValueError("label must be specified")


class ContextLengthAware(Plugin[ContextLengthAwareParams]):
    """Filter (when ``enableFiltering``) and scorer by the ``"min-max"`` context-length label.

    With ``n`` the prompt length and ``w = max - min``: in range, ``1.0`` if ``w == 0``, else
    ``0.3 + 0.7 * (0.7 / (1 + w / 10000) + 0.3 * (max - n) / w)``; out of range,
    ``0.3 / (1 + d / 1000)`` with ``d`` the distance to the nearer bound; no label ``0.5``;
    unparsable label ``0.0``."""

    TYPE: ClassVar[str] = "context-length-aware"
    Params: ClassVar[type[Any]] = ContextLengthAwareParams
    STABILITY: ClassVar[Stability] = Stability.BETA
    category: ClassVar[Category] = Category.AFFINITY

    def filter(
        self, cycle: CycleState, request: InferenceRequest, endpoints: Sequence[Endpoint]
    ) -> Sequence[Endpoint]:
        if not self.params.enable_filtering:
            return endpoints
        n = context_length(request)
        label = self.params.label
        keep: dict[str | None, bool] = {}  # by label value: endpoints share a few
        kept: list[Endpoint] = []
        for e in endpoints:
            value = e.labels.get(label)
            verdict = keep.get(value)
            if verdict is None:
                verdict = keep[value] = _keeps(value, n)
            if verdict:
                kept.append(e)
        return kept

    def score(
        self, cycle: CycleState, request: InferenceRequest, endpoints: Sequence[Endpoint]
    ) -> Sequence[float]:
        n = context_length(request)
        label = self.params.label
        by_value: dict[str | None, float] = {}  # endpoints share a few label values
        scores: list[float] = []
        for e in endpoints:
            value = e.labels.get(label)
            s = by_value.get(value)
            if s is None:
                s = by_value[value] = _score(value, n)
            scores.append(s)
        return scores


def _keeps(value: str | None, n: int) -> bool:
    if value is None:
        return True
    bounds = _parse_range(value)
    return bounds is not None and bounds[0] <= n <= bounds[1]


def _score(value: str | None, n: int) -> float:
    if value is None:
        return 0.5
    bounds = _parse_range(value)
    if bounds is None:
        return 0.0
    low, high = bounds
    if low <= n <= high:
        width = high - low
        if width == 0:
            return 1.0
        width_score = 1.0 / (1.0 + width / 10000.0)
        position_score = (high - n) / width
        raw = 0.7 * width_score + 0.3 * position_score
        return _MAX_FALLBACK_SCORE + raw * (1.0 - _MAX_FALLBACK_SCORE)
    distance = n - high if n > high else low - n
    return _MAX_FALLBACK_SCORE / (1.0 + distance / 1000.0)


def _parse_range(value: str) -> tuple[int, int] | None:
    """``"min-max"`` as llm-d parses it (whitespace around each bound allowed); None if invalid
    or if min > max."""
    parts = value.split("-")
    if len(parts) != 2:
        return None
    low, high = (p.strip() for p in parts)
    if not (_INT.fullmatch(low) and _INT.fullmatch(high)):
        return None
    lo, hi = int(low), int(high)
    if hi > _INT64_MAX or lo > hi:
        return None
    return lo, hi


def context_length(request: InferenceRequest) -> int:
    """The prompt's length in tokens, estimated as described in the module docstring."""
    kind = request.kind
    if kind is ApiKind.CHAT_COMPLETIONS:
        return _tokens(_chat_bytes(request.messages or ()))
    prompt = request.prompt
    if prompt is None:
        return 0
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], int):
        return len(prompt)  # token ids
    if kind is ApiKind.COMPLETIONS:
        if isinstance(prompt, str):
            return _tokens(_utf8_len(prompt))
        return sum(_tokens(_utf8_len(p)) for p in prompt if isinstance(p, str))
    if kind in (ApiKind.EMBEDDINGS, ApiKind.CONVERSATIONS):
        return _tokens(len(msgspec.json.encode(prompt)))
    if kind is ApiKind.RESPONSES:
        return _tokens(len(msgspec.json.encode([{"input": prompt}])))
    return 0


def _chat_bytes(messages: Iterable[Any]) -> int:
    total = 0
    for message in messages:
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        if isinstance(role, str):
            total += _utf8_len(role)
        content = message.get("content")
        if isinstance(content, str):
            total += _utf8_len(content)
        elif isinstance(content, list):
            for block in content:
                if isinstance(block, dict) and block.get("type") == "text":
                    text = block.get("text")
                    if isinstance(text, str):
                        total += _utf8_len(text)
    return total


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode())


def _tokens(n_bytes: int) -> int:
    return -(-n_bytes // _BYTES_PER_TOKEN)
