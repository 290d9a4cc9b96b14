"""Settings resolution of the SDK/CLI: flags > environment > --env-file > .jobmesh/local.env."""

import subprocess
import sys

import pytest

from shared.client.settings import ClientSettings, ConfigError, find_local_env, read_env_file


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project whose .jobmesh/local.env sits two levels above the working directory."""
    for k in ("JOBMESH_ENDPOINT", "JOBMESH_ENDPOINT_OCR", "JOBMESH_API_KEY"):
        monkeypatch.delenv(k, raising=False)
    (tmp_path / ".jobmesh").mkdir()
    (tmp_path / ".jobmesh" / "local.env").write_text(
        "# written by local mode\n\n"
        "JOBMESH_ENDPOINT=127.0.0.1:50051\n"
        "JOBMESH_ENDPOINT_OCR=127.0.0.1:50061\n"
        "JOBMESH_API_KEY=local-key\n")
    cwd = tmp_path / "a" / "b"
    cwd.mkdir(parents=True)
    monkeypatch.chdir(cwd)
    return tmp_path


def write(path, text):
    path.write_text(text)
    return path


def test_local_env_found_in_a_parent_dir(project):
    s = ClientSettings.resolve()
    assert find_local_env(project / "a" / "b") == (project / ".jobmesh" / "local.env").resolve()
    assert s.endpoint_for("jobs") == "127.0.0.1:50051"
    assert s.endpoint_for("ocr") == "127.0.0.1:50061"
    assert s.api_key == "local-key"


def test_env_file_beats_local_env(project, tmp_path_factory):
    f = write(tmp_path_factory.mktemp("cfg") / "mesh.env",
              "JOBMESH_ENDPOINT=mesh.internal:443\nJOBMESH_API_KEY=file-key\n")
    s = ClientSettings.resolve(env_file=f)
    assert s.endpoint_for("jobs") == "mesh.internal:443"
    # The env file's general endpoint shadows local.env's per-domain one.
    assert s.endpoint_for("ocr") == "mesh.internal:443"
    assert s.api_key == "file-key"


def test_environment_beats_env_file(project, tmp_path_factory, monkeypatch):
    f = write(tmp_path_factory.mktemp("cfg") / "mesh.env",
              "JOBMESH_ENDPOINT=file:1\nJOBMESH_API_KEY=file-key\n")
    monkeypatch.setenv("JOBMESH_ENDPOINT", "env-host:2")
    monkeypatch.setenv("JOBMESH_API_KEY", "env-key")
    s = ClientSettings.resolve(env_file=f)
    assert (s.endpoint_for("ocr"), s.api_key) == ("env-host:2", "env-key")


def test_flags_beat_everything(project, tmp_path_factory, monkeypatch):
    f = write(tmp_path_factory.mktemp("cfg") / "mesh.env", "JOBMESH_ENDPOINT=file:1\n")
    monkeypatch.setenv("JOBMESH_ENDPOINT", "env-host:2")
    monkeypatch.setenv("JOBMESH_ENDPOINT_OCR", "env-ocr:3")
    monkeypatch.setenv("JOBMESH_API_KEY", "env-key")
    s = ClientSettings.resolve("flag-host:4", "flag-key", env_file=f)
    assert s.endpoint_for("ocr") == "flag-host:4"
    assert s.endpoint_for("jobs") == "flag-host:4"
    assert s.api_key == "flag-key"


def test_each_value_from_its_own_best_layer(project, monkeypatch):
    monkeypatch.setenv("JOBMESH_API_KEY", "env-key")
    s = ClientSettings.resolve()
    assert s.api_key == "env-key"
    assert s.endpoint_for("ocr") == "127.0.0.1:50061"  # endpoints still from local.env


def test_domain_endpoint_beats_general_in_the_same_layer(project, monkeypatch):
    monkeypatch.setenv("JOBMESH_ENDPOINT", "env-host:2")
    monkeypatch.setenv("JOBMESH_ENDPOINT_OCR", "env-ocr:3")
    s = ClientSettings.resolve()
    assert s.endpoint_for("ocr") == "env-ocr:3"
    assert s.endpoint_for("audio") == "env-host:2"


def test_explicit_domain_endpoints(project):
    s = ClientSettings.resolve(endpoints={"ocr": "flag-ocr:5"})
    assert s.endpoint_for("ocr") == "flag-ocr:5"
    assert s.endpoint_for("jobs") == "127.0.0.1:50051"


def test_nothing_configured(tmp_path, monkeypatch):
    s = ClientSettings.resolve(environ={}, cwd=tmp_path)
    assert s.api_key is None
    with pytest.raises(ConfigError, match="--endpoint"):
        s.endpoint_for("ocr")


def test_injected_environ_and_cwd(project, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    s = ClientSettings.resolve(environ={"JOBMESH_ENDPOINT": "x:1", "OTHER": "y"}, cwd=elsewhere)
    assert s.endpoint_for("ocr") == "x:1"
    assert s.api_key is None  # no local.env above `elsewhere`; the project's is not read


def test_env_file_syntax(tmp_path):
    f = write(tmp_path / "x.env", "  # comment\nexport JOBMESH_API_KEY = 'k=1'\n\nA=\"b\"\n")
    assert read_env_file(f) == {"JOBMESH_API_KEY": "k=1", "A": "b"}
    with pytest.raises(ConfigError, match=r"bad\.env:2"):
        read_env_file(write(tmp_path / "bad.env", "A=1\nnot a pair\n"))


def test_missing_env_file_is_an_error(project):
    with pytest.raises(ConfigError, match="no such file"):
        ClientSettings.resolve(env_file=project / "absent.env")


@pytest.mark.parametrize("bad", ["http://h:1", "h", "h:0", "h:99999", "h:1/x"])
def test_bad_endpoints_fail_fast(bad, tmp_path):
    with pytest.raises(ConfigError, match="not host:port"):
        ClientSettings.resolve(bad, environ={}, cwd=tmp_path)


def test_shadowed_values_are_not_validated(tmp_path):
    env = {"JOBMESH_ENDPOINT": "good:1"}
    f = write(tmp_path / "x.env", "JOBMESH_ENDPOINT=http://stale:1\n")
    assert ClientSettings.resolve(env_file=f, environ=env, cwd=tmp_path).endpoint == "good:1"


@pytest.mark.parametrize("good", ["localhost:50051", "10.0.0.7:1", "[::1]:50051",
                                  "ocr-gw.mesh.svc.cluster.local:50051"])
def test_good_endpoints(good, tmp_path):
    assert ClientSettings.resolve(good, environ={}, cwd=tmp_path).endpoint == good


def test_client_and_cli_import_nothing_server_side():
    code = ("import sys, shared.cli.main, shared.client; "
            "bad = [m for m in sys.modules if m.split('.')[0] in "
            "('celery', 'redis', 'minio', 'kombu', 'onnxruntime') "
            "or m.startswith(('shared.server', 'shared.jobs', 'shared.storage', 'shared.models', "
            "'shared.runners', 'shared.config', 'services', 'workers'))]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
