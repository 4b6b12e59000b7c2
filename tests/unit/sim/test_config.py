"""Fleet configuration: presets, layer precedence, ports, validation messages and the CLI."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from llmd_sim.cli import parse_args
from llmd_sim.config import (
    PRESETS,
    ConfigError,
    KVEventsConfig,
    ServerConfig,
    build_fleet,
    parse_duration,
)

if TYPE_CHECKING:
    from pathlib import Path


def one(
    file: dict[str, Any] | None = None, overrides: dict[str, Any] | None = None
) -> ServerConfig:
    fleet = build_fleet(file, overrides)
    assert len(fleet.servers) == 1
    return fleet.servers[0]


# --------------------------------------------------------------------------- presets


@pytest.mark.parametrize("name", sorted(PRESETS), ids=sorted(PRESETS))
def test_preset_supplies_its_values(name: str):
    preset = PRESETS[name]
    server = one({"defaults": {"preset": name}})
    assert server.preset == name
    assert server.model == preset["model"]
    assert server.max_model_len == preset["max-model-len"]
    assert server.max_num_seqs == preset["max-num-seqs"]
    assert server.latency.prefill_overhead == parse_duration(preset["prefill-overhead"])
    assert server.latency.prefill_time_per_token == parse_duration(preset["prefill-time-per-token"])
    assert server.latency.inter_token_latency == parse_duration(preset["inter-token-latency"])
    assert server.latency.time_factor_under_load == preset["time-factor-under-load"]
    assert server.cache.block_size == preset["block-size"]
    assert server.cache.num_blocks == preset["kv-cache-size"]


def test_default_preset_and_builtin_defaults():
    """With no configuration at all: the llama-8b-h100 preset over the built-in defaults."""
    server = one()
    assert server.preset == "llama-8b-h100"
    assert server.port == 8000
    assert server.host == "127.0.0.1"
    assert server.latency.inter_token_latency == pytest.approx(0.012)
    assert server.latency.prefill_overhead == pytest.approx(0.030)
    assert server.output_len_mean == 128  # not set by any preset: the built-in default
    assert server.mode == "random"
    assert server.kv_events.endpoint is None


def test_preset_overrides_builtin_defaults():
    server = one({"servers": [{"preset": "tiny"}]})
    assert server.max_model_len == 4096  # built-in default is 131072
    assert server.max_num_seqs == 16  # built-in default is 256
    assert server.model == "sim-tiny"
    assert server.latency.time_factor_under_load == 1.5


# --------------------------------------------------------------------------- precedence

PRECEDENCE = [
    # (id, file, command-line overrides, expected inter-token latency in seconds)
    ("preset-only", None, None, 0.012),
    ("defaults-preset", {"defaults": {"preset": "tiny"}}, None, 0.005),
    ("entry-preset", {"servers": [{"preset": "llama-70b-h100"}]}, None, 0.032),
    (
        "entry-preset-beats-defaults-preset",
        {"defaults": {"preset": "tiny"}, "servers": [{"preset": "llama-70b-h100"}]},
        None,
        0.032,
    ),
    (
        "defaults-option-beats-entry-preset",
        {"defaults": {"inter-token-latency": "7ms"}, "servers": [{"preset": "tiny"}]},
        None,
        0.007,
    ),
    (
        "entry-option-beats-defaults-option",
        {"defaults": {"inter-token-latency": "7ms"}, "servers": [{"inter-token-latency": "9ms"}]},
        None,
        0.009,
    ),
    (
        "command-line-beats-entry",
        {"servers": [{"inter-token-latency": "9ms"}]},
        {"inter-token-latency": "11ms"},
        0.011,
    ),
    (
        "command-line-beats-defaults",
        {"defaults": {"inter-token-latency": "7ms"}},
        {"inter-token-latency": "11ms"},
        0.011,
    ),
    ("command-line-preset", None, {"preset": "tiny"}, 0.005),
    (
        "command-line-preset-loses-to-entry-option",
        {"servers": [{"inter-token-latency": "9ms"}]},
        {"preset": "tiny"},
        0.009,
    ),
    (
        "command-line-preset-loses-to-defaults-option",
        {"defaults": {"inter-token-latency": "7ms"}},
        {"preset": "llama-70b-h100"},
        0.007,
    ),
]


@pytest.mark.parametrize(
    ("file", "overrides", "expected"),
    [case[1:] for case in PRECEDENCE],
    ids=[case[0] for case in PRECEDENCE],
)
def test_precedence(file: dict[str, Any] | None, overrides: dict[str, Any] | None, expected: float):
    """built-in < preset < defaults: < server entry < command line; a preset never beats an
    explicit option."""
    assert one(file, overrides).latency.inter_token_latency == pytest.approx(expected)


def test_preset_from_defaults_keeps_other_explicit_options():
    """Options a preset does not mention, and explicit ones it does, survive a later preset."""
    server = one(
        {
            "defaults": {"model": "my-model", "kv-cache-size": 5000},
            "servers": [{"preset": "tiny", "max-num-seqs": 3}],
        }
    )
    assert server.preset == "tiny"
    assert server.model == "my-model"  # tiny would say sim-tiny
    assert server.cache.num_blocks == 5000  # tiny would say 4096
    assert server.max_num_seqs == 3  # tiny would say 16
    assert server.max_model_len == 4096  # from tiny
    assert server.latency.prefill_overhead == pytest.approx(0.005)  # from tiny


def test_each_server_entry_resolves_independently():
    fleet = build_fleet(
        {
            "defaults": {"max-num-seqs": 8},
            "servers": [{"preset": "tiny"}, {"max-num-seqs": 3}, {}],
        },
        {"output-len-mean": "64"},
    )
    assert [s.preset for s in fleet.servers] == ["tiny", "llama-8b-h100", "llama-8b-h100"]
    assert [s.max_num_seqs for s in fleet.servers] == [8, 3, 8]
    assert [s.output_len_mean for s in fleet.servers] == [64, 64, 64]


OPTION_VALUES = [
    # (option, raw value, attribute path, parsed value)
    ("served-model-name", "a, b", "served_model_names", ("a", "b")),
    ("served-model-name", ["a", "b"], "served_model_names", ("a", "b")),
    ("lora-modules", [{"name": "x", "path": "/p"}, "y"], "lora_modules", ("x", "y")),
    ("labels", "role=decode,zone=a", "labels", {"role": "decode", "zone": "a"}),
    ("labels", {"role": "decode", "n": 1}, "labels", {"role": "decode", "n": "1"}),
    ("max-request-body-size-mb", 2, "max_request_body_bytes", 2 * 1024 * 1024),
    ("enable-prefix-caching", "off", "cache.enable_prefix_caching", False),
    ("enable-request-id-headers", "yes", "enable_request_id_headers", True),
    ("context-length-status", 413, "context_length_status", 413),
    ("kv-events-endpoint", "tcp://*:5557", "kv_events.endpoint", "tcp://*:5557"),
    ("kv-events-endpoint", "", "kv_events.endpoint", None),
    ("fault-health", "fail", "faults.health_fail", True),
    ("fault-error-rate", "0.25", "faults.error_rate", 0.25),
    ("time-scale", 0.1, "latency.time_scale", 0.1),
    ("role", "prefill", "role", "prefill"),
]


@pytest.mark.parametrize(
    ("option", "raw", "attr", "expected"),
    OPTION_VALUES,
    ids=[f"{o}={r!r}" for o, r, _, _ in OPTION_VALUES],
)
def test_option_values_are_parsed(option: str, raw: object, attr: str, expected: object):
    value: Any = one({"servers": [{option: raw}]})
    for part in attr.split("."):
        value = getattr(value, part)
    assert value == expected


def test_server_model_names_default_to_model():
    assert one({"servers": [{"model": "m"}]}).model_names == ("m",)
    named = one({"servers": [{"model": "m", "served-model-name": "a,b"}]})
    assert named.model_names == ("a", "b")


# --------------------------------------------------------------------------- count and ports

PORTS = [
    # (id, file, count, base_port, expected ports)
    ("single", None, None, 8000, [8000]),
    ("count-consecutive", None, 3, 9000, [9000, 9001, 9002]),
    ("count-any-free", None, 3, 0, [0, 0, 0]),
    ("defaults-only-file-with-count", {"defaults": {"preset": "tiny"}}, 2, 7000, [7000, 7001]),
    ("entries-consecutive", {"servers": [{"count": 2}, {}]}, None, 8000, [8000, 8001, 8002]),
    (
        "explicit-port-does-not-consume-base",
        {"servers": [{"count": 2}, {"port": 9100, "count": 2}, {}]},
        None,
        8000,
        [8000, 8001, 9100, 9101, 8002],
    ),
    ("explicit-port-first", {"servers": [{"port": 8001}, {}]}, None, 8000, [8001, 8000]),
    (
        "explicit-port-zero",
        {"servers": [{"port": 0, "count": 2}, {}]},
        None,
        8000,
        [0, 0, 8000],
    ),
    ("base-zero-with-entries", {"servers": [{"count": 2}, {}]}, None, 0, [0, 0, 0]),
]


@pytest.mark.parametrize(
    ("file", "count", "base_port", "expected"),
    [case[1:] for case in PORTS],
    ids=[case[0] for case in PORTS],
)
def test_count_and_port_allocation(
    file: dict[str, Any] | None, count: int | None, base_port: int, expected: list[int]
):
    fleet = build_fleet(file, count=count, base_port=base_port)
    assert [s.port for s in fleet.servers] == expected


def test_seed_adds_server_index():
    fleet = build_fleet({"defaults": {"seed": 10}, "servers": [{"count": 2}, {"seed": 100}]})
    assert [s.seed for s in fleet.servers] == [10, 11, 102]


@pytest.mark.parametrize(
    ("file", "base_port"),
    [
        ({"servers": [{"count": 2}, {"port": 8001}]}, 8000),
        ({"servers": [{"port": 9000}, {"port": 9000}]}, 8000),
        ({"servers": [{"port": 8999, "count": 2}, {}]}, 9000),
    ],
    ids=["explicit-hits-consecutive", "same-explicit", "explicit-count-hits-base"],
)
def test_duplicate_ports_rejected(file: dict[str, Any], base_port: int):
    with pytest.raises(ConfigError, match="is already taken by"):
        build_fleet(file, base_port=base_port)


def test_duplicate_port_error_names_the_entry():
    """The module docstring: impossible combinations name the server entry at fault."""
    with pytest.raises(ConfigError, match=r"servers\[1\]"):
        build_fleet({"servers": [{"port": 9000}, {"port": 9000}]})


@pytest.mark.parametrize(
    ("file", "count", "base_port", "message"),
    [
        ({"servers": [{"port": 70000}]}, None, 8000, r"servers\[0\]: port 70000 is out of range"),
        (None, 2, 65535, r"servers\[0\]: port 65536 is out of range"),
        ({"servers": [{}]}, 2, 8000, "--count cannot be combined"),
        ({"servers": []}, None, 8000, "non-empty list"),
        ({"servers": {"a": 1}}, None, 8000, "non-empty list"),
        ({"servers": ["tiny"]}, None, 8000, r"servers\[0\]: expected a mapping"),
        ({"defaults": ["x"]}, None, 8000, "'defaults' must be a mapping"),
    ],
    ids=[
        "port-too-high",
        "count-runs-past-65535",
        "count-with-listed-servers",
        "empty-servers",
        "servers-not-a-list",
        "entry-not-a-mapping",
        "defaults-not-a-mapping",
    ],
)
def test_fleet_shape_errors(
    file: dict[str, Any] | None, count: int | None, base_port: int, message: str
):
    with pytest.raises(ConfigError, match=message):
        build_fleet(file, count=count, base_port=base_port)


# --------------------------------------------------------------------------- error messages

ERRORS = [
    # (id, file, overrides, fragments the message must contain)
    ("unknown-option-entry", {"servers": [{}, {"bogus": 1}]}, None, ["servers[1]", "'bogus'"]),
    ("unknown-option-defaults", {"defaults": {"bogus": 1}}, None, ["defaults", "'bogus'"]),
    ("unknown-option-command-line", None, {"bogus": 1}, ["command line", "'bogus'"]),
    (
        "bad-value-entry",
        {"servers": [{}, {}, {"max-num-seqs": 0}]},
        None,
        ["servers[2]", "'max-num-seqs'", "at least 1"],
    ),
    (
        "bad-value-defaults",
        {"defaults": {"mode": "loud"}},
        None,
        ["defaults", "'mode'", "random, echo"],
    ),
    (
        "bad-value-command-line",
        None,
        {"fault-error-rate": "1.5"},
        ["command line", "'fault-error-rate'", "between 0.0 and 1.0"],
    ),
    (
        "bad-duration",
        {"servers": [{"prefill-overhead": "soon"}]},
        None,
        ["servers[0]", "'prefill-overhead'", "duration"],
    ),
    ("bad-bool", {"servers": [{"enable-prefix-caching": "maybe"}]}, None, ["true or false"]),
    ("bad-int", {"servers": [{"max-model-len": "big"}]}, None, ["'max-model-len'", "integer"]),
    ("bool-as-int", {"servers": [{"seed": True}]}, None, ["'seed'", "integer"]),
    ("duplicate-names", {"servers": [{"lora-modules": "a,a"}]}, None, ["unique"]),
    ("bad-labels", {"servers": [{"labels": "novalue"}]}, None, ["'labels'", "key=value"]),
    (
        "unknown-preset-entry",
        {"servers": [{}, {"preset": "nope"}]},
        None,
        ["servers[1]", "unknown preset", "'nope'", "tiny"],
    ),
    (
        "unknown-preset-command-line",
        {"servers": [{}]},
        {"preset": "nope"},
        ["servers[0]", "unknown preset", "'nope'"],
    ),
    ("unknown-top-level-key", {"server": []}, None, ["unknown top-level keys", "'server'"]),
    ("bad-count", {"servers": [{}, {"count": 0}]}, None, ["servers[1]", "'count'"]),
    ("bad-port", {"servers": [{"port": -1}]}, None, ["servers[0]", "'port'"]),
]


@pytest.mark.parametrize(
    ("file", "overrides", "fragments"),
    [case[1:] for case in ERRORS],
    ids=[case[0] for case in ERRORS],
)
def test_errors_name_option_and_entry(
    file: dict[str, Any] | None, overrides: dict[str, Any] | None, fragments: list[str]
):
    with pytest.raises(ConfigError) as info:
        build_fleet(file, overrides)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message


def test_unknown_option_lists_known_options():
    with pytest.raises(ConfigError, match=r"known options: .*max-num-seqs"):
        build_fleet({"servers": [{"max_num_seqs": 3}]})


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("blocks", "block_size", "max_model_len", "ok"),
    [
        # One block is reserved (vLLM's null block): N blocks hold (N - 1) * block_size tokens.
        (101, 16, 1600, True),
        (100, 16, 1600, False),
        (1601, 1, 1600, True),
        (2, 16, 16, True),
        (2, 16, 17, False),
    ],
    ids=["exactly-fits", "one-block-short", "block-size-1", "one-block", "one-token-over"],
)
def test_kv_cache_must_hold_one_max_length_sequence(
    blocks: int, block_size: int, max_model_len: int, ok: bool
):
    entry = {"kv-cache-size": blocks, "block-size": block_size, "max-model-len": max_model_len}
    if ok:
        assert one({"servers": [entry]}).cache.num_blocks == blocks
    else:
        with pytest.raises(ConfigError, match=r"servers\[0\].*max-model-len"):
            build_fleet({"servers": [entry]})


def test_kv_cache_check_uses_preset_values():
    """A smaller cache set explicitly must still fit the preset's max-model-len."""
    with pytest.raises(ConfigError, match="cannot hold one sequence"):
        build_fleet({"servers": [{"preset": "tiny", "kv-cache-size": 256}]})
    assert one({"servers": [{"preset": "tiny", "kv-cache-size": 257}]}).cache.num_blocks == 257


