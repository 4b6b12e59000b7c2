"""``by-label`` (deprecated; use ``label-selector-filter``): keep endpoints by one label's value.

An endpoint is kept if the value of ``label`` is one of ``validValues``, or if it has no such label
and ``allowsNoLabel`` is set. As in llm-d, a missing label reads as the empty string, so listing
``""`` in ``validValues`` also keeps unlabeled endpoints.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from llmd_router.framework import Params, Plugin, Stability

if TYPE_CHECKING:
    from collections.abc import Sequence

    from llmd_router.datalayer.endpoints import Endpoint
    from llmd_router.framework import CycleState
    from llmd_router.parsing.request import InferenceRequest

__all__ = ["ByLabelFilter", "ByLabelParams"]


class ByLabelParams(Params, frozen=True):
    label: str = ""
    valid_values: tuple[str, ...] = ()
    allows_no_label: bool = False

    def __post_init__(self) -> None:
        if not self.label:
            raise ValueError("label: must be specified")
        if not self.valid_values and not self.allows_no_label:
            raise ValueError("validValues: must be non-empty unless allowsNoLabel is true")


class ByLabelFilter(Plugin[ByLabelParams]):
    """Keeps endpoints whose label has one of the valid values (deprecated)."""

    TYPE: ClassVar[str] = "by-label"
    Params: ClassVar[type[Any]] = ByLabelParams
    STABILITY: ClassVar[Stability] = Stability.BETA

    def __init__(self, name: str, params: ByLabelParams) -> None:
        super().__init__(name, params)
        self._valid = frozenset(params.valid_values)

    def filter(
        self, cycle: CycleState, request: InferenceRequest, endpoints: Sequence[Endpoint]
    ) -> Sequence[Endpoint]:
        label, valid, allows_none = self.params.label, self._valid, self.params.allows_no_label
        return [
            e
            for e in endpoints
            if e.labels.get(label, "") in valid or (allows_none and label not in e.labels)
        ]
