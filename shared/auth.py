"""API keys → tenants. Keys come from a YAML file (`JOBMESH_API_KEYS_FILE`) and/or
`JOBMESH_API_KEYS` (`key=tenant:role,...`). Roles: `tenant` (own jobs, read models) and `admin`.

YAML shape::

    dev-key-123: {tenant: team-a, role: tenant}
    ops-key-456: {tenant: ops, role: admin}
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

ROLES = ("tenant", "admin")
_TENANT_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


@dataclass(frozen=True)
class Principal:
    """Who is calling: artifacts live under `tenants/<tenant>/`, jobs are scoped to it."""

    tenant: str
    role: str = "tenant"

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class KeyRing:
    """Looks keys up in constant time per comparison so key guessing learns nothing from timing."""

    def __init__(self, keys: dict[str, Principal]):
        self._keys = dict(keys)

    def __len__(self) -> int:
        return len(self._keys)

    def lookup(self, key: str) -> Principal | None:
        found = None
        for known, principal in self._keys.items():
            if hmac.compare_digest(known.encode(), key.encode()):
                found = principal
        return found

    @classmethod
    def load(cls, path: Path | None = None, inline: str = "") -> KeyRing:
        """Reads both sources; raises ValueError naming the bad entry."""
        keys: dict[str, Principal] = {}
        if path:
            data = yaml.safe_load(Path(path).read_text()) or {}
            if not isinstance(data, dict):
                raise ValueError(f"{path}: expected a mapping of key -> {{tenant, role}}")
            for key, spec in data.items():
                spec = spec or {}
                keys[str(key)] = _principal(str(spec.get("tenant", "")), spec.get("role", "tenant"),
                                            where=f"{path}:{key[:4]}…")
        for item in filter(None, (s.strip() for s in inline.split(","))):
            key, _, rest = item.partition("=")
            tenant, _, role = rest.partition(":")
            keys[key] = _principal(tenant, role or "tenant", where=f"JOBMESH_API_KEYS {key[:4]}…")
        return cls(keys)


def _principal(tenant: str, role: str, where: str) -> Principal:
    if not _TENANT_RE.match(tenant):
        raise ValueError(f"{where}: tenant {tenant!r} must match {_TENANT_RE.pattern}")
    if role not in ROLES:
        raise ValueError(f"{where}: role {role!r} must be one of {ROLES}")
    return Principal(tenant, role)