@pytest.mark.parametrize(
    ("entry", "clash"),
    [
        ({"lora-modules": "sim-tiny,sql"}, "sim-tiny"),
        ({"served-model-name": "a,b", "lora-modules": ["b"]}, "b"),
        ({"model": "m", "lora-modules": "x,m"}, "m"),
    ],
    ids=["model", "served-name", "explicit-model"],
)
def test_lora_names_must_not_clash_with_model_names(entry: dict[str, Any], clash: str):
    with pytest.raises(ConfigError, match=rf"servers\[0\]: LoRA .*clash.*'{clash}'"):
        build_fleet({"defaults": {"preset": "tiny"}, "servers": [entry]})


def test_lora_names_distinct_from_model_names_accepted():
    server = one({"servers": [{"lora-modules": "sql-lora,chat-lora", "max-loras": 2}]})
    assert server.lora_modules == ("sql-lora", "chat-lora")
    assert server.max_loras == 2


def test_max_loras_cannot_exceed_adapters():
    with pytest.raises(ConfigError, match="max-loras"):
        build_fleet({"servers": [{"lora-modules": "a", "max-loras": 2}]})


def test_inter_token_latency_must_be_positive():
    with pytest.raises(ConfigError, match="inter-token-latency must be positive"):
        build_fleet({"servers": [{"inter-token-latency": 0}]})


