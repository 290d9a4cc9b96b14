"""Server credentials for a gateway's gRPC port: TLS, or mTLS when a client CA is configured.

The PEM files are read once, when the server is built: a gateway reloads nothing at run time,
so rotating a certificate means a rolling restart. A file that cannot be read, or that holds
no PEM block, fails start-up with a message naming its `JOBMESH_*` variable.
"""

from __future__ import annotations

import grpc

from shared.client.channel import read_pem  # ConfigError is a ValueError: start-up fails
from shared.config import Settings


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """None for plaintext (no certificate configured); else TLS credentials, which require
    and verify a client certificate when `tls_client_ca_file` is set."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    chain = read_pem(settings.tls_cert_file, "JOBMESH_TLS_CERT_FILE")
    key = read_pem(settings.tls_key_file, "JOBMESH_TLS_KEY_FILE")
    client_ca = None
    if settings.tls_client_ca_file is not None:
        client_ca = read_pem(settings.tls_client_ca_file, "JOBMESH_TLS_CLIENT_CA_FILE")
    return grpc.ssl_server_credentials([(key, chain)], root_certificates=client_ca,
                                       require_client_auth=client_ca is not None)
