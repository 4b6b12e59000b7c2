"""Saturation detectors: utilization-detector over reported metrics, concurrency-detector over the
router's in-flight counts."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
import pytest

from llmd_router import testing
from llmd_router.config import API_VERSION, ConfigError, load_config
from llmd_router.datalayer.inflight import InFlightCharge, InFlightLedger
from llmd_router.framework import (
    INFLIGHT_LOAD,
    CycleState,
    Filter,
    InFlightLoad,
    PluginHandle,
    SaturationDetector,
    Stability,
)
from llmd_router.parsing.request import ApiKind, InferenceRequest
from llmd_router.pipeline import build_pipeline
from llmd_router.plugins.builtin import builtin_registry
from llmd_router.plugins.producers.inflight_load_producer import (
    InFlightLoadProducer,
)
from llmd_router.plugins.saturation.concurrency_detector import ConcurrencyDetector
from llmd_router.plugins.saturation.utilization_detector import UtilizationDetector

if TYPE_CHECKING:
    from llmd_router.datalayer.endpoints import Endpoint

NOW = 10.0
REQUEST = InferenceRequest("r", "/v1/completions", ApiKind.COMPLETIONS, {}, b"x" * 400)


def endpoint(i: int, queue: int = 0, kv: float = 0.0, age: float | None = 0.0) -> Endpoint:
    """An endpoint whose last report is ``age`` seconds before NOW (None: never reported)."""
    if age is None:
        return testing.endpoint(i)
    return testing.endpoint(i, waiting_queue_size=queue, kv_cache_usage=kv, reported_at=NOW - age)


def utilization(**params) -> UtilizationDetector:
    d = UtilizationDetector("util", msgspec.convert(params, UtilizationDetector.Params))
    d.clock = lambda: NOW
    return d


def concurrency(**params) -> ConcurrencyDetector:
    return ConcurrencyDetector("conc", msgspec.convert(params, ConcurrencyDetector.Params))


@pytest.mark.parametrize("cls", [UtilizationDetector, ConcurrencyDetector])
def test_detectors_are_filters_and_saturation_detectors(cls):
    d = cls("d", msgspec.convert({}, cls.Params))
    assert isinstance(d, Filter)
    assert isinstance(d, SaturationDetector)
    assert cls.STABILITY is Stability.BETA


# ---------------------------------------------------------------------------- utilization


@pytest.mark.parametrize(
    ("endpoints", "saturation"),
    [
        ([], 1.0),
        ([endpoint(1)], 0.0),
        ([endpoint(1, queue=5)], 1.0),
        ([endpoint(1, queue=1, kv=0.4)], 0.5),  # KV 0.4/0.8 beats queue 1/5
        ([endpoint(1, queue=4, kv=0.4)], 0.8),  # queue 4/5 beats KV
        ([endpoint(1, queue=10)], 2.0),  # overload reads above 1
        ([endpoint(1, queue=1), endpoint(2, kv=0.6)], (0.2 + 0.75) / 2),
        ([endpoint(1), endpoint(2, age=None)], 0.5),  # never reported: 1.0
        ([endpoint(1), endpoint(2, age=0.3)], 0.5),  # older than 200ms: 1.0
        ([endpoint(1, queue=10, age=0.3)], 1.0),  # stale counts 1.0 even when reported full
        ([endpoint(1, queue=1, age=0.125)], 0.2),  # fresh enough
    ],
)
def test_utilization_saturation(endpoints, saturation):
    assert utilization().saturation(endpoints) == pytest.approx(saturation)


def test_staleness_threshold_is_exclusive_and_configurable():
    d = utilization(metricsStalenessThreshold="250ms")
    assert d.saturation([endpoint(1, age=0.25)]) == 0.0
    assert d.saturation([endpoint(1, age=0.25 + 2**-20)]) == 1.0
    assert utilization(metricsStalenessThreshold="1m").saturation([endpoint(1, age=59)]) == 0.0


def test_utilization_statistics_count_stale_endpoints():
    d = utilization()
    d.saturation([endpoint(1), endpoint(2, age=None), endpoint(3, age=1.0)])
    assert d.statistics() == {"staleEndpoints": 2}
    d.saturation([])
    assert d.statistics() == {"staleEndpoints": 0}


def test_utilization_thresholds_change_the_score():
    d = utilization(queueDepthThreshold=2, kvCacheUtilThreshold=0.5)
    assert d.saturation([endpoint(1, queue=1, kv=0.4)]) == pytest.approx(0.8)


@pytest.mark.parametrize(
    ("params", "endpoints", "kept"),
    [
        ({}, [endpoint(1, queue=4, kv=0.79), endpoint(2, queue=5), endpoint(3, kv=0.8)], [1]),
        ({}, [endpoint(1), endpoint(2, age=None), endpoint(3, age=0.3)], [1]),
        # headroom 0.2: queue limit 6, KV limit 0.96
        ({"headroom": 0.2}, [endpoint(1, queue=5), endpoint(2, queue=6)], [1]),
        ({"headroom": 0.2}, [endpoint(1, kv=0.95), endpoint(2, kv=0.97)], [1]),
        ({"headroom": 0.5, "kvCacheUtilThreshold": 1.0}, [endpoint(1, kv=1.0)], [1]),
        # nothing left: every endpoint comes back, stale ones too
        ({}, [endpoint(1, queue=5), endpoint(2, age=None)], [1, 2]),
    ],
)
def test_utilization_filter(params, endpoints, kept):
    left = utilization(**params).filter(CycleState(), REQUEST, endpoints)
    assert [int(e.name[1:]) for e in left] == kept


def test_utilization_filter_fails_open_with_the_same_list():
    eps = [endpoint(1, queue=9), endpoint(2, queue=9)]
    assert utilization().filter(CycleState(), REQUEST, eps) is eps


def test_utilization_parameters():
    params = msgspec.convert({}, UtilizationDetector.Params)
    assert (
        params.queue_depth_threshold,
        params.kv_cache_util_threshold,
        params.metrics_staleness_threshold,
        params.headroom,
    ) == (5, 0.8, "200ms", 0.0)
    # the probabilistic-admitter sample configuration
    assert msgspec.convert(
        {"queueDepthThreshold": 999999999, "kvCacheUtilThreshold": 1.0}, UtilizationDetector.Params
    )


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"queueDepthThreshold": 0}, "queueDepthThreshold must be strictly positive"),
        ({"kvCacheUtilThreshold": 0}, r"kvCacheUtilThreshold must be in \(0.0, 1.0\]"),
        ({"kvCacheUtilThreshold": 1.01}, r"kvCacheUtilThreshold must be in \(0.0, 1.0\]"),
        ({"metricsStalenessThreshold": "0s"}, "metricsStalenessThreshold must be strictly"),
        ({"metricsStalenessThreshold": "-1s"}, "metricsStalenessThreshold must be strictly"),
        ({"metricsStalenessThreshold": "200"}, "metricsStalenessThreshold: invalid duration"),
        ({"metricsStalenessThreshold": 0.2}, "metricsStalenessThreshold"),
        ({"headroom": -0.1}, "headroom must be a non-negative value"),
        ({"staleness": "1s"}, "staleness"),
    ],
)
def test_utilization_parameter_errors(raw, message):
    with pytest.raises(msgspec.ValidationError, match=message):
        msgspec.convert(raw, UtilizationDetector.Params)


# ---------------------------------------------------------------------------- concurrency


def charged(ledger: InFlightLedger, loads: dict[str, InFlightLoad]) -> InFlightLedger:
    """``ledger`` with these requests and tokens in flight, by endpoint key."""
    ledger.charge(InFlightCharge(k, x.requests, x.tokens) for k, x in loads.items())
    return ledger


def reading(ledger: InFlightLedger, *, with_producer: bool = True, **params) -> ConcurrencyDetector:
    """A detector bound, as the pipeline binds it, to ``ledger`` (and to an in-flight load
    producer, which the tokens and hybrid modes need)."""
    plugins = {"inflight": inflight()} if with_producer else {}
    return testing.make(ConcurrencyDetector, "conc", plugins=plugins, inflight=ledger, **params)


def test_concurrency_declares_what_it_reads():
    assert ConcurrencyDetector.consumes == (INFLIGHT_LOAD,)


@pytest.mark.parametrize(
    ("params", "inflight", "saturation"),
    [
        ({}, [], 1.0),
        ({}, [0, 0], 0.0),
        ({}, [10, 30], 40 / 200),
        ({}, [150, 0], 150 / 200),  # aggregate: one overloaded endpoint is averaged away
        ({"maxConcurrency": 10}, [10, 30], 40 / 20),
        ({"headroom": 1.0}, [10, 30], 40 / 200),  # headroom is for the filter only
    ],
)
def test_concurrency_saturation_from_the_routers_own_count(params, inflight, saturation):
    eps = [endpoint(i) for i in range(1, len(inflight) + 1)]
    loads = {e.key: InFlightLoad(n, 0) for e, n in zip(eps, inflight, strict=True)}
    ledger = charged(InFlightLedger(), loads)
    d = reading(ledger, with_producer=False, **params)
    assert d.saturation(eps) == pytest.approx(saturation)


@pytest.mark.parametrize(
    ("mode", "saturation"),
    [
        # A: 50 requests, 0 tokens; B: 0 requests, 900k tokens; C: 10 requests, 100k tokens.
        ("requests", 60 / 300),
        ("tokens", 1_000_000 / 3_000_000),
        ("hybrid", (0.5 + 0.9 + 0.1) / 3),
    ],
)
def test_concurrency_saturation_from_the_ledger(mode, saturation):
    a, b, c = endpoint(1), endpoint(2), endpoint(3)
    ledger = charged(
        InFlightLedger(),
        {
            a.key: InFlightLoad(50, 0),
            b.key: InFlightLoad(0, 900_000),
            c.key: InFlightLoad(10, 100_000),
        },
    )
    d = reading(ledger, concurrencyMode=mode)
    assert d.saturation([a, b, c]) == pytest.approx(saturation)


@pytest.mark.parametrize(
    ("params", "loads", "kept"),
    [
        ({}, [(99, 0), (100, 0), (101, 0)], [1]),
        # headroom 0.27 on 10: limit int(12.7) = 12, truncated as Go does
        ({"maxConcurrency": 10, "headroom": 0.27}, [(11, 0), (12, 0)], [1]),
        ({"concurrencyMode": "tokens", "maxTokenConcurrency": 1000}, [(500, 999), (0, 1000)], [1]),
        (
            {"concurrencyMode": "hybrid", "maxConcurrency": 10, "maxTokenConcurrency": 1000},
            [(9, 999), (10, 0), (0, 1000)],
            [1],
        ),
        ({"maxConcurrency": 1}, [(1, 0), (2, 0)], []),  # no fail-open
    ],
)
def test_concurrency_filter_reads_the_cycle(params, loads, kept):
    eps = [endpoint(i) for i in range(1, len(loads) + 1)]
    cycle = CycleState()
    cycle.put(
        INFLIGHT_LOAD, {e.key: InFlightLoad(r, t) for e, (r, t) in zip(eps, loads, strict=True)}
    )
    left = concurrency(**params).filter(cycle, REQUEST, eps)
    assert [int(e.name[1:]) for e in left] == kept


def test_concurrency_filter_without_produced_loads():
    a, b, c = endpoint(1), endpoint(2), endpoint(3)
    ledger = charged(InFlightLedger(), {a.key: InFlightLoad(99, 0), b.key: InFlightLoad(100, 0)})
    d = reading(ledger, with_producer=False)
    cycle = CycleState()
    cycle.put(INFLIGHT_LOAD, {a.key: InFlightLoad(100, 0)})  # b and c missing: nothing in flight
    assert d.filter(cycle, REQUEST, [a, b, c]) == [b, c]
    # Nothing produced at all: the router's own count.
    assert d.filter(CycleState(), REQUEST, [a, b, c]) == [a, c]


def test_concurrency_over_the_producer_returns_to_zero():
    ledger = InFlightLedger()
    producer = testing.make(InFlightLoadProducer, "inflight", inflight=ledger)
    d = testing.make(
        ConcurrencyDetector,
        "conc",
        plugins={"inflight": producer},
        inflight=ledger,
        concurrencyMode="hybrid",
        maxConcurrency=2,
        maxTokenConcurrency=400,
    )
    a, b = endpoint(1), endpoint(2)
    routed = []
    for target in (a, a, b):
        cycle = CycleState()
        res = testing.result(default=[target])
        producer.pre_request(cycle, REQUEST, res)
        routed.append(testing.route(ledger, cycle, res))
    # a: 2 requests / 2 = 1.0, 200 tokens / 400 = 0.5; b: 0.5 and 0.25
    assert d.saturation([a, b]) == pytest.approx((1.0 + 0.5) / 2)
    cycle = CycleState()
    producer.produce(cycle, REQUEST, [a, b])
    assert d.filter(cycle, REQUEST, [a, b]) == [b]
    for charges in routed:
        ledger.refund(charges)
    assert d.saturation([a, b]) == 0.0


def inflight(name: str = "inflight") -> InFlightLoadProducer:
    return InFlightLoadProducer(name, msgspec.convert({}, InFlightLoadProducer.Params))


def test_bind_reads_the_ledger_and_accepts_the_one_producer():
    ledger = charged(InFlightLedger(), {"10.0.0.1:8000": InFlightLoad(50, 500_000)})
    d = concurrency(concurrencyMode="tokens")
    d.bind(PluginHandle({"conc": d, "inflight": inflight(), "other": object()}, ledger))
    assert d.saturation([endpoint(1)]) == 0.5


def test_bind_by_name_among_several_producers():
    d = concurrency(inFlightLoadProducerName="b")
    a, b = inflight("a"), inflight("b")
    d.bind(PluginHandle({"a": a, "b": b}, InFlightLedger()))
    with pytest.raises(ConfigError, match="several plugins produce 'InFlightLoadKey'"):
        concurrency().bind(PluginHandle({"a": a, "b": b}, InFlightLedger()))


@pytest.mark.parametrize(
    ("params", "plugins", "message"),
    [
        ({"inFlightLoadProducerName": "x"}, {}, "inFlightLoadProducerName: no plugin named 'x'"),
        ({"inFlightLoadProducerName": "x"}, {"x": object()}, "does not produce 'InFlightLoadKey'"),
        ({"concurrencyMode": "tokens"}, {}, "concurrencyMode 'tokens' needs the live counters"),
        ({"concurrencyMode": "hybrid"}, {}, "concurrencyMode 'hybrid' needs the live counters"),
    ],
)
def test_bind_errors_name_the_plugin(params, plugins, message):
    with pytest.raises(
        ConfigError, match=rf"plugin 'conc' \(type 'concurrency-detector'\).*{message}"
    ):
        concurrency(**params).bind(PluginHandle(plugins, InFlightLedger()))


def test_bind_without_a_producer_counts_the_routers_requests():
    d = concurrency()
    ledger = charged(InFlightLedger(), {endpoint(1).key: InFlightLoad(50, 0)})
    d.bind(PluginHandle({}, ledger))
    assert d.saturation([endpoint(1)]) == 0.5


def test_the_pipeline_creates_and_binds_the_producer():
    config = (
        f"apiVersion: {API_VERSION}\nkind: EndpointPickerConfig\n"
        "plugins: [{type: concurrency-detector, parameters: {concurrencyMode: tokens}}, "
        "{type: random-picker}]\n"
        "saturationDetector: {pluginRef: concurrency-detector}\n"
    )
    ledger = InFlightLedger()
    pipeline = build_pipeline(load_config(config), builtin_registry(), inflight=ledger)
    detector = pipeline.saturation
    assert isinstance(detector, ConcurrencyDetector)
    producer = pipeline.plugins["inflight-load-producer"]
    assert isinstance(producer.instance, InFlightLoadProducer) and producer.injected
    charged(ledger, {endpoint(1).key: InFlightLoad(0, 500_000)})
    assert detector.saturation([endpoint(1)]) == 0.5  # it reads the ledger it was bound to


def test_concurrency_parameters():
    params = msgspec.convert({}, ConcurrencyDetector.Params)
    assert (
        params.concurrency_mode,
        params.max_concurrency,
        params.max_token_concurrency,
        params.headroom,
    ) == ("requests", 100, 1_000_000, 0.0)
    assert msgspec.convert({"inFlightLoadProducerName": "x"}, ConcurrencyDetector.Params)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"concurrencyMode": "bytes"}, "concurrencyMode"),
        ({"maxConcurrency": 0}, "maxConcurrency must be strictly positive"),
        ({"maxTokenConcurrency": -5}, "maxTokenConcurrency must be strictly positive"),
        ({"maxConcurrency": 1.5}, "maxConcurrency"),
        ({"headroom": -1}, "headroom must be a non-negative value"),
        ({"headroom": float("nan")}, "headroom must be a non-negative value"),
    ],
)
def test_concurrency_parameter_errors(raw, message):
    with pytest.raises(msgspec.ValidationError, match=message):
        msgspec.convert(raw, ConcurrencyDetector.Params)
