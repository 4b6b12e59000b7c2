"""``encode-filter``: keep the endpoints that can encode (the first stage: encode, prefill,
decode).

Kept: ``llm-d.ai/role`` is ``encode``, ``encode-prefill`` or ``encode-prefill-decode``. Unlabeled
endpoints are dropped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Final

from llmd_router.framework import NoParams, Plugin, Stability

if TYPE_CHECKING:
    from collections.abc import Sequence

    from llmd_router.datalayer.endpoints import Endpoint
    from llmd_router.framework import CycleState
    from llmd_router.parsing.request import InferenceRequest

__all__ = ["ROLE_LABEL", "EncodeFilter"]

ROLE_LABEL: Final = "llm-d.ai/role"
_ROLES: Final = frozenset({"encode", "encode-prefill", "encode-prefill-decode"})


class EncodeFilter(Plugin[NoParams]):
    """Keeps the endpoints whose ``llm-d.ai/role`` allows the encode stage."""

    TYPE: ClassVar[str] = "encode-filter"
    STABILITY: ClassVar[Stability] = Stability.BETA

    def filter(
        self, cycle: CycleState, request: InferenceRequest, endpoints: Sequence[Endpoint]
    ) -> Sequence[Endpoint]:
        return [e for e in endpoints if e.labels.get(ROLE_LABEL) in _ROLES]
