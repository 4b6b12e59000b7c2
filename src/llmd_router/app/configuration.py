"""Where the configuration comes from, and turning it into a pipeline, again on every reload.

The configuration is a file (watched: its fingerprint is taken before each read, so a change
made while it is being read is seen at the next look), text, or nothing (llm-d's default
profile). Each build gets the previous pipeline, so unchanged plugins carry their state over.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from llmd_router.config import load_config, load_config_file
from llmd_router.config.watch import Fingerprint, fingerprint
from llmd_router.pipeline import Pipeline, build_pipeline

if TYPE_CHECKING:
    from llmd_router.app.options import RouterOptions
    from llmd_router.config import LoadedConfig
    from llmd_router.datalayer.inflight import InFlightView
    from llmd_router.framework import Registry
    from llmd_router.framework.capabilities import PluginMetrics, PoolView
    from llmd_router.framework.scheduler import PluginTimer

__all__ = ["ConfigurationSource"]

_log = logging.getLogger(__name__)


class ConfigurationSource:
    def __init__(
        self,
        options: RouterOptions,
        registry: Registry,
        *,
        timer: PluginTimer,
        inflight: InFlightView,
        pool: PoolView,
        metrics: PluginMetrics,
    ) -> None:
        self._options = options
        self._metrics = metrics
        self._registry = registry
        self._timer = timer
        self._inflight = inflight
        self._pool = pool
        self.seen: Fingerprint = None  # the file's fingerprint when it was last read

    def load(self) -> LoadedConfig:
        """Read the configuration. Raises ConfigError."""
        path = self._options.config_file
        if path is not None:
            self.seen = fingerprint(path)  # before reading it
            return load_config_file(path)
        return load_config(self._options.config_text)

    def build(self, previous: Pipeline | None) -> Pipeline:
        """Load and build it. Raises ConfigError; nothing changes then."""
        loaded = self.load()
        pipeline = build_pipeline(
            loaded,
            self._registry,
            timer=self._timer,
            allow_experimental=self._options.allow_experimental_plugins,
            previous=previous,
            inflight=self._inflight,
            pool=self._pool,
            metrics=self._metrics,
        )
        for note in pipeline.notes:
            _log.info("configuration %s: %s", loaded.source, note)
        return pipeline
