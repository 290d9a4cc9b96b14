"""Models are verified by sha256 before they load: a cached file that was tampered with (same
size, same mtime) is fetched again from the registry instead of loaded, and a registry object
that no longer matches its manifest is refused with DATA_LOSS (reason INTEGRITY), never loaded.

Real parts: the rclone S3 server of the session stack, a real ONNX model (rapidocr's angle
classifier) registered under a name of this test's own, so the OCR models other tests serve
are never touched."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from shared.config import Settings
from shared.errors import IntegrityError
from shared.models.registry import ModelRegistry
from shared.models.serving import ServedModels
from shared.storage.artifacts import ArtifactStore

pytestmark = pytest.mark.integration

NAME, VERSION, FILE = "integrity-probe", "1", "model.onnx"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _source() -> Path:
    from shared.models.importer import OCR_MODELS, rapidocr_dir

    return rapidocr_dir() / OCR_MODELS["ppocr-cls"]


def _flip(data: bytes) -> bytes:
    """The same bytes with a run in the middle inverted: same size, different sha256."""
    mid = len(data) // 2
    return data[:mid] + bytes(b ^ 0xFF for b in data[mid:mid + 64]) + data[mid + 64:]


@pytest.fixture(scope="module")
def registry(stack) -> ModelRegistry:
    settings = Settings(**{k.removeprefix("JOBMESH_").lower(): v for k, v in stack.env.items()})
    reg = ModelRegistry(ArtifactStore.from_settings(settings), settings.models_bucket)
    reg.register(NAME, VERSION, {FILE: _source()}, serve=True)
    return reg


def _served(registry: ModelRegistry, cache: Path) -> ServedModels:
    """What a worker process builds: a fresh one is a worker (re)start."""
    return ServedModels(registry, cache, refresh_s=0, providers_override="CPUExecutionProvider")


def test_a_tampered_cached_file_is_fetched_again_not_loaded(registry, tmp_path):
    expected = registry.manifest(NAME, VERSION).files[0].sha256
    runner = _served(registry, tmp_path).get(NAME)
    cached = tmp_path / NAME / VERSION / FILE
    assert runner.path == cached and _sha(cached) == expected

    stat = cached.stat()
    cached.write_bytes(_flip(cached.read_bytes()))
    os.utime(cached, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # size and mtime as before
    assert cached.stat().st_size == stat.st_size and _sha(cached) != expected

    runner = _served(registry, tmp_path).get(NAME)  # the worker restarts on that cache
    assert _sha(runner.path) == expected  # the registry's bytes again, then loaded
    assert runner.input_names  # a working ORT session over the verified file


def test_a_tampered_registry_object_is_refused(registry, tmp_path):
    key = f"models/{NAME}/{VERSION}/{FILE}"
    good = _source().read_bytes()  # what was registered
    registry.store.put_bytes(registry.bucket, key, _flip(good))  # S3 differs from the manifest
    try:
        with pytest.raises(IntegrityError) as err:
            registry.fetch(NAME, VERSION, tmp_path / "fresh")
        assert err.value.reason == "INTEGRITY"
        assert f"{NAME}@{VERSION}/{FILE}: sha256 mismatch" in str(err.value)
        folder = tmp_path / "fresh" / NAME / VERSION
        assert not [p for p in folder.iterdir() if p.is_file()]  # nothing left to load

        # A worker whose cached copy was also tampered with cannot repair it: it refuses to
        # serve rather than load either copy.
        cache = tmp_path / "worker"
        cached = cache / NAME / VERSION / FILE
        cached.parent.mkdir(parents=True)
        cached.write_bytes(_flip(good))
        with pytest.raises(IntegrityError):
            _served(registry, cache).get(NAME)
    finally:
        registry.store.put_bytes(registry.bucket, key, good)
    assert _sha(_served(registry, tmp_path / "fresh").get(NAME).path) == \
        hashlib.sha256(good).hexdigest()  # restored: served again
