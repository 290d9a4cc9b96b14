"""gRPC health probe: `python -m shared.server.healthcheck HOST:PORT [--service NAME]` exits 0
when SERVING (used by docker-compose healthchecks and `make up`)."""

from __future__ import annotations

import argparse
import sys
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check(address: str, service: str = "", timeout: float = 2.0) -> str:
    """The status name (SERVING, NOT_SERVING, SERVICE_UNKNOWN) or UNREACHABLE."""
    with grpc.insecure_channel(address) as channel:
        try:
            resp = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return "SERVICE_UNKNOWN"
            return "UNREACHABLE"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)


def wait_serving(address: str, service: str = "", timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check(address, service, timeout=1.0) == "SERVING":
            return True
        time.sleep(0.2)
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.server.healthcheck",
                                     description="Exit 0 when the gRPC service is SERVING.")
    parser.add_argument("address", help="HOST:PORT of a gateway")
    parser.add_argument("--service", default="", help="service name ('' = the whole server)")
    parser.add_argument("--wait", type=float, default=0.0, help="keep trying this many seconds")
    args = parser.parse_args(argv)
    if args.wait:
        ok = wait_serving(args.address, args.service, args.wait)
        print("SERVING" if ok else check(args.address, args.service))
        return 0 if ok else 1
    status = check(args.address, args.service)
    print(status)
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main())
