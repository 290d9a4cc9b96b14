"""gRPC gateways, one package per domain: a thin servicer and `convert`, the only pb2 code."""

import shared  # noqa: F401, E402 - puts the generated `jobmesh.*` stubs on sys.path first
