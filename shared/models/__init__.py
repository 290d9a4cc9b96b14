"""The model registry in S3 and the worker-side cache of served versions."""

from shared.models.registry import Manifest, ModelFile, ModelRegistry

__all__ = ["Manifest", "ModelFile", "ModelRegistry"]
