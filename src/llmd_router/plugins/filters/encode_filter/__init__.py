"""``encode-filter``: keep the endpoints that can encode (the first stage: encode, prefill,
decode).

Kept: ``llm-d.ai/role`` is ``encode``, ``encode-prefill`` or ``encode-prefill-decode``. Unlabeled
endpoints are dropped.
"""

from __future__ import annotations

from typing import ClassVar

from llmd_router.plugins.filters import ROLE_LABEL, RoleFilter

__all__ = ["ROLE_LABEL", "EncodeFilter"]


class EncodeFilter(RoleFilter):
    """Keeps the endpoints whose ``llm-d.ai/role`` allows the encode stage."""

    TYPE: ClassVar[str] = "encode-filter"
    ROLES: ClassVar[frozenset[str | None]] = frozenset(
        {"encode", "encode-prefill", "encode-prefill-decode"}
    )
