"""Read a few series out of a Prometheus text page without parsing the rest.

A model server's page is large (about 52 KB for vLLM, mostly histogram buckets) and the router
needs five or six series from it, fifty times a second per endpoint. So nothing here tokenises
the page: each wanted family is found with ``bytes.find`` on ``"\\n" + name`` (C speed), and only
the lines that start with that exact name (followed by ``{`` or a blank, so ``name_total`` is
not ``name``) are parsed. HELP and TYPE lines start with ``#`` and never match; label values
cannot hold a raw newline (the format escapes it), so a match is always the start of a sample
line.

The line grammar is the text exposition format's: ``name{label="value",...} value [timestamp]``,
with ``\\\\``, ``\\"`` and ``\\n`` escapes in label values and Go's spellings of special floats
(``+Inf``, ``-Inf``, ``NaN``). OpenMetrics pages have the same sample lines. A malformed line is
reported, not guessed at.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["Series", "SeriesReader"]

# One `name="value"` pair and the separator after it.
_PAIR: Final = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|\})')
_ESCAPE: Final = re.compile(r"\\(.)")
_UNESCAPED: Final = {"n": "\n", "\\": "\\", '"': '"'}


@dataclass(frozen=True, slots=True)
class Series:
    labels: Mapping[str, str]
    value: float
    timestamp_ms: int = 0  # 0: the line has no timestamp


def _unescape(value: str) -> str:
    if "\\" not in value:
        return value
    return _ESCAPE.sub(lambda m: _UNESCAPED.get(m.group(1), m.group(0)), value)


def _parse_line(line: str, name_len: int) -> Series:
    """A sample line whose name (``name_len`` characters) is already known. ValueError if
    malformed."""
    labels: dict[str, str] = {}
    pos = name_len
    while line.startswith((" ", "\t"), pos):  # the format allows blanks before the labels
        pos += 1
    if line.startswith("{", pos):
        pos += 1
        while True:
            while line.startswith((" ", "\t"), pos):
                pos += 1
            if line.startswith("}", pos):  # no labels, or a trailing comma before the brace
                pos += 1
                break
            pair = _PAIR.match(line, pos)
            if pair is None:
                raise ValueError("malformed labels")
            labels[pair.group(1)] = _unescape(pair.group(2))
            pos = pair.end()
            if pair.group(3) == "}":
                break
    fields = line[pos:].split()
    if not 1 <= len(fields) <= 2:
        raise ValueError("expected a value and an optional timestamp")
    value = float(fields[0])
    timestamp = int(fields[1]) if len(fields) == 2 else 0
    return Series(labels, value, timestamp)


class SeriesReader:
    """Finds families in pages. Long lines (info gauges such as ``vllm:cache_config_info``, whose
    forty labels cost more to parse than the rest of a scrape) repeat unchanged from one scrape
    to the next, so their parsed form is kept, up to ``cache_size`` lines, keyed by their bytes."""

    def __init__(self, cache_size: int = 4096) -> None:
        self._cache: dict[bytes, Series] = {}
        self._cache_size = cache_size

    def find(self, page: bytes, name: str, errors: list[str] | None = None) -> list[Series]:
        """Every sample line of family ``name`` in ``page``, in page order. A malformed line is
        skipped and described in ``errors`` (when given).

        A family's lines are one contiguous group (the format requires it), so reading stops at
        the first line after the group instead of searching the rest of the page."""
        raw = name.encode()
        found: list[Series] = []
        if page.startswith(raw):  # the page may start with the family itself
            pos = 0
        else:
            hit = page.find(b"\n" + raw)
            pos = hit + 1 if hit >= 0 else -1
        size = len(raw)
        while pos >= 0:
            line_end = page.find(b"\n", pos + size)
            if line_end < 0:
                line_end = len(page)
            if page[pos + size : pos + size + 1] in (b"{", b" ", b"\t"):  # not a longer name
                found_one = self._parse(page[pos:line_end], name, size, errors)
                if found_one is not None:
                    found.append(found_one)
            elif found:
                break  # past the group (a longer name sharing the prefix follows it)
            if page.startswith(raw, line_end + 1):
                pos = line_end + 1
            elif found:
                break  # the group ended
            else:  # only longer names so far: the family may come later
                hit = page.find(b"\n" + raw, line_end)
                pos = hit + 1 if hit >= 0 else -1
        return found

    def _parse(
        self, raw_line: bytes, name: str, name_len: int, errors: list[str] | None
    ) -> Series | None:
        cached = self._cache.get(raw_line)
        if cached is not None:
            return cached
        line = raw_line.decode("utf-8", "replace").rstrip("\r")
        try:
            series = _parse_line(line, name_len)
        except ValueError as exc:
            if errors is not None:
                errors.append(f"{name}: {exc}: {line[:200]!r}")
            return None
        if len(raw_line) > 160:
            if len(self._cache) >= self._cache_size:
                self._cache.clear()
            self._cache[raw_line] = series
        return series
