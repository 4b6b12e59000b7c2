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

from llmd_sim.config.fleet import build_fleet
from llmd_sim.config.options import OPTIONS, Option, update_faults
from llmd_sim.config.presets import PRESETS
from llmd_sim.config.reference import options_markdown
from llmd_sim.config.schema import (
    CacheConfig,
    ConfigError,
    FaultConfig,
    FleetConfig,
    KVEventsConfig,
    LatencyConfig,
    ServerConfig,
)
from llmd_sim.config.values import parse_duration

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
