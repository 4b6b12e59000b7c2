"""The option reference of docs/simulator.md, generated from the option table."""

from __future__ import annotations

from llmd_sim.config.fleet import apply_options
from llmd_sim.config.options import OPTIONS, Option
from llmd_sim.config.presets import PRESETS
from llmd_sim.config.schema import DEFAULT_PRESET, ServerConfig
from llmd_sim.config.values import parse_duration

__all__ = ["options_markdown"]


def options_markdown() -> str:
    """The option reference of docs/simulator.md, generated from OPTIONS and the defaults."""
    defaults = apply_options(ServerConfig(), PRESETS[DEFAULT_PRESET], "preset")
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
