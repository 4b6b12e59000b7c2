"""Metric specs: which series of a page carries a signal.

A spec is written as a PromQL instant-vector selector, as llm-d's ``engineConfigs`` write them:
``name`` or ``name{label=value,...}`` with quoted or bare values. Only equality matchers select
(others are ignored, as are ``__name__``-style pseudo-labels); an empty string disables the
signal. A series matches when it has every label of the spec with the same value. Among the
matches, the one with the newest timestamp is read (the first on the page when none has one).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from llmd_router.datalayer.metrics.promtext import Series

__all__ = ["MetricSpec", "parse_spec"]

_SPEC: Final = re.compile(r"\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*(?:\{(.*)\})?\s*", re.DOTALL)
_MATCHER: Final = re.compile(
    r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|\'[^\']*\'|[^,}\s]*)\s*(?:,|$)'
)


@dataclass(frozen=True, slots=True)
class MetricSpec:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)

    def matches(self, series: Series) -> bool:
        have = series.labels
        return all(have.get(k) == v for k, v in self.labels.items())

    def latest(self, found: Sequence[Series]) -> Series | None:
        """The matching series with the newest timestamp (the first on ties), or None."""
        best: Series | None = None
        for series in found:
            if self.matches(series) and (best is None or series.timestamp_ms > best.timestamp_ms):
                best = series
        return best

    def __str__(self) -> str:
        if not self.labels:
            return self.name
        inner = ",".join(f'{k}="{v}"' for k, v in self.labels.items())
        return f"{self.name}{{{inner}}}"


def parse_spec(text: str) -> MetricSpec | None:
    """The spec ``text`` describes; None for an empty string. ValueError when malformed."""
    if not text.strip():
        return None
    whole = _SPEC.fullmatch(text)
    if whole is None:
        raise ValueError(f"metric spec {text!r}: expected name or name{{label=value,...}}")
    name, body = whole.group(1), whole.group(2)
    labels: dict[str, str] = {}
    pos = 0
    body = (body or "").strip()
    while pos < len(body):
        matcher = _MATCHER.match(body, pos)
        if matcher is None or matcher.end() == pos:
            raise ValueError(f"metric spec {text!r}: cannot read the labels at {body[pos:]!r}")
        label, op, value = matcher.groups()
        pos = matcher.end()
        if op != "=" or label.startswith("__"):
            continue
        if value[:1] in {'"', "'"}:
            value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        labels[label] = value
    return MetricSpec(name, labels)
