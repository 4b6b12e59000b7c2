"""User plugins by import path: the documented example scorer, loaded as a user would."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmd_router.config import ConfigError, load_config, load_config_file
from llmd_router.datalayer import Endpoint
from llmd_router.framework import CycleState
from llmd_router.parsing import parse_request
from llmd_router.pipeline import build_pipeline
from llmd_router.plugins.builtin import builtin_registry

EXAMPLES = Path(__file__).parents[3] / "examples" / "plugins"
HEAD = "apiVersion: llm-d.ai/v1alpha1\nkind: EndpointPickerConfig\n"


@pytest.fixture(autouse=True)
def importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))


def test_the_example_is_ten_lines_of_code():
    code = [
        line
        for line in (EXAMPLES / "prefer_label.py").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith(("#", '"""'))
    ]
    assert len(code) <= 10


def test_the_example_configuration_routes_to_the_labelled_endpoint():
    pipeline = build_pipeline(load_config_file(EXAMPLES / "prefer-label.yaml"), builtin_registry())
    assert pipeline.plugins["prefer-fast"].type == "prefer_label:PreferLabel"
    endpoints = [
        Endpoint("slow", "10.0.0.1", 8000, labels={"tier": "slow"}),
        Endpoint("fast", "10.0.0.2", 8000, labels={"tier": "fast"}),
        Endpoint("none", "10.0.0.3", 8000),
    ]
    request = parse_request("/v1/completions", {}, b'{"model":"m","prompt":"hi"}', "r")
    for _ in range(20):
        result = pipeline.scheduler.schedule(CycleState(), request, endpoints)
        assert result.targets[0].name == "fast"
    trace = result.profiles["default"].trace
    assert trace is not None
    assert list(trace.totals) == [1.0, 4.0, 1.0]  # 3 x label + 1 x idle queue


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("{type: 'prefer_label:PreferLabel', name: p}", "required field `label`"),
        (
            "{type: 'prefer_label:PreferLabel', name: p, parameters: {label: a, colour: b}}",
            "unknown field `colour`",
        ),
        ("{type: 'prefer_label:Nope', name: p}", "module 'prefer_label' has no 'Nope'"),
        ("{type: 'no_such_module:X', name: p}", "cannot import 'no_such_module'"),
        ("{type: 'prefer_label:', name: p}", "import path must be 'package.module:Class'"),
    ],
)
def test_mistakes_in_user_plugins_are_named(entry: str, message: str):
    with pytest.raises(ConfigError) as info:
        build_pipeline(load_config(HEAD + f"plugins: [{entry}]\n"), builtin_registry())
    assert "plugin 'p'" in str(info.value) and message in str(info.value)
