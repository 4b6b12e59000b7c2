"""Go duration strings: the values Go's time.ParseDuration gives, and the strings it refuses."""

from __future__ import annotations

import pytest

from llmd_router.config.durations import parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("-0", 0.0),
        ("+0", 0.0),
        ("0s", 0.0),
        ("200ms", 0.2),
        ("2s", 2.0),
        ("1m30s", 90.0),
        ("1h", 3600.0),
        ("1.5h", 5400.0),
        ("2h45m", 9900.0),
        ("1s1h", 3601.0),  # Go does not require units in decreasing order
        (".5s", 0.5),
        ("5.s", 5.0),
        ("-2s", -2.0),
        ("+2s", 2.0),
        ("1500us", 0.0015),
        ("1500\u00b5s", 0.0015),
        ("1500\u03bcs", 0.0015),
        ("250ns", 250e-9),
        ("1.0000000001s", 1.0),  # finer than a nanosecond is dropped
        ("100ms100ms", 0.2),
        ("2562047h47m16.854775807s", (2**63 - 1) / 1e9),  # the largest Go duration
    ],
)
def test_parses_like_go(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds, rel=1e-12, abs=0.0)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "-",
        "+",
        "5",  # a number other than 0 needs a unit
        "1s5",
        "s",
        ".s",
        "1.2.3s",
        "5 s",
        " 5s",
        "5s ",
        "5x",
        "5S",
        "1d",
        "--5s",
        "0x10s",
        "\u0665s",  # an Arabic-Indic digit is not an ASCII digit
        "2562047h47m16.854775808s",  # one nanosecond too many
    ],
)
def test_refuses_what_go_refuses(text):
    with pytest.raises(ValueError, match="invalid duration") as caught:
        parse_duration(text)
    assert repr(text) in str(caught.value)
