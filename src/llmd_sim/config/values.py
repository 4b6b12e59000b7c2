"""Parsers of option values, each naming what it expected when it refuses a value."""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Final

from llmd_sim.config.schema import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "boolean",
    "choice",
    "integer",
    "label_map",
    "mebibytes",
    "name_list",
    "number",
    "optional_text",
    "parse_duration",
    "text",
]

_DURATION = re.compile(r"^\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ns|us|µs|ms|s|m|h)?\s*$")
_UNIT_SECONDS: Final = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_duration(value: object) -> float:
    """A duration in seconds from ``"12ms"``, ``"1.5s"``, ``"250us"`` or a bare number of ms."""
    if isinstance(value, bool):
        raise ConfigError(f"expected a duration such as '12ms', got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value) / 1000.0
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        unit = m.group(2)
        seconds = float(m.group(1)) * (_UNIT_SECONDS[unit] if unit else 1e-3)
    else:
        raise ConfigError(f"expected a duration such as '12ms' or '1.5s', got {value!r}")
    if not math.isfinite(seconds):
        raise ConfigError(f"a duration must be finite, got {value!r}")
    if seconds < 0:
        raise ConfigError(f"a duration cannot be negative, got {value!r}")
    return seconds


def integer(minimum: int) -> Callable[[object], int]:
    def parse(value: object) -> int:
        if isinstance(value, bool):
            raise ConfigError(f"expected an integer, got {value!r}")
        try:
            number = int(value) if isinstance(value, int | str) else None
        except ValueError:
            number = None
        if number is None:
            raise ConfigError(f"expected an integer, got {value!r}")
        if number < minimum:
            raise ConfigError(f"must be at least {minimum}, got {number}")
        return number

    return parse


def number(minimum: float, maximum: float | None = None) -> Callable[[object], float]:
    def parse(value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ConfigError(f"expected a number, got {value!r}")
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"expected a number, got {value!r}") from None
        if number < minimum or (maximum is not None and number > maximum):
            bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
            raise ConfigError(f"must be {bound}, got {number}")
        return number

    return parse


def boolean(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {
        "true",
        "1",
        "yes",
        "on",
        "false",
        "0",
        "no",
        "off",
    }:
        return value.lower() in {"true", "1", "yes", "on"}
    raise ConfigError(f"expected true or false, got {value!r}")


def text(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"expected a non-empty string, got {value!r}")
    return value


def optional_text(value: object) -> str | None:
    if value is None or value == "":
        return None
    return text(value)


def choice(*choices: str) -> Callable[[object], str]:
    def parse(value: object) -> str:
        if value not in choices:
            raise ConfigError(f"expected one of {', '.join(choices)}, got {value!r}")
        assert isinstance(value, str)
        return value

    return parse


def name_list(value: object) -> tuple[str, ...]:
    """A list of names: a YAML list, or a comma- or space-separated string."""
    items: list[object]
    if isinstance(value, str):
        items = [s for s in re.split(r"[,\s]+", value) if s]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise ConfigError(f"expected a list of names, got {value!r}")
    names: list[str] = []
    for item in items:
        # llm-d's simulator (and vLLM) describe adapters as {"name": ..., "path": ...}.
        name = item.get("name") if isinstance(item, dict) else item
        names.append(text(name))
    if len(set(names)) != len(names):
        raise ConfigError(f"names must be unique, got {names}")
    return tuple(names)


def label_map(value: object) -> dict[str, str]:
    """``{key: value}`` in YAML, or ``key=value,key=value`` on the command line."""
    if isinstance(value, str):
        pairs = [p for p in value.split(",") if p]
        out: dict[str, str] = {}
        for pair in pairs:
            key, sep, val = pair.partition("=")
            if not sep or not key:
                raise ConfigError(f"expected key=value pairs, got {pair!r}")
            out[key.strip()] = val.strip()
        return out
    if isinstance(value, dict):
        return {text(k): str(v) for k, v in value.items()}
    raise ConfigError(f"expected a mapping of labels, got {value!r}")


def mebibytes(value: object) -> int:
    return int(number(0.001)(value) * 1024 * 1024)
