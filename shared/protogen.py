"""Generates the Python stubs from `proto/` into `shared/gen/` (what `make proto` runs)."""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = REPO_ROOT / "proto"
GEN_DIR = Path(__file__).resolve().parent / "gen"


def _protos() -> list[Path]:
    return sorted(PROTO_DIR.rglob("*.proto"))


def _stale() -> bool:
    stamp = GEN_DIR / ".stamp"
    if not stamp.exists():
        return True
    built = stamp.stat().st_mtime
    return any(p.stat().st_mtime > built for p in _protos())


def generate() -> None:
    """Runs grpc_tools.protoc over every proto; raises RuntimeError when protoc fails."""
    import importlib.resources

    from grpc_tools import protoc  # imported here: only needed when stubs are (re)built

    GEN_DIR.mkdir(parents=True, exist_ok=True)
    wkt = str(importlib.resources.files("grpc_tools") / "_proto")
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"-I{wkt}",
        f"--python_out={GEN_DIR}",
        f"--pyi_out={GEN_DIR}",
        f"--grpc_python_out={GEN_DIR}",
        *[str(p.relative_to(PROTO_DIR)) for p in _protos()],
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed; run `make proto` to see why")
    (GEN_DIR / ".stamp").touch()


def ensure_generated() -> None:
    """Makes `jobmesh.*` stubs importable, generating them if needed (source checkouts only)."""
    if PROTO_DIR.is_dir() and _stale():
        generate()
    if str(GEN_DIR) not in sys.path:
        sys.path.insert(0, str(GEN_DIR))


if __name__ == "__main__":
    generate()
    print(f"generated stubs for {len(_protos())} protos into {GEN_DIR}")