# --------------------------------------------------------------------------- durations

DURATIONS = [
    ("12ms", 0.012),
    ("1.5s", 1.5),
    ("250us", 250e-6),
    ("250µs", 250e-6),
    ("100ns", 100e-9),
    ("2m", 120.0),
    ("1h", 3600.0),
    (" 3 ms ", 0.003),
    (".5s", 0.5),
    ("1e3us", 0.001),
    ("7", 0.007),
    ("0.2", 0.0002),
    (5, 0.005),
    (2.5, 0.0025),
    (0, 0.0),
]


@pytest.mark.parametrize(("raw", "seconds"), DURATIONS, ids=[repr(d[0]) for d in DURATIONS])
def test_parse_duration(raw: object, seconds: float):
    assert parse_duration(raw) == pytest.approx(seconds, rel=1e-12, abs=0.0)


BAD_DURATIONS = [
    ("-5ms", "duration"),
    ("-1", "duration"),
    (-1, "negative"),
    (-0.5, "negative"),
    ("12 parsecs", "duration"),
    ("ms", "duration"),
    ("", "duration"),
    (None, "duration"),
    (True, "duration"),
    ([12], "duration"),
]


@pytest.mark.parametrize(("raw", "message"), BAD_DURATIONS, ids=[repr(d[0]) for d in BAD_DURATIONS])
def test_parse_duration_rejects(raw: object, message: str):
    with pytest.raises(ConfigError, match=message):
        parse_duration(raw)


