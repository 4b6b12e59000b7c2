"""Reading an EndpointPickerConfig from text (YAML or JSON; JSON is YAML) or a file.

``load_config`` returns the decoded document with llm-d's static defaults applied (a plugin's
name defaults to its type) and its feature gates resolved. The text may hold further YAML
documents after (or before) the ``EndpointPickerConfig``: ``InferenceObjective`` and
``InferenceModelRewrite`` resources, as Kubernetes writes them (``config/resources.py``).
Plugin building and the system defaults (profile handler, picker, parsers) are the scheduler
builder's job, where the plugin kinds are known. No configuration at all means
``DEFAULT_CONFIG``: llm-d's default profile.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import msgspec
import yaml

from llmd_router.config.errors import ConfigError
from llmd_router.config.resources import (
    OBJECTIVE_KIND,
    RESOURCE_API_VERSIONS,
    REWRITE_KIND,
    InferenceModelRewrite,
    InferenceObjective,
)
from llmd_router.config.schema import (
    API_VERSION,
    API_VERSION_DEPRECATED,
    KIND,
    EndpointPickerConfig,
)

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

__all__ = ["DEFAULT_CONFIG", "FEATURE_GATES", "LoadedConfig", "load_config", "load_config_file"]

_log = logging.getLogger(__name__)

DEFAULT_CONFIG: Final = f"""\
apiVersion: {API_VERSION}
kind: {KIND}
# llm-d's default profile (the approximate prefix producer is added for prefix-cache-scorer).
plugins:
- type: queue-scorer
- type: kv-cache-utilization-scorer
- type: prefix-cache-scorer
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: queue-scorer
    weight: 2
  - pluginRef: kv-cache-utilization-scorer
    weight: 2
  - pluginRef: prefix-cache-scorer
    weight: 3
"""

# Gate -> default. Older gates are accepted and have no effect (llm-d removed them too).
FEATURE_GATES: Final = {"flowControl": False, "haPopulateNonLeaderDatastore": True}
_RETIRED_GATES: Final = {
    "dataLayer": "the data layer is always on",
    "enableLegacyMetrics": "legacy metrics polling was removed; the data layer is used",
}


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    config: EndpointPickerConfig
    gates: Mapping[str, bool]
    source: str  # where it came from, for messages
    text: str
    is_default: bool = False
    objectives: tuple[InferenceObjective, ...] = ()
    rewrites: tuple[InferenceModelRewrite, ...] = ()


def _gates(entries: list[str]) -> dict[str, bool]:
    gates = dict(FEATURE_GATES)
    for entry in entries:
        name, sep, value = entry.partition("=")
        name = name.strip()
        if sep and value.strip().lower() not in ("true", "false"):
            raise ConfigError(f"featureGates: {entry!r}: the value must be true or false")
        enabled = not sep or value.strip().lower() == "true"
        if name in _RETIRED_GATES:
            _log.warning("featureGates: %r has no effect (%s)", name, _RETIRED_GATES[name])
            continue
        if name not in FEATURE_GATES:
            known = ", ".join(sorted(FEATURE_GATES))
            raise ConfigError(f"featureGates: unknown gate {name!r}; known gates: {known}")
        gates[name] = enabled
    return gates


def load_config(text: str | None, source: str = "--config-text") -> LoadedConfig:
    """Decode a configuration. Empty or None text gives the default configuration."""
    if text is None or not text.strip():
        _log.info(
            "no configuration given: using llm-d's default profile (queue-scorer 2, "
            "kv-cache-utilization-scorer 2, prefix-cache-scorer 3)"
        )
        return _decode(DEFAULT_CONFIG, "default configuration", is_default=True)
    return _decode(text, source, is_default=False)


def load_config_file(path: Path) -> LoadedConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    if not text.strip():
        raise ConfigError(f"{path}: the file is empty")
    return _decode(text, str(path), is_default=False)


def _decode(text: str, source: str, *, is_default: bool) -> LoadedConfig:
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML or JSON: {exc}") from None
    configs: list[tuple[int, dict[str, object]]] = []
    objectives: dict[str, InferenceObjective] = {}
    rewrites: dict[str, InferenceModelRewrite] = {}
    for index, document in enumerate(documents):
        if not isinstance(document, dict):
            raise ConfigError(f"{source}: the configuration must be a mapping (an object)")
        kind = document.get("kind")
        if kind in (OBJECTIVE_KIND, REWRITE_KIND):
            where = f"{source}: document {index + 1} ({kind})"
            resource = _resource(document, where)
            found: dict[str, Any] = objectives if kind == OBJECTIVE_KIND else rewrites
            if resource.metadata.name in found:
                raise ConfigError(f"{where}: a second {kind} named {resource.metadata.name!r}")
            found[resource.metadata.name] = resource
        else:
            configs.append((index, document))
    if len(configs) != 1:
        raise ConfigError(
            f"{source}: expected one {KIND} document, found {len(configs)}"
            + (" (other documents may only be InferenceObjective or InferenceModelRewrite)")
        )
    loaded = _decode_config(configs[0][1], source, text, is_default=is_default)
    return dataclasses.replace(
        loaded, objectives=tuple(objectives.values()), rewrites=tuple(rewrites.values())
    )


def _resource(document: dict[str, Any], where: str) -> InferenceObjective | InferenceModelRewrite:
    api_version = document.get("apiVersion")
    if api_version not in RESOURCE_API_VERSIONS:
        raise ConfigError(
            f"{where}: apiVersion must be one of {', '.join(RESOURCE_API_VERSIONS)}, "
            f"got {api_version!r}"
        )
    schema: type[InferenceObjective | InferenceModelRewrite] = (
        InferenceObjective if document.get("kind") == OBJECTIVE_KIND else InferenceModelRewrite
    )
    try:
        return msgspec.convert(document, schema)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{where}: {_where(exc)}") from None


def _decode_config(
    document: dict[str, Any], source: str, text: str, *, is_default: bool
) -> LoadedConfig:
    api_version = document.get("apiVersion")
    if api_version == API_VERSION_DEPRECATED:
        _log.warning("%s: apiVersion %s is deprecated; use %s", source, api_version, API_VERSION)
    elif api_version != API_VERSION:
        raise ConfigError(
            f"{source}: apiVersion must be {API_VERSION!r} (or the deprecated "
            f"{API_VERSION_DEPRECATED!r}), got {api_version!r}"
        )
    if document.get("kind") != KIND:
        raise ConfigError(f"{source}: kind must be {KIND!r}, got {document.get('kind')!r}")
    try:
        config = msgspec.convert(document, EndpointPickerConfig)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {_where(exc)}") from None
    for spec in config.plugins:
        if not spec.type:
            raise ConfigError(f"{source}: plugins: an entry named {spec.name!r} has no type")
        if not spec.name:
            spec.name = spec.type
    return LoadedConfig(config, _gates(config.feature_gates), source, text, is_default)


def _where(exc: msgspec.ValidationError) -> str:
    """msgspec says ``... - at `$.plugins[0]```; say ``at plugins[0]``."""
    message = str(exc)
    head, sep, path = message.rpartition(" - at `$")
    if not sep:
        return message
    path = path.rstrip("`").lstrip(".")
    return f"{head} at {path}" if path else head
