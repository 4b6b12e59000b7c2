"""The task owner: ready handshakes, failures reported and restarted, giving up, stopping on
purpose; and the lifetime that gives a structured coroutine start() and stop()."""

from __future__ import annotations

import ast
import asyncio
import logging
from pathlib import Path

import pytest

import llmd_router
from llmd_router.tasks import Lifetime, LoopEnded, Ready
from llmd_router.testing import task_owner
from tests.waiting import eventually


async def forever(ready: Ready) -> None:
    ready()
    await asyncio.Event().wait()


async def test_start_returns_once_the_loop_is_ready():
    events: list[str] = []

    async def slow_start(ready: Ready) -> None:
        await asyncio.sleep(0.02)
        events.append("ready")
        ready()
        await asyncio.Event().wait()

    async with task_owner() as owner:
        loop = await owner.start("slow", slow_start)
        assert events == ["ready"] and loop.state == "running"
        assert owner.statistics() == {
            "slow": {"state": "running", "restarts": 0, "lastError": None}
        }


async def test_a_loop_that_fails_before_ready_raises_from_start():
    async def broken(ready: Ready) -> None:
        raise OSError("port in use")

    async with task_owner() as owner:
        with pytest.raises(OSError, match="port in use"):
            await owner.start("broken", broken)
        assert owner.loops["broken"].state == "given up"


async def test_a_failure_after_ready_is_logged_with_its_traceback_and_restarted(
    caplog: pytest.LogCaptureFixture,
):
    runs: list[int] = []

    async def flaky(ready: Ready) -> None:
        runs.append(len(runs))
        ready()
        if len(runs) == 1:
            raise RuntimeError("lost the connection")
        await asyncio.Event().wait()

    async with task_owner() as owner:
        loop = await owner.start("flaky", flaky)
        await eventually(lambda: len(runs) == 2)
        assert loop.restarts == 1 and loop.state == "running"
        assert loop.last_error == "RuntimeError: lost the connection"
    (record,) = [r for r in caplog.records if "background loop 'flaky' failed" in r.message]
    assert record.levelno == logging.ERROR and "restarting it" in record.message
    assert record.exc_info is not None and "lost the connection" in caplog.text
    assert "Traceback" in caplog.text


async def test_returning_or_being_cancelled_by_someone_else_is_a_failure():
    runs: list[str] = []

    async def returns(ready: Ready) -> None:
        runs.append("returns")
        ready()
        if runs.count("returns") == 1:
            return
        await asyncio.Event().wait()

    async with task_owner() as owner:
        ended = await owner.start("returns", returns)
        await eventually(lambda: ended.restarts == 1)
        assert ended.last_error == "LoopEnded: returns returned"
        killed = await owner.start("killed", forever)
        assert killed.task is not None
        killed.task.cancel()  # not by its owner
        await eventually(lambda: killed.restarts == 1 and killed.state == "running")
        assert killed.last_error == "cancelled from outside its owner"


async def test_a_loop_that_keeps_failing_is_given_up_and_the_owner_is_told():
    told: list[tuple[str, str]] = []

    async def always(ready: Ready) -> None:
        ready()
        raise ValueError("bad")

    async def given_up(name: str, error: BaseException) -> None:
        told.append((name, str(error)))

    async with task_owner(on_given_up=given_up, max_failures=2) as owner:
        loop = owner.spawn("always", always)
        await eventually(lambda: loop.state == "given up", within=5)
        assert loop.restarts == 2  # three failures: the first, then two restarts
        assert told == [("always", "bad")]


async def test_a_loop_without_restart_is_given_up_at_its_first_failure():
    told: list[str] = []

    async def once(ready: Ready) -> None:
        ready()
        raise LoopEnded("gone")

    async with task_owner() as owner:
        loop = owner.spawn("once", once, restart=False, on_given_up=lambda n, e: told.append(n))
        await eventually(lambda: loop.state == "given up")
        assert told == ["once"] and loop.restarts == 0


async def test_cancel_stops_a_loop_on_purpose_and_it_is_forgotten():
    async with task_owner() as owner:
        loop = owner.spawn("endpoint", forever)
        await asyncio.sleep(0)
        loop.cancel()
        await eventually(lambda: "endpoint" not in owner.loops)
        assert loop.state == "stopped" and loop.restarts == 0
        again = owner.spawn("endpoint", forever)  # the name is free again
        assert again is not loop