# --------------------------------------------------------------------------- KV events

BINDS = [
    ("tcp://*:5557", True),
    ("tcp://[::]:5557", True),
    ("tcp://::1:5557", True),
    ("ipc:///tmp/kv.sock", True),
    ("inproc://kv", True),
    ("tcp://127.0.0.1:5557", False),
    ("tcp://router.local:5557", False),
    ("", False),
    (None, False),
]


@pytest.mark.parametrize(("endpoint", "binds"), BINDS, ids=[repr(b[0]) for b in BINDS])
def test_kv_events_binds(endpoint: str | None, binds: bool):
    """Bind when the address has ``*`` or ``::`` or is ipc:// or inproc://, else connect."""
    assert KVEventsConfig(endpoint=endpoint).binds is binds


# --------------------------------------------------------------------------- the command line


def test_parse_args_builds_the_fleet():
    args, fleet = parse_args(
        ["--count", "3", "--port", "0", "--preset", "tiny", "--max-num-seqs", "4"]
    )
    assert args.count == 3
    assert [s.port for s in fleet.servers] == [0, 0, 0]
    assert {s.preset for s in fleet.servers} == {"tiny"}
    assert {s.max_num_seqs for s in fleet.servers} == {4}
    assert [s.seed for s in fleet.servers] == [0, 1, 2]


