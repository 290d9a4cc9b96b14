"""The local cache of model exports (`~/.cache/jobmesh/export/<name>/<version>/`, root
overridable with JOBMESH_EXPORT_DIR): a folder is built in a temporary sibling, `export.json`
(the version and every file's size and sha256) is written last, and the folder is renamed into
place, so a folder with a matching marker is complete and reused. A file lock serialises
exports of one folder across processes (two test sessions at once)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from shared.models.registry import file_sha256

log = logging.getLogger(__name__)

MARKER = "export.json"


def export_dir(name: str, version: str) -> Path:
    root = os.environ.get("JOBMESH_EXPORT_DIR") or Path.home() / ".cache" / "jobmesh" / "export"
    return Path(root) / name / version


def is_complete(folder: Path, version: str, files: tuple[str, ...], deep: bool = False) -> bool:
    """True when `folder` holds a complete export: its marker names `version` and lists every
    file with its size (and, with `deep`, its sha256)."""
    try:
        marker = json.loads((Path(folder) / MARKER).read_text())
    except (OSError, ValueError):
        return False
    if marker.get("version") != version:
        return False
    entries = marker.get("files", {})
    for name in files:
        entry, path = entries.get(name), Path(folder) / name
        if not entry or not path.exists() or path.stat().st_size != entry["size"]:
            return False
        if deep and file_sha256(path) != entry["sha256"]:
            return False
    return True


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def build(folder: Path, version: str, files: tuple[str, ...],
          make: Callable[[Path], dict], force: bool = False) -> Path:
    """Returns `folder` once it holds a complete export, running `make(tmp)` when it does not
    (or when `force`). `make` writes `files` into `tmp` and returns the marker's other fields
    (source, package versions, self-check figures)."""
    if not force and is_complete(folder, version, files):
        return folder
    with locked(folder):
        if not force and is_complete(folder, version, files):  # finished while we waited
            return folder
        t0 = time.perf_counter()
        tmp = folder.with_name(f"{folder.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            marker = {"version": version, **make(tmp),
                      "export_seconds": round(time.perf_counter() - t0, 1),
                      "files": {name: {"size": (tmp / name).stat().st_size,
                                       "sha256": file_sha256(tmp / name)} for name in files}}
            (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
            if folder.exists():
                shutil.rmtree(folder)
            tmp.rename(folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("model exported", extra={"folder": str(folder),
                                          "seconds": marker["export_seconds"]})
    return folder
