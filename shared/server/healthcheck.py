"""gRPC health probe: `python -m shared.server.healthcheck HOST:PORT [--service NAME]` exits 0
when SERVING (used by docker-compose healthchecks and `make up`).

Against a gateway with TLS, pass `--tls-ca-file` (and `--tls-cert-file`/`--tls-key-file` when
it requires mTLS) or set the SDK's variables (`JOBMESH_TLS_CA_FILE`, ...): the probe resolves
TLS exactly as the SDK and CLI do."""

from __future__ import annotations

import argparse
import sys
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shared.client.channel import channel_credentials
from shared.client.settings import ClientSettings, ConfigError


def check(address: str, service: str = "", timeout: float = 2.0,
          credentials: grpc.ChannelCredentials | None = None, server_name: str = "") -> str:
    """The status name (SERVING, NOT_SERVING, SERVICE_UNKNOWN) or UNREACHABLE (which includes
    a failed TLS handshake). Plaintext unless `credentials` are given; `server_name` is the
    name the gateway's certificate must carry when `address` is not it (a pod probing itself
    on 127.0.0.1)."""
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    channel = (grpc.insecure_channel(address) if credentials is None
               else grpc.secure_channel(address, credentials, options=options))
    with channel:
        try:
            resp = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return "SERVICE_UNKNOWN"
            return "UNREACHABLE"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)


def wait_serving(address: str, service: str = "", timeout: float = 60.0,
                 credentials: grpc.ChannelCredentials | None = None,
                 server_name: str = "") -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check(address, service, 1.0, credentials, server_name) == "SERVING":
            return True
        time.sleep(0.2)
    return False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m shared.server.healthcheck",
                                     description="Exit 0 when the gRPC service is SERVING.")
    parser.add_argument("address", help="HOST:PORT of a gateway")
    parser.add_argument("--service", default="", help="service name ('' = the whole server)")
    parser.add_argument("--wait", type=float, default=0.0, help="keep trying this many seconds")
    parser.add_argument("--tls", action="store_true", default=None,
                        help="TLS with the system's trust store")
    parser.add_argument("--tls-ca-file", metavar="PEM", help="CA that signed the gateway's "
                        "certificate (default JOBMESH_TLS_CA_FILE; implies TLS)")
    parser.add_argument("--tls-cert-file", metavar="PEM", help="client certificate (mTLS)")
    parser.add_argument("--tls-key-file", metavar="PEM", help="the client certificate's key")
    parser.add_argument("--tls-server-name", metavar="NAME", default="",
                        help="name to verify in the gateway's certificate (default: the host "
                             "of ADDRESS)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        credentials = channel_credentials(ClientSettings.resolve(
            args.address, tls=args.tls, tls_ca_file=args.tls_ca_file,
            tls_cert_file=args.tls_cert_file, tls_key_file=args.tls_key_file))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    name = args.tls_server_name
    if args.wait:
        ok = wait_serving(args.address, args.service, args.wait, credentials, name)
        print("SERVING" if ok else check(args.address, args.service, 2.0, credentials, name))
        return 0 if ok else 1
    status = check(args.address, args.service, 2.0, credentials, name)
    print(status)
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main())
