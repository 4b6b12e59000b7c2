"""Reloading the configuration of a running router: on file change, on SIGHUP, and refusing
an invalid one while the running one keeps serving."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import TYPE_CHECKING

from llmd_router.app import Router
from llmd_router.cli.main import _reload_on_hangup
from llmd_router.datalayer import Endpoint
from llmd_router.testing import local_options

if TYPE_CHECKING:
    from pathlib import Path

HEAD = "apiVersion: llm-d.ai/v1alpha1\nkind: EndpointPickerConfig\n"
RANDOM = HEAD + "plugins: [{type: random-picker}]\n"
LEAST = HEAD + "plugins: [{type: active-request-scorer}]\n"


def router(path: Path, poll: float) -> Router:
    return Router(
        local_options(
            endpoints=(Endpoint("e", "10.0.0.1", 8000),),
            config_file=path,
            config_poll_s=poll,
        )
    )


def reloads(r: Router, result: str) -> float:
    value = r.metrics.registry.get_sample_value(
        "llmd_router_config_reloads_total", {"result": result}
    )
    return value or 0.0


async def eventually(condition) -> None:
    """Poll ``condition`` (a metric read: nothing to wait on) for up to five seconds."""
    async with asyncio.timeout(5):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def test_a_changed_file_is_loaded_and_a_broken_one_refused(tmp_path: Path):
    path = tmp_path / "epp.yaml"
    path.write_text(RANDOM)
    r = router(path, poll=0.02)
    await r.start()
    try:
        assert "random-picker" in r.director.pipeline.plugins
        # Editors write a new file and rename it over the old one.
        fresh = tmp_path / "epp.yaml.tmp"
        fresh.write_text(LEAST)
        fresh.replace(path)
        await eventually(lambda: reloads(r, "success") == 1)
        assert "active-request-scorer" in r.director.pipeline.plugins
        path.write_text(HEAD + "plugins: [{type: no-such-scorer}]\n")
        await eventually(lambda: reloads(r, "error") == 1)
        assert "active-request-scorer" in r.director.pipeline.plugins  # the old one serves
    finally:
        await r.stop(0)


async def test_a_configmap_style_symlink_swap_is_noticed(tmp_path: Path):
    (tmp_path / "v1").mkdir()
    (tmp_path / "v2").mkdir()
    (tmp_path / "v1" / "epp.yaml").write_text(RANDOM)
    (tmp_path / "v2" / "epp.yaml").write_text(LEAST)
    (tmp_path / "data").symlink_to("v1")
    path = tmp_path / "epp.yaml"
    path.symlink_to(tmp_path / "data" / "epp.yaml")
    r = router(path, poll=0.02)
    await r.start()
    try:
        swap = tmp_path / "data.tmp"
        swap.symlink_to("v2")
        swap.replace(tmp_path / "data")
        await eventually(lambda: reloads(r, "success") == 1)
        assert "active-request-scorer" in r.director.pipeline.plugins
    finally:
        await r.stop(0)


async def test_sighup_reloads_at_once(tmp_path: Path):
    path = tmp_path / "epp.yaml"
    path.write_text(RANDOM)
    r = router(path, poll=3600)  # the watcher will not see it in time: only the signal can
    await r.start()
    try:
        _reload_on_hangup(r)
        path.write_text(LEAST)
        os.kill(os.getpid(), signal.SIGHUP)
        await eventually(lambda: reloads(r, "success") == 1)
        assert "active-request-scorer" in r.director.pipeline.plugins
    finally:
        asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        await r.stop(0)
