"""The `python -m services.<domain>` entry point every gateway shares: flags, logging, metrics
port, then serve until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable

from shared import logs, metrics, tracing
from shared.config import GATEWAY_METRICS_PORTS, Settings
from shared.server.gateway import Gateway, serve


def build(domain: str, settings: Settings, address: str,
          add_servicers: Callable[[Gateway, object], None]):
    """(gateway, server, port) with the domain's servicers added; used by mains and tests."""
    tracing.configure_from_settings(f"jobmesh-gateway-{domain}", settings)
    gw = Gateway.from_settings(domain, settings)
    server, port = gw.create_server(address)
    add_servicers(gw, server)
    return gw, server, port


def gateway_main(domain: str, services: list[str], add_servicers, description: str,
                 argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m services.{domain}", description=(
        f"{description} Also serves JobService, ModelService, health and reflection on the "
        "same port. Configure with JOBMESH_* variables (see README)."))
    parser.add_argument("--host", help="bind address (default JOBMESH_HOST or 0.0.0.0)")
    parser.add_argument("--port", type=int, help="gRPC port (default JOBMESH_PORT or the "
                        "domain's port)")
    parser.add_argument("--metrics-port", type=int,
                        help=f"Prometheus port (default {GATEWAY_METRICS_PORTS[domain]}; "
                             "0 disables)")
    args = parser.parse_args(argv)
    settings = Settings()
    logs.configure(settings.log_level, settings.log_json)
    port = args.port if args.port is not None else settings.gateway_port(domain)
    mport = args.metrics_port if args.metrics_port is not None else (
        GATEWAY_METRICS_PORTS[domain] if settings.metrics_port < 0 else settings.metrics_port)
    metrics.serve(mport)

    async def run() -> None:
        gw, server, bound = build(domain, settings, f"{args.host or settings.host}:{port}",
                                  add_servicers)
        await serve(gw, server, bound, services)

    asyncio.run(run())
    return 0
