"""Where each server of a fleet publishes its KV events."""

from __future__ import annotations

import pytest

from llmd_sim.config import KVEventsConfig
from llmd_sim.kvevents import endpoint_for


@pytest.mark.parametrize(
    ("endpoint", "index", "expected"),
    [
        ("tcp://*:5557", 0, "tcp://*:5557"),
        ("tcp://*:5557", 3, "tcp://*:5560"),
        ("tcp://[::]:5557", 2, "tcp://[::]:5559"),
        ("ipc:///tmp/kv", 1, "ipc:///tmp/kv_1"),
        ("tcp://127.0.0.1:5557", 5, "tcp://127.0.0.1:5557"),  # connecting: all share it
        (None, 4, None),
    ],
    ids=["bind-first", "bind-offset", "bind-ipv6", "ipc-suffix", "connect-shared", "disabled"],
)
def test_binding_servers_get_their_own_endpoint(
    endpoint: str | None, index: int, expected: str | None
):
    assert endpoint_for(KVEventsConfig(endpoint=endpoint), index) == expected


@pytest.mark.parametrize(
    ("endpoint", "binds"),
    [
        ("tcp://*:1", True),
        ("tcp://[::]:1", True),
        ("ipc:///x", True),
        ("inproc://x", True),
        ("tcp://10.0.0.1:1", False),
    ],
)
def test_bind_rule_is_vllms(endpoint: str, binds: bool):
    assert KVEventsConfig(endpoint=endpoint).binds is binds
