"""`ArtifactStore`: put/get/stat/presign/delete over the `minio` SDK, with sha256 recorded on
write and verified on read, and S3 failures classified by HTTP status into our error tree.

Tenant data lives under `tenants/<tenant>/...`; `tenant_key` refuses names that would escape it.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import timedelta

import urllib3
from minio import Minio
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError

from shared.errors import IntegrityError, InvalidArgument, NotFound, Unavailable

_SAFE_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=-]{0,200}$")
# A segment of an object key a client may refer to (the curation data space lets clients name
# paths, so this is wider than `_SAFE_PART`, which names the parts the mesh builds itself).
_KEY_SEGMENT = re.compile(r"[A-Za-z0-9._=-]{1,255}")
SHA_META = "sha256"  # stored as x-amz-meta-sha256


@dataclass(frozen=True)
class ArtifactRef:
    bucket: str
    key: str
    sha256: str = ""
    size: int = 0
    content_type: str = "application/octet-stream"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ArtifactRef:
        return cls(**{k: d[k] for k in ("bucket", "key", "sha256", "size", "content_type")
                      if k in d})


def tenant_key(tenant: str, *parts: str) -> str:
    """`tenants/<tenant>/<parts...>`; each part must be a plain name (no `/`, no `..`)."""
    for p in (tenant, *parts):
        # fullmatch: `$` would also match before a trailing newline ("a\n" is not a name).
        if not _SAFE_PART.fullmatch(p) or ".." in p:
            raise InvalidArgument.for_field("key", f"unsafe path component {p!r}")
    return "/".join(("tenants", tenant, *parts))


def check_key(key: str, field: str) -> None:
    """Refuses, as INVALID_ARGUMENT on `field`, an object key that is not a plain relative path
    of plain names: `..` or `.` segments, percent-escapes, backslashes, NUL and other control
    characters, a leading `/` or empty segments. Every key the mesh hands out passes (built by
    `tenant_key`, or from curation's checked data paths); a client sending anything else is
    probing, and the object store must never be the one to interpret it."""
    parts = key.split("/")
    bad = next((p for p in parts if not _KEY_SEGMENT.fullmatch(p) or p in (".", "..")), None)
    if not key or bad is not None:
        raise InvalidArgument.for_field(
            field, f"is not a plain object key (segment {bad!r}): use the ref CreateUpload "
                   "returned")


def owned_by(tenant: str, key: str) -> bool:
    """True when `key` is inside the tenant's prefix and cannot climb out of it."""
    prefix = f"tenants/{tenant}/"
    return key.startswith(prefix) and ".." not in key.split("/") and "//" not in key


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _status(exc: Exception) -> int:
    if isinstance(exc, S3Error):
        return exc.response.status if exc.response is not None else 0
    if isinstance(exc, InvalidResponseError):
        return int(getattr(exc, "_code", 0) or 0)
    if isinstance(exc, ServerError):
        return exc.status_code
    return 0


@contextmanager
def _classified(what: str) -> Iterator[None]:
    """Maps S3 failures by status code (rclone answers some errors as text/xml with a charset,
    which the SDK reports as InvalidResponseError instead of S3Error)."""
    try:
        yield
    except (S3Error, InvalidResponseError, ServerError) as exc:
        status = _status(exc)
        if status == 404 or getattr(exc, "code", "") in ("NoSuchKey", "NoSuchBucket"):
            raise NotFound(f"{what}: not found", reason="NOT_FOUND") from exc
        if status in (400, 403, 405, 411, 413):
            raise InvalidArgument(f"{what}: refused by the object store ({status})") from exc
        raise Unavailable(f"{what}: object store error {status}", retry_after_s=1.0) from exc
    except (urllib3.exceptions.HTTPError, ConnectionError, MinioException) as exc:
        raise Unavailable(f"{what}: object store unreachable ({exc.__class__.__name__})",
                          retry_after_s=1.0) from exc


class ArtifactStore:
    """One bucket-aware client. `public_endpoint` is the host:port presigned URLs name."""

    def __init__(self, endpoint: str, access_key: str, secret_key: str, *, secure: bool = False,
                 region: str = "us-east-1", public_endpoint: str = ""):
        # Short timeouts and few retries: a dead S3 must surface as UNAVAILABLE quickly.
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=3.0, read=30.0), maxsize=16,
            retries=urllib3.Retry(total=2, backoff_factor=0.2,
                                  status_forcelist=[500, 502, 503, 504]))
        self.client = Minio(endpoint, access_key, secret_key, secure=secure, region=region,
                            http_client=http)
        # Presigning is a local computation; a second client signs for the public host name.
        self._signer = Minio(public_endpoint or endpoint, access_key, secret_key, secure=secure,
                             region=region)

    @classmethod
    def from_settings(cls, s) -> ArtifactStore:
        return cls(s.s3_endpoint, s.s3_access_key, s.s3_secret_key, secure=s.s3_secure,
                   region=s.s3_region, public_endpoint=s.s3_public_endpoint)

    def ensure_bucket(self, bucket: str) -> None:
        with _classified(f"bucket {bucket}"):
            if not self.client.bucket_exists(bucket):
                try:
                    self.client.make_bucket(bucket)
                except S3Error as exc:  # another process created it first
                    if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise

    def put_bytes(self, bucket: str, key: str, data: bytes,
                  content_type: str = "application/octet-stream") -> ArtifactRef:
        digest = sha256_hex(data)
        with _classified(f"put {key}"):
            self.client.put_object(bucket, key, io.BytesIO(data), len(data),
                                   content_type=content_type, metadata={SHA_META: digest})
        return ArtifactRef(bucket, key, digest, len(data), content_type)

    def put_file(self, bucket: str, key: str, path: str, sha256: str,
                 content_type: str = "application/octet-stream") -> ArtifactRef:
        import os

        with _classified(f"put {key}"):
            self.client.fput_object(bucket, key, path, content_type=content_type,
                                    metadata={SHA_META: sha256})
        return ArtifactRef(bucket, key, sha256, os.path.getsize(path), content_type)

    def stat(self, bucket: str, key: str) -> ArtifactRef:
        with _classified(f"stat {key}"):
            st = self.client.stat_object(bucket, key)
        meta = {k.lower(): v for k, v in (st.metadata or {}).items()}
        return ArtifactRef(bucket, key, meta.get(f"x-amz-meta-{SHA_META}", ""), st.size or 0,
                           st.content_type or "application/octet-stream")

    def get_bytes(self, ref: ArtifactRef, max_bytes: int | None = None) -> bytes:
        """Reads the object; refuses one over max_bytes before downloading it, and verifies the
        sha256 (the ref's, else the one recorded at upload) after."""
        expected = ref.sha256
        if max_bytes is not None or not expected:
            st = self.stat(ref.bucket, ref.key)
            if max_bytes is not None and st.size > max_bytes:
                raise InvalidArgument(f"{ref.key}: {st.size} bytes exceeds {max_bytes}",
                                      reason="INPUT_TOO_LARGE")
            expected = expected or st.sha256
        with _classified(f"get {ref.key}"):
            resp = self.client.get_object(ref.bucket, ref.key)
            try:
                data = resp.read()
            finally:
                resp.close()
                resp.release_conn()
        if expected and sha256_hex(data) != expected.lower():
            raise IntegrityError(f"{ref.key}: sha256 mismatch")
        return data

    def get_file(self, bucket: str, key: str, path: str) -> None:
        with _classified(f"get {key}"):
            self.client.fget_object(bucket, key, path)

    def exists(self, bucket: str, key: str) -> bool:
        try:
            self.stat(bucket, key)
            return True
        except NotFound:
            return False

    def list_keys(self, bucket: str, prefix: str) -> list[str]:
        with _classified(f"list {prefix}"):
            return [o.object_name for o in self.client.list_objects(bucket, prefix=prefix,
                                                                    recursive=True)]

    def delete(self, bucket: str, key: str) -> None:
        with _classified(f"delete {key}"):
            self.client.remove_object(bucket, key)

    def delete_prefix(self, bucket: str, prefix: str) -> int:
        keys = self.list_keys(bucket, prefix)
        for k in keys:
            self.delete(bucket, k)
        return len(keys)

    def presign_put(self, bucket: str, key: str, expiry_s: int) -> str:
        return self._signer.presigned_put_object(bucket, key, expires=timedelta(seconds=expiry_s))

    def presign_get(self, bucket: str, key: str, expiry_s: int) -> str:
        return self._signer.presigned_get_object(bucket, key, expires=timedelta(seconds=expiry_s))
