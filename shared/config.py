"""Typed settings read from `JOBMESH_*` environment variables; bad values fail at start-up.

Every process builds one `Settings()`; tests pass overrides as keyword arguments.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DOMAIN_PORTS = {"ocr": 50051, "audio": 50052, "textgen": 50053, "curation": 50054,
                "compression": 50055}
GATEWAY_METRICS_PORTS = {"ocr": 9101, "audio": 9102, "textgen": 9103, "curation": 9104,
                         "compression": 9105}
WORKER_METRICS_PORTS = {"ocr": 9201, "audio": 9202, "textgen": 9203, "curation": 9204,
                        "compression": 9205}


class Settings(BaseSettings):
    """All knobs of a gateway or worker. Each field maps to `JOBMESH_<FIELD>`."""

    model_config = SettingsConfigDict(env_prefix="JOBMESH_", extra="ignore", frozen=True)

    # Redis: Celery broker and job store. Local mode uses its own DB index so it never clobbers
    # whatever else uses the machine's Redis.
    redis_url: str = "redis://127.0.0.1:6379/5"

    # S3 / MinIO
    s3_endpoint: str = "127.0.0.1:9000"
    s3_public_endpoint: str = ""  # host:port clients use for presigned URLs; default s3_endpoint
    s3_access_key: str = "jobmesh"
    s3_secret_key: str = "jobmesh-secret"
    s3_secure: bool = False
    s3_region: str = "us-east-1"
    artifacts_bucket: str = "jobmesh-artifacts"
    models_bucket: str = "jobmesh-models"

    # Auth: a YAML file `key: {tenant: t, role: tenant|admin}`, or inline `key=tenant:role,...`.
    api_keys_file: Path | None = None
    api_keys: str = ""

    # gRPC gateway
    host: str = "0.0.0.0"
    port: int = Field(default=0, ge=0, le=65535)  # 0 = the domain's default port
    metrics_port: int = Field(default=-1, ge=-1, le=65535)  # -1 = domain default, 0 = off
    # TLS on the gRPC port: server certificate chain and key (PEM), both or neither; plaintext
    # when unset (the local default). With tls_client_ca_file set, every client must present a
    # certificate that CA signed (mTLS). Read once at start-up: new certificates need a restart.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    max_message_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    max_upload_bytes: int = Field(default=200 * 1024 * 1024, ge=1024)
    max_image_pixels: int = Field(default=40_000_000, ge=64)  # per image or document page
    max_pages: int = Field(default=200, ge=1, le=10_000)  # per document
    pdf_dpi: int = Field(default=150, ge=50, le=600)  # PDF pages are rendered at this
    sync_timeout_s: float = Field(default=60.0, gt=0)  # cap when the client sets no deadline
    shutdown_grace_s: float = Field(default=5.0, ge=0)
    readiness_poll_s: float = Field(default=1.0, gt=0)
    presign_expiry_s: int = Field(default=900, ge=1, le=7 * 24 * 3600)
    janitor_interval_s: float = Field(default=30.0, gt=0)  # artifact and batch expiry sweeps

    # Audio inputs (checked from the header at the gateway, again while decoding at the worker)
    audio_max_seconds: float = Field(default=4 * 3600.0, gt=0)
    audio_min_rate: int = Field(default=4000, ge=1000)
    audio_max_rate: int = Field(default=384_000, ge=8000)
    # A SubmitTranscribe job longer than this runs as one task per chunk, cut in silence.
    audio_chunk_seconds: float = Field(default=600.0, ge=1)
    # Sync calls' inline inputs larger than this go to the worker through S3, not Redis (0: off).
    inline_stage_bytes: int = Field(default=256 * 1024, ge=0)
    # Synthesized WAVs larger than this are stored as artifacts and returned by reference.
    audio_inline_output_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)

    # Cross-request batching of sync calls at the gateway (1 = off).
    coalesce_max_batch: int = Field(default=8, ge=1, le=256)
    coalesce_delay_ms: float = Field(default=5.0, ge=0, le=1000)

    # Jobs. Gateways send work to the first of these queue devices with a live worker.
    queue_preference: str = "gpu,cpu"
    retention_s: int = Field(default=7 * 24 * 3600, ge=60)
    max_deliveries: int = Field(default=3, ge=1)
    # A job whose task never reached the broker (the gateway lost Redis between creating the
    # record and queueing the task) FAILS with BACKEND_UNAVAILABLE after this long.
    dispatch_grace_s: float = Field(default=60.0, gt=0)
    # A job still QUEUED this long after its creation whose task message is in none of its
    # queue's lists nor kombu's unacked hash (a worker killed between BRPOP and its unacked
    # write took it) FAILS with WORKER_LOST. Keep it well below the visibility timeout.
    lost_message_grace_s: float = Field(default=120.0, gt=0)
    consumer_ttl_s: float = Field(default=6.0, gt=0)  # a worker is live while its beat is fresher

    # Per-tenant limits, shared by all gateway replicas through Redis (shared/server/quotas.py,
    # shared/jobs/quota.py). 0 = off, the default: the right numbers depend on the deployment,
    # so an operator opts in. An API key's YAML entry may override each (`rate_per_s`,
    # `rate_burst`, `max_active_jobs`; 0 there exempts that key). Admin keys are limited alike.
    tenant_rate_per_s: float = Field(default=0.0, ge=0)  # authenticated RPCs per second
    tenant_rate_burst: int = Field(default=0, ge=0)  # calls at once; 0 = one second's worth
    tenant_max_active_jobs: int = Field(default=0, ge=0)  # QUEUED/RUNNING/CANCELLING jobs

    # Batch jobs (CreateBatch): manifest limits, chunking, completion window.
    batch_max_lines: int = Field(default=50_000, ge=1)
    batch_max_bytes: int = Field(default=200 * 1024 * 1024, ge=1024)  # the manifest
    batch_chunk_lines: int = Field(default=16, ge=1, le=10_000)  # lines per worker task
    batch_window_s: int = Field(default=24 * 3600, ge=1)  # default completion window
    batch_priority: int = Field(default=9, ge=0, le=9)  # kombu/Redis: 0 first, 9 last

    # Workers
    device: str = "cpu"  # queue suffix: cpu | gpu
    task_time_limit_s: int = Field(default=300, ge=1)
    visibility_timeout_s: int = Field(default=0, ge=0)  # 0 = 2 x task_time_limit_s
    unacked_restore_interval_s: float = Field(default=5.0, gt=0)
    worker_concurrency: int = Field(default=1, ge=1)
    model_cache_dir: Path = Path.home() / ".cache" / "jobmesh" / "models"
    model_refresh_s: float = Field(default=10.0, ge=0)  # how often workers re-read `serving`
    providers: str = ""  # comma list overriding EP choice, e.g. "CPUExecutionProvider"
    diagnostics: bool = False  # registers jobmesh.diag.v1.* tasks (tests, benchmarks)

    # Tracing (OpenTelemetry), off unless one is set: OTLP/gRPC collector host:port, or a file
    # that receives finished spans as JSON lines (tests, debugging).
    otlp_endpoint: str = ""
    trace_file: str = ""

    log_level: str = "INFO"
    log_json: bool = True

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v not in ("cpu", "gpu"):
            raise ValueError("JOBMESH_DEVICE must be cpu or gpu")
        return v

    @field_validator("tls_cert_file", "tls_key_file", "tls_client_ca_file", mode="before")
    @classmethod
    def _unset_when_empty(cls, v):
        return None if v == "" else v  # `JOBMESH_TLS_CERT_FILE=` in a compose file means unset

    @model_validator(mode="after")
    def _tls(self) -> Settings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("JOBMESH_TLS_CERT_FILE and JOBMESH_TLS_KEY_FILE go together: "
                             "set both for TLS, or neither for plaintext")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("JOBMESH_TLS_CLIENT_CA_FILE (mTLS) needs JOBMESH_TLS_CERT_FILE "
                             "and JOBMESH_TLS_KEY_FILE")
        return self

    def gateway_port(self, domain: str) -> int:
        return self.port or DOMAIN_PORTS[domain]

    def queue_devices(self) -> tuple[str, ...]:
        devices = tuple(d.strip() for d in self.queue_preference.split(",") if d.strip())
        if not devices or any(d not in ("cpu", "gpu") for d in devices):
            raise ValueError("JOBMESH_QUEUE_PREFERENCE must list cpu and/or gpu, e.g. gpu,cpu")
        return devices

    def visibility_timeout(self) -> int:
        return self.visibility_timeout_s or 2 * self.task_time_limit_s

    def queue(self, domain: str) -> str:
        return f"{domain}.{self.device}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
