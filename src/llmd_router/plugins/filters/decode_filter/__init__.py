"""``decode-filter``: keep the endpoints that can decode.

Kept: ``llm-d.ai/role`` is ``decode``, ``prefill-decode``, ``both`` (the deprecated spelling of
``prefill-decode``) or ``encode-prefill-decode``, or the endpoint has no role label at all (an
unlabeled endpoint serves every stage). ``encode-decode`` is not kept: llm-d's decode filter does
not list it.
"""

from __future__ import annotations

from typing import ClassVar

from llmd_router.plugins.filters import ROLE_LABEL, RoleFilter

__all__ = ["ROLE_LABEL", "DecodeFilter"]


class DecodeFilter(RoleFilter):
    """Keeps the endpoints whose ``llm-d.ai/role`` allows the decode stage."""

    TYPE: ClassVar[str] = "decode-filter"
    # None: no role label, an endpoint that serves every stage.
    ROLES: ClassVar[frozenset[str | None]] = frozenset(
        {"decode", "prefill-decode", "both", "encode-prefill-decode", None}
    )
