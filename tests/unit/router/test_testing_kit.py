"""The shipped test kit: what docs/plugins.md shows runs, and the builders build what they say."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from llmd_router import testing
from llmd_router.config import ConfigError
from llmd_router.datalayer.inflight import InFlightLedger, InFlightLoad
from llmd_router.framework import CycleState
from llmd_router.plugins.filters.decode_filter import DecodeFilter
from llmd_router.plugins.pickers.max_score_picker import MaxScorePicker
from llmd_router.plugins.producers.inflight_load_producer import InFlightLoadProducer
from llmd_router.plugins.scorers.queue_scorer import QueueScorer

DOC = Path(__file__).parents[3] / "docs" / "plugins.md"


def test_the_five_line_example_of_docs_plugins_md_runs():
    section = DOC.read_text().split("## Testing a plugin", 1)[1]
    (code,) = re.findall(r"```python\n(.*?)```", section.split("\n## ", 1)[0], re.S)
    assert len([line for line in code.splitlines() if line.strip()]) <= 5
    exec(compile(code, str(DOC), "exec"), {})
    broken = code.replace("[1.0, 0.5, 0.0]", "[0.0, 0.5, 1.0]")
    with pytest.raises(AssertionError):  # the example can fail
        exec(compile(broken, str(DOC), "exec"), {})


def test_builders():
    e = testing.endpoint(3, labels={"tier": "gold"}, waiting_queue_size=2)
    assert (e.name, e.key, e.labels, e.metrics.waiting_queue_size) == (
        "e3",
        "10.0.0.3:8000",
        {"tier": "gold"},
        2,
    )
    assert e.metrics.updated_at == 1.0  # reported
    assert testing.endpoint(1).metrics.updated_at == 0.0  # never reported
    with pytest.raises(ValueError, match="2 values for 3 endpoints"):
        testing.endpoints(3, waiting_queue_size=[1, 2])
    r = testing.request(path="/v1/chat/completions", size=10, model="m")
    assert (r.kind.value, r.size, r.target_model) == ("chat/completions", 10, "m")
    res = testing.result(decode=[e], prefill=[])
    assert res.primary == "decode" and res.targets == (e,)


def test_make_checks_parameters_as_a_configuration_does():
    with pytest.raises(ConfigError, match=r"plugin 'max-score-picker'.*unknown"):
        testing.make(MaxScorePicker, bogus=1)
    picker = testing.make(MaxScorePicker, maxNumOfEndpoints=2)
    pool = testing.endpoints(3)
    assert testing.pick(picker, pool, [0.1, 0.9, 0.5]) == [pool[1], pool[2]]
    assert testing.keep(testing.make(DecodeFilter), pool) == pool  # unlabelled: every stage


def test_route_charges_what_the_router_charges():
    ledger = InFlightLedger()
    producer = testing.make(InFlightLoadProducer, inflight=ledger)
    a = testing.endpoint(1)
    cycle = CycleState()
    res = testing.result(default=[a])
    producer.pre_request(cycle, testing.request(prompt="x" * 400), res)
    charges = testing.route(ledger, cycle, res)
    assert ledger.load(a.key) == InFlightLoad(1, 100)
    ledger.refund(charges)
    assert len(ledger) == 0


def test_pipeline_and_clock():
    built = testing.pipeline("plugins: [{type: queue-scorer}]\n")
    assert isinstance(built.plugins["queue-scorer"].instance, QueueScorer)
    assert "inflight-load-producer" not in testing.pipeline(None).plugins  # the default profile
    clock = testing.FakeClock()
    assert clock.advance(2.5) == clock() == 1002.5
    with pytest.raises(ValueError, match="back"):
        clock.advance(-1)
