"""``llmd-sim``: run a fleet of simulated vLLM servers until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvloop
import yaml

from llmd_sim.config import OPTIONS, PRESETS, ConfigError, FleetConfig, build_fleet
from llmd_sim.fleet import Fleet

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["main", "parse_args"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmd-sim",
        description="Simulated vLLM servers: OpenAI API, vLLM metrics and KV events, a latency "
        "and prefix-cache model, fault injection. Many servers run in one process.",
    )
    parser.add_argument(
        "--count", type=int, default=None, help="number of identical servers (default 1)"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=8000,
        help="port of the first server; the others follow (0: any free ports)",
    )
    parser.add_argument("--config", type=Path, help="fleet YAML (see docs/simulator.md)")
    parser.add_argument(
        "--endpoints-file", type=Path, help="write the fleet in llm-d's endpoints-file format here"
    )
    parser.add_argument("--list-presets", action="store_true", help="show presets and exit")
    parser.add_argument("--log-level", default="WARNING", help="Python log level")
    group = parser.add_argument_group("server options (also keys of the fleet YAML)")
    for option in OPTIONS:
        group.add_argument(
            f"--{option.name}",
            dest=f"opt:{option.name}",
            default=argparse.SUPPRESS,
            metavar=option.metavar or "VALUE",
            help=option.help,
        )
    return parser


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, FleetConfig]:
    """Parse the command line into arguments and a resolved fleet. Exits on errors."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.list_presets:
        print(yaml.safe_dump(PRESETS, sort_keys=False), end="")
        raise SystemExit(0)
    overrides: dict[str, Any] = {k[4:]: v for k, v in vars(args).items() if k.startswith("opt:")}
    document: dict[str, Any] | None = None
    if args.config is not None:
        try:
            loaded = yaml.safe_load(args.config.read_text())
        except (OSError, yaml.YAMLError) as exc:
            parser.error(f"cannot read the fleet file {args.config}: {exc}")
        if loaded is not None and not isinstance(loaded, dict):
            parser.error(f"{args.config}: expected a mapping with 'defaults' and 'servers'")
        document = loaded
    if args.count is not None and args.count < 1:
        parser.error("--count must be at least 1")
    try:
        fleet = build_fleet(document, overrides, count=args.count, base_port=args.port)
    except ConfigError as exc:
        parser.error(str(exc))
    return args, fleet


def _write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent or Path("."), prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    Path(tmp).replace(path)


async def _run(args: argparse.Namespace, config: FleetConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    fleet = Fleet(config)
    await fleet.start()
    try:
        for server in fleet.servers:
            c = server.config
            extra = f"  kv-events={server.kv_topic}" if server.kv_topic else ""
            lora = f"  lora={','.join(c.lora_modules)}" if c.lora_modules else ""
            print(
                f"sim-{server.index}  {server.url}  model={c.model_names[0]}  "
                f"preset={c.preset}{lora}{extra}",
                flush=True,
            )
        if args.endpoints_file is not None:
            _write_atomically(
                args.endpoints_file, yaml.safe_dump(fleet.endpoints_document(), sort_keys=False)
            )
            print(f"endpoints file: {args.endpoints_file}", flush=True)
        print(f"{len(fleet.servers)} simulated server(s) ready; Ctrl-C to stop", flush=True)
        await stop.wait()
    finally:
        await fleet.close()


def main(argv: Sequence[str] | None = None) -> None:
    args, config = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        uvloop.run(_run(args, config))
    except OSError as exc:
        print(f"llmd-sim: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
