"""``decode-filter``: keep the endpoints that can decode.

Kept: ``llm-d.ai/role`` is ``decode``, ``prefill-decode``, ``both`` (the deprecated spelling of
``prefill-decode``) or ``encode-prefill-decode``, or the endpoint has no role label at all (an
unlabeled endpoint serves every stage). ``encode-decode`` is not kept: llm-d's decode filter does
not list it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Final

from llmd_router.framework import NoParams, Plugin, Stability

if TYPE_CHECKING:
    from collections.abc import Sequence

    from llmd_router.datalayer.endpoints import Endpoint
    from llmd_router.framework import CycleState
    from llmd_router.parsing.request import InferenceRequest

__all__ = ["ROLE_LABEL", "DecodeFilter"]

ROLE_LABEL: Final = "llm-d.ai/role"
# None: no role label, an endpoint that serves every stage.
_ROLES: Final = frozenset({"decode", "prefill-decode", "both", "encode-prefill-decode", None})


class DecodeFilter(Plugin[NoParams]):
    """Keeps the endpoints whose ``llm-d.ai/role`` allows the decode stage."""

    TYPE: ClassVar[str] = "decode-filter"
    STABILITY: ClassVar[Stability] = Stability.BETA

    def filter(
        self, cycle: CycleState, request: InferenceRequest, endpoints: Sequence[Endpoint]
    ) -> Sequence[Endpoint]:
        return [e for e in endpoints if e.labels.get(ROLE_LABEL) in _ROLES]
