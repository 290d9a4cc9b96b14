"""The kit every jobmesh process imports: config, errors, logging, metrics, the gRPC server kit,
the job system, the artifact store, the model registry and runners.

Generated protobuf modules live in `shared/gen/` (package `jobmesh.*`, not committed). Importing
`shared` puts that folder on `sys.path` and generates the stubs when they are missing or older
than the protos, so `import jobmesh.ocr.v1.ocr_service_pb2` works in every process.
"""

from shared.protogen import ensure_generated

ensure_generated()
