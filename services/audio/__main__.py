"""Run the audio gateway: `python -m services.audio [--port N]`."""

from __future__ import annotations

from shared.server.entry import gateway_main

SERVICES = ["jobmesh.audio.v1.AudioService"]


def add_servicers(gw, server) -> None:
    from jobmesh.audio.v1 import audio_service_pb2_grpc

    from services.audio.servicer import AudioServicer

    audio_service_pb2_grpc.add_AudioServiceServicer_to_server(AudioServicer(gw), server)


def main(argv: list[str] | None = None) -> int:
    return gateway_main("audio", SERVICES, add_servicers,
                        "jobmesh audio gateway: AudioService (sound tagging, voice activity).",
                        argv)


if __name__ == "__main__":
    raise SystemExit(main())
