"""Run the model compression gateway: `python -m services.compression [--port N]`."""

from __future__ import annotations

from shared.server.entry import gateway_main

SERVICES = ["jobmesh.compression.v1.CompressionService"]


def add_servicers(gw, server) -> None:
    from jobmesh.compression.v1 import compression_service_pb2_grpc

    from services.compression.servicer import CompressionServicer

    compression_service_pb2_grpc.add_CompressionServiceServicer_to_server(
        CompressionServicer(gw), server)


def main(argv: list[str] | None = None) -> int:
    return gateway_main("compression", SERVICES, add_servicers,
                        "jobmesh model compression gateway: CompressionService (INT8, FP16, "
                        "2:4 sparsity, TensorRT) over the model registry.", argv)


if __name__ == "__main__":
    raise SystemExit(main())
