"""Where the SDK and CLI find the mesh: endpoints and the API key.

Layers, most preferred first:

1. explicit arguments (the CLI's `--endpoint` / `--api-key` / `--tls*`),
2. the process environment (`JOBMESH_ENDPOINT`, `JOBMESH_ENDPOINT_<DOMAIN>`, `JOBMESH_API_KEY`,
   and the TLS settings below),
3. the file named by `--env-file`,
4. `.jobmesh/local.env` in the current directory or its nearest parent (what local mode writes).

Each value comes from the most preferred layer that sets it. Endpoints are resolved layer first:
a layer that sets `JOBMESH_ENDPOINT` shadows `JOBMESH_ENDPOINT_<DOMAIN>` of the layers below it,
so `JOBMESH_ENDPOINT=mesh:50051` in the environment sends every call there even when a stale
local.env names per-domain ports. Within one layer the domain key beats the general one.

TLS (plaintext when none is set): `JOBMESH_TLS_CA_FILE` is the PEM bundle that signed the
gateways' certificates (it implies TLS); `JOBMESH_TLS=1` turns TLS on with the system's trust
store instead; `JOBMESH_TLS_CLIENT_CERT_FILE` and `JOBMESH_TLS_CLIENT_KEY_FILE` (both or
neither) are the client certificate a gateway with mTLS asks for. Relative paths are taken from
the working directory.

Env files hold `KEY=VALUE` lines (an `export ` prefix and surrounding quotes are tolerated;
blank lines and `#` comments are ignored). Endpoints are `host:port` without a scheme. Bad
lines and bad endpoints raise `ConfigError` naming the file and line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "JOBMESH_"
ENDPOINT = "JOBMESH_ENDPOINT"
API_KEY = "JOBMESH_API_KEY"
TLS = "JOBMESH_TLS"
TLS_CA_FILE = "JOBMESH_TLS_CA_FILE"
TLS_CERT_FILE = "JOBMESH_TLS_CLIENT_CERT_FILE"
TLS_KEY_FILE = "JOBMESH_TLS_CLIENT_KEY_FILE"
_TLS_NAMES = {TLS: "tls", TLS_CA_FILE: "tls_ca_file", TLS_CERT_FILE: "tls_cert_file",
              TLS_KEY_FILE: "tls_key_file"}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
LOCAL_ENV = Path(".jobmesh") / "local.env"

_HOST_PORT = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.\-]+):(\d{1,5})$")


class ConfigError(ValueError):
    """The settings cannot be resolved (bad env file, bad endpoint, nothing configured)."""


@dataclass(frozen=True)
class ClientSettings:
    """Resolved settings. `endpoint` is the default gateway (jobs, models, and any domain
    without its own); `domain_endpoints` maps a lower-case domain to its gateway."""

    endpoint: str | None = None
    domain_endpoints: dict[str, str] = field(default_factory=dict)
    api_key: str | None = None
    tls: bool = False  # TLS with the system's trust store (a CA file implies TLS too)
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None  # client certificate chain, for gateways with mTLS
    tls_key_file: str | None = None

    @property
    def uses_tls(self) -> bool:
        return self.tls or bool(self.tls_ca_file or self.tls_cert_file)

    def endpoint_for(self, domain: str | None = None) -> str:
        """The `host:port` serving `domain` (`ocr`, `jobs`, ...): its own endpoint, else the
        default one. Raises ConfigError when neither is configured."""
        found = self.domain_endpoints.get((domain or "").lower()) or self.endpoint
        if not found:
            var = f"{ENDPOINT}_{domain.upper()}" if domain else ENDPOINT
            raise ConfigError(
                f"no endpoint for {domain or 'the mesh'}: pass --endpoint HOST:PORT, set "
                f"{ENDPOINT} or {var}, or start local mode to write {LOCAL_ENV}")
        return found

    @classmethod
    def resolve(cls, endpoint: str | None = None, api_key: str | None = None, *,
                endpoints: Mapping[str, str] | None = None, env_file: str | Path | None = None,
                environ: Mapping[str, str] | None = None, cwd: str | Path | None = None,
                tls: bool | None = None, tls_ca_file: str | Path | None = None,
                tls_cert_file: str | Path | None = None,
                tls_key_file: str | Path | None = None) -> ClientSettings:
        """Builds settings from the four layers. `endpoints` are explicit per-domain endpoints;
        `environ` defaults to `os.environ` and `cwd` to the working directory (both injectable
        for tests). A named `env_file` must exist; a missing local.env is simply skipped."""
        explicit = {f"{ENDPOINT}_{d.upper()}": v for d, v in (endpoints or {}).items()}
        if endpoint:
            explicit[ENDPOINT] = endpoint
        if api_key:
            explicit[API_KEY] = api_key
        for name, value in ((TLS_CA_FILE, tls_ca_file), (TLS_CERT_FILE, tls_cert_file),
                            (TLS_KEY_FILE, tls_key_file)):
            if value:
                explicit[name] = str(value)
        if tls is not None:
            explicit[TLS] = "1" if tls else "0"
        env = {k: v for k, v in (os.environ if environ is None else environ).items()
               if k.startswith(PREFIX) and v}
        layers = [("flags", explicit), ("environment", env)]
        if env_file is not None:
            path = Path(env_file)
            if not path.is_file():
                raise ConfigError(f"--env-file {path}: no such file")
            layers.append((str(path), read_env_file(path)))
        local = find_local_env(Path.cwd() if cwd is None else Path(cwd))
        if local is not None:
            layers.append((str(local), read_env_file(local)))
        return _merge(layers)


def _what(name: str, source: str) -> str:
    """How an error names the setting: the flag, or the variable and where it was set."""
    if source == "flags" and name in _TLS_NAMES:
        return "--" + _TLS_NAMES[name].replace("_", "-")
    if source == "flags":
        domain = name.removeprefix(ENDPOINT + "_").lower()
        return "--endpoint" if name == ENDPOINT else f"endpoint for {domain}"
    return f"{name} ({source})"


def _merge(layers: list[tuple[str, dict[str, str]]]) -> ClientSettings:
    general: str | None = None
    domains: dict[str, str] = {}
    key: str | None = None
    tls: dict[str, str] = {}
    for source, values in layers:
        for name, value in values.items():
            if name.startswith(ENDPOINT + "_") and general is None:
                domains.setdefault(name.removeprefix(ENDPOINT + "_").lower(),
                                   check_endpoint(value, _what(name, source)))
        if general is None and values.get(ENDPOINT):
            general = check_endpoint(values[ENDPOINT], _what(ENDPOINT, source))
        if key is None and values.get(API_KEY):
            key = values[API_KEY].strip()
        for name, field_name in _TLS_NAMES.items():
            if field_name not in tls and values.get(name, "").strip():
                tls[field_name] = _check_tls(name, values[name].strip(), source)
    if ("tls_cert_file" in tls) != ("tls_key_file" in tls):
        raise ConfigError(f"{TLS_CERT_FILE} and {TLS_KEY_FILE} go together: set both "
                          "(a client certificate for mTLS) or neither")
    return ClientSettings(endpoint=general, domain_endpoints=domains, api_key=key, **tls)


def _check_tls(name: str, value: str, source: str):
    """`JOBMESH_TLS` as a bool (1/0, true/false, yes/no, on/off); file settings as given."""
    if name != TLS:
        return value
    if value.lower() in _TRUE + _FALSE:
        return value.lower() in _TRUE
    raise ConfigError(f"{_what(name, source)}: {value!r} is not one of 1/0, true/false")


def check_endpoint(value: str, what: str) -> str:
    """Returns `value` stripped if it is `host:port` (no scheme); else raises ConfigError."""
    value = value.strip()
    m = _HOST_PORT.match(value)
    if not m or not 0 < int(m.group(2)) < 65536:
        hint = " (drop the scheme)" if "://" in value else ""
        raise ConfigError(f"{what}: {value!r} is not host:port{hint}")
    return value


def find_local_env(start: Path) -> Path | None:
    """`.jobmesh/local.env` in `start` or its nearest parent that has one, else None."""
    start = start.resolve()
    for folder in (start, *start.parents):
        candidate = folder / LOCAL_ENV
        if candidate.is_file():
            return candidate
    return None


def read_env_file(path: Path) -> dict[str, str]:
    """Parses `KEY=VALUE` lines; raises ConfigError on a line that is not one."""
    values: dict[str, str] = {}
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.removeprefix("export ").partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name:
            raise ConfigError(f"{path}:{n}: expected KEY=VALUE, got {raw.strip()!r}")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name] = value
    return values