def test_parse_args_defaults():
    _, fleet = parse_args([])
    assert [s.port for s in fleet.servers] == [8000]
    assert fleet.servers[0].preset == "llama-8b-h100"


def test_parse_args_flags_override_the_fleet_file(tmp_path: Path):
    path = tmp_path / "fleet.yaml"
    path.write_text(
        "defaults:\n  preset: tiny\n  inter-token-latency: 7ms\n"
        "servers:\n  - count: 2\n  - port: 9100\n    inter-token-latency: 9ms\n"
    )
    _, fleet = parse_args(["--config", str(path), "--port", "7000", "--prefill-overhead", "1ms"])
    assert [s.port for s in fleet.servers] == [7000, 7001, 9100]
    assert [s.latency.inter_token_latency for s in fleet.servers] == pytest.approx(
        [0.007, 0.007, 0.009]
    )
    assert [s.latency.prefill_overhead for s in fleet.servers] == pytest.approx([0.001] * 3)
    assert {s.preset for s in fleet.servers} == {"tiny"}


BAD_ARGV = [
    ("max-num-seqs-zero", ["--max-num-seqs", "0"], ["'max-num-seqs'", "at least 1"]),
    ("bad-duration", ["--inter-token-latency", "fast"], ["'inter-token-latency'", "duration"]),
    ("negative-duration", ["--prefill-overhead", "-1"], ["'prefill-overhead'"]),
    ("bad-choice", ["--mode", "loud"], ["'mode'", "random, echo"]),
    ("rate-out-of-range", ["--fault-error-rate", "2"], ["'fault-error-rate'", "between"]),
    ("bad-bool", ["--enable-prefix-caching", "sure"], ["'enable-prefix-caching'", "true or false"]),
    ("unknown-preset", ["--preset", "nope"], ["unknown preset", "'nope'"]),
    ("count-zero", ["--count", "0"], ["--count must be at least 1"]),
    ("port-not-int", ["--port", "x"], ["--port", "invalid int value"]),
    ("unknown-flag", ["--bogus", "1"], ["unrecognized arguments: --bogus"]),
    ("kv-too-small", ["--preset", "tiny", "--kv-cache-size", "10"], ["cannot hold one sequence"]),
]


