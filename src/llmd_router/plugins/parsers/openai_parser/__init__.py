"""``openai-parser``: OpenAI request bodies (chat, completions, embeddings, responses,
conversations, and vLLM's render paths). The parsing itself is ``llmd_router.parsing``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from llmd_router.framework import NoParams, Plugin
from llmd_router.parsing import parse_request

if TYPE_CHECKING:
    from collections.abc import Mapping

    from llmd_router.parsing import InferenceRequest

__all__ = ["OpenAIParser"]


class OpenAIParser(Plugin[NoParams]):
    """OpenAI API bodies: model, stream, messages or prompt; the body forwarded as sent."""

    TYPE: ClassVar[str] = "openai-parser"
    Params: ClassVar[type[Any]] = NoParams
    claims: tuple[str, ...] = (
        "chat/completions",
        "completions",
        "embeddings",
        "responses",
        "conversations",
        "chat/completions/render",
        "completions/render",
    )

    def parse(
        self, path: str, headers: Mapping[str, str], body: bytes, request_id: str
    ) -> InferenceRequest:
        return parse_request(path, headers, body, request_id)
