"""File discovery: the first load, and live reload that never loses a good endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import TYPE_CHECKING

import pytest

from llmd_router.datalayer import Endpoint, EndpointsError
from llmd_router.datalayer.discovery import FileDiscovery, StaticDiscovery
from tests.waiting import eventually

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


class Sink:
    def __init__(self) -> None:
        self.endpoints: dict[str, Endpoint] = {}
        self.events: list[tuple[str, str]] = []
        self.synced_count = 0

    def upsert(self, endpoint: Endpoint) -> None:
        self.endpoints[endpoint.id] = endpoint
        self.events.append(("upsert", endpoint.id))

    def delete(self, endpoint_id: str) -> None:
        del self.endpoints[endpoint_id]
        self.events.append(("delete", endpoint_id))

    def synced(self) -> None:
        self.synced_count += 1

    def keys(self) -> dict[str, str]:
        return {i: e.key for i, e in sorted(self.endpoints.items())}


def entry(name: str, address: str, port: int | str = 8000, **extra: str) -> str:
    lines = [f"- name: {name}", f'  address: "{address}"', f'  port: "{port}"']
    lines += [f"  {k}: {v}" for k, v in extra.items()]
    return "\n".join(lines)


def document(*entries: str) -> str:
    return "endpoints:\n" + "\n".join(entries) + "\n"


@contextlib.asynccontextmanager
async def running(discovery: FileDiscovery | StaticDiscovery) -> AsyncIterator[Sink]:
    sink = Sink()
    task = asyncio.create_task(discovery.run(sink))
    try:
        await eventually(lambda: sink.synced_count == 1 or task.done())
        if task.done():
            task.result()
        yield sink
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def write_atomically(path: Path, text: str) -> None:
    """As editors do: a new file renamed over the old one."""
    temp = path.with_suffix(".swp")
    temp.write_text(text)
    os.replace(temp, path)


async def test_static_discovery_reports_its_list_and_syncs():
    endpoints = [Endpoint("a", "10.0.0.1", 8000), Endpoint("b", "10.0.0.2", 8000)]
    async with running(StaticDiscovery(endpoints)) as sink:
        assert sink.keys() == {"default/a": "10.0.0.1:8000", "default/b": "10.0.0.2:8000"}


async def test_a_bad_entry_at_start_up_is_skipped_not_fatal(tmp_path: Path):
    path = tmp_path / "endpoints.yaml"
    path.write_text(document(entry("a", "10.0.0.1"), entry("b", "not-an-ip")))
    async with running(FileDiscovery(path, poll_s=0.02)) as sink:
        assert sink.keys() == {"default/a": "10.0.0.1:8000"}


async def test_an_unreadable_file_at_start_up_is_fatal(tmp_path: Path):
    discovery = FileDiscovery(tmp_path / "missing.yaml", poll_s=0.02)
    with pytest.raises(EndpointsError, match="cannot read"):
        await discovery.run(Sink())


async def test_edits_are_applied_as_a_difference(tmp_path: Path):
    path = tmp_path / "endpoints.yaml"
    path.write_text(document(entry("a", "10.0.0.1"), entry("b", "10.0.0.2")))
    async with running(FileDiscovery(path, poll_s=0.02)) as sink:
        sink.events.clear()
        # b leaves, c arrives, a moves to a new port: written the way editors write.
        write_atomically(path, document(entry("a", "10.0.0.1", 9000), entry("c", "10.0.0.3")))
        await eventually(lambda: "default/c" in sink.endpoints)
        assert sink.keys() == {"default/a": "10.0.0.1:9000", "default/c": "10.0.0.3:8000"}
        assert ("delete", "default/b") in sink.events
        sink.events.clear()
        # An unchanged rewrite reports nothing.
        write_atomically(path, document(entry("a", "10.0.0.1", 9000), entry("c", "10.0.0.3")))
        await asyncio.sleep(0.1)
        assert sink.events == []


async def test_a_configmap_symlink_swap_is_seen(tmp_path: Path):
    # Kubernetes mounts ConfigMaps as ..data -> ..<timestamp>/ and swaps the ..data symlink.
    first = tmp_path / "..2026_01"
    first.mkdir()
    (first / "endpoints.yaml").write_text(document(entry("a", "10.0.0.1")))
    (tmp_path / "..data").symlink_to(first.name)
    (tmp_path / "endpoints.yaml").symlink_to("..data/endpoints.yaml")
    async with running(FileDiscovery(tmp_path / "endpoints.yaml", poll_s=0.02)) as sink:
        second = tmp_path / "..2026_02"
        second.mkdir()
        (second / "endpoints.yaml").write_text(document(entry("b", "10.0.0.2")))
        (tmp_path / "..data_tmp").symlink_to(second.name)
        os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
        await eventually(lambda: "default/b" in sink.endpoints)
        assert sink.keys() == {"default/b": "10.0.0.2:8000"}


async def test_an_entry_that_turns_bad_keeps_its_last_good_version(tmp_path: Path):
    path = tmp_path / "endpoints.yaml"
    path.write_text(document(entry("a", "10.0.0.1"), entry("b", "10.0.0.2")))
    async with running(FileDiscovery(path, poll_s=0.02)) as sink:
        write_atomically(
            path,
            document(
                entry("a", "10.0.0.1", "eighty"), entry("b", "10.0.0.2"), entry("c", "10.0.0.3")
            ),
        )
        await eventually(lambda: "default/c" in sink.endpoints)
        assert sink.keys()["default/a"] == "10.0.0.1:8000"  # still there, as it was


async def test_a_nameless_bad_entry_blocks_removals(tmp_path: Path):
    path = tmp_path / "endpoints.yaml"
    path.write_text(document(entry("a", "10.0.0.1"), entry("b", "10.0.0.2")))
    async with running(FileDiscovery(path, poll_s=0.02)) as sink:
        # The b entry lost its name (a typo): it might be b, so b is not removed.
        nameless = '- address: "10.0.0.2"\n  port: "8000"'
        write_atomically(path, document(entry("a", "10.0.0.1"), nameless, entry("c", "10.0.0.3")))
        await eventually(lambda: "default/c" in sink.endpoints)
        assert set(sink.endpoints) == {"default/a", "default/b", "default/c"}
        # Fixed: b is really gone now.
        write_atomically(path, document(entry("a", "10.0.0.1"), entry("c", "10.0.0.3")))
        await eventually(lambda: "default/b" not in sink.endpoints)


@pytest.mark.parametrize(
    "broken",
    ["", "endpoints: [\n  - name: a\n    address: [", "- just\n- a list\n"],
    ids=["empty-file", "half-written-yaml", "wrong-shape"],
)
async def test_an_unusable_version_changes_nothing(tmp_path: Path, broken: str):
    path = tmp_path / "endpoints.yaml"
    path.write_text(document(entry("a", "10.0.0.1")))
    discovery = FileDiscovery(path, poll_s=0.02)
    async with running(discovery) as sink:
        sink.events.clear()
        write_atomically(path, broken)
        await eventually(lambda: discovery.rejected_reloads >= 1)
        assert sink.events == [] and set(sink.endpoints) == {"default/a"}
        # An explicit empty list does remove everything.
        write_atomically(path, "endpoints: []\n")
        await eventually(lambda: not sink.endpoints)


async def test_without_watching_the_file_is_read_once(tmp_path: Path):
    path = tmp_path / "endpoints.yaml"
    path.write_text(document(entry("a", "10.0.0.1")))
    discovery = FileDiscovery(path, watch=False, poll_s=0.02)
    async with running(discovery) as sink:
        write_atomically(path, document(entry("b", "10.0.0.2")))
        await asyncio.sleep(0.1)
        assert set(sink.endpoints) == {"default/a"} and discovery.reloads == 0
