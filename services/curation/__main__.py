"""Run the data curation gateway: `python -m services.curation [--port N]`."""

from __future__ import annotations

from shared.server.entry import gateway_main

SERVICES = ["jobmesh.curation.v1.CurationService"]


def add_servicers(gw, server) -> None:
    from jobmesh.curation.v1 import curation_service_pb2_grpc

    from services.curation.servicer import CurationServicer

    curation_service_pb2_grpc.add_CurationServiceServicer_to_server(CurationServicer(gw),
                                                                    server)


def main(argv: list[str] | None = None) -> int:
    return gateway_main("curation", SERVICES, add_servicers,
                        "jobmesh data curation gateway: CurationService (sharded filtering "
                        "and dedup pipelines, text scoring).", argv)


if __name__ == "__main__":
    raise SystemExit(main())
