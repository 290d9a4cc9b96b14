"""One gRPC channel per endpoint, with the retry policy and a record of whether it ever connected.

Channels speak TLS when the settings ask for it (`ClientSettings.uses_tls`): the CA bundle
verifies the gateway, and a client certificate answers a gateway that requires mTLS.

Retries (gRPC's own, from the service config) cover UNAVAILABLE on idempotent calls only: the
JobService reads and waits, CancelJob (cancelling twice changes nothing) and all of
ModelService. Submits and DeleteJob are not retried, since a lost reply may hide a success.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import grpc

from shared.client.settings import (
    TLS_CA_FILE,
    TLS_CERT_FILE,
    TLS_KEY_FILE,
    ClientSettings,
    ConfigError,
)

RETRYABLE = [
    {"service": "jobmesh.jobs.v1.JobService", "method": m}
    for m in ("GetJob", "ListJobs", "WaitJob", "WatchJob", "CancelJob")
] + [{"service": "jobmesh.models.v1.ModelService"}]

RETRY_POLICY = {
    "maxAttempts": 4,
    "initialBackoff": "0.2s",
    "maxBackoff": "2s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}

# round_robin: behind a headless Service (infra/helm) DNS returns every gateway pod, and calls
# spread over all of them instead of pinning to the first (gRPC's default, pick_first).
SERVICE_CONFIG = json.dumps({"loadBalancingConfig": [{"round_robin": {}}],
                             "methodConfig": [{"name": RETRYABLE, "retryPolicy": RETRY_POLICY}]})
USER_AGENT = "jobmesh-client/0.1"
OPTIONS = [("grpc.enable_retries", 1), ("grpc.service_config", SERVICE_CONFIG),
           ("grpc.primary_user_agent", USER_AGENT)]


def read_pem(path: str | Path, variable: str) -> bytes:
    """The bytes of a PEM file; raises ConfigError naming `variable` when it is unreadable or
    holds no PEM block (a wrong path is the usual mistake, a DER file the second)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{variable}={path}: cannot read it ({exc.strerror})") from None
    if b"-----BEGIN " not in data:
        raise ConfigError(f"{variable}={path}: not a PEM file (no -----BEGIN line)")
    return data


def channel_credentials(settings: ClientSettings) -> grpc.ChannelCredentials | None:
    """None for plaintext; else TLS credentials: the CA file (or the system's trust store) to
    verify the gateway, and the client certificate when one is configured (mTLS)."""
    if not settings.uses_tls:
        return None
    ca = read_pem(settings.tls_ca_file, TLS_CA_FILE) if settings.tls_ca_file else None
    cert = key = None
    if settings.tls_cert_file and settings.tls_key_file:
        cert = read_pem(settings.tls_cert_file, TLS_CERT_FILE)
        key = read_pem(settings.tls_key_file, TLS_KEY_FILE)
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key,
                                        certificate_chain=cert)


def aio_channel(target: str, settings: ClientSettings) -> grpc.aio.Channel:
    """An asyncio channel to `target` with the retry policy, over TLS when configured."""
    credentials = channel_credentials(settings)
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=OPTIONS)
    return grpc.aio.secure_channel(target, credentials, options=OPTIONS)


class TrackedChannel:
    """A channel to `target` (host:port), over TLS when `credentials` are given, that
    remembers whether it was ever READY, so a DEADLINE_EXCEEDED can be told apart: no
    connection at all vs. a slow call."""

    def __init__(self, target: str, credentials: grpc.ChannelCredentials | None = None):
        self.target = target
        self._ever_ready = threading.Event()
        self.channel = (grpc.insecure_channel(target, options=OPTIONS) if credentials is None
                        else grpc.secure_channel(target, credentials, options=OPTIONS))
        self.channel.subscribe(self._on_state, try_to_connect=False)

    def _on_state(self, state: grpc.ChannelConnectivity) -> None:
        if state is grpc.ChannelConnectivity.READY:
            self._ever_ready.set()

    @property
    def ever_connected(self) -> bool:
        return self._ever_ready.is_set()

    def close(self) -> None:
        self.channel.unsubscribe(self._on_state)
        self.channel.close()
