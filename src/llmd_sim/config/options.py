"""The option table: every option's flag/key name, where it lands, how it is parsed."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

from llmd_sim.config.schema import ConfigError, FaultConfig
from llmd_sim.config.values import (
    boolean,
    choice,
    integer,
    label_map,
    mebibytes,
    name_list,
    number,
    optional_text,
    parse_duration,
    text,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = ["BY_NAME", "OPTIONS", "Option", "update_faults"]


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
    Option("preset", "server", "preset", text, "latency/cache/model preset (see --list-presets)"),
    Option("model", "server", "model", text, "base model name"),
    Option(
        "served-model-name",
        "server",
        "served_model_names",
        name_list,
        "names the base model answers to; the first is reported",
        "NAMES",
    ),
    Option("host", "server", "host", text, "address to listen on"),
    Option("max-model-len", "server", "max_model_len", integer(16), "context window in tokens"),
    Option("max-num-seqs", "server", "max_num_seqs", integer(1), "maximum running sequences"),
    Option(
        "max-waiting-queue-length",
        "server",
        "max_waiting",
        integer(0),
        "waiting-queue bound; beyond it requests get 429 (0: unbounded, as vLLM)",
    ),
    Option(
        "mode",
        "server",
        "mode",
        choice("random", "echo"),
        "random: generated words; echo: repeat the prompt",
    ),
    Option(
        "output-len-mean",
        "server",
        "output_len_mean",
        integer(1),
        "mean output length in random mode when EOS is not ignored",
    ),
    Option("seed", "server", "seed", integer(0), "random seed (server index is added)"),
    Option(
        "lora-modules", "server", "lora_modules", name_list, "LoRA adapter names served", "NAMES"
    ),
    Option("max-loras", "server", "max_loras", integer(1), "adapters that may run at once"),
    Option("role", "server", "role", optional_text, "role label, e.g. prefill or decode"),
    Option("labels", "server", "labels", label_map, "labels for the endpoints file", "K=V,..."),
    Option(
        "max-request-body-size-mb",
        "server",
        "max_request_body_bytes",
        mebibytes,
        "request bodies above this get 413",
    ),
    Option(
        "enable-request-id-headers",
        "server",
        "enable_request_id_headers",
        boolean,
        "echo x-request-id on every response (as vLLM's flag)",
    ),
    Option(
        "context-length-status",
        "server",
        "context_length_status",
        lambda v: int(choice("400", "413")(str(v))),
        "status for prompts longer than max-model-len: 400 as vLLM, or 413",
    ),
    Option(
        "enable-prompt-tokens-details",
        "server",
        "enable_prompt_tokens_details",
        boolean,
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
        number(1.0),
        "latency multiplier when max-num-seqs are running (linear in between)",
    ),
    Option(
        "time-scale",
        "latency",
        "time_scale",
        number(1e-6),
        "multiplies every latency (0.1 runs ten times faster)",
    ),
    Option("block-size", "cache", "block_size", integer(1), "tokens per KV block"),
    Option("kv-cache-size", "cache", "num_blocks", integer(1), "KV cache capacity in blocks"),
    Option(
        "enable-prefix-caching",
        "cache",
        "enable_prefix_caching",
        boolean,
        "reuse cached prompt blocks",
    ),
    Option("hash-seed", "cache", "hash_seed", str, "seed of the block hash chain"),
    Option(
        "kv-events-endpoint",
        "kv_events",
        "endpoint",
        optional_text,
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
        choice("map", "array"),
        "map: events as maps (vLLM after 0.23); array: positional (older vLLM)",
    ),
    Option(
        "fault-error-rate",
        "faults",
        "error_rate",
        number(0.0, 1.0),
        "fraction of inference requests answered with an error",
    ),
    Option(
        "fault-error-status",
        "faults",
        "error_status",
        integer(400),
        "HTTP status of injected errors",
    ),
    Option(
        "fault-hang-rate",
        "faults",
        "hang_rate",
        number(0.0, 1.0),
        "fraction of inference requests never answered",
    ),
    Option(
        "fault-drop-rate",
        "faults",
        "drop_rate",
        number(0.0, 1.0),
        "fraction of streamed responses whose connection is dropped mid-stream",
    ),
    Option(
        "fault-drop-after-tokens",
        "faults",
        "drop_after_tokens",
        integer(0),
        "tokens sent before a dropped stream is cut",
    ),
    Option(
        "fault-metrics",
        "faults",
        "metrics",
        choice("ok", "stale", "missing", "hang"),
        "stale: /metrics frozen; missing: 404; hang: never answered",
    ),
    Option(
        "fault-health",
        "faults",
        "health_fail",
        lambda v: choice("ok", "fail")(v) == "fail",
        "fail: /health answers 503",
    ),
)

BY_NAME: Final = {opt.name: opt for opt in OPTIONS}


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
