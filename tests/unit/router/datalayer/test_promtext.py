"""SeriesReader: a few families out of hand-written Prometheus text pages."""

from __future__ import annotations

import math

import pytest

from llmd_router.datalayer.metrics.promtext import Series, SeriesReader


def read(page: bytes, name: str) -> tuple[list[Series], list[str]]:
    errors: list[str] = []
    return SeriesReader().find(page, name, errors), errors


def plain(found: list[Series]) -> list[tuple[dict[str, str], float, int]]:
    return [(dict(s.labels), s.value, s.timestamp_ms) for s in found]


def test_a_family_at_the_very_start_of_the_page():
    page = b'x{a="1"} 3\nx{a="2"} 4\n# HELP y other\ny 5\n'
    found, errors = read(page, "x")
    assert plain(found) == [({"a": "1"}, 3.0, 0), ({"a": "2"}, 4.0, 0)]
    assert errors == []


def test_a_family_at_the_very_end_without_a_final_newline():
    found, errors = read(b"# TYPE y gauge\ny 1\n# TYPE x gauge\nx 7", "x")
    assert plain(found) == [({}, 7.0, 0)]
    assert errors == []


def test_help_and_type_lines_are_not_samples():
    page = b"# HELP x the x gauge, see x 9\n# TYPE x gauge\nx 2\n"
    found, _ = read(page, "x")
    assert plain(found) == [({}, 2.0, 0)]


PREFIXED = b"""\
# TYPE x_total counter
x_total 10
# TYPE x_bucket gauge
x_bucket{le="1"} 11
# TYPE x_by_reason gauge
x_by_reason{reason="a"} 12
# TYPE x gauge
x{k="v"} 1
x{k="w"} 2
# TYPE x_after gauge
x_after 13
x_total_again 14
"""


def test_longer_names_sharing_the_prefix_before_the_family_are_skipped():
    found, errors = read(PREFIXED, "x")
    assert plain(found) == [({"k": "v"}, 1.0, 0), ({"k": "w"}, 2.0, 0)]
    assert errors == []


def test_longer_names_right_after_the_family_end_it():
    page = b'x{k="v"} 1\nx_bucket{le="1"} 5\nx_by_reason 6\nx_total 7\n'
    found, _ = read(page, "x")
    assert plain(found) == [({"k": "v"}, 1.0, 0)]


def test_a_longer_name_is_read_as_itself():
    found, _ = read(PREFIXED, "x_by_reason")
    assert plain(found) == [({"reason": "a"}, 12.0, 0)]
    found, _ = read(PREFIXED, "x_total")
    assert plain(found) == [({}, 10.0, 0)]  # not x_total_again


def test_a_longer_name_at_the_start_of_the_page_does_not_hide_the_family():
    found, _ = read(b"x_total 1\nx_bucket 2\nx 3\n", "x")
    assert plain(found) == [({}, 3.0, 0)]


def test_a_name_that_only_occurs_inside_another_name_is_not_found():
    found, errors = read(b"ax 1\nb_x 2\n# HELP x no samples\n", "x")
    assert found == []
    assert errors == []


@pytest.mark.parametrize(
    ("line", "labels"),
    [
        (rb'x{a="say \"hi\""} 1', {"a": 'say "hi"'}),
        (rb'x{a="C:\\dir\\"} 1', {"a": "C:\\dir\\"}),
        (rb'x{a="two\nlines"} 1', {"a": "two\nlines"}),
        (rb'x{a="a\\nb"} 1', {"a": "a\\nb"}),  # an escaped backslash, then a plain n
        (rb'x{a="one, two",b="x=1,y={2}"} 1', {"a": "one, two", "b": "x=1,y={2}"}),
        (rb'x{a="", b = "sp aced"} 1', {"a": "", "b": "sp aced"}),
        ('x{a="caf\u00e9 \u2603 \U0001f600"} 1'.encode(), {"a": "caf\u00e9 \u2603 \U0001f600"}),
        (rb'x{_under="u",A1="b"} 1', {"_under": "u", "A1": "b"}),
    ],
)
def test_label_values_are_unescaped(line: bytes, labels: dict[str, str]):
    found, errors = read(b"# TYPE x gauge\n" + line + b"\n", "x")
    assert errors == []
    assert plain(found) == [(labels, 1.0, 0)]


@pytest.mark.parametrize(
    "line",
    [b"x 5", b"x{} 5", b"x\t5", b"x{ } 5", b"x 5   "],
)
def test_no_labels(line: bytes):
    found, errors = read(b"y 1\n" + line + b"\n", "x")
    assert errors == []
    assert plain(found) == [({}, 5.0, 0)]


def test_a_trailing_comma_before_the_brace():
    found, errors = read(b'y 1\nx{a="1",b="2",} 5\nx{a="3", } 6\n', "x")
    assert errors == []
    assert plain(found) == [({"a": "1", "b": "2"}, 5.0, 0), ({"a": "3"}, 6.0, 0)]


def test_blanks_inside_the_braces_and_none_before_the_value():
    # From the Go text parser's own test scenarios.
    page = (
        b"# TYPE name2 gauge\n"
        b'name2{labelname="val2"\t,basename   =   "basevalue2"\t\t} +Inf 54321\n'
        b'name2{ labelname = "val1" , }-Inf\n'
    )
    found, errors = read(page, "name2")
    assert errors == []
    assert plain(found) == [
        ({"labelname": "val2", "basename": "basevalue2"}, math.inf, 54321),
        ({"labelname": "val1"}, -math.inf, 0),
    ]


