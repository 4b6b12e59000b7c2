"""``prefill-filter``: keep the endpoints that can prefill.

Kept: ``llm-d.ai/role`` is ``prefill``, ``encode-prefill``, ``prefill-decode``, ``both`` (the
deprecated spelling of ``prefill-decode``) or ``encode-prefill-decode``. Unlabeled endpoints are
dropped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Final

from llmd_router.framework import NoParams, Plugin, Stability

if TYPE_CHECKING:
    from collections.abc import Sequence

    from llmd_router.datalayer.endpoints import Endpoint
    from llmd_router.framework import CycleState
    from llmd_router.parsing.request import InferenceRequest

__all__ = ["ROLE_LABEL", "PrefillFilter"]

ROLE_LABEL: Final = "llm-d.ai/role"
_ROLES: Final = frozenset(
    {"prefill", "encode-prefill", "prefill-decode", "both", "encode-prefill-decode"}
)


class PrefillFilter(Plugin[NoParams]):
    """Keeps the endpoints whose ``llm-d.ai/role`` allows the prefill stage."""

    TYPE: ClassVar[str] = "prefill-filter"
    STABILITY: ClassVar[Stability] = Stability.BETA

    def filter(
        self, cycle: CycleState, request: InferenceRequest, endpoints: Sequence[Endpoint]
    ) -> Sequence[Endpoint]:
        return [e for e in endpoints if e.labels.get(ROLE_LABEL) in _ROLES]
