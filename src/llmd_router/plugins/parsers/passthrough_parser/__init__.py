"""``passthrough-parser``: any body, unread. The request is scheduled without a model name
(model-aware plugins see none) and its body is forwarded byte for byte. It claims no path, so
it is the fallback for every path no other parser claims."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from llmd_router.framework import NoParams, Plugin
from llmd_router.headers import FAIRNESS_ID, OBJECTIVE, control_header
from llmd_router.parsing import ApiKind, InferenceRequest

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["PassthroughParser"]


class PassthroughParser(Plugin[NoParams]):
    """Any payload, forwarded unread; the fallback for unclaimed paths."""

    TYPE: ClassVar[str] = "passthrough-parser"
    Params: ClassVar[type[Any]] = NoParams
    claims: tuple[str, ...] = ()

    def parse(
        self, path: str, headers: Mapping[str, str], body: bytes, request_id: str
    ) -> InferenceRequest:
        return InferenceRequest(
            request_id=request_id,
            path=path,
            kind=ApiKind.PASSTHROUGH,
            headers=headers,
            body=body,
            fairness_id=control_header(headers, FAIRNESS_ID) or "default-flow",
            objective=control_header(headers, OBJECTIVE),
        )
