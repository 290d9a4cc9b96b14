"""Run the OCR gateway: `python -m services.ocr [--port N]` (settings from JOBMESH_* env)."""

from __future__ import annotations

import argparse
import asyncio

from shared import logs, metrics
from shared.config import GATEWAY_METRICS_PORTS, Settings
from shared.server.gateway import Gateway, serve

SERVICES = ["jobmesh.ocr.v1.OcrService"]


def build(settings: Settings, address: str):
    """(gateway, server, port) with OcrService added; used by `main` and the tests."""
    from jobmesh.ocr.v1 import ocr_service_pb2_grpc

    from services.ocr.servicer import OcrServicer

    gw = Gateway.from_settings("ocr", settings)
    server, port = gw.create_server(address)
    ocr_service_pb2_grpc.add_OcrServiceServicer_to_server(OcrServicer(gw), server)
    return gw, server, port


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.ocr",
        description="jobmesh OCR gateway: OcrService, JobService, ModelService, health and "
                    "reflection on one gRPC port. Configure with JOBMESH_* variables "
                    "(see README).")
    parser.add_argument("--host", help="bind address (default JOBMESH_HOST or 0.0.0.0)")
    parser.add_argument("--port", type=int, help="gRPC port (default JOBMESH_PORT or 50051)")
    parser.add_argument("--metrics-port", type=int,
                        help="Prometheus port (default 9101; 0 disables)")
    args = parser.parse_args(argv)
    settings = Settings()
    logs.configure(settings.log_level, settings.log_json)
    port = args.port if args.port is not None else settings.gateway_port("ocr")
    mport = args.metrics_port if args.metrics_port is not None else (
        GATEWAY_METRICS_PORTS["ocr"] if settings.metrics_port < 0 else settings.metrics_port)
    metrics.serve(mport)

    async def run() -> None:
        gw, server, bound = build(settings, f"{args.host or settings.host}:{port}")
        await serve(gw, server, bound, SERVICES)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
