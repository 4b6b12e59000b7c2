"""``prefill-filter``: keep the endpoints that can prefill.

Kept: ``llm-d.ai/role`` is ``prefill``, ``encode-prefill``, ``prefill-decode``, ``both`` (the
deprecated spelling of ``prefill-decode``) or ``encode-prefill-decode``. Unlabeled endpoints are
dropped.
"""

from __future__ import annotations

from typing import ClassVar

from llmd_router.plugins.filters import ROLE_LABEL, RoleFilter

__all__ = ["ROLE_LABEL", "PrefillFilter"]


class PrefillFilter(RoleFilter):
    """Keeps the endpoints whose ``llm-d.ai/role`` allows the prefill stage."""

    TYPE: ClassVar[str] = "prefill-filter"
    ROLES: ClassVar[frozenset[str | None]] = frozenset(
        {"prefill", "encode-prefill", "prefill-decode", "both", "encode-prefill-decode"}
    )
