"""Secrets never reach the logs. Real OCR gateways and worker of the session stack (JSON logs,
one file per process under the stack's `logs/`, plus a gateway at DEBUG) serve calls with
valid keys, an unknown key and a malformed header, presigned uploads and downloads (an image
and a batch manifest up, batch results down) and a call that fails on a missing upload; then
no line of any log file may hold an API key, the S3 secret key, a presigned URL's signature or
an `authorization` header value."""

from __future__ import annotations

import base64
import json
import re
from urllib.parse import parse_qs, urlparse

import grpc
import pytest
from jobmesh.ocr.v1 import ocr_service_pb2 as pb
from jobmesh.ocr.v1 import ocr_service_pb2_grpc

from shared.client import Client, ClientSettings, JobmeshClientError, calls
from shared.client.sdk import http_get, http_put
from shared.local.stack import free_port
from tests.conftest import ADMIN_KEY, OTHER_KEY, TENANT_KEY
from tests.integration.helpers import render

pytestmark = pytest.mark.integration

UNKNOWN_KEY = "unknown-key-5f0c2d9e8b7a41d3"


def _client(address: str, key: str) -> Client:
    return Client(ClientSettings.resolve(address, key, environ={}), timeout_s=60)


def _signature(url: str) -> str:
    values = parse_qs(urlparse(url).query).get("X-Amz-Signature", [])
    assert values and len(values[0]) >= 32, url  # a real SigV4 presigned URL
    return values[0]


@pytest.fixture(scope="module")
def debug_gateway(worker):
    """A second OCR gateway logging at DEBUG, so even chatty lines are checked."""
    port = free_port()
    worker.start_gateway("ocr", port, name="gateway-ocr-debug",
                         extra_env={"JOBMESH_LOG_LEVEL": "DEBUG"})
    yield f"127.0.0.1:{port}"
    worker.stop("gateway-ocr-debug")


def _exercise(address: str) -> list[str]:
    """Calls that handle every kind of secret; returns the presigned URLs handed out."""
    urls = []
    image = render("secret handling")
    with _client(address, TENANT_KEY) as c, grpc.insecure_channel(address) as ch:
        assert "secret" in c.ocr_recognize(image).text
        up = c.run(calls.create_upload("ocr", "image/png", len(image)))
        urls.append(up.upload_url)
        http_put(up.upload_url, image, "image/png", 30)
        stub = ocr_service_pb2_grpc.OcrServiceStub(ch)  # Recognize by ref: no SDK call
        auth = [("authorization", f"Bearer {TENANT_KEY}")]
        assert "secret" in stub.Recognize(pb.RecognizeRequest(image_ref=up.ref),
                                          metadata=auth, timeout=60).text
        missing = c.run(calls.create_upload("ocr", "image/png", len(image)))  # never uploaded
        urls.append(missing.upload_url)
        with pytest.raises(grpc.RpcError):
            stub.Recognize(pb.RecognizeRequest(image_ref=missing.ref), metadata=auth, timeout=30)
        line = {"custom_id": "a", "body": {"image": base64.b64encode(image).decode()}}
        job = c.create_batch("ocr", "Recognize", (json.dumps(line) + "\n").encode(),
                             inline_limit=0)  # the manifest goes up through a presigned PUT
        assert c.wait_job(job.name, timeout_s=120).done
        results = c.run(calls.batch_results("ocr", job.name))
        urls.append(results.output_url)
        assert json.loads(http_get(results.output_url, 30))["custom_id"] == "a"
        submitted = c.ocr_submit(image)
        assert c.wait_job(submitted.name, timeout_s=60).done
    with _client(address, OTHER_KEY) as c, pytest.raises(JobmeshClientError) as err:
        c.get_job(submitted.name)  # another tenant's job
    assert err.value.code is grpc.StatusCode.NOT_FOUND
    with _client(address, ADMIN_KEY) as c:
        assert list(c.list_models())
    with _client(address, UNKNOWN_KEY) as c, pytest.raises(JobmeshClientError) as err:
        c.ocr_recognize(image)
    assert err.value.code is grpc.StatusCode.UNAUTHENTICATED
    with grpc.insecure_channel(address) as ch, pytest.raises(grpc.RpcError) as rpc:
        ocr_service_pb2_grpc.OcrServiceStub(ch).Recognize(  # not a Bearer header at all
            pb.RecognizeRequest(image=image),
            metadata=[("authorization", f"Basic {UNKNOWN_KEY}")], timeout=10)
    assert rpc.value.code() is grpc.StatusCode.UNAUTHENTICATED
    return urls


def test_no_log_line_holds_a_secret(worker, gateway, debug_gateway):
    urls = _exercise(gateway) + _exercise(debug_gateway)
    env = worker.env
    secrets = {
        "tenant key": TENANT_KEY, "other tenant key": OTHER_KEY, "admin key": ADMIN_KEY,
        "unknown key": UNKNOWN_KEY, "S3 secret key": env["JOBMESH_S3_SECRET_KEY"],
        **{f"presigned signature {n}": _signature(u) for n, u in enumerate(urls)},
    }
    patterns = [re.compile(p, re.IGNORECASE) for p in
                (r"X-Amz-Signature=", r"\bBearer\s+\S", r"authorization\W+(Bearer|Basic)")]
    logs = sorted((worker.root / "logs").glob("*.log"))
    names = {p.stem for p in logs}
    assert {"gateway-ocr", "gateway-ocr-debug", "worker-ocr"} <= names, names
    json_lines = 0
    for path in logs:
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
            where = f"{path.name}:{n}"
            for what, value in secrets.items():
                assert value not in line, f"{what} logged at {where}: {line[:300]}"
            for p in patterns:
                assert not p.search(line), f"{p.pattern!r} logged at {where}: {line[:300]}"
            json_lines += line.startswith("{")
    assert json_lines > 10  # the logs were captured (JSON lines), not empty files
    debug = (worker.root / "logs" / "gateway-ocr-debug.log").read_text()
    assert '"tenant": "tenant-a"' in debug  # lines written while serving calls are in them
