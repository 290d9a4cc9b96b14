"""API keys → tenants. Keys come from a YAML file (`JOBMESH_API_KEYS_FILE`) and/or
`JOBMESH_API_KEYS` (`key=tenant:role,...`). Roles: `tenant` (own jobs, read models) and `admin`.

YAML shape::

    dev-key-123: {tenant: team-a, role: tenant}
    ops-key-456: {tenant: ops, role: admin}
    big-key-789: {tenant: team-b, role: tenant, rate_per_s: 50, rate_burst: 100,
                  max_active_jobs: 100}

The optional limits override the gateway-wide `JOBMESH_TENANT_*` defaults for calls made with
that key (0 = unlimited); the counters are per tenant, so give every key of a tenant the same.
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
    # Per-key overrides of the gateway's defaults (None: use the default; 0: unlimited).
    rate_per_s: float | None = None
    rate_burst: int | None = None
    max_active_jobs: int | None = None

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
                where = f"{path}:{str(key)[:4]}…"
                keys[str(key)] = _principal(str(spec.get("tenant", "")), spec.get("role", "tenant"),
                                            where=where, limits=_limits(spec, where))
        for item in filter(None, (s.strip() for s in inline.split(","))):
            key, _, rest = item.partition("=")
            tenant, _, role = rest.partition(":")
            keys[key] = _principal(tenant, role or "tenant", where=f"JOBMESH_API_KEYS {key[:4]}…")
        return cls(keys)


def _principal(tenant: str, role: str, where: str, limits: dict | None = None) -> Principal:
    if not _TENANT_RE.match(tenant):
        raise ValueError(f"{where}: tenant {tenant!r} must match {_TENANT_RE.pattern}")
    if role not in ROLES:
        raise ValueError(f"{where}: role {role!r} must be one of {ROLES}")
    return Principal(tenant, role, **(limits or {}))


_LIMITS = {"rate_per_s": float, "rate_burst": int, "max_active_jobs": int}


def _limits(spec: dict, where: str) -> dict:
    """The optional per-key limits of a YAML entry, each a number >= 0."""
    out = {}
    for name, kind in _LIMITS.items():
        if spec.get(name) is None:
            continue
        value = spec[name]
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or (
                kind is int and value != int(value)):
            raise ValueError(f"{where}: {name} must be a {kind.__name__} >= 0, not {value!r}")
        out[name] = kind(value)
    return out
