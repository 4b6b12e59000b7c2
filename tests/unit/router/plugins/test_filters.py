"""Label and role filters: which endpoints each keeps, and which parameters each refuses."""

from __future__ import annotations

import msgspec
import pytest

from llmd_router.datalayer.endpoints import Endpoint
from llmd_router.framework import CycleState, Filter, NoParams, Stability
from llmd_router.parsing.request import ApiKind, InferenceRequest
from llmd_router.plugins.filters.by_label import ByLabelFilter
from llmd_router.plugins.filters.decode_filter import ROLE_LABEL, DecodeFilter
from llmd_router.plugins.filters.encode_filter import EncodeFilter
from llmd_router.plugins.filters.label_selector_filter import (
    DEPRECATED_ALIAS,
    LabelSelectorFilter,
)
from llmd_router.plugins.filters.prefill_filter import PrefillFilter

REQUEST = InferenceRequest("r1", "/v1/completions", ApiKind.COMPLETIONS, {}, b"")

# name -> labels
POOL = {
    "h100-decode": {"hw": "H100", "llm-d.ai/role": "decode"},
    "h100-prefill": {"hw": "H100", "llm-d.ai/role": "prefill"},
    "a100-both": {"hw": "A100", "llm-d.ai/role": "both"},
    "a100-bare": {"hw": "A100"},
    "nothing": {},
    "draining": {"hw": "H100", "draining": "true"},
    "empty-hw": {"hw": ""},
}


def pool() -> list[Endpoint]:
    return [
        Endpoint(name, f"10.0.0.{i}", 8000, labels=labels)
        for i, (name, labels) in enumerate(POOL.items(), start=1)
    ]


def kept(plugin: Filter, endpoints: list[Endpoint] | None = None) -> list[str]:
    endpoints = pool() if endpoints is None else endpoints
    out = plugin.filter(CycleState(), REQUEST, endpoints)
    assert all(any(e is c for c in endpoints) for e in out), "a filter returns a subset"
    return [e.name for e in out]


def build(cls, raw: dict):
    return cls("f", msgspec.convert(raw, cls.Params))


# ---------------------------------------------------------------------------- label-selector


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ({}, list(POOL)),
        ({"matchLabels": {"hw": "H100"}}, ["h100-decode", "h100-prefill", "draining"]),
        ({"matchLabels": {"hw": "H100", "llm-d.ai/role": "decode"}}, ["h100-decode"]),
        ({"matchLabels": {"hw": ""}}, ["empty-hw"]),
        (
            {"matchExpressions": [{"key": "hw", "operator": "In", "values": ["A100", "B200"]}]},
            ["a100-both", "a100-bare"],
        ),
        (
            # NotIn keeps endpoints without the label
            {"matchExpressions": [{"key": "hw", "operator": "NotIn", "values": ["H100"]}]},
            ["a100-both", "a100-bare", "nothing", "empty-hw"],
        ),
        (
            {"matchExpressions": [{"key": "llm-d.ai/role", "operator": "Exists"}]},
            ["h100-decode", "h100-prefill", "a100-both"],
        ),
        (
            {"matchExpressions": [{"key": "hw", "operator": "DoesNotExist"}]},
            ["nothing"],
        ),
        (
            {
                "matchLabels": {"hw": "H100"},
                "matchExpressions": [
                    {"key": "draining", "operator": "DoesNotExist"},
                    {"key": "llm-d.ai/role", "operator": "NotIn", "values": ["prefill"]},
                ],
            },
            ["h100-decode"],
        ),
    ],
)
def test_label_selector_keeps_matching_endpoints(selector, expected):
    assert kept(build(LabelSelectorFilter, selector)) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"matchExpressions": [{"key": "hw", "operator": "in", "values": ["x"]}]}, "operator"),
        ({"matchExpressions": [{"key": "hw", "operator": "In"}]}, "needs at least one value"),
        ({"matchExpressions": [{"key": "hw", "operator": "NotIn", "values": []}]}, "needs at"),
        (
            {"matchExpressions": [{"key": "hw", "operator": "Exists", "values": ["x"]}]},
            "takes no values",
        ),
        ({"matchExpressions": [{"operator": "Exists"}]}, "key"),
        ({"matchLabels": {"bad key": "x"}}, "matchLabels: invalid label key"),
        ({"matchLabels": {"UPPER.example/x": "v"}}, "bad prefix"),
        ({"matchLabels": {"hw": "-dash"}}, "matchLabels: invalid label value"),
        ({"matchLabels": {"hw": "x" * 64}}, "invalid label value"),
        ({"matchLabels": {"hw": "x"}, "matchFields": {}}, "matchFields"),
    ],
)
def test_label_selector_refuses_what_kubernetes_refuses(raw, message):
    with pytest.raises(msgspec.ValidationError, match=message):
        msgspec.convert(raw, LabelSelectorFilter.Params)


