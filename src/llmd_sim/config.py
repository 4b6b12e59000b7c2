"""Configuration of simulated model servers and fleets.

Every option has one kebab-case name that is both a command-line flag (``--max-num-seqs``) and a
key of the fleet YAML (``max-num-seqs: 64``). Where llm-d's inference simulator has an option with
the same meaning we use its name, so a user can move between the two.

A fleet file looks like::

    defaults:                 # options applied to every server
      preset: llama-8b-h100
      model: meta-llama/Llama-3.1-8B-Instruct
    servers:
      - count: 2              # two identical servers
        lora-modules: [sql-lora, chat-lora]
        labels: {llm-d.ai/role: decode}
      - preset: llama-70b-h100
        port: 9100

Precedence, lowest first: built-in defaults, the preset, ``defaults:``, the server entry, then
command-line flags. A preset only supplies defaults: any option given explicitly at any level
wins over it. Unknown keys, bad values and impossible combinations are errors that name the
option and the server entry at fault.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

__all__ = [
    "OPTIONS",
    "PRESETS",
    "CacheConfig",
    "ConfigError",
    "FaultConfig",
    "FleetConfig",
    "KVEventsConfig",
    "LatencyConfig",
    "Option",
    "ServerConfig",
    "build_fleet",
    "options_markdown",
    "parse_duration",
    "update_faults",
]


class ConfigError(ValueError):
    """A configuration value or combination is invalid. The message names what is wrong."""


@dataclass(frozen=True, slots=True)
class LatencyConfig:
    """Timing model, in seconds (see ``latency.py`` for the formulas)."""

    prefill_overhead: float = 0.030
    prefill_time_per_token: float = 0.0002
    prefill_time_std_dev: float = 0.0
    inter_token_latency: float = 0.012
    inter_token_latency_std_dev: float = 0.0
    time_factor_under_load: float = 2.0
    time_scale: float = 1.0


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """Paged KV cache: ``num_blocks`` blocks of ``block_size`` tokens (one reserved, as vLLM's
    null block)."""

    block_size: int = 16
    num_blocks: int = 31250
    enable_prefix_caching: bool = True
    hash_seed: str = "0"


@dataclass(frozen=True, slots=True)
class KVEventsConfig:
    """ZMQ publication of KV events. ``endpoint`` None disables it.

    ``endpoint`` follows vLLM's rule: the PUB socket binds when the address contains ``*`` or
    ``::`` or uses ``ipc://``/``inproc://``, and connects otherwise.
    """

    endpoint: str | None = None
    topic: str = "kv@{host}:{port}@{model}"
    encoding: Literal["map", "array"] = "map"
    hwm: int = 100_000

    @property
    def binds(self) -> bool:
        ep = self.endpoint or ""
        return "*" in ep or "::" in ep or ep.startswith(("ipc://", "inproc://"))


DEFAULT_PRESET: Final = "llama-8b-h100"

MetricsFault = Literal["ok", "stale", "missing", "hang"]


@dataclass(frozen=True, slots=True)
class FaultConfig:
    """Injected failures. Rates are probabilities in [0, 1] per inference request."""

    error_rate: float = 0.0
    error_status: int = 500
    hang_rate: float = 0.0
    drop_rate: float = 0.0
    drop_after_tokens: int = 1
    metrics: MetricsFault = "ok"
    health_fail: bool = False


Mode = Literal["random", "echo"]


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """One simulated vLLM server."""

    model: str = "meta-llama/Llama-3.1-8B-Instruct"
    served_model_names: tuple[str, ...] = ()
    host: str = "127.0.0.1"
    port: int = 8000
    preset: str = DEFAULT_PRESET
    max_model_len: int = 131072
    max_num_seqs: int = 256
    max_waiting: int = 0
    mode: Mode = "random"
    output_len_mean: int = 128
    seed: int = 0
    lora_modules: tuple[str, ...] = ()
    max_loras: int = 1
    role: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    max_request_body_bytes: int = 32 * 1024 * 1024
    enable_prompt_tokens_details: bool = False
    enable_request_id_headers: bool = False
    context_length_status: int = 400
    latency: LatencyConfig = LatencyConfig()
    cache: CacheConfig = CacheConfig()
    kv_events: KVEventsConfig = KVEventsConfig()
    faults: FaultConfig = FaultConfig()

    @property
    def model_names(self) -> tuple[str, ...]:
        """Names under which the base model is served; the first is the one reported."""
        return self.served_model_names or (self.model,)


@dataclass(frozen=True, slots=True)
class FleetConfig:
    servers: tuple[ServerConfig, ...]


# --------------------------------------------------------------------------- value parsers

_DURATION = re.compile(r"^\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ns|us|µs|ms|s|m|h)?\s*$")
_UNIT_SECONDS: Final = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_duration(value: object) -> float:
    """A duration in seconds from ``"12ms"``, ``"1.5s"``, ``"250us"`` or a bare number of ms."""
    if isinstance(value, bool):
        raise ConfigError(f"expected a duration such as '12ms', got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value) / 1000.0
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        unit = m.group(2)
        seconds = float(m.group(1)) * (_UNIT_SECONDS[unit] if unit else 1e-3)
    else:
        raise ConfigError(f"expected a duration such as '12ms' or '1.5s', got {value!r}")
    if not math.isfinite(seconds):
        raise ConfigError(f"a duration must be finite, got {value!r}")
    if seconds < 0:
        raise ConfigError(f"a duration cannot be negative, got {value!r}")
    return seconds


def _int(minimum: int) -> Callable[[object], int]:
    def parse(value: object) -> int:
        if isinstance(value, bool):
            raise ConfigError(f"expected an integer, got {value!r}")
        try:
            number = int(value) if isinstance(value, int | str) else None
        except ValueError:
            number = None
        if number is None:
            raise ConfigError(f"expected an integer, got {value!r}")
        if number < minimum:
            raise ConfigError(f"must be at least {minimum}, got {number}")
        return number

    return parse


def _float(minimum: float, maximum: float | None = None) -> Callable[[object], float]:
    def parse(value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ConfigError(f"expected a number, got {value!r}")
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"expected a number, got {value!r}") from None
        if number < minimum or (maximum is not None and number > maximum):
            bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
            raise ConfigError(f"must be {bound}, got {number}")
        return number

    return parse


def _bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {
        "true",
        "1",
        "yes",
        "on",
        "false",
        "0",
        "no",
        "off",
    }:
        return value.lower() in {"true", "1", "yes", "on"}
    raise ConfigError(f"expected true or false, got {value!r}")


def _str(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"expected a non-empty string, got {value!r}")
    return value


def _optional_str(value: object) -> str | None:
    if value is None or value == "":
        return None
    return _str(value)


def _choice(*choices: str) -> Callable[[object], str]:
    def parse(value: object) -> str:
        if value not in choices:
            raise ConfigError(f"expected one of {', '.join(choices)}, got {value!r}")
        assert isinstance(value, str)
        return value

    return parse


def _names(value: object) -> tuple[str, ...]:
    """A list of names: a YAML list, or a comma- or space-separated string."""
    items: list[object]
    if isinstance(value, str):
        items = [s for s in re.split(r"[,\s]+", value) if s]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise ConfigError(f"expected a list of names, got {value!r}")
    names: list[str] = []
    for item in items:
        # llm-d's simulator (and vLLM) describe adapters as {"name": ..., "path": ...}.
        name = item.get("name") if isinstance(item, dict) else item
        names.append(_str(name))
    if len(set(names)) != len(names):
        raise ConfigError(f"names must be unique, got {names}")
    return tuple(names)


def _labels(value: object) -> dict[str, str]:
    """``{key: value}`` in YAML, or ``key=value,key=value`` on the command line."""
    if isinstance(value, str):
        pairs = [p for p in value.split(",") if p]
        out: dict[str, str] = {}
        for pair in pairs:
            key, sep, val = pair.partition("=")
            if not sep or not key:
                raise ConfigError(f"expected key=value pairs, got {pair!r}")
            out[key.strip()] = val.strip()
        return out
    if isinstance(value, dict):
        return {_str(k): str(v) for k, v in value.items()}
    raise ConfigError(f"expected a mapping of labels, got {value!r}")


def _mib(value: object) -> int:
    return int(_float(0.001)(value) * 1024 * 1024)


# --------------------------------------------------------------------------- the option table


@dataclass(frozen=True, slots=True)
class Option:
    """One configuration option: its flag/key name, where it lands, and how to parse it."""

    name: str
    group: Literal["server", "latency", "cache", "kv_events", "faults"]
    attr: str
    parse: Callable[[object], Any]
    help: str
    metavar: str = ""


OPTIONS: Final[tuple[Option, ...]] = (
    Option("preset", "server", "preset", _str, "latency/cache/model preset (see --list-presets)"),
    Option("model", "server", "model", _str, "base model name"),
    Option(
        "served-model-name",
        "server",
        "served_model_names",
        _names,
        "names the base model answers to; the first is reported",
        "NAMES",
    ),
    Option("host", "server", "host", _str, "address to listen on"),
    Option("max-model-len", "server", "max_model_len", _int(16), "context window in tokens"),
    Option("max-num-seqs", "server", "max_num_seqs", _int(1), "maximum running sequences"),
    Option(
        "max-waiting-queue-length",
        "server",
        "max_waiting",
        _int(0),
        "waiting-queue bound; beyond it requests get 429 (0: unbounded, as vLLM)",
    ),
    Option(
        "mode",
        "server",
        "mode",
        _choice("random", "echo"),
        "random: generated words; echo: repeat the prompt",
    ),
    Option(
        "output-len-mean",
        "server",
        "output_len_mean",
        _int(1),
        "mean output length in random mode when EOS is not ignored",
    ),
    Option("seed", "server", "seed", _int(0), "random seed (server index is added)"),
    Option("lora-modules", "server", "lora_modules", _names, "LoRA adapter names served", "NAMES"),
    Option("max-loras", "server", "max_loras", _int(1), "adapters that may run at once"),
    Option("role", "server", "role", _optional_str, "role label, e.g. prefill or decode"),
    Option("labels", "server", "labels", _labels, "labels for the endpoints file", "K=V,..."),
    Option(
        "max-request-body-size-mb",
        "server",
        "max_request_body_bytes",
        _mib,
        "request bodies above this get 413",
    ),
    Option(
        "enable-request-id-headers",
        "server",
        "enable_request_id_headers",
        _bool,
        "echo x-request-id on every response (as vLLM's flag)",
    ),
    Option(
        "context-length-status",
        "server",
        "context_length_status",
        lambda v: int(_choice("400", "413")(str(v))),
        "status for prompts longer than max-model-len: 400 as vLLM, or 413",
    ),
    Option(
        "enable-prompt-tokens-details",
        "server",
        "enable_prompt_tokens_details",
        _bool,
        "report cached prompt tokens in usage.prompt_tokens_details (as vLLM's flag)",
    ),
    Option(
        "prefill-overhead",
        "latency",
        "prefill_overhead",
        parse_duration,
        "fixed part of TTFT",
        "DURATION",
    ),
    Option(
        "prefill-time-per-token",
        "latency",
        "prefill_time_per_token",
        parse_duration,
        "TTFT per uncached prompt token",
        "DURATION",
    ),
    Option(
        "prefill-time-std-dev",
        "latency",
        "prefill_time_std_dev",
        parse_duration,
        "TTFT jitter (normal, clamped to 0.3..1.7 x mean)",
        "DURATION",
    ),
    Option(
        "inter-token-latency",
        "latency",
        "inter_token_latency",
        parse_duration,
        "time between output tokens with one running sequence",
        "DURATION",
    ),
    Option(
        "inter-token-latency-std-dev",
        "latency",
        "inter_token_latency_std_dev",
        parse_duration,
        "inter-token jitter",
        "DURATION",
    ),
    Option(
        "time-factor-under-load",
        "latency",
        "time_factor_under_load",
        _float(1.0),
        "latency multiplier when max-num-seqs are running (linear in between)",
    ),
    Option(
        "time-scale",
        "latency",
        "time_scale",
        _float(1e-6),
        "multiplies every latency (0.1 runs ten times faster)",
    ),
    Option("block-size", "cache", "block_size", _int(1), "tokens per KV block"),
    Option("kv-cache-size", "cache", "num_blocks", _int(1), "KV cache capacity in blocks"),
    Option(
        "enable-prefix-caching",
        "cache",
        "enable_prefix_caching",
        _bool,
        "reuse cached prompt blocks",
    ),
    Option("hash-seed", "cache", "hash_seed", str, "seed of the block hash chain"),
    Option(
        "kv-events-endpoint",
        "kv_events",
        "endpoint",
        _optional_str,
        "ZMQ endpoint for KV events, e.g. tcp://127.0.0.1:5557 (connect) or tcp://*:5557 "
        "(bind; port offset by server index)",
        "ENDPOINT",
    ),
    Option(
        "kv-events-topic",
        "kv_events",
        "topic",
        str,
        "topic template; {host}, {port} and {model} are replaced",
    ),
    Option(
        "kv-events-format",
        "kv_events",
        "encoding",
        _choice("map", "array"),
        "map: events as maps (vLLM after 0.23); array: positional (older vLLM)",
    ),
    Option(
        "fault-error-rate",
        "faults",
        "error_rate",
        _float(0.0, 1.0),
        "fraction of inference requests answered with an error",
    ),
    Option(
        "fault-error-status", "faults", "error_status", _int(400), "HTTP status of injected errors"
    ),
    Option(
        "fault-hang-rate",
        "faults",
        "hang_rate",
        _float(0.0, 1.0),
        "fraction of inference requests never answered",
    ),
    Option(
        "fault-drop-rate",
        "faults",
        "drop_rate",
        _float(0.0, 1.0),
        "fraction of streamed responses whose connection is dropped mid-stream",
    ),
    Option(
        "fault-drop-after-tokens",
        "faults",
        "drop_after_tokens",
        _int(0),
        "tokens sent before a dropped stream is cut",
    ),
    Option(
        "fault-metrics",
        "faults",
        "metrics",
        _choice("ok", "stale", "missing", "hang"),
        "stale: /metrics frozen; missing: 404; hang: never answered",
    ),
    Option(
        "fault-health",
        "faults",
        "health_fail",
        lambda v: _choice("ok", "fail")(v) == "fail",
        "fail: /health answers 503",
    ),
)

_BY_NAME: Final = {opt.name: opt for opt in OPTIONS}


# --------------------------------------------------------------------------- presets

PRESETS: Final[dict[str, dict[str, object]]] = {
    # llm-d's suggested H100 figures (docs/latency-profiles.md of its simulator): TTFT 60-120 ms,
    # ITL 10-15 ms, prefill overhead 25-40 ms, 0.15-0.30 ms per prompt token. KV capacity: about
    # 500k tokens of free HBM at ~128 KB per token.
    "llama-8b-h100": {
        "model": "meta-llama/Llama-3.1-8B-Instruct",
        "max-model-len": 131072,
        "max-num-seqs": 256,
        "prefill-overhead": "30ms",
        "prefill-time-per-token": "0.2ms",
        "inter-token-latency": "12ms",
        "time-factor-under-load": 2.0,
        "block-size": 16,
        "kv-cache-size": 31250,
    },
    # 70B with tensor parallelism 4: TTFT 250-400 ms, ITL 25-40 ms, overhead 70-110 ms,
    # 0.60-0.90 ms per token; ~320 KB per token of KV over four GPUs' free memory.
    "llama-70b-h100": {
        "model": "meta-llama/Llama-3.1-70B-Instruct",
        "max-model-len": 131072,
        "max-num-seqs": 256,
        "prefill-overhead": "90ms",
        "prefill-time-per-token": "0.75ms",
        "inter-token-latency": "32ms",
        "time-factor-under-load": 2.0,
        "block-size": 16,
        "kv-cache-size": 32768,
    },
    # Small and quick, for tests and demos: a 64k-token cache fills up and evicts visibly.
    "tiny": {
        "model": "sim-tiny",
        "max-model-len": 4096,
        "max-num-seqs": 16,
        "prefill-overhead": "5ms",
        "prefill-time-per-token": "0.02ms",
        "inter-token-latency": "5ms",
        "time-factor-under-load": 1.5,
        "block-size": 16,
        "kv-cache-size": 4096,
    },
}


# --------------------------------------------------------------------------- building


def _apply(config: ServerConfig, options: Mapping[str, object], where: str) -> ServerConfig:
    groups: dict[str, dict[str, Any]] = {}
    for key, raw in options.items():
        opt = _BY_NAME.get(key)
        if opt is None:
            raise ConfigError(
                f"{where}: unknown option {key!r}; known options: {', '.join(sorted(_BY_NAME))}"
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
    config = _apply(ServerConfig(port=port), PRESETS[preset_name], f"preset {preset_name}")
    for name, layer in layers:
        config = _apply(config, layer, name)
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
    overrides = dict(overrides or {})
    file = dict(file or {})
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

    servers: list[ServerConfig] = []
    origins: list[str] = []
    next_port = base_port
    for index, entry in enumerate(entries):
        where = f"servers[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected a mapping of options, got {entry!r}")
        options = dict(entry)
        try:
            n = _int(1)(options.pop("count", 1))
        except ConfigError as exc:
            raise ConfigError(f"{where}: option 'count': {exc}") from None
        try:
            explicit_port = _int(0)(options.pop("port")) if "port" in options else None
        except ConfigError as exc:
            raise ConfigError(f"{where}: option 'port': {exc}") from None
        for i in range(n):
            if explicit_port is not None:
                port = explicit_port + i if explicit_port else 0
            else:
                port = next_port + i if next_port else 0
            layers = [("defaults", defaults), (where, options), ("command line", overrides)]
            config = _server(layers, where, port)
            servers.append(dataclasses.replace(config, seed=config.seed + len(servers)))
            origins.append(where if n == 1 else f"{where} (server {i + 1} of {n})")
        if explicit_port is None and next_port:
            next_port += n
    seen: dict[int, str] = {}
    for server, where in zip(servers, origins, strict=True):
        if server.port and server.port in seen:
            raise ConfigError(
                f"{where}: port {server.port} is already taken by {seen[server.port]}"
            )
        seen[server.port] = where
    return FleetConfig(servers=tuple(servers))


_FAULT_OPTIONS: Final = {opt.attr: opt for opt in OPTIONS if opt.group == "faults"}


def update_faults(faults: FaultConfig, changes: Mapping[str, object]) -> FaultConfig:
    """``faults`` with ``changes`` applied: FaultConfig field names (``error_rate``), values
    checked by the same parsers as the options; ``health_fail`` also takes true/false."""
    parsed: dict[str, Any] = {}
    for key, value in changes.items():
        option = _FAULT_OPTIONS.get(key)
        if option is None:
            raise ConfigError(f"unknown fault {key!r}; known: {', '.join(sorted(_FAULT_OPTIONS))}")
        try:
            parsed[key] = (
                value if key == "health_fail" and isinstance(value, bool) else option.parse(value)
            )
        except ConfigError as exc:
            raise ConfigError(f"fault {key!r}: {exc}") from None
    return dataclasses.replace(faults, **parsed)


def options_markdown() -> str:
    """The option reference of docs/simulator.md, generated from OPTIONS and the defaults."""
    defaults = _apply(ServerConfig(), PRESETS[DEFAULT_PRESET], "preset")
    rows = ["| option (flag and YAML key) | default | meaning |", "|---|---|---|"]
    for opt in OPTIONS:
        holder = defaults if opt.group == "server" else getattr(defaults, opt.group)
        value = getattr(holder, opt.attr)
        rows.append(f"| `{opt.name}` | {_shown(opt, value)} | {opt.help} |")
    return "\n".join(rows)


def _shown(opt: Option, value: object) -> str:
    if opt.parse is parse_duration:
        assert isinstance(value, float)
        return f"{value * 1000:g}ms"
    if opt.attr == "max_request_body_bytes":
        assert isinstance(value, int)
        return str(value // (1024 * 1024))
    if opt.attr == "health_fail":
        return "fail" if value else "ok"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple | dict):
        return ",".join(value) if value else "(none)"
    return "(none)" if value is None or value == "" else str(value)
