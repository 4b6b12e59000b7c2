"""docs/simulator.md lists exactly the options the simulator accepts, with their defaults."""

from __future__ import annotations

from pathlib import Path

from llmd_sim.config import options_markdown

DOC = Path(__file__).parents[3] / "docs" / "simulator.md"


def test_the_option_reference_is_current():
    text = DOC.read_text()
    start = text.index("<!-- options:start -->\n") + len("<!-- options:start -->\n")
    end = text.index("\n<!-- options:end -->")
    assert text[start:end] == options_markdown(), (
        "docs/simulator.md is out of date: paste llmd_sim.config.options_markdown() between "
        "the options markers"
    )
