"""The set of plugins a pipeline is being built from."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from llmd_router.config import ConfigError
from llmd_router.pipeline.pipeline import BuiltPlugin

if TYPE_CHECKING:
    from llmd_router.config import LoadedConfig
    from llmd_router.framework.plugin import Registry
    from llmd_router.pipeline.pipeline import Pipeline

__all__ = ["PluginSet"]


class PluginSet:
    """The plugins being built for one configuration, by name: added from the configuration,
    carried over from the previous pipeline when unchanged, or ensured by a system default."""

    def __init__(
        self,
        loaded: LoadedConfig,
        registry: Registry,
        *,
        allow_experimental: bool,
        previous: Pipeline | None,
    ) -> None:
        self.loaded = loaded
        self.registry = registry
        self.allow_experimental = allow_experimental
        self.previous = previous.plugins if previous is not None else {}
        self.plugins: dict[str, BuiltPlugin] = {}
        self.notes: list[str] = []

    def add(self, type_name: str, name: str, raw_params: Any, *, injected: bool) -> BuiltPlugin:
        if name in self.plugins:
            raise ConfigError(f"plugins: two plugins are named {name!r}")
        identity = msgspec.json.encode([type_name, name, raw_params])
        old = self.previous.get(name)
        if old is not None and old.identity == identity:
            instance = old.instance
        else:
            instance = self.registry.create(
                type_name, name, raw_params, allow_experimental=self.allow_experimental
            )
        built = BuiltPlugin(name, type_name, instance, identity, injected)
        self.plugins[name] = built
        if injected:
            self.notes.append(f"added {type_name!r} (system default)")
        return built

    def ensure(self, type_name: str) -> BuiltPlugin:
        """The plugin named ``type_name``, built with default parameters when absent."""
        existing = self.plugins.get(type_name)
        if existing is None:
            return self.add(type_name, type_name, None, injected=True)
        if existing.type != type_name:
            raise ConfigError(
                f"plugin {type_name!r} is needed as a {type_name!r} but that name is taken "
                f"by a plugin of type {existing.type!r}"
            )
        return existing

    def of_kind(self, proto: type) -> list[BuiltPlugin]:
        return [b for b in self.plugins.values() if isinstance(b.instance, proto)]
