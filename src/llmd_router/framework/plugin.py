"""Plugins by type name: the registry, parameter parsing, and user plugins by import path.

A plugin class has a ``TYPE`` (its type name in configurations), a ``Params`` type, and a
constructor ``(name, params)``. The registry turns a configuration entry ``{type, name,
parameters}`` into an instance: it finds the class (a registered type name, or a user class given
as ``package.module:Class``), parses the parameters once into ``Params`` (frozen; unknown keys,
wrong types and out-of-range values are errors that name the plugin), and calls the constructor.
Everything that can be wrong with a plugin is found here, at start-up or reload, never while a
request is being scheduled.

The registry is filled in one function (``register_builtin_plugins``, next to the plugins); the
framework itself never imports a plugin.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import msgspec

from llmd_router.config import ConfigError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from llmd_router.framework.cycle import DataKey

__all__ = [
    "NoParams",
    "Params",
    "Plugin",
    "PluginType",
    "Registry",
    "Stability",
    "parse_params",
]

_log = logging.getLogger(__name__)


class Params(msgspec.Struct, frozen=True, forbid_unknown_fields=True, rename="camel", kw_only=True):
    """Base for plugin parameters: fields in snake_case are written in camelCase in YAML
    (``queue_depth_threshold`` is ``queueDepthThreshold``), as llm-d's are. Unknown keys are
    errors. Validate ranges in ``__post_init__`` by raising ValueError."""


class NoParams(Params, frozen=True):
    """For plugins that take no parameters: any key is an error."""


P = TypeVar("P")


class Stability(enum.Enum):
    STABLE = "Stable"
    BETA = "Beta"
    ALPHA = "Alpha"  # refused unless --allow-experimental-plugins


class Plugin(Generic[P]):
    """Convenience base: stores ``name`` and parsed ``params``. Plugins need not inherit it;
    they need ``TYPE``, ``Params`` and a ``(name, params)`` constructor."""

    TYPE: ClassVar[str] = ""
    Params: ClassVar[type[Any]] = NoParams
    STABILITY: ClassVar[Stability] = Stability.STABLE

    def __init__(self, name: str, params: P) -> None:
        self.name = name
        self.params = params

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


@dataclass(frozen=True, slots=True)
class PluginType:
    """One registered type name."""

    name: str
    cls: type[Any]
    stability: Stability = Stability.STABLE
    replaced_by: str | None = None  # set for a deprecated alias: the type to use instead

    @property
    def params(self) -> type[Any]:
        params: type[Any] = getattr(self.cls, "Params", NoParams)
        return params

    @property
    def doc(self) -> str:
        return (self.cls.__doc__ or "").strip()


def parse_params(params_type: type[P], raw: Any, where: str) -> P:
    """Parse a plugin's ``parameters`` (None means none given) into ``params_type``."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: parameters must be a mapping, got {type(raw).__name__}")
    if dataclasses.is_dataclass(params_type):  # msgspec ignores unknown keys of dataclasses
        known = {f.name for f in dataclasses.fields(params_type)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown parameter {unknown[0]!r}")
    try:
        return msgspec.convert(raw, params_type)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{where}: parameters: {exc}") from None


def _import_class(path: str, where: str) -> type[Any]:
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{where}: import path must be 'package.module:Class', got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001  whatever the import raised, say it
        raise ConfigError(f"{where}: cannot import {module_name!r}: {exc}") from None
    target: Any = module
    for part in attr.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise ConfigError(f"{where}: module {module_name!r} has no {attr!r}")
    if not isinstance(target, type):
        raise ConfigError(f"{where}: {path!r} is not a class")
    return target


class Registry:
    def __init__(self) -> None:
        self._types: dict[str, PluginType] = {}
        self._unavailable: dict[str, str] = {}
        self._default_producers: dict[str, str] = {}

    def register(
        self,
        cls: type[Any],
        *,
        aliases: Iterable[str] = (),
        stability: Stability | None = None,
    ) -> None:
        """Register ``cls`` under its ``TYPE``, and under deprecated ``aliases``."""
        name = getattr(cls, "TYPE", "")
        if not name:
            raise ValueError(f"{cls.__name__} has no TYPE")
        level: Stability = (
            stability if stability is not None else getattr(cls, "STABILITY", Stability.STABLE)
        )
        for type_name, replaced_by in ((name, None), *((a, name) for a in aliases)):
            if type_name in self._types:
                raise ValueError(f"plugin type {type_name!r} registered twice")
            self._types[type_name] = PluginType(type_name, cls, level, replaced_by)

    def unavailable(self, type_name: str, reason: str) -> None:
        """A type llm-d has and this version does not: naming it is an error that says why."""
        self._unavailable[type_name] = reason

    def default_producer(self, key: DataKey[Any], type_name: str) -> None:
        """Build ``type_name`` when a configuration consumes ``key`` and nothing produces it."""
        self._default_producers[key.name] = type_name

    def producer_for(self, key: DataKey[Any]) -> str | None:
        return self._default_producers.get(key.name)

    def types(self) -> list[PluginType]:
        return [self._types[k] for k in sorted(self._types)]

    def missing(self) -> Mapping[str, str]:
        return dict(sorted(self._unavailable.items()))

    def lookup(self, type_name: str, where: str) -> PluginType:
        found = self._types.get(type_name)
        if found is not None:
            return found
        if ":" in type_name:
            return PluginType(type_name, _import_class(type_name, where))
        available = ", ".join(sorted(t for t, p in self._types.items() if p.replaced_by is None))
        reason = self._unavailable.get(type_name)
        if reason is not None:
            raise ConfigError(
                f"{where}: type {type_name!r} is not available in this version ({reason}); "
                f"available types: {available}"
            )
        raise ConfigError(
            f"{where}: unknown plugin type {type_name!r}; available types: {available}; "
            "or give a Python class as 'package.module:Class'"
        )

    def create(
        self,
        type_name: str,
        name: str,
        raw_params: Any,
        *,
        allow_experimental: bool = False,
    ) -> Any:
        """A new plugin instance. Raises ConfigError naming the plugin."""
        where = f"plugin {name!r} (type {type_name!r})"
        entry = self.lookup(type_name, where)
        if entry.stability is Stability.ALPHA and not allow_experimental:
            raise ConfigError(
                f"plugin {name!r} (type: {type_name!r}) has Alpha stability level, but "
                "command line flag --allow-experimental-plugins is not set"
            )
        if entry.replaced_by is not None:
            _log.warning(
                "plugin %r: type %r is deprecated; use %r", name, type_name, entry.replaced_by
            )
        params = parse_params(entry.params, raw_params, where)
        try:
            return entry.cls(name, params)
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001  a user plugin's constructor: report it
            raise ConfigError(f"{where}: {type(exc).__name__}: {exc}") from None
