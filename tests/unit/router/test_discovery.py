"""Endpoints from a host:port list or llm-d's endpoints file."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from llmd_router.datalayer import EndpointsError, load_endpoints_file, parse_endpoint_list

if TYPE_CHECKING:
    from pathlib import Path


def test_an_endpoint_list():
    endpoints = parse_endpoint_list("10.0.0.1:8000, localhost:8001,[::1]:9000")
    assert [e.key for e in endpoints] == ["10.0.0.1:8000", "127.0.0.1:8001", "[::1]:9000"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "no endpoints"),
        ("10.0.0.1", "expected host:port"),
        ("vllm.local:8000", "is not an IP address"),
        ("10.0.0.1:0", "port must be"),
        ("10.0.0.1:99999", "port must be"),
    ],
)
def test_bad_endpoint_lists(spec: str, message: str):
    with pytest.raises(EndpointsError, match=message):
        parse_endpoint_list(spec)


def test_an_endpoints_file_keeps_good_entries_and_names_bad_ones(tmp_path: Path):
    path = tmp_path / "endpoints.yaml"
    path.write_text("""
endpoints:
  - name: vllm-0
    address: "10.0.0.1"
    port: "8000"
    labels: {model: llama}
  - name: vllm-1
    namespace: prod
    address: 10.0.0.2
    port: 8001
  - name: bad-port
    address: 10.0.0.3
    port: nope
  - address: 10.0.0.4
    port: "8000"
  - name: vllm-0
    address: 10.0.0.9
    port: "8000"
""")
    loaded = load_endpoints_file(path)
    errors = loaded.errors
    assert [(e.id, e.key) for e in loaded.endpoints] == [
        ("default/vllm-0", "10.0.0.9:8000"),
        ("prod/vllm-1", "10.0.0.2:8001"),
    ]
    assert len(errors) == 3
    assert "endpoints[2]: port must be" in errors[0]
    assert "endpoints[3]: name is required" in errors[1]
    assert "default/vllm-0 is listed again" in errors[2]
    assert loaded.invalid_ids == {"default/bad-port"}
    assert loaded.unidentified  # the entry without a name


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("endpoints: [", "not valid YAML"),
        ("- a\n- b\n", "expected a mapping"),
        ("x" * (1 << 21), "exceeds the 1 MiB limit"),
    ],
)
def test_unusable_endpoints_files(tmp_path: Path, content: str, message: str):
    path = tmp_path / "e.yaml"
    path.write_text(content)
    with pytest.raises(EndpointsError, match=message):
        load_endpoints_file(path)


def test_a_missing_file(tmp_path: Path):
    with pytest.raises(EndpointsError, match="cannot read"):
        load_endpoints_file(tmp_path / "nope.yaml")