@pytest.mark.parametrize(
    ("argv", "fragments"), [c[1:] for c in BAD_ARGV], ids=[c[0] for c in BAD_ARGV]
)
def test_parse_args_exits_2_with_a_clear_message(
    argv: list[str], fragments: list[str], capsys: pytest.CaptureFixture[str]
):
    with pytest.raises(SystemExit) as info:
        parse_args(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "llmd-sim: error:" in err
    for fragment in fragments:
        assert fragment in err


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "cannot read the fleet file"),
        ("- a\n- b\n", "expected a mapping with 'defaults' and 'servers'"),
        ("servers: [\n", "cannot read the fleet file"),
        ("servers:\n  - {}\n  - bogus: 1\n", "servers[1]: unknown option 'bogus'"),
    ],
    ids=["missing-file", "not-a-mapping", "bad-yaml", "unknown-option"],
)
def test_parse_args_bad_fleet_file(
    tmp_path: Path, content: str | None, fragment: str, capsys: pytest.CaptureFixture[str]
):
    path = tmp_path / "fleet.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SystemExit) as info:
        parse_args(["--config", str(path)])
    assert info.value.code == 2
    assert fragment in capsys.readouterr().err


def test_parse_args_list_presets(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as info:
        parse_args(["--list-presets"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for name in PRESETS:
        assert f"{name}:" in out
    assert "prefill-overhead: 30ms" in out
