"""gRPC gateways, one package per domain: a thin servicer and `convert`, the only pb2 code."""
