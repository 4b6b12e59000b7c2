"""``llmd-router demo``: simulated vLLM servers, the router and Envoy, on this machine.

The only place the router touches the simulator: a demo needs model servers and this is the
embedded default. Everything listens on 127.0.0.1 and free ports, except Envoy's listener, which
takes ``--port`` (8081 by default, llm-d's).
"""

from __future__ import annotations

from typing import Any

from llmd_router.app import EnvoyOptions, RouterOptions, Standalone
from llmd_router.cli.stopping import stop_on_signals
from llmd_router.datalayer import Endpoint
from llmd_router.proxy.bootstrap import ProxyConfig
from llmd_sim.config import build_fleet
from llmd_sim.fleet import Fleet

__all__ = ["run_demo"]

MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def curl_line(url: str) -> str:
    return (
        f"curl -N {url}/v1/chat/completions -H 'content-type: application/json' -d "
        f'\'{{"model": "{MODEL}", "stream": true, "max_tokens": 32, "messages": '
        f'[{{"role": "user", "content": "Tell me about routers."}}]}}\''
    )


async def run_demo(*, port: int, servers: int = 4, **router_options: Any) -> None:
    """``router_options``: RouterOptions fields (the scheduling configuration flags)."""
    stop = stop_on_signals()
    fleet = Fleet(build_fleet(overrides={"model": MODEL}, count=servers, base_port=0))
    await fleet.start()
    try:
        endpoints = tuple(
            Endpoint(name=f"sim-{s.index}", address="127.0.0.1", port=s.port) for s in fleet.servers
        )
        app = Standalone(
            RouterOptions(
                endpoints=endpoints,
                host="127.0.0.1",
                grpc_port=0,
                health_port=0,
                metrics_port=0,
                secure_serving=False,
                **router_options,
            ),
            EnvoyOptions(
                proxy=ProxyConfig(listen_host="127.0.0.1", listen_port=port, admin_port=0)
            ),
        )
        await app.start()
        try:
            print(
                f"{servers} simulated vLLM servers ({MODEL}) on ports "
                f"{', '.join(str(s.port) for s in fleet.servers)}"
            )
            print(f"router metrics: http://127.0.0.1:{app.router.metrics_server.port}/metrics")
            print(f"llmd-router is listening on {app.url}; try:\n\n  {curl_line(app.url)}\n")
            print("Ctrl-C stops everything.", flush=True)
            await app.run(stop)
        finally:
            await app.stop()
    finally:
        await fleet.close()
