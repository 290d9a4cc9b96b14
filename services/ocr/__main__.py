"""Run the OCR gateway: `python -m services.ocr [--port N]` (settings from JOBMESH_* env)."""

from __future__ import annotations

from shared.server.entry import gateway_main

SERVICES = ["jobmesh.ocr.v1.OcrService"]


def add_servicers(gw, server) -> None:
    from jobmesh.ocr.v1 import ocr_service_pb2_grpc

    from services.ocr.servicer import OcrServicer

    ocr_service_pb2_grpc.add_OcrServiceServicer_to_server(OcrServicer(gw), server)


def main(argv: list[str] | None = None) -> int:
    return gateway_main("ocr", SERVICES, add_servicers,
                        "jobmesh OCR gateway: OcrService (images, PDFs, TIFFs).", argv)


if __name__ == "__main__":
    raise SystemExit(main())
