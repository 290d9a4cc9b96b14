"""One gRPC channel per endpoint, with the retry policy and a record of whether it ever connected.

Retries (gRPC's own, from the service config) cover UNAVAILABLE on idempotent calls only: the
JobService reads and waits, CancelJob (cancelling twice changes nothing) and all of
ModelService. Submits and DeleteJob are not retried, since a lost reply may hide a success.
"""

from __future__ import annotations

import json
import threading

import grpc

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


class TrackedChannel:
    """An insecure channel to `target` (host:port) that remembers whether it was ever READY,
    so a DEADLINE_EXCEEDED can be told apart: no connection at all vs. a slow call."""

    def __init__(self, target: str):
        self.target = target
        self._ever_ready = threading.Event()
        self.channel = grpc.insecure_channel(target, options=[
            ("grpc.enable_retries", 1),
            ("grpc.service_config", SERVICE_CONFIG),
            ("grpc.primary_user_agent", USER_AGENT),
        ])
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
