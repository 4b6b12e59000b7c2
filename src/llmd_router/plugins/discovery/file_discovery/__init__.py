"""``file-discovery``: the pool's endpoints from llm-d's endpoints file, optionally watched."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from llmd_router.datalayer.discovery import FileDiscovery
from llmd_router.framework import Params, Plugin, Stability

if TYPE_CHECKING:
    from llmd_router.datalayer.interfaces import DiscoverySink

__all__ = ["FileDiscoveryParams", "FileDiscoveryPlugin"]


class FileDiscoveryParams(Params, frozen=True):
    path: str = ""
    watch_file: bool = False

    def __post_init__(self) -> None:
        if not self.path:
            raise ValueError("file-discovery: 'path' parameter is required")


class FileDiscoveryPlugin(Plugin[FileDiscoveryParams]):
    """Reads the file at start-up (an unreadable file stops start-up; a bad entry is logged and
    skipped) and, with ``watchFile``, applies every change to it."""

    TYPE: ClassVar[str] = "file-discovery"
    Params: ClassVar[type[Any]] = FileDiscoveryParams
    STABILITY: ClassVar[Stability] = Stability.BETA

    def __init__(self, name: str, params: FileDiscoveryParams) -> None:
        super().__init__(name, params)
        self.discovery = FileDiscovery(Path(params.path), watch=params.watch_file, name=name)

    async def run(self, sink: DiscoverySink) -> None:
        await self.discovery.run(sink)

    def statistics(self) -> dict[str, Any]:
        return {
            "path": str(self.discovery.path),
            "watchFile": self.discovery.watch,
            "reloads": self.discovery.reloads,
            "rejectedReloads": self.discovery.rejected_reloads,
        }
