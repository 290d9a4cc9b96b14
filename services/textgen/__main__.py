"""Run the text generation gateway: `python -m services.textgen [--port N]`."""

from __future__ import annotations

from shared.server.entry import gateway_main

SERVICES = ["jobmesh.textgen.v1.TextGenerationService"]


def add_servicers(gw, server) -> None:
    from jobmesh.textgen.v1 import textgen_service_pb2_grpc

    from services.textgen.servicer import TextGenerationServicer

    textgen_service_pb2_grpc.add_TextGenerationServiceServicer_to_server(
        TextGenerationServicer(gw), server)


def main(argv: list[str] | None = None) -> int:
    return gateway_main("textgen", SERVICES, add_servicers,
                        "jobmesh text generation gateway: TextGenerationService (SmolLM2).",
                        argv)


if __name__ == "__main__":
    raise SystemExit(main())
