"""`ModelRegistry`: `models/<name>/<version>/` in the models bucket, each version with a
`manifest.json` (sha256 of every file, inputs/outputs, runtime, provenance) and one `serving`
pointer per name (`models/<name>/serving`, a text object holding the version workers load).

Versions are immutable once registered; promote/rollback only move the pointer.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from shared.errors import AlreadyExists, InvalidArgument, NotFound
from shared.storage.artifacts import ArtifactRef, ArtifactStore

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,100}$")
MANIFEST = "manifest.json"
HISTORY = "serving_history.json"
HISTORY_DEPTH = 50


@dataclass
class ModelFile:
    path: str
    sha256: str
    size: int


@dataclass
class Manifest:
    name: str
    version: str
    runtime: str = "onnx"
    files: list[ModelFile] = field(default_factory=list)
    inputs: list[dict] = field(default_factory=list)  # {name, dtype, shape}
    outputs: list[dict] = field(default_factory=list)
    # package, package_version, source, parent_version; base_model (name@version) for adapters
    provenance: dict = field(default_factory=dict)
    create_time: float = 0.0

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=2, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        d = json.loads(raw)
        d["files"] = [ModelFile(**f) for f in d.get("files", [])]
        return cls(**d)


def check_name(kind: str, value: str) -> str:
    if not _NAME.match(value):
        raise InvalidArgument.for_field(kind, f"{value!r} must match {_NAME.pattern}")
    return value


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class ModelRegistry:
    def __init__(self, store: ArtifactStore, bucket: str):
        self.store = store
        self.bucket = bucket

    def _prefix(self, name: str, version: str | None = None) -> str:
        return f"models/{name}/" + (f"{version}/" if version else "")

    def names(self) -> list[str]:
        keys = self.store.list_keys(self.bucket, "models/")
        return sorted({k.split("/")[1] for k in keys if k.count("/") >= 2})

    def versions(self, name: str) -> list[Manifest]:
        keys = self.store.list_keys(self.bucket, self._prefix(name))
        found = sorted({k.split("/")[2] for k in keys if k.endswith("/" + MANIFEST)})
        return [self.manifest(name, v) for v in found]

    def manifest(self, name: str, version: str) -> Manifest:
        raw = self.store.get_bytes(
            ArtifactRef(self.bucket, self._prefix(name, version) + MANIFEST))
        return Manifest.from_json(raw)

    def serving_version(self, name: str) -> str:
        try:
            raw = self.store.get_bytes(ArtifactRef(self.bucket, self._prefix(name) + "serving"))
        except NotFound as exc:
            raise NotFound(f"model {name} has no serving version", metadata={"model": name}) \
                from exc
        return raw.decode().strip()

    def set_serving(self, name: str, version: str) -> None:
        self.manifest(check_name("name", name), check_name("version", version))  # must exist
        self.store.put_bytes(self.bucket, self._prefix(name) + "serving", version.encode(),
                             "text/plain")

    def serving_history(self, name: str) -> list[str]:
        """Earlier serving versions, most recent first (what rollback returns to)."""
        try:
            raw = self.store.get_bytes(ArtifactRef(self.bucket, self._prefix(name) + HISTORY))
        except NotFound:
            return []
        return list(json.loads(raw))

    def _write_history(self, name: str, history: list[str]) -> None:
        self.store.put_bytes(self.bucket, self._prefix(name) + HISTORY,
                             json.dumps(history[:HISTORY_DEPTH]).encode(), "application/json")

    def promote(self, name: str, version: str) -> str:
        """Points `serving` at `version`, remembering the previous one; returns it ("" if none).
        Promoting the version that already serves changes nothing. The history is written
        before the pointer: a crash between the two leaves an extra history entry, never a
        serving version that rollback cannot return from."""
        self.manifest(check_name("name", name), check_name("version", version))
        try:
            previous = self.serving_version(name)
        except NotFound:
            previous = ""
        if previous == version:
            return previous
        if previous:
            self._write_history(name, [previous, *self.serving_history(name)])
        self.set_serving(name, version)
        return previous

    def rollback(self, name: str) -> tuple[str, str]:
        """Points `serving` back at the most recent earlier version; returns (from, to). Raises
        FailedPrecondition when there is nothing to return to."""
        from shared.errors import FailedPrecondition

        check_name("name", name)
        current = self.serving_version(name)
        history = [v for v in self.serving_history(name) if v != current]
        if not history:
            raise FailedPrecondition(f"model {name} has no earlier serving version",
                                     metadata={"model": name})
        self.set_serving(name, history[0])
        self._write_history(name, history[1:])
        return current, history[0]

    def register(self, name: str, version: str, files: dict[str, Path], *,
                 inputs: list[dict] | None = None, outputs: list[dict] | None = None,
                 provenance: dict | None = None, serve: bool = False,
                 runtime: str = "onnx") -> Manifest:
        """Uploads `files` (relative path -> local file) and writes the manifest last, so a
        version is visible only once complete. `runtime` says what loads the files (`onnx`,
        `peft-lora` for adapters). Re-registering identical files is a no-op;
        different files under an existing version are refused (versions are immutable)."""
        check_name("name", name)
        check_name("version", version)
        entries = [ModelFile(rel, file_sha256(p), p.stat().st_size) for rel, p in files.items()]
        try:
            existing = self.manifest(name, version)
        except NotFound:
            existing = None
        if existing is not None:
            if sorted((f.path, f.sha256) for f in existing.files) != \
                    sorted((f.path, f.sha256) for f in entries):
                raise AlreadyExists(f"version: {name}@{version} exists with different files",
                                    metadata={"field": "version"})
            manifest = existing
        else:
            for entry in entries:
                self.store.put_file(self.bucket, self._prefix(name, version) + entry.path,
                                    str(files[entry.path]), entry.sha256)
            manifest = Manifest(name, version, runtime, entries, inputs or [], outputs or [],
                                provenance or {}, time.time())
            self.store.put_bytes(self.bucket, self._prefix(name, version) + MANIFEST,
                                 manifest.to_json(), "application/json")
        if serve:
            self.set_serving(name, version)
        return manifest

    def fetch(self, name: str, version: str, cache_dir: Path) -> tuple[Manifest, Path]:
        """Copies a version into `cache_dir/<name>/<version>/`, verifying every file's sha256
        (a cached file that no longer matches is fetched again); returns the folder."""
        manifest = self.manifest(name, version)
        target = Path(cache_dir) / name / version
        target.mkdir(parents=True, exist_ok=True)
        for f in manifest.files:
            local = target / f.path
            if local.exists() and local.stat().st_size == f.size and \
                    file_sha256(local) == f.sha256:
                continue
            local.parent.mkdir(parents=True, exist_ok=True)
            # Per-process temp name: two prefork children warming up at once must not clash.
            tmp = local.with_suffix(f"{local.suffix}.{os.getpid()}.part")
            self.store.get_file(self.bucket, self._prefix(name, version) + f.path, str(tmp))
            if file_sha256(tmp) != f.sha256:
                tmp.unlink(missing_ok=True)
                from shared.errors import IntegrityError

                raise IntegrityError(f"{name}@{version}/{f.path}: sha256 mismatch after download")
            tmp.replace(local)  # atomic: a concurrent reader never sees a partial file
        return manifest, target