def test_the_optional_timestamp_column():
    page = b'y 1\nx{a="1"} 5 1795514703112\nx{a="2"} 6\nx{a="3"} 7 -12\n'
    found, errors = read(page, "x")
    assert errors == []
    assert plain(found) == [
        ({"a": "1"}, 5.0, 1795514703112),
        ({"a": "2"}, 6.0, 0),
        ({"a": "3"}, 7.0, -12),
    ]


def test_special_float_values():
    page = (
        b'y 1\nx{v="nan"} NaN\nx{v="pos"} +Inf\nx{v="neg"} -Inf\nx{v="cpp"} Nan\nx{v="e"} 1.5e-3\n'
    )
    found, errors = read(page, "x")
    assert errors == []
    values = {s.labels["v"]: s.value for s in found}
    assert math.isnan(values["nan"])
    assert math.isnan(values["cpp"])
    assert values["pos"] == math.inf
    assert values["neg"] == -math.inf
    assert values["e"] == 0.0015


def test_crlf_line_endings():
    page = b'# HELP x h\r\n# TYPE x gauge\r\nx{a="1"} 2\r\nx{a="2"} 3 99\r\nx_total 4\r\n'
    found, errors = read(page, "x")
    assert errors == []
    assert plain(found) == [({"a": "1"}, 2.0, 0), ({"a": "2"}, 3.0, 99)]
    found, errors = read(b"x 1\r\n", "x")  # at the start of the page too
    assert (plain(found), errors) == ([({}, 1.0, 0)], [])


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (b'x{a="1" 9', "malformed labels"),
        (b"x{a=1} 9", "malformed labels"),
        (b'x{a="1"}', "expected a value"),
        (b"x 1 2 3", "expected a value"),
        (b"x seven", "could not convert"),
        (b"x 1 12.5", "invalid literal"),
    ],
)
def test_a_malformed_line_is_reported_and_skipped(bad: bytes, message: str):
    page = b'# TYPE x gauge\nx{a="0"} 1\n' + bad + b'\nx{a="2"} 3\n# TYPE z gauge\nz 1\n'
    found, errors = read(page, "x")
    assert plain(found) == [({"a": "0"}, 1.0, 0), ({"a": "2"}, 3.0, 0)]
    assert len(errors) == 1
    assert errors[0].startswith("x: ")
    assert message in errors[0]
    assert repr(bad.decode()) in errors[0]  # the line itself is quoted


def test_a_malformed_first_line_does_not_end_the_group():
    found, errors = read(b'y 1\nx{a=} 1\nx{a="2"} 2\n', "x")
    assert plain(found) == [({"a": "2"}, 2.0, 0)]
    assert len(errors) == 1


def test_errors_are_optional():
    found = SeriesReader().find(b"x oops\nx 2\n", "x")
    assert plain(found) == [({}, 2.0, 0)]


def test_a_missing_family_gives_nothing():
    errors: list[str] = []
    reader = SeriesReader()
    assert reader.find(PREFIXED, "missing", errors) == []
    assert reader.find(b"", "x", errors) == []
    assert reader.find(b"# HELP x only help\n# TYPE x gauge\n", "x", errors) == []
    assert errors == []


def test_reading_stops_after_the_group():
    # The format keeps a family together; a second group later on is not looked for.
    page = b"x 1\n# TYPE y gauge\ny 2\nx 3\n"
    found, _ = read(page, "x")
    assert plain(found) == [({}, 1.0, 0)]


def long_line(i: int) -> bytes:
    labels = ",".join(f'label_{k}="value number {k} of line {i}"' for k in range(8))
    line = f"info{{{labels}}} 1".encode()
    assert len(line) > 160  # long enough to be kept
    return line


def test_long_lines_are_read_the_same_from_the_cache():
    reader = SeriesReader()
    page = b"# TYPE info gauge\n" + long_line(1) + b"\n" + long_line(2) + b"\n"
    first = reader.find(page, "info")
    assert len(reader._cache) == 2
    again = reader.find(page, "info")
    assert again == first
    assert plain(again)[1][0]["label_3"] == "value number 3 of line 2"
    # A page whose long line differs is parsed again, not answered from the cache.
    changed = reader.find(page.replace(b"of line 2", b"of line 9"), "info")
    assert plain(changed)[1][0]["label_3"] == "value number 3 of line 9"


def test_short_lines_are_not_cached():
    reader = SeriesReader()
    reader.find(b'x{a="1"} 1\nx{a="2"} 2\n', "x")
    assert len(reader._cache) == 0


def test_malformed_long_lines_are_not_cached_and_reported_each_time():
    reader = SeriesReader()
    bad = long_line(1).replace(b"} 1", b"} one")
    for _ in range(2):
        errors: list[str] = []
        assert reader.find(bad + b"\n", "info", errors) == []
        assert len(errors) == 1
    assert len(reader._cache) == 0


def test_the_cache_is_bounded():
    size = 8
    reader = SeriesReader(cache_size=size)
    seen = 0
    for i in range(size * 3 + 1):
        found = reader.find(b"# TYPE info gauge\n" + long_line(i) + b"\n", "info")
        assert plain(found)[0][0]["label_0"] == f"value number 0 of line {i}"
        seen = max(seen, len(reader._cache))
        assert len(reader._cache) <= size
    assert seen == size  # it did fill up, and never grew past the bound
    # Still correct after the cache was cleared.
    found = reader.find(long_line(0), "info")
    assert plain(found)[0][0]["label_7"] == "value number 7 of line 0"


def test_a_blank_between_the_name_and_the_labels():
    found, errors = read(b'y 1\nx {a="1"} 2\n', "x")
    assert errors == []
    assert plain(found) == [({"a": "1"}, 2.0, 0)]
