"""The Standalone bootstrap: what it routes where, checked by the real Envoy binary."""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING

import pytest
import yaml

from llmd_router.proxy.bootstrap import ProxyConfig, build_bootstrap
from llmd_router.proxy.supervisor import find_envoy

if TYPE_CHECKING:
    from pathlib import Path


def hcm(doc: dict) -> dict:
    return doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


@pytest.mark.parametrize("mode", ["buffered", "full-duplex"])
@pytest.mark.parametrize("failure", ["open", "closed"])
@pytest.mark.parametrize("tls", [False, True])
def test_every_variant_is_a_valid_envoy_config(tmp_path: Path, mode, failure, tls):
    doc = build_bootstrap(
        ProxyConfig(
            mode=mode,
            failure_mode=failure,
            epp_tls=tls,
            pool=(("10.0.0.1", 8000), ("10.0.0.2", 8000)),
        )
    )
    config = tmp_path / "envoy.yaml"
    config.write_text(yaml.safe_dump(doc))
    result = subprocess.run(
        [find_envoy(), "--mode", "validate", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_client_destination_headers_are_stripped_before_any_filter():
    early = hcm(build_bootstrap(ProxyConfig()))["early_header_mutation_extensions"]
    rules = early[0]["typed_config"]["mutations"]
    assert [r["remove_on_match"]["key_matcher"] for r in rules] == [
        {"prefix": "x-gateway-destination-endpoint", "ignore_case": True},
        {"prefix": "x-llmd-exchange-id", "ignore_case": True},
    ]


def test_routes_and_failure_modes():
    closed = hcm(build_bootstrap(ProxyConfig(failure_mode="closed")))
    ext_proc = closed["http_filters"][0]["typed_config"]
    assert ext_proc["failure_mode_allow"] is False and ext_proc["status_on_error"] == {"code": 503}
    routes = closed["route_config"]["virtual_hosts"][0]["routes"]
    assert routes[0]["match"]["headers"][0]["name"] == "x-gateway-destination-endpoint"
    assert routes[0]["route"]["cluster"] == "original_destination"
    assert routes[1]["direct_response"]["status"] == 503
    doc = build_bootstrap(ProxyConfig(failure_mode="open", pool=(("10.0.0.1", 8000),)))
    opened = hcm(doc)
    assert opened["http_filters"][0]["typed_config"]["failure_mode_allow"] is True
    assert opened["route_config"]["virtual_hosts"][0]["routes"][1]["route"]["cluster"] == "pool"
    pool = next(c for c in doc["static_resources"]["clusters"] if c["name"] == "pool")
    assert pool["lb_policy"] == "RANDOM"


def test_processing_modes():
    buffered = hcm(build_bootstrap(ProxyConfig(mode="buffered")))["http_filters"][0]
    modes = buffered["typed_config"]["processing_mode"]
    assert (
        modes["request_body_mode"],
        modes["response_body_mode"],
        modes["response_trailer_mode"],
    ) == ("BUFFERED", "NONE", "SKIP")
    assert modes["response_header_mode"] == "SKIP"
    duplex = hcm(build_bootstrap(ProxyConfig(mode="full-duplex")))["http_filters"][0]
    modes = duplex["typed_config"]["processing_mode"]
    assert modes["request_body_mode"] == modes["response_body_mode"] == "FULL_DUPLEX_STREAMED"


def test_buffered_mode_reports_request_ends_through_the_access_log():
    buffered = hcm(build_bootstrap(ProxyConfig(mode="buffered", access_log_flush_s=0.02)))
    (log,) = buffered["access_log"]
    assert log["filter"]["header_filter"]["header"] == {
        "name": "x-llmd-exchange-id",
        "present_match": True,
    }
    config = log["typed_config"]
    assert config["additional_request_headers_to_log"] == ["x-llmd-exchange-id"]
    assert config["common_config"]["grpc_service"] == {"envoy_grpc": {"cluster_name": "epp"}}
    assert config["common_config"]["buffer_flush_interval"] == "0.02s"
    # llm-d's settings keep the stream open for the whole response: no access log needed.
    assert "access_log" not in hcm(build_bootstrap(ProxyConfig(mode="full-duplex")))