async def test_close_stops_every_loop_and_refuses_new_ones():
    async with task_owner() as owner:
        loops = [owner.spawn(f"l{i}", forever) for i in range(3)]
        await asyncio.sleep(0)
        await owner.close()
        assert all(loop.state == "stopped" for loop in loops)
        with pytest.raises(RuntimeError, match="stopping"):
            owner.spawn("late", forever)


async def test_two_loops_cannot_share_a_name():
    async with task_owner() as owner:
        owner.spawn("x", forever)
        with pytest.raises(RuntimeError, match="already running"):
            owner.spawn("x", forever)


async def test_lifetime_start_waits_for_ready_and_stop_unwinds():
    steps: list[str] = []

    async def body(ready: Ready, stopping: asyncio.Event) -> None:
        steps.append("up")
        ready()
        await stopping.wait()
        steps.append("down")

    life = Lifetime("component", body)
    await life.start()
    running_after_start = life.running
    with pytest.raises(RuntimeError, match="already started"):
        await life.start()
    await life.stop()
    assert steps == ["up", "down"]
    assert (running_after_start, life.running) == (True, False)
    await life.stop()  # twice: nothing


async def test_lifetime_start_raises_what_stopped_the_body():
    async def body(ready: Ready, stopping: asyncio.Event) -> None:
        raise PermissionError("cannot bind")

    with pytest.raises(PermissionError, match="cannot bind"):
        await Lifetime("component", body).start()

    async def quits(ready: Ready, stopping: asyncio.Event) -> None:
        return

    with pytest.raises(RuntimeError, match="ended before it was ready"):
        await Lifetime("component", quits).start()


async def test_a_lifetime_that_ends_by_itself_is_logged(caplog: pytest.LogCaptureFixture):
    async def body(ready: Ready, stopping: asyncio.Event) -> None:
        ready()
        await asyncio.sleep(0)
        raise RuntimeError("crashed")

    life = Lifetime("component", body)
    await life.start()
    await eventually(lambda: "component ended without being stopped" in caplog.text)
    assert "crashed" in caplog.text
    with pytest.raises(RuntimeError, match="crashed"):
        await life.stop()


async def test_a_loop_killed_before_it_first_ran_is_reported_and_restarted(
    caplog: pytest.LogCaptureFixture,
):
    async with task_owner() as owner:
        loop = owner.spawn("early", forever)
        assert loop.task is not None
        loop.task.cancel()  # before its first step: it never saw the cancellation itself
        await eventually(lambda: loop.restarts == 1 and loop.state == "running")
        assert "background loop 'early' failed (cancelled from outside its owner)" in caplog.text


def test_nothing_in_the_router_starts_a_task_but_the_task_owner():
    """Every background task has an owner: ``tasks.py`` is the only module of the router that
    creates tasks (``create_task``, ``ensure_future``, threads through ``run_in_executor``)."""
    package = Path(llmd_router.__file__).parent
    spawning = {"create_task", "ensure_future", "run_in_executor", "to_thread"}
    found = []
    for path in sorted(package.rglob("*.py")):
        if path == package / "tasks.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if name in spawning:
                    found.append(f"{path.relative_to(package)}:{node.lineno} {name}")
    assert found == []


async def test_a_loop_killed_while_it_waits_to_restart_is_still_restarted():
    runs: list[int] = []

    async def flaky(ready: Ready) -> None:
        runs.append(1)
        ready()
        if len(runs) == 1:
            raise RuntimeError("first run fails")
        await asyncio.Event().wait()

    async with task_owner() as owner:
        loop = owner.spawn("flaky", flaky)
        await eventually(lambda: loop.state == "restarting")
        assert loop.task is not None
        loop.task.cancel()  # during its back-off
        await eventually(lambda: len(runs) == 2 and loop.state == "running")
        assert loop.restarts == 1 and "flaky" in owner.loops  # one restart was carried out


async def test_a_name_is_free_again_as_soon_as_its_loop_is_told_to_stop():
    async with task_owner() as owner:
        first = owner.spawn("collect default/a", forever)
        await asyncio.sleep(0)
        first.cancel()
        second = owner.spawn("collect default/a", forever)  # before the first has unwound
        await eventually(lambda: first.state == "stopped")
        assert owner.loops["collect default/a"] is second and second.state == "running"
