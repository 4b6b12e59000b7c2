"""``label-selector-filter``: keep the endpoints whose labels match a Kubernetes LabelSelector.

The parameters are a ``metav1.LabelSelector``: every ``matchLabels`` pair and every
``matchExpressions`` requirement must hold (AND). An empty selector keeps every endpoint. Keys
and values are checked as Kubernetes checks them, so a selector the API server would refuse
fails at start-up here too.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal

import msgspec

from llmd_router.framework import Params, Plugin, Stability

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from llmd_router.datalayer.endpoints import Endpoint
    from llmd_router.framework import CycleState
    from llmd_router.parsing.request import InferenceRequest

__all__ = [
    "DEPRECATED_ALIAS",
    "LabelSelectorFilter",
    "LabelSelectorParams",
    "LabelSelectorRequirement",
]

DEPRECATED_ALIAS: Final = "by-label-selector"

Operator = Literal["In", "NotIn", "Exists", "DoesNotExist"]

_NAME: Final = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_DNS_SUBDOMAIN: Final = re.compile(
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
)


def _check_key(key: str, where: str) -> None:
    """A qualified name: ``[prefix/]name``, the prefix a DNS subdomain (<= 253), name <= 63."""
    prefix, slash, name = key.rpartition("/")
    if slash and not (len(prefix) <= 253 and _DNS_SUBDOMAIN.fullmatch(prefix)):
        raise ValueError(f"{where}: invalid label key {key!r}: bad prefix")
    if not (len(name) <= 63 and _NAME.fullmatch(name)):
        raise ValueError(f"{where}: invalid label key {key!r}")


def _check_value(value: str, where: str) -> None:
    if value and not (len(value) <= 63 and _NAME.fullmatch(value)):
        raise ValueError(f"{where}: invalid label value {value!r}")


class LabelSelectorRequirement(Params, frozen=True):
    key: str
    operator: Operator
    values: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_key(self.key, "matchExpressions.key")
        if self.operator in ("In", "NotIn") and not self.values:
            raise ValueError(
                f"matchExpressions.values: operator {self.operator} needs at least one value "
                f"(key {self.key!r})"
            )
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise ValueError(
                f"matchExpressions.values: operator {self.operator} takes no values "
                f"(key {self.key!r})"
            )
        for value in self.values:
            _check_value(value, "matchExpressions.values")


class LabelSelectorParams(Params, frozen=True):
    match_labels: dict[str, str] = msgspec.field(default_factory=dict)
    match_expressions: tuple[LabelSelectorRequirement, ...] = ()

    def __post_init__(self) -> None:
        for key, value in self.match_labels.items():
            _check_key(key, "matchLabels")
            _check_value(value, "matchLabels")


# One compiled requirement: (key, operator, values).
_Rule = tuple[str, str, frozenset[str]]


def _compile(params: LabelSelectorParams) -> tuple[_Rule, ...]:
    rules: list[_Rule] = [(k, "In", frozenset((v,))) for k, v in params.match_labels.items()]
    rules += [(r.key, r.operator, frozenset(r.values)) for r in params.match_expressions]
    return tuple(rules)


def _matches(rules: tuple[_Rule, ...], labels: Mapping[str, str]) -> bool:
    for key, operator, values in rules:
        value = labels.get(key)
        if operator == "In":
            ok = value is not None and value in values
        elif operator == "NotIn":  # an absent label is "not in" any set
            ok = value is None or value not in values
        elif operator == "Exists":
            ok = value is not None
        else:  # DoesNotExist
            ok = value is None
        if not ok:
            return False
    return True


class LabelSelectorFilter(Plugin[LabelSelectorParams]):
    """Keeps the endpoints whose labels match a Kubernetes label selector."""

    TYPE: ClassVar[str] = "label-selector-filter"
    Params: ClassVar[type[Any]] = LabelSelectorParams
    STABILITY: ClassVar[Stability] = Stability.BETA

    def __init__(self, name: str, params: LabelSelectorParams) -> None:
        super().__init__(name, params)
        self._rules = _compile(params)

    def filter(
        self, cycle: CycleState, request: InferenceRequest, endpoints: Sequence[Endpoint]
    ) -> Sequence[Endpoint]:
        if not self._rules:
            return endpoints
        rules = self._rules
        return [e for e in endpoints if _matches(rules, e.labels)]
