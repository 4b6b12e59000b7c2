"""Resolving a fleet: presets, ``defaults:``, server entries and flags, in that order."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from llmd_sim.config.options import BY_NAME
from llmd_sim.config.presets import PRESETS
from llmd_sim.config.schema import DEFAULT_PRESET, ConfigError, FleetConfig, ServerConfig
from llmd_sim.config.values import integer

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = ["apply_options", "build_fleet"]


def apply_options(config: ServerConfig, options: Mapping[str, object], where: str) -> ServerConfig:
    groups: dict[str, dict[str, Any]] = {}
    for key, raw in options.items():
        opt = BY_NAME.get(key)
        if opt is None:
            raise ConfigError(
                f"{where}: unknown option {key!r}; known options: {', '.join(sorted(BY_NAME))}"
            )
        try:
            value = opt.parse(raw)
        except ConfigError as exc:
            raise ConfigError(f"{where}: option {key!r}: {exc}") from None
        groups.setdefault(opt.group, {})[opt.attr] = value
    top = groups.pop("server", {})
    for group, values in groups.items():
        top[group] = dataclasses.replace(getattr(config, group), **values)
    return dataclasses.replace(config, **top)


def _validate(config: ServerConfig, where: str) -> None:
    cache, lat = config.cache, config.latency
    if (cache.num_blocks - 1) * cache.block_size < config.max_model_len:
        raise ConfigError(
            f"{where}: the KV cache ({cache.num_blocks} blocks of {cache.block_size} tokens, one "
            f"of them reserved) cannot hold one sequence of max-model-len "
            f"{config.max_model_len} tokens"
        )
    if lat.inter_token_latency <= 0:
        raise ConfigError(f"{where}: inter-token-latency must be positive")
    if config.max_loras > max(1, len(config.lora_modules)) and config.lora_modules:
        raise ConfigError(
            f"{where}: max-loras ({config.max_loras}) exceeds the "
            f"{len(config.lora_modules)} adapters in lora-modules"
        )
    clash = set(config.lora_modules) & set(config.model_names)
    if clash:
        raise ConfigError(f"{where}: LoRA adapter names clash with model names: {sorted(clash)}")
    if not 0 <= config.port <= 65535:
        raise ConfigError(f"{where}: port {config.port} is out of range")


def _server(
    layers: Sequence[tuple[str, Mapping[str, object]]], where: str, port: int
) -> ServerConfig:
    preset_name: object = DEFAULT_PRESET
    for _, layer in layers:
        preset_name = layer.get("preset", preset_name)
    if not isinstance(preset_name, str) or preset_name not in PRESETS:
        raise ConfigError(f"{where}: unknown preset {preset_name!r}; presets: {', '.join(PRESETS)}")
    config = apply_options(ServerConfig(port=port), PRESETS[preset_name], f"preset {preset_name}")
    for name, layer in layers:
        config = apply_options(config, layer, name)
    _validate(config, where)
    return config


def build_fleet(
    file: Mapping[str, object] | None = None,
    overrides: Mapping[str, object] | None = None,
    *,
    count: int | None = None,
    base_port: int = 8000,
) -> FleetConfig:
    """Resolve a fleet from an optional YAML document and command-line overrides.

    Servers without an explicit ``port`` take consecutive ports from ``base_port`` (port 0 asks
    the OS for a free port per server). ``count`` is the number of identical servers when no
    file lists them.
    """
    defaults, entries = _layout(dict(file or {}), count)
    layers = dict(overrides or {})
    servers: list[ServerConfig] = []
    origins: list[str] = []
    next_port = base_port
    for index, entry in enumerate(entries):
        where = f"servers[{index}]"
        made, explicit_port = _entry(where, entry, defaults, layers, next_port, len(servers))
        servers += [config for config, _ in made]
        origins += [origin for _, origin in made]
        if not explicit_port and next_port:
            next_port += len(made)
    _check_ports(servers, origins)
    return FleetConfig(servers=tuple(servers))


def _layout(
    file: dict[str, object], count: int | None
) -> tuple[Mapping[str, object], list[object]]:
    """The file's ``defaults`` and its server entries (``count`` identical ones without)."""
    unknown = set(file) - {"defaults", "servers"}
    if unknown:
        raise ConfigError(
            f"fleet file: unknown top-level keys {sorted(unknown)}; "
            "expected 'defaults' and 'servers'"
        )
    defaults = file.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ConfigError("fleet file: 'defaults' must be a mapping of options")
    entries = file.get("servers")
    if entries is None:
        entries = [{"count": count or 1}]
    elif count is not None:
        raise ConfigError("--count cannot be combined with a fleet file that lists servers")
    if not isinstance(entries, list) or not entries:
        raise ConfigError("fleet file: 'servers' must be a non-empty list")
    return defaults, entries


def _entry(
    where: str,
    entry: object,
    defaults: Mapping[str, object],
    overrides: Mapping[str, object],
    next_port: int,
    before: int,
) -> tuple[list[tuple[ServerConfig, str]], bool]:
    """The servers of one entry with where each came from, and whether it named its port.
    ``before`` servers precede it (each server's seed is offset by its index)."""
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a mapping of options, got {entry!r}")
    options = dict(entry)
    try:
        n = integer(1)(options.pop("count", 1))
    except ConfigError as exc:
        raise ConfigError(f"{where}: option 'count': {exc}") from None
    try:
        explicit_port = integer(0)(options.pop("port")) if "port" in options else None
    except ConfigError as exc:
        raise ConfigError(f"{where}: option 'port': {exc}") from None
    made: list[tuple[ServerConfig, str]] = []
    for i in range(n):
        if explicit_port is not None:
            port = explicit_port + i if explicit_port else 0
        else:
            port = next_port + i if next_port else 0
        layers = [("defaults", defaults), (where, options), ("command line", overrides)]
        config = _server(layers, where, port)
        config = dataclasses.replace(config, seed=config.seed + before + i)
        made.append((config, where if n == 1 else f"{where} (server {i + 1} of {n})"))
    return made, explicit_port is not None


def _check_ports(servers: Sequence[ServerConfig], origins: Sequence[str]) -> None:
    seen: dict[int, str] = {}
    for server, where in zip(servers, origins, strict=True):
        if server.port and server.port in seen:
            raise ConfigError(
                f"{where}: port {server.port} is already taken by {seen[server.port]}"
            )
        seen[server.port] = where
