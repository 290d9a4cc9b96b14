"""TLS and mTLS on a real gateway (the shared `build`, real Redis), with certificates generated
at test time: clients that trust the CA get answers over TLS; plaintext clients, clients that
trust another CA and, under mTLS, clients without a certificate are refused at the handshake.
The SDK (sync and asyncio), the CLI and the health probe all speak TLS from the same settings."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from shared.client import AsyncClient, Client, ClientSettings, ConfigError, JobmeshClientError
from shared.client.channel import channel_credentials
from shared.config import Settings
from shared.server import healthcheck
from shared.server.entry import build
from tests.conftest import TENANT_KEY

pytestmark = pytest.mark.integration

JOBS = "jobmesh.jobs.v1.JobService"
MISSING_JOB = "jobs/00000000000000000000000000000000"


# Certificates (EC P-256: quick to generate), written as PEM files under a tmp dir.

def _key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _cert(subject: str, key, issuer=None, issuer_key=None, *, ca=False, server=False):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.UTC)
    b = (x509.CertificateBuilder().subject_name(name)
         .issuer_name(issuer.subject if issuer else name).public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5))
         .not_valid_after(now + datetime.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
    elif server:
        b = b.add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                            critical=False)
    else:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                            critical=False)
    return b.sign(issuer_key or key, hashes.SHA256())


def _write(folder: Path, stem: str, cert, key=None) -> tuple[Path, Path | None]:
    from cryptography.hazmat.primitives import serialization

    crt = folder / f"{stem}.crt"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is None:
        return crt, None
    pem = folder / f"{stem}.key"
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    return crt, pem


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # an unrelated CA: trusting it must not verify our gateway
    rogue_cert: Path  # a client certificate that unrelated CA signed
    rogue_key: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca_key, other_key, server_key, client_key, rogue_key = (_key() for _ in range(5))
    ca = _cert("jobmesh test CA", ca_key, ca=True)
    other = _cert("another CA", other_key, ca=True)
    ca_file, _ = _write(folder, "ca", ca)
    other_file, _ = _write(folder, "other-ca", other)
    server = _write(folder, "server", _cert("localhost", server_key, ca, ca_key, server=True),
                    server_key)
    client = _write(folder, "client", _cert("tenant-a", client_key, ca, ca_key), client_key)
    rogue = _write(folder, "rogue", _cert("tenant-a", rogue_key, other, other_key), rogue_key)
    return Pki(ca_file, *server, *client, other_file, *rogue)


# A real gateway (the shared build and start) on its own event loop thread.

class GatewayThread:
    def __init__(self, settings: Settings):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.gw, self.server, self.port = self._run(self._start(settings))

    def _run(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @staticmethod
    async def _start(settings: Settings):
        gw, server, port = build("ocr", settings, "127.0.0.1:0", lambda gw, server: None)
        await gw.start(server, services=[])
        return gw, server, port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self._run(self.gw.stop(self.server))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def _settings(env: dict, **overrides) -> Settings:
    base = {k.removeprefix("JOBMESH_").lower(): v for k, v in env.items()}
    return Settings(**{**base, "shutdown_grace_s": 0, **overrides})


@pytest.fixture(scope="module")
def tls_gateway(stack_env, pki):
    gw = GatewayThread(_settings(stack_env[1], tls_cert_file=pki.server_cert,
                                 tls_key_file=pki.server_key))
    yield gw.address
    gw.close()


@pytest.fixture(scope="module")
def mtls_gateway(stack_env, pki):
    gw = GatewayThread(_settings(stack_env[1], tls_cert_file=pki.server_cert,
                                 tls_key_file=pki.server_key, tls_client_ca_file=pki.ca))
    yield gw.address
    gw.close()


def _get_missing_job(address: str, **tls) -> grpc.StatusCode:
    """The code of GetJob for a job that does not exist: NOT_FOUND means the call crossed the
    TLS handshake, the auth interceptor and the job store; UNAVAILABLE means no connection."""
    settings = ClientSettings.resolve(address, TENANT_KEY, environ={}, **tls)
    with Client(settings, timeout_s=5) as client, pytest.raises(JobmeshClientError) as err:
        client.get_job(MISSING_JOB)
    return err.value.code


def test_a_client_that_trusts_the_ca_gets_answers_over_tls(tls_gateway, pki):
    assert _get_missing_job(tls_gateway, tls_ca_file=pki.ca) is grpc.StatusCode.NOT_FOUND


def test_plaintext_and_wrongly_trusting_clients_are_refused(tls_gateway, pki):
    assert _get_missing_job(tls_gateway) is grpc.StatusCode.UNAVAILABLE
    assert _get_missing_job(tls_gateway, tls_ca_file=pki.other_ca) is \
        grpc.StatusCode.UNAVAILABLE
    # The system trust store does not know our test CA either.
    assert _get_missing_job(tls_gateway, tls=True) is grpc.StatusCode.UNAVAILABLE


def test_the_asyncio_client_speaks_tls(tls_gateway, pki):
    async def get() -> grpc.StatusCode:
        settings = ClientSettings.resolve(tls_gateway, TENANT_KEY, environ={},
                                          tls_ca_file=pki.ca)
        async with AsyncClient(settings, timeout_s=5) as client:
            try:
                await client.get_job(MISSING_JOB)
            except JobmeshClientError as err:
                return err.code
        raise AssertionError("GetJob of a missing job succeeded")

    assert asyncio.run(get()) is grpc.StatusCode.NOT_FOUND


def test_grpc_health_over_tls(tls_gateway, pki):
    creds = channel_credentials(ClientSettings(tls_ca_file=str(pki.ca)))
    assert healthcheck.check(tls_gateway, JOBS, credentials=creds) == "SERVING"
    assert healthcheck.check(tls_gateway, JOBS) == "UNREACHABLE"  # plaintext probe
    assert healthcheck.main([tls_gateway, "--service", JOBS, "--tls-ca-file", str(pki.ca)]) == 0
    assert healthcheck.main([tls_gateway, "--service", JOBS]) == 1
    # A pod probes itself on 127.0.0.1 and names the certificate's host (as the Helm chart does).
    assert healthcheck.check(tls_gateway, JOBS, credentials=creds,
                             server_name="localhost") == "SERVING"
    assert healthcheck.check(tls_gateway, JOBS, credentials=creds,
                             server_name="gateway.example") == "UNREACHABLE"


def test_the_cli_speaks_tls(tls_gateway, pki, monkeypatch, capsys):
    from shared.cli.main import EXIT_FAILED, EXIT_UNREACHABLE, main

    for name in ("JOBMESH_TLS", "JOBMESH_TLS_CA_FILE", "JOBMESH_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    base = ["--endpoint", tls_gateway, "--api-key", TENANT_KEY, "--timeout", "5"]
    assert main([*base, "jobs", "get", MISSING_JOB]) == EXIT_UNREACHABLE
    assert main([*base, "--tls-ca-file", str(pki.ca), "jobs", "get", MISSING_JOB]) == \
        EXIT_FAILED  # the gateway answered: NOT_FOUND
    assert "NOT_FOUND" in capsys.readouterr().err
    monkeypatch.setenv("JOBMESH_TLS_CA_FILE", str(pki.ca))  # the environment layer works too
    assert main([*base, "jobs", "get", MISSING_JOB]) == EXIT_FAILED


def test_mtls_requires_a_client_certificate_signed_by_the_ca(mtls_gateway, pki):
    assert _get_missing_job(mtls_gateway, tls_ca_file=pki.ca) is grpc.StatusCode.UNAVAILABLE
    assert _get_missing_job(mtls_gateway, tls_ca_file=pki.ca, tls_cert_file=pki.client_cert,
                            tls_key_file=pki.client_key) is grpc.StatusCode.NOT_FOUND
    # A client certificate that another CA signed is refused too.
    assert _get_missing_job(mtls_gateway, tls_ca_file=pki.ca, tls_cert_file=pki.rogue_cert,
                            tls_key_file=pki.rogue_key) is grpc.StatusCode.UNAVAILABLE
    creds = channel_credentials(ClientSettings(
        tls_ca_file=str(pki.ca), tls_cert_file=str(pki.client_cert),
        tls_key_file=str(pki.client_key)))
    assert healthcheck.check(mtls_gateway, JOBS, credentials=creds) == "SERVING"


def test_tls_settings_fail_fast(stack_env, pki, tmp_path):
    env = stack_env[1]
    with pytest.raises(ValueError, match="JOBMESH_TLS_KEY_FILE go together"):
        _settings(env, tls_cert_file=pki.server_cert)
    with pytest.raises(ValueError, match="needs JOBMESH_TLS_CERT_FILE"):
        _settings(env, tls_client_ca_file=pki.ca)
    not_pem = tmp_path / "server.der"
    not_pem.write_bytes(b"\x30\x82 not a PEM file")
    bad = _settings(env, tls_cert_file=not_pem, tls_key_file=pki.server_key)

    async def start() -> None:  # grpc.aio servers are built inside a running loop
        build("ocr", bad, "127.0.0.1:0", lambda gw, server: None)

    with pytest.raises(ValueError, match="JOBMESH_TLS_CERT_FILE=.*not a PEM file"):
        asyncio.run(start())
    with pytest.raises(ConfigError, match="go together"):
        ClientSettings.resolve("127.0.0.1:1", environ={}, tls_cert_file=pki.client_cert)
    with pytest.raises(ConfigError, match="JOBMESH_TLS .environment.: 'maybe'"):
        ClientSettings.resolve("127.0.0.1:1", environ={"JOBMESH_TLS": "maybe"})
    with pytest.raises(ConfigError, match="JOBMESH_TLS_CA_FILE=.*cannot read"):
        channel_credentials(ClientSettings(tls_ca_file=str(tmp_path / "missing.pem")))
