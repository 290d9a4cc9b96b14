"""`ServedModels`: the per-process cache of loaded runners, following each name's `serving`
pointer so promote/rollback take effect without a worker restart."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from shared.models.registry import ModelRegistry
from shared.runners.onnx import ModelRunner

log = logging.getLogger(__name__)


class ServedModels:
    def __init__(self, registry: ModelRegistry, cache_dir: Path, *, refresh_s: float = 10.0,
                 providers_override: str = ""):
        self.registry = registry
        self.cache_dir = Path(cache_dir)
        self.refresh_s = refresh_s
        self.providers_override = providers_override
        self._runners: dict[str, tuple[str, ModelRunner]] = {}
        self._checked: dict[str, float] = {}
        self._folders: dict[str, tuple[str, Path, float]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings) -> ServedModels:
        """The registry in the settings' S3, the local cache, refresh and provider overrides.
        Build it once per worker process, after fork: ORT sessions must not cross a fork."""
        from shared.storage.artifacts import ArtifactStore

        registry = ModelRegistry(ArtifactStore.from_settings(settings), settings.models_bucket)
        return cls(registry, settings.model_cache_dir, refresh_s=settings.model_refresh_s,
                   providers_override=settings.providers)

    def get(self, name: str) -> ModelRunner:
        """The runner for the version `name` serves now (re-read at most every refresh_s)."""
        with self._lock:
            current = self._runners.get(name)
            fresh = time.monotonic() - self._checked.get(name, -1e9) < self.refresh_s
            if current and fresh:
                return current[1]
            version = self.registry.serving_version(name)
            self._checked[name] = time.monotonic()
            if current and current[0] == version:
                return current[1]
            manifest, folder = self.registry.fetch(name, version, self.cache_dir)
            onnx_files = [f.path for f in manifest.files if f.path.endswith(".onnx")]
            runner = ModelRunner(folder / onnx_files[0], f"{name}@{version}",
                                 providers_override=self.providers_override)
            if current:
                log.info("serving version changed", extra={"model": name, "from": current[0],
                                                            "to": version})
            self._runners[name] = (version, runner)
            return runner

    def folder(self, name: str) -> tuple[str, Path]:
        """(`name@version`, verified local folder) of the version `name` serves now, for
        models that are not one ONNX graph (e.g. a CTranslate2 folder); re-read at most every
        refresh_s, like `get`."""
        with self._lock:
            cached = self._folders.get(name)
            if cached and time.monotonic() - cached[2] < self.refresh_s:
                return cached[0], cached[1]
            label = f"{name}@{self.registry.serving_version(name)}"
            if cached and cached[0] == label:
                folder = cached[1]
            else:
                _, folder = self.registry.fetch(name, label.split("@", 1)[1], self.cache_dir)
            self._folders[name] = (label, folder, time.monotonic())
            return label, folder

    def versions(self) -> list[str]:
        return [f"{n}@{v}" for n, (v, _) in sorted(self._runners.items())]
