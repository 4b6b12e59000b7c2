"""SeriesReader against prometheus_client: on any page prometheus_client renders, every gauge
family reads as prometheus_client's own parser reads it."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from llmd_router.datalayer.metrics.promtext import SeriesReader

# Names that share prefixes, so that a wanted family has longer neighbours before and after it
# (a counter `req_by_reason` renders `req_by_reason_total` and `req_by_reason_created`, a
# histogram `req_latency` renders `req_latency_bucket`, `_sum`, `_count`, `_created`).
NAMES = ["req", "req_by_reason", "req_latency", "req_latency_x", "re", "q", "kv:usage", "kv"]
KINDS = ["gauge", "counter", "histogram"]

label_names = st.from_regex(r"[a-zA-Z][a-zA-Z0-9_]{0,6}", fullmatch=True).filter(
    lambda n: n not in {"le", "quantile"}
)
label_values = st.one_of(
    st.text(max_size=12),
    st.text(alphabet='"\\\n\r\t,{}= \u00e9\u2603\U0001f600#', max_size=12),
)
finite = st.floats(allow_nan=False, allow_infinity=False)


@st.composite
def registries(draw: st.DrawFn) -> tuple[bytes, list[str]]:
    """A rendered page, and the names of its gauge families."""
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=len(NAMES), unique=True))
    registry = CollectorRegistry()
    gauges = []
    for name in names:
        kind = draw(st.sampled_from(KINDS))
        labels = draw(st.lists(label_names, max_size=3, unique=True))
        metric: Any
        if kind == "gauge":
            metric = Gauge(name, "h", labels, registry=registry)
            gauges.append(name)
        elif kind == "counter":
            metric = Counter(name, "h", labels, registry=registry)
        else:
            metric = Histogram(name, "h", labels, registry=registry, buckets=(1.0, 10.0))
        for _ in range(draw(st.integers(0 if labels else 1, 4))):
            child = metric.labels(*[draw(label_values) for _ in labels]) if labels else metric
            value = draw(finite)
            if kind == "gauge":
                child.set(value)
            elif kind == "counter":
                child.inc(abs(value))
            else:
                child.observe(value)
    return generate_latest(registry), gauges


def expected(page: bytes, family: str) -> list[tuple[dict[str, str], float]]:
    for metric in text_string_to_metric_families(page.decode()):
        if metric.name == family:
            return [(dict(s.labels), float(s.value)) for s in metric.samples if s.name == family]
    return []


@settings(max_examples=150, deadline=None)
@given(registries())
def test_every_gauge_reads_as_prometheus_client_parses_it(rendered: tuple[bytes, list[str]]):
    page, gauges = rendered
    reader = SeriesReader()
    for family in gauges:
        errors: list[str] = []
        found = reader.find(page, family, errors)
        assert errors == []
        assert [(dict(s.labels), s.value) for s in found] == expected(page, family)
        assert all(s.timestamp_ms == 0 for s in found)


@settings(max_examples=50, deadline=None)
@given(registries())
def test_a_second_read_through_the_cache_is_the_same(rendered: tuple[bytes, list[str]]):
    page, gauges = rendered
    reader = SeriesReader(cache_size=4)
    first = [reader.find(page, family) for family in gauges]
    assert [reader.find(page, family) for family in gauges] == first
    assert len(reader._cache) <= 4
