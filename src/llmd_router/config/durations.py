"""Go duration strings (``time.ParseDuration``), as llm-d's configuration writes them.

A duration is an optional sign and one or more decimal numbers, each with a unit: ``"200ms"``,
``"1m30s"``, ``"1.5h"``, ``"-2s"``. The units are ``ns``, ``us`` (or ``µs``, ``μs``), ``ms``,
``s``, ``m`` and ``h``. ``"0"`` is the one number allowed without a unit. As in Go, the value is
summed in whole nanoseconds (a fraction finer than a nanosecond is dropped) and must fit in a
signed 64-bit count of them. Range rules (strictly positive, for one) are the caller's.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["parse_duration"]

_UNIT_NS: Final = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # micro sign
    "\u03bcs": 1_000,  # Greek small letter mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_MAX_NS: Final = 2**63 - 1
# One term: a number with at least one digit (``5``, ``5.``, ``.5``, ``5.5``), then a unit.
_TERM: Final = re.compile(r"([0-9]*)(?:\.([0-9]*))?(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Seconds in ``text``, a Go duration. Raises ValueError naming the text when it is not one."""
    body = text
    sign = 1
    if body[:1] in ("-", "+"):
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    if body == "0":
        return 0.0
    if not body:
        raise ValueError(f"invalid duration {text!r}: expected a number and a unit, e.g. '200ms'")
    total_ns = 0
    position = 0
    while position < len(body):
        term = _TERM.match(body, position)
        if term is None or not (term.group(1) or term.group(2)):
            raise ValueError(
                f"invalid duration {text!r}: expected numbers with units "
                "(ns, us, ms, s, m, h), e.g. '200ms' or '1m30s'"
            )
        whole, fraction, unit = term.group(1), term.group(2) or "", term.group(3)
        scale = _UNIT_NS[unit]
        total_ns += int(whole or "0") * scale
        if fraction:
            total_ns += int(fraction) * scale // 10 ** len(fraction)
        if total_ns > _MAX_NS:
            raise ValueError(f"invalid duration {text!r}: out of range")
        position = term.end()
    return sign * total_ns / 1e9