def test_label_selector_identity():
    assert LabelSelectorFilter.TYPE == "label-selector-filter"
    assert DEPRECATED_ALIAS == "by-label-selector"
    assert LabelSelectorFilter.STABILITY is Stability.BETA


def test_label_selector_scales_linearly():
    many = [
        Endpoint(f"e{i}", "10.0.0.1", i, labels={"hw": "H100" if i % 2 else "A100"})
        for i in range(1000)
    ]
    plugin = build(LabelSelectorFilter, {"matchLabels": {"hw": "H100"}})
    assert len(kept(plugin, many)) == 500


# ---------------------------------------------------------------------------- by-label


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"label": "hw", "validValues": ["A100"]}, ["a100-both", "a100-bare"]),
        (
            {"label": "hw", "validValues": ["A100"], "allowsNoLabel": True},
            ["a100-both", "a100-bare", "nothing"],
        ),
        ({"label": "hw", "allowsNoLabel": True}, ["nothing"]),
        # llm-d reads a missing label as "": listing "" keeps unlabeled endpoints
        ({"label": "hw", "validValues": [""]}, ["nothing", "empty-hw"]),
    ],
)
def test_by_label_keeps_valid_values(params, expected):
    assert kept(build(ByLabelFilter, params)) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({}, "label: must be specified"),
        ({"label": "hw"}, "validValues: must be non-empty unless allowsNoLabel"),
        ({"label": "hw", "validValues": [], "allowsNoLabel": False}, "validValues"),
        ({"label": "hw", "validValues": ["a"], "allowNoLabel": True}, "allowNoLabel"),
    ],
)
def test_by_label_parameter_errors(raw, message):
    with pytest.raises(msgspec.ValidationError, match=message):
        msgspec.convert(raw, ByLabelFilter.Params)


# ---------------------------------------------------------------------------- role filters

ROLES = [
    None,
    "decode",
    "prefill",
    "encode",
    "prefill-decode",
    "both",
    "encode-prefill",
    "encode-decode",
    "encode-prefill-decode",
    "",
    "Decode",
]
# role -> (decode-filter, prefill-filter, encode-filter) keep it?
EXPECTED = {
    None: (True, False, False),
    "decode": (True, False, False),
    "prefill": (False, True, False),
    "encode": (False, False, True),
    "prefill-decode": (True, True, False),
    "both": (True, True, False),
    "encode-prefill": (False, True, True),
    "encode-decode": (False, False, False),  # no llm-d role filter lists it
    "encode-prefill-decode": (True, True, True),
    "": (False, False, False),
    "Decode": (False, False, False),
}


@pytest.mark.parametrize(
    ("column", "cls"), [(0, DecodeFilter), (1, PrefillFilter), (2, EncodeFilter)]
)
def test_role_filters(column, cls):
    endpoints = [
        Endpoint(str(role), "10.0.0.1", i, labels={} if role is None else {ROLE_LABEL: role})
        for i, role in enumerate(ROLES)
    ]
    plugin = cls("f", NoParams())
    assert kept(plugin, endpoints) == [str(r) for r in ROLES if EXPECTED[r][column]]
    assert cls.STABILITY is Stability.BETA
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.convert({"role": "x"}, cls.Params)


def test_role_filter_type_names():
    assert (DecodeFilter.TYPE, PrefillFilter.TYPE, EncodeFilter.TYPE) == (
        "decode-filter",
        "prefill-filter",
        "encode-filter",
    )
    assert ByLabelFilter.TYPE == "by-label"
