"""Noticing that a file changed, in a way that survives how files really change.

Editors write a new file and rename it over the old one; Kubernetes swaps a ConfigMap by
re-pointing a symlink. Watching the inode we first opened misses both. Instead we poll
``stat`` of the path (following symlinks) and compare a fingerprint: device, inode, size and
modification time. Any difference is a change; a file that is momentarily missing (mid-rename)
is not, until it has stayed missing for a whole poll.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

__all__ = ["Fingerprint", "fingerprint", "watch_file"]

_log = logging.getLogger(__name__)

Fingerprint = tuple[int, int, int, int] | None


def fingerprint(path: Path) -> Fingerprint:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


async def watch_file(
    path: Path,
    on_change: Callable[[], Awaitable[None] | None],
    *,
    interval_s: float = 1.0,
    seen: Fingerprint = None,
    settle_s: float = 0.02,
) -> None:
    """Call ``on_change`` after each change of ``path``, until cancelled. ``seen`` is the
    fingerprint of the version already loaded (taken before reading it), so that a change made
    before this task first runs is not missed. A file still being written (its fingerprint
    moves again within ``settle_s``) is waited for, a few times at most, before it is read."""
    if seen is None:
        seen = fingerprint(path)
    while True:
        await asyncio.sleep(interval_s)
        now = fingerprint(path)
        if now == seen or now is None:
            continue
        for _ in range(10):
            await asyncio.sleep(settle_s)
            again = fingerprint(path)
            if again == now or again is None:
                break
            now = again
        seen = now
        try:
            outcome = on_change()
            if outcome is not None:
                await outcome
        except Exception:  # noqa: BLE001  the watcher must outlive a failing callback
            _log.exception("handling a change of %s failed", path)
