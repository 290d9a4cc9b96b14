"""Artifact storage on S3 (MinIO in production, `rclone serve s3` locally)."""

from shared.storage.artifacts import ArtifactRef, ArtifactStore, tenant_key

__all__ = ["ArtifactRef", "ArtifactStore", "tenant_key"]
