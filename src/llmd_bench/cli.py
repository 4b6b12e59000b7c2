"""``llmd-bench``: benchmarks that print figures (ratios and CPU per unit of work)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING

import uvloop

from llmd_bench import (
    metrics_render,
    prefix,
    router_overhead,
    scheduling,
    scraping,
    sim_capacity,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmd-bench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    cap = sub.add_parser(
        "sim-capacity", help="requests/s and CPU per streamed token of a simulated fleet"
    )
    cap.add_argument("--servers", type=int, default=16)
    cap.add_argument("--tokens", type=int, default=256, help="streamed output tokens per request")
    cap.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[64, 256, 512],
        help="closed-loop clients; one run per value",
    )
    cap.add_argument(
        "--time-scale",
        type=float,
        nargs="+",
        default=[1.0],
        help="simulator time scale; one run per value (small = CPU-bound)",
    )
    cap.add_argument("--preset", default="llama-8b-h100")
    cap.add_argument("--duration", type=float, default=20.0)
    cap.add_argument("--warmup", type=float, default=5.0)
    cap.add_argument("--json", type=Path, help="also write the runs here")
    render = sub.add_parser(
        "metrics-render",
        help="cost of one simulated /metrics page, ours against prometheus_client's renderer",
    )
    render.add_argument("--rounds", type=int, default=300)
    overhead = sub.add_parser(
        "router-overhead",
        help="time to first token and CPU that Envoy and the router add, side by side",
    )
    overhead.add_argument("--prompt-tokens", type=int, nargs="+", default=[1000, 10000])
    overhead.add_argument("--clients", type=int, nargs="+", default=[1, 16])
    overhead.add_argument("--output-tokens", type=int, default=256)
    overhead.add_argument("--requests", type=int, default=64, help="per phase")
    overhead.add_argument("--json", type=Path, help="also write the phases here")
    sched = sub.add_parser(
        "scheduling", help="time of one scheduling decision at 10 to 1,000 endpoints"
    )
    sched.add_argument(
        "--endpoints",
        type=_counts,
        default=(10, 100, 1000),
        help="comma-separated endpoint counts, e.g. 10,100,1000",
    )
    sched.add_argument("--decisions", type=int, default=2000, help="timed, per scenario and size")
    sched.add_argument("--warmup", type=int, default=200, help="untimed, before each run")
    sched.add_argument("--seed", type=int, default=0)
    sched.add_argument("--json", type=Path, help="also write the rows here")
    scrape = sub.add_parser(
        "scraping",
        help="router CPU spent polling every endpoint's /metrics, and the signals' age",
    )
    scrape.add_argument(
        "--endpoints",
        type=_counts,
        default=(10, 100, 300),
        help="comma-separated fleet sizes, e.g. 10,100,300",
    )
    scrape.add_argument("--window", type=float, default=15.0, help="measured seconds, per size")
    scrape.add_argument(
        "--warmup", type=float, default=3.0, help="seconds after the routers start, unmeasured"
    )
    scrape.add_argument(
        "--requests-per-server",
        type=int,
        default=3,
        help="completions sent to each server first, so its histograms have data",
    )
    scrape.add_argument("--seed", type=int, default=0, help="of the sampling instants")
    scrape.add_argument("--json", type=Path, help="also write the runs here")
    pre = sub.add_parser(
        "prefix",
        help="CPU per request of prefix matching (approximate, precise cold and seen), KV event "
        "ingestion rate, index memory",
    )
    pre.add_argument("--approx-tokens", type=_counts, default=(8000, 100_000))
    pre.add_argument("--precise-tokens", type=_counts, default=(1000, 10_000, 100_000))
    pre.add_argument("--rounds", type=int, default=9, help="requests timed per figure")
    pre.add_argument("--event-messages", type=int, default=5000)
    pre.add_argument("--entries", type=int, default=1_000_000, help="for the memory figure")
    pre.add_argument("--tokenizer", type=Path, default=prefix.TINY_MODEL, help="a model directory")
    pre.add_argument("--json", type=Path, help="also write the figures here")
    return parser


def _counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of integers: {text!r}"
        ) from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"endpoint counts must be positive: {text!r}")
    return counts


async def _capacity(args: argparse.Namespace) -> list[sim_capacity.CapacityRun]:
    runs = []
    for scale in args.time_scale:
        for workers in args.workers:
            run = await sim_capacity.measure(
                servers=args.servers,
                tokens=args.tokens,
                workers=workers,
                duration=args.duration,
                warmup=args.warmup,
                preset=args.preset,
                time_scale=scale,
            )
            print(sim_capacity.table([run]).splitlines()[-1], flush=True)
            runs.append(run)
    return runs


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.command == "sim-capacity":
        print(sim_capacity.table([]), flush=True)
        runs = uvloop.run(_capacity(args))
        if args.json:
            args.json.write_text(json.dumps(sim_capacity.as_dicts(runs), indent=2) + "\n")
    elif args.command == "router-overhead":
        phases = uvloop.run(
            router_overhead.measure_all(
                prompt_sizes=tuple(args.prompt_tokens),
                clients=tuple(args.clients),
                output_tokens=args.output_tokens,
                requests=args.requests,
            )
        )
        print(router_overhead.table(phases))
        print()
        print(router_overhead.against_floor(phases))
        if args.json:
            args.json.write_text(json.dumps([dataclasses.asdict(p) for p in phases], indent=2))
    elif args.command == "scheduling":
        rows = scheduling.measure_all(
            args.endpoints, args.decisions, seed=args.seed, warmup=args.warmup
        )
        print(scheduling.table(rows))
        print()
        print(scheduling.verdict(rows))
        if args.json:
            args.json.write_text(json.dumps([dataclasses.asdict(r) for r in rows], indent=2))
    elif args.command == "scraping":
        print(scraping.table([]), flush=True)
        scraped = uvloop.run(
            scraping.measure_all(
                args.endpoints,
                window=args.window,
                warmup=args.warmup,
                requests_per_server=args.requests_per_server,
                seed=args.seed,
                progress=True,
            )
        )
        if notes := scraping.verdict(scraped):
            print()
            print(notes)
        if args.json:
            args.json.write_text(
                json.dumps(
                    [
                        {
                            **dataclasses.asdict(r),
                            "scraping_cores": r.scraping_cores,
                            "polls_per_s_per_endpoint": r.polls_per_s_per_endpoint,
                            "us_per_poll": r.us_per_poll,
                            "stale_share": r.stale_share,
                        }
                        for r in scraped
                    ],
                    indent=2,
                )
                + "\n"
            )
    elif args.command == "prefix":
        figures = prefix.measure(
            approx_tokens=args.approx_tokens,
            precise_tokens=args.precise_tokens,
            rounds=args.rounds,
            event_messages=args.event_messages,
            entries=args.entries,
            tokenizer_dir=args.tokenizer,
        )
        print(prefix.table(figures))
        print()
        print(prefix.verdict(figures))
        if args.json:
            args.json.write_text(json.dumps(dataclasses.asdict(figures), indent=2) + "\n")
    elif args.command == "metrics-render":
        cost = metrics_render.measure(args.rounds)
        print(
            f"page: {cost.page_bytes:,} bytes\n"
            f"llmd-sim renderer:        {cost.ours_ms:.3f} ms per page\n"
            f"prometheus_client:        {cost.prometheus_client_ms:.3f} ms per page\n"
            f"ratio (prometheus/ours):  {cost.ratio:.1f}x"
        )


if __name__ == "__main__":
    main()
