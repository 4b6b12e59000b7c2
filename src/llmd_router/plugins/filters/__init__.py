"""Filters: keep the candidate endpoints that may serve a request."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Final

from llmd_router.framework import NoParams, Plugin, Stability

if TYPE_CHECKING:
    from collections.abc import Sequence

    from llmd_router.datalayer.endpoints import Endpoint
    from llmd_router.framework import CycleState
    from llmd_router.parsing.request import InferenceRequest

__all__ = ["ROLE_LABEL", "RoleFilter"]

ROLE_LABEL: Final = "llm-d.ai/role"


class RoleFilter(Plugin[NoParams]):
    """Keeps the endpoints whose ``llm-d.ai/role`` is one of ``ROLES`` (``None`` in it keeps
    endpoints without the label)."""

    ROLES: ClassVar[frozenset[str | None]] = frozenset()
    STABILITY: ClassVar[Stability] = Stability.BETA

    def filter(
        self, cycle: CycleState, request: InferenceRequest, endpoints: Sequence[Endpoint]
    ) -> Sequence[Endpoint]:
        roles = self.ROLES
        return [e for e in endpoints if e.labels.get(ROLE_LABEL) in roles]
