"""``always-disagg-multimodal-decider``: run the encode stage for requests with media.

True when a chat message has a content block of type ``image_url``, ``video_url``,
``input_audio`` or ``audio_url``; false for text-only and non-chat requests. (llm-d asks its
token producer for multimodal features; its default estimating producer finds them in exactly
these block types.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Final

from llmd_router.framework import NoParams, Plugin, Stability

if TYPE_CHECKING:
    from llmd_router.datalayer.endpoints import Endpoint
    from llmd_router.framework import CycleState
    from llmd_router.parsing.request import InferenceRequest

__all__ = ["MULTIMODAL_BLOCK_TYPES", "AlwaysDisaggMultimodalDecider", "has_multimodal_content"]

MULTIMODAL_BLOCK_TYPES: Final = frozenset({"image_url", "video_url", "input_audio", "audio_url"})


def has_multimodal_content(messages: list[Any] | None) -> bool:
    for message in messages or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list) and any(
            isinstance(block, dict) and block.get("type") in MULTIMODAL_BLOCK_TYPES
            for block in content
        ):
            return True
    return False


class AlwaysDisaggMultimodalDecider(Plugin[NoParams]):
    """Approves encode disaggregation for requests that carry images, video or audio."""

    TYPE: ClassVar[str] = "always-disagg-multimodal-decider"
    STABILITY: ClassVar[Stability] = Stability.BETA

    def decide(
        self, cycle: CycleState, request: InferenceRequest, primary: Endpoint | None
    ) -> bool:
        return has_multimodal_content(request.messages)
