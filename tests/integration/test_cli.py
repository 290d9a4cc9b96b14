"""The `jobmesh` CLI as users run it: a subprocess against a real gateway and OCR worker."""

import io
import json
import os
import subprocess
import sys
import uuid

import grpc
import pytest
from PIL import Image, ImageDraw, ImageFont

from shared.client import Client, ClientSettings, JobmeshClientError
from shared.local.stack import free_port
from tests.conftest import TENANT_KEY

pytestmark = pytest.mark.integration

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
WORD = "Invoice"  # one word: nothing for the recognizer to split or join


def png(text: str) -> bytes:
    font = ImageFont.truetype(FONT, 36)
    img = Image.new("RGB", (40 + 24 * len(text), 80), "white")
    ImageDraw.Draw(img).text((20, 18), text, font=font, fill="black")
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "invoice.png"
    path.write_bytes(png(WORD))
    return path


def cli(*args, cwd=None, timeout=90) -> subprocess.CompletedProcess:
    """Runs `python -m shared.cli.main ARGS` with no JOBMESH_* variables inherited."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBMESH_")}
    return subprocess.run([sys.executable, "-m", "shared.cli.main", *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


@pytest.fixture
def mesh(gateway, worker, tmp_path):
    """`mesh(*args)`: the CLI pointed at the test gateway with the tenant key (cwd: tmp)."""
    return lambda *a, **kw: cli(*a, "--endpoint", gateway, "--api-key", TENANT_KEY,
                                cwd=tmp_path, **kw)


def test_recognize_prints_text(mesh, image):
    r = mesh("ocr", "recognize", image)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == WORD


def test_recognize_json_to_out_file(mesh, image, tmp_path):
    target = tmp_path / "result.json"
    r = mesh("ocr", "recognize", image, "--classify-angle", "--output", "json", "--out", target)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    doc = json.loads(target.read_text())
    assert doc["file"] == str(image)
    assert doc["response"]["text"] == WORD
    assert doc["response"]["image_width"] > 0  # proto field names preserved


def test_async_then_wait_watch_get_delete(mesh, image):
    rid = uuid.uuid4().hex
    r = mesh("ocr", "recognize", image, "--async", "--request-id", rid)
    assert r.returncode == 0, r.stderr
    name = r.stdout.strip()
    assert name.startswith("jobs/")
    again = mesh("ocr", "recognize", image, "--async", "--request-id", rid)
    assert again.stdout.strip() == name  # idempotent submit

    wait = mesh("jobs", "wait", name, "--timeout", "60")
    assert wait.returncode == 0, wait.stderr
    assert "SUCCEEDED" in wait.stdout and WORD in wait.stdout

    watch = mesh("jobs", "watch", name, "--timeout", "30")
    assert watch.returncode == 0, watch.stderr
    first = watch.stdout.splitlines()[0]
    assert "SNAPSHOT" in first and "SUCCEEDED" in first and name in first

    got = json.loads(mesh("jobs", "get", name, "--output", "json").stdout)
    assert got["state"] == "JOB_STATE_SUCCEEDED"
    assert got["result"]["response"]["text"] == WORD

    assert mesh("jobs", "delete", name).returncode == 0
    gone = mesh("jobs", "get", name)
    assert gone.returncode == 1
    assert gone.stderr.startswith("error: NOT_FOUND NOT_FOUND:")


def test_jobs_list_json_walks_all_pages(mesh, tmp_path, image):
    second = tmp_path / "second.png"
    second.write_bytes(png("Receipt"))
    r = mesh("ocr", "recognize", image, second, "--async")
    names = r.stdout.split()
    assert r.returncode == 0 and len(names) == 2, r.stderr
    for name in names:
        assert mesh("jobs", "wait", name).returncode == 0

    r = mesh("jobs", "list", "--output", "json", "--state", "succeeded", "--domain", "ocr",
             "--page-size", "1")
    assert r.returncode == 0, r.stderr
    jobs = json.loads(r.stdout)["jobs"]
    assert set(names) <= {j["name"] for j in jobs}
    assert {j["state"] for j in jobs} == {"JOB_STATE_SUCCEEDED"}

    text = mesh("jobs", "list", "--state", "succeeded")
    assert text.stdout.startswith("NAME") and names[0] in text.stdout


def test_models_list(mesh):
    r = mesh("models", "list", "--output", "json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["models"]


def test_settings_from_local_env_in_a_parent_dir(gateway, worker, tmp_path):
    (tmp_path / ".jobmesh").mkdir()
    (tmp_path / ".jobmesh" / "local.env").write_text(
        f"JOBMESH_ENDPOINT={gateway}\nJOBMESH_API_KEY={TENANT_KEY}\n")
    (tmp_path / "sub").mkdir()
    r = cli("models", "list", cwd=tmp_path / "sub")
    assert r.returncode == 0, r.stderr
    assert "NAME" in r.stdout


def test_undecodable_image_fails_with_reason(mesh, tmp_path):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"this is not an image")
    r = mesh("ocr", "recognize", junk)
    assert r.returncode == 1
    line = r.stderr.splitlines()[0]
    assert line.startswith("error: INVALID_ARGUMENT UNDECODABLE_INPUT: image:"), r.stderr


def test_field_violations_are_listed(mesh, image):
    r = mesh("ocr", "recognize", image, "--min-confidence", "2")
    assert r.returncode == 1
    assert "options.min_confidence" in r.stderr


def test_bad_key_exits_4_and_keeps_the_out_file(gateway, tmp_path):
    kept = tmp_path / "jobs.json"
    kept.write_text("previous")
    r = cli("jobs", "list", "--endpoint", gateway, "--api-key", "not-a-key", "--out", kept)
    assert r.returncode == 4
    assert r.stderr.startswith("error: UNAUTHENTICATED UNAUTHENTICATED:")
    assert kept.read_text() == "previous"


def test_sdk_errors_carry_reason_and_violations(gateway, worker, image):
    settings = ClientSettings.resolve(gateway, TENANT_KEY, environ={}, cwd=image.parent)
    with Client(settings, timeout_s=30) as client:
        assert client.ocr_recognize(image.read_bytes()).text == WORD
        with pytest.raises(JobmeshClientError) as info:
            client.ocr_recognize(image.read_bytes(), min_confidence=2.0)
    err = info.value
    assert err.code is grpc.StatusCode.INVALID_ARGUMENT and err.reason == "INVALID_ARGUMENT"
    assert [f for f, _ in err.field_violations] == ["options.min_confidence"]
    assert not err.unreachable and not err.auth_refused


def test_unreachable_endpoint_exits_3():
    port = free_port()
    r = cli("jobs", "list", "--endpoint", f"127.0.0.1:{port}", "--api-key", TENANT_KEY)
    assert r.returncode == 3
    assert r.stderr.startswith(f"error: UNAVAILABLE: cannot reach 127.0.0.1:{port}")


def test_missing_file_is_a_usage_error(tmp_path):
    r = cli("ocr", "recognize", tmp_path / "absent.png", "--endpoint", "127.0.0.1:1")
    assert r.returncode == 2
    assert "cannot read" in r.stderr and "absent.png" in r.stderr


def test_usage_errors_exit_2():
    assert cli("jobs").returncode == 2
    assert cli("jobs", "list", "--state", "bogus").returncode == 2
    help_ = cli("jobs", "wait", "--help")
    assert help_.returncode == 0 and "example:" in help_.stdout
