"""The Helm chart infra/helm/jobmesh, checked offline (no cluster, no helm binary, no network).

* `helm lint --strict` and `helm template` run through helm-python-sdk, which binds Helm's own
  Go library, with the default values and with values-gpu.yaml.
* Every rendered manifest is validated by kubernetes-validate in strict mode (unknown fields are
  errors) against the oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the
  newest schema the package ships. It has no schema for KEDA's kinds, so ScaledObjects and
  TriggerAuthentications are checked here, field by field, against what the workers consume:
  the Redis list names come from kombu itself.
* The chart must agree with the code it deploys: ports from shared.config, settings that exist
  in Settings, a grace period longer than the time limit Celery enforces, the images' uid.
* Negative cases prove that the checks check (a broken ScaledObject, an unknown field, bad
  values are all refused).
"""

from __future__ import annotations

import base64
import copy
import json
import re
from concurrent import futures
from pathlib import Path

import grpc
import pytest
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from shared.auth import KeyRing
from shared.config import DOMAIN_PORTS, GATEWAY_METRICS_PORTS, WORKER_METRICS_PORTS, Settings

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "infra" / "helm" / "jobmesh"
GPU_VALUES = CHART / "values-gpu.yaml"
DOCKERFILES = [REPO / "infra" / "docker" / "Dockerfile",
               REPO / "infra" / "docker" / "Dockerfile.cuda"]
RELEASE, NAMESPACE = "jobmesh", "mesh"
JOB_SERVICE = "jobmesh.jobs.v1.JobService"
KEDA_API = "keda.sh/v1alpha1"
# Read from the environment by shared/runners/onnx.py, not a Settings field.
NON_SETTINGS_ENV = {"JOBMESH_ORT_THREADS"}


# ---- Helm through helm-python-sdk ------------------------------------------------------------

@pytest.fixture(scope="module")
def helm():
    try:
        import helm_python
    except ImportError:
        pytest.fail("helm-python-sdk is not installed (import name helm_python): "
                    "`pip install helm-python-sdk` (it is in the `dev` extra: `make venv`).",
                    pytrace=False)
    return helm_python


@pytest.fixture(scope="module")
def kubernetes_validate():
    try:
        import kubernetes_validate
    except ImportError:
        pytest.fail("kubernetes-validate is not installed: `pip install kubernetes-validate` "
                    "(it is in the `dev` extra: `make venv`).", pytrace=False)
    return kubernetes_validate


def gpu_values(helm) -> dict:
    # Parsed by Helm itself, exactly as `-f values-gpu.yaml` would be.
    return helm.values_from_yaml(GPU_VALUES.read_text())


def render(helm, values: dict | None = None) -> list[dict]:
    """`helm template` with these values (over values.yaml): every manifest, NOTES.txt left out."""
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE)
    docs = []
    for path in sorted(rendered):
        if path.endswith("NOTES.txt"):
            continue
        docs += [d for d in yaml.safe_load_all(rendered[path]) if d]
    return docs


@pytest.fixture(scope="module", params=["default", "gpu"])
def variant(request, helm):
    values = gpu_values(helm) if request.param == "gpu" else None
    return request.param, values, render(helm, values)


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def container(deployment: dict) -> dict:
    [c] = deployment["spec"]["template"]["spec"]["containers"]
    return c


def env_of(deployment: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container(deployment).get("env", [])}


def config_data(docs: list[dict]) -> dict[str, str]:
    [cm] = by_kind(docs, "ConfigMap").values()
    return cm["data"]


def module_of(deployment: dict) -> str:
    args = container(deployment)["args"]
    assert args[:2] == ["python", "-m"], args
    return args[2]


def flag(deployment: dict, name: str) -> str:
    args = container(deployment)["args"]
    return args[args.index(name) + 1]


def workers(docs: list[dict]) -> dict[str, tuple[str, str]]:
    """Worker Deployment name -> (domain, device), read from what the pod runs."""
    out = {}
    for name, dep in by_kind(docs, "Deployment").items():
        module = module_of(dep)
        if module.startswith("workers."):
            out[name] = (module.removeprefix("workers."), env_of(dep)["JOBMESH_DEVICE"]["value"])
    return out


def gateways(docs: list[dict]) -> dict[str, str]:
    """Gateway Deployment name -> domain."""
    return {name: module_of(dep).removeprefix("services.")
            for name, dep in by_kind(docs, "Deployment").items()
            if module_of(dep).startswith("services.")}


def selects(selector: dict, deployment: dict) -> bool:
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


# ---- lint and schema validation --------------------------------------------------------------

def min_kube_version() -> str:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    m = re.fullmatch(r">=\s*(\d+\.\d+\.\d+)(-0)?", chart["kubeVersion"])
    assert m, f"Chart.yaml kubeVersion {chart['kubeVersion']!r}: expected '>=X.Y.Z-0'"
    return m.group(1)


def kube_versions() -> list[str]:
    from kubernetes_validate.utils import latest_version

    return sorted({min_kube_version(), f"{latest_version()}.0"})


@pytest.mark.parametrize("which", ["default", "gpu"])
def test_helm_lint_strict(helm, which):
    values = gpu_values(helm) if which == "gpu" else None
    report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE,
                       kube_version=f"v{min_kube_version()}")
    assert report["total_charts_linted"] == 1
    assert report["errors"] == [], report
    # Strict: warnings fail too (severity 2 = warning, 3 = error; 1 = info, e.g. "icon").
    assert [m for m in report["messages"] if m["severity"] >= 2] == [], report


@pytest.mark.parametrize("version", kube_versions())
def test_manifests_pass_kubernetes_validate_strict(variant, kubernetes_validate, version):
    _, _, docs = variant
    errors, validated = [], 0
    for doc in docs:
        if doc["apiVersion"] == KEDA_API:
            continue  # no schema in kubernetes-validate: test_scaled_objects checks these
        try:
            kubernetes_validate.validate(doc, version, strict=True)
            validated += 1
        except Exception as exc:  # collect every failure, then report them all
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc}")
    assert errors == []
    assert validated >= 10  # not vacuous


def test_strict_validation_rejects_unknown_fields(helm, kubernetes_validate):
    docs = render(helm)
    dep = copy.deepcopy(next(iter(by_kind(docs, "Deployment").values())))
    container(dep)["readinessProbe"]["grpcc"] = container(dep)["readinessProbe"].pop("grpc")
    with pytest.raises(kubernetes_validate.ValidationError, match="grpcc"):
        kubernetes_validate.validate(dep, kube_versions()[-1], strict=True)


# ---- what gets deployed ----------------------------------------------------------------------

def test_expected_objects(variant):
    which, _, docs = variant
    devices = ("cpu", "gpu") if which == "gpu" else ("cpu",)
    queues = {(d, dev) for d in ("ocr", "audio", "textgen", "curation", "compression")
              for dev in devices}
    assert set(gateways(docs).values()) == {"ocr", "audio", "textgen", "curation",
                                            "compression"}
    assert set(workers(docs).values()) == queues
    kinds = {d["kind"] for d in docs}
    assert {"ConfigMap", "Secret", "ServiceAccount", "Deployment", "Service",
            "HorizontalPodAutoscaler", "PodDisruptionBudget", "ScaledObject", "Job"} <= kinds
    assert len(by_kind(docs, "ScaledObject")) == len(queues)
    assert len(by_kind(docs, "PodDisruptionBudget")) == 5 + len(queues)
    names = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert len(names) == len(set(names)), "duplicate objects"


def test_gateways_match_shared_config_and_probe_grpc_health(variant):
    _, _, docs = variant
    services = by_kind(docs, "Service")
    hpas = by_kind(docs, "HorizontalPodAutoscaler")
    for name, domain in gateways(docs).items():
        dep = by_kind(docs, "Deployment")[name]
        c = container(dep)
        port, mport = DOMAIN_PORTS[domain], GATEWAY_METRICS_PORTS[domain]
        assert int(flag(dep, "--port")) == port and int(flag(dep, "--metrics-port")) == mport
        assert flag(dep, "--host") == "0.0.0.0"
        assert "command" not in c, "command would replace the image's tini ENTRYPOINT"
        assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"grpc": port,
                                                                       "metrics": mport}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            # Native gRPC probe on the serving port, about a service that does not depend on
            # workers (see gatewayDefaults.probes in values.yaml).
            assert c[probe]["grpc"] == {"port": port, "service": JOB_SERVICE}, (name, probe)
        env = env_of(dep)
        assert env["JOBMESH_API_KEYS_FILE"]["value"] == "/etc/jobmesh/api_keys.yaml"
        mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
        assert mounts["/etc/jobmesh"]["readOnly"] is True
        # The pod outlives the preStop sleep plus the gateway's own drain.
        pod = dep["spec"]["template"]["spec"]
        sleep = int(c["lifecycle"]["preStop"]["exec"]["command"][1])
        assert pod["terminationGracePeriodSeconds"] > sleep + int(
            env["JOBMESH_SHUTDOWN_GRACE_S"]["value"])
        # Two Services: ClusterIP and headless, both on the grpc port, both selecting the pods.
        mine = {n: s for n, s in services.items() if selects(s["spec"]["selector"], dep)}
        assert set(mine) == {name, f"{name}-headless"}, mine
        assert mine[f"{name}-headless"]["spec"]["clusterIP"] == "None"
        assert "clusterIP" not in mine[name]["spec"]
        for svc in mine.values():
            [grpc_port] = [p for p in svc["spec"]["ports"] if p["name"] == "grpc"]
            assert (grpc_port["port"], grpc_port["targetPort"]) == (port, "grpc")
        # The HPA owns the replica count, so the Deployment does not set one.
        assert hpas[name]["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1",
                                                         "kind": "Deployment", "name": name}
        assert "replicas" not in dep["spec"]
        assert hpas[name]["spec"]["minReplicas"] >= 2


def test_every_pod_has_a_disruption_budget(variant):
    _, _, docs = variant
    pdbs = by_kind(docs, "PodDisruptionBudget").values()
    for name, dep in by_kind(docs, "Deployment").items():
        [pdb] = [p for p in pdbs if selects(p["spec"]["selector"]["matchLabels"], dep)]
        assert pdb["spec"]["maxUnavailable"] == 1, name


def task_limit(dep: dict) -> int:
    return int(env_of(dep)["JOBMESH_TASK_TIME_LIMIT_S"]["value"])


def test_workers_consume_their_queue_and_drain(variant):
    _, _, docs = variant
    from shared.jobs.celery_app import make_celery

    # The env names must be the settings Celery's limits and visibility timeout come from.
    visibility = int(config_data(docs)["JOBMESH_VISIBILITY_TIMEOUT_S"])
    for name, (domain, device) in workers(docs).items():
        dep = by_kind(docs, "Deployment")[name]
        c, pod = container(dep), dep["spec"]["template"]["spec"]
        conf = make_celery("helm-check", Settings(task_time_limit_s=task_limit(dep),
                                                  visibility_timeout_s=visibility)).conf
        assert conf.task_soft_time_limit < conf.task_time_limit == task_limit(dep)
        # No worker's task outlives the broker-wide redelivery timeout (it would run twice).
        assert conf.broker_transport_options["visibility_timeout"] > conf.task_time_limit
        assert name == f"{RELEASE}-worker-{domain}-{device}"
        assert int(flag(dep, "--metrics-port")) == WORKER_METRICS_PORTS[domain]
        assert int(flag(dep, "--concurrency")) >= 1
        assert "command" not in c
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["exec"]["command"] == [
                "python", "/opt/jobmesh/worker_healthcheck.py", domain], (name, probe)
        # Warm shutdown: the running task finishes within its hard limit before SIGKILL.
        assert pod["terminationGracePeriodSeconds"] > conf.task_time_limit, name
        # ONNX Runtime threads are set: os.cpu_count() in a pod is the node's core count.
        assert int(env_of(dep)["JOBMESH_ORT_THREADS"]["value"]) >= 1
        # KEDA owns the replica count.
        assert "replicas" not in dep["spec"], name


def test_task_time_limit_per_domain(helm, variant):
    """Compression gets the 30 minutes its worker defaults to; any domain can be given its own
    limit, which moves its pods' grace period and the mesh-wide visibility timeout with it."""
    _, values, docs = variant
    deps = by_kind(docs, "Deployment")
    default = re.search(r'"JOBMESH_TASK_TIME_LIMIT_S", "(\d+)"',
                        (REPO / "workers" / "compression" / "__main__.py").read_text())
    limits = {w: task_limit(deps[n]) for n, w in workers(docs).items()}
    assert limits[("compression", "cpu")] == int(default.group(1)) == 1800
    assert limits[("ocr", "cpu")] == Settings.model_fields["task_time_limit_s"].default == 300
    assert int(config_data(docs)["JOBMESH_VISIBILITY_TIMEOUT_S"]) == 2 * max(limits.values())
    merged = copy.deepcopy(values or {})
    merged.setdefault("workers", {}).setdefault("ocr", {})["taskTimeLimitSeconds"] = 4000
    docs = render(helm, merged)
    deps = by_kind(docs, "Deployment")
    for name, (domain, _) in workers(docs).items():
        want = 4000 if domain == "ocr" else limits[(domain, "cpu")]
        assert task_limit(deps[name]) == want, name
        assert deps[name]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == \
            want + 30, name
    assert int(config_data(docs)["JOBMESH_VISIBILITY_TIMEOUT_S"]) == 8000
    docs = render(helm, {**merged, "jobs": {"visibilityTimeoutSeconds": 4500}})
    assert config_data(docs)["JOBMESH_VISIBILITY_TIMEOUT_S"] == "4500"


def test_settings_names_exist(variant):
    """Every JOBMESH_* the chart sets is a field of shared.config.Settings (a typo would be
    ignored silently: Settings has extra="ignore")."""
    _, _, docs = variant
    fields = {f"JOBMESH_{f.upper()}" for f in Settings.model_fields}
    names = set(config_data(docs))
    for dep in by_kind(docs, "Deployment").values():
        names |= {n for n in env_of(dep) if n.startswith("JOBMESH_")}
    assert names - fields == NON_SETTINGS_ENV
    for var in NON_SETTINGS_ENV:
        assert any(var in p.read_text() for p in (REPO / "shared").rglob("*.py")), var
    assert not any(k in config_data(docs) for k in ("JOBMESH_S3_ACCESS_KEY",
                                                    "JOBMESH_S3_SECRET_KEY", "JOBMESH_API_KEYS"))


def test_pods_run_as_the_images_non_root_user(variant):
    _, _, docs = variant
    uids = set()
    for path in DOCKERFILES:
        users = re.findall(r"^USER\s+(\d+)(?::(\d+))?", path.read_text(), flags=re.M)
        uids.add(int(users[-1][0]))
    [uid] = uids
    cache_dir = config_data(docs)["JOBMESH_MODEL_CACHE_DIR"]
    pods = {**by_kind(docs, "Deployment"), **by_kind(docs, "Job")}
    assert by_kind(docs, "Job")
    for name, dep in pods.items():
        pod = dep["spec"]["template"]["spec"]
        psc, csc = pod["securityContext"], container(dep)["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] == uid, name
        assert csc["allowPrivilegeEscalation"] is False, name
        assert csc["capabilities"]["drop"] == ["ALL"], name
        assert pod["automountServiceAccountToken"] is False, name
        # Read-only root: whatever the process writes needs a volume.
        assert csc["readOnlyRootFilesystem"] is True, name
        mounts = {m["mountPath"] for m in container(dep)["volumeMounts"]}
        assert "/tmp" in mounts, name
        if name in workers(docs):
            assert cache_dir in mounts, name


def test_models_are_registered_by_a_hook_job(variant):
    _, _, docs = variant
    jobs = list(by_kind(docs, "Job").values())
    assert sorted(container(j)["args"][2] for j in jobs) == ["shared.models.importer",
                                                             "workers.audio.models"]
    for job in jobs:
        hooks = job["metadata"]["annotations"]["helm.sh/hook"].split(",")
        assert set(hooks) == {"post-install", "post-upgrade"}
        assert container(job)["args"][:2] == ["python", "-m"]
        assert {"JOBMESH_S3_ACCESS_KEY", "JOBMESH_S3_SECRET_KEY"} <= set(env_of(job))
        assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_gpu_workers_get_a_gpu_and_gpu_nodes(variant):
    which, _, docs = variant
    for name, (_, device) in workers(docs).items():
        dep = by_kind(docs, "Deployment")[name]
        pod, c = dep["spec"]["template"]["spec"], container(dep)
        limits = c["resources"].get("limits", {})
        if device == "cpu":
            assert "nvidia.com/gpu" not in limits and "nodeSelector" not in pod, name
            assert c["image"].startswith("jobmesh:"), name
            continue
        assert which == "gpu"
        assert int(limits["nvidia.com/gpu"]) >= 1, name
        assert pod["nodeSelector"], name
        assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"]), name
        assert c["image"].startswith("jobmesh-cuda:"), name
        # A rollout must not need a spare GPU.
        assert dep["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0


# ---- KEDA: our own checks (kubernetes-validate has no schema for these kinds) ----------------

def priority_lists(queue: str) -> list[str]:
    """The Redis lists kombu keeps for `queue`, from kombu itself: the plain name for priority
    step 0, `<queue><sep><step>` for the others."""
    from kombu.transport.redis import Channel

    return [queue if step == 0 else f"{queue}{Channel.sep}{step}"
            for step in Channel.priority_steps]


def check_scaled_objects(docs: list[dict]) -> list[str]:
    """Problems with the chart's KEDA objects, as messages (empty = fine)."""
    problems = []
    deployments = by_kind(docs, "Deployment")
    worker_queues = workers(docs)
    auths = by_kind(docs, "TriggerAuthentication")
    data = config_data(docs)
    url = data["JOBMESH_REDIS_URL"]
    db = url.split("?")[0].rsplit("/", 1)[-1]
    host = url.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
    scaled = set()
    for doc in docs:
        if doc["apiVersion"].startswith("keda.sh/") and doc["apiVersion"] != KEDA_API:
            problems.append(f"{doc['kind']}: apiVersion {doc['apiVersion']}")
    for name, so in by_kind(docs, "ScaledObject").items():
        if so["apiVersion"] != KEDA_API:
            problems.append(f"{name}: apiVersion {so['apiVersion']}")
        spec = so["spec"]
        ref = spec["scaleTargetRef"]
        target = ref.get("name")
        if ref.get("kind", "Deployment") != "Deployment" or target not in deployments:
            problems.append(f"{name}: scaleTargetRef {ref} names no Deployment of the chart")
            continue
        if target not in worker_queues:
            problems.append(f"{name}: {target} is not a worker")
            continue
        scaled.add(target)
        domain, device = worker_queues[target]
        own = priority_lists(f"{domain}.{device}")
        allowed = set(own) | set(priority_lists(f"{domain}.cpu"))
        lists = []
        for trig in spec["triggers"]:
            meta = trig.get("metadata", {})
            if trig.get("type") != "redis":
                problems.append(f"{name}: trigger type {trig.get('type')}")
                continue
            lists.append(meta.get("listName"))
            if meta.get("listName") not in allowed:
                problems.append(f"{name}: listName {meta.get('listName')!r} is none of "
                                f"{domain}.{device}'s lists")
            if meta.get("databaseIndex") != db:
                problems.append(f"{name}: databaseIndex {meta.get('databaseIndex')} != {db}")
            hostname, _, port = meta.get("address", "").rpartition(":")
            want_host, _, want_port = host.rpartition(":")
            if port != want_port or not hostname.startswith(want_host):
                problems.append(f"{name}: address {meta.get('address')} is not {host}")
            if not str(meta.get("listLength", "")).isdigit() or int(meta["listLength"]) < 1:
                problems.append(f"{name}: listLength {meta.get('listLength')!r}")
            if meta.get("enableTLS") != str(url.startswith("rediss://")).lower():
                problems.append(f"{name}: enableTLS {meta.get('enableTLS')}")
            auth = trig.get("authenticationRef", {}).get("name")
            if auth and auth not in auths:
                problems.append(f"{name}: authenticationRef {auth} does not exist")
        missing = [q for q in own if q not in lists]
        if missing:
            problems.append(f"{name}: no trigger for {missing}")
        if len(lists) != len(set(lists)):
            problems.append(f"{name}: a list is counted twice")
        if device == "gpu" and spec.get("minReplicaCount") != 0:
            problems.append(f"{name}: GPU workers must scale to zero")
        if device == "cpu" and spec.get("minReplicaCount", 0) < 1:
            problems.append(f"{name}: no CPU worker left for sync calls")
        if spec.get("maxReplicaCount", 100) < max(1, spec.get("minReplicaCount", 0)):
            problems.append(f"{name}: maxReplicaCount below minReplicaCount")
        modifiers = spec.get("advanced", {}).get("scalingModifiers")
        if modifiers:
            names = [t.get("name", "") for t in spec["triggers"]]
            terms = [t.strip() for t in modifiers["formula"].split("+")]
            if sorted(terms) != sorted(names) or not all(
                    re.fullmatch(r"[A-Za-z_]\w*", n) for n in names):
                problems.append(f"{name}: formula {modifiers['formula']!r} is not the sum of "
                                f"the triggers {names}")
            if modifiers.get("metricType", "AverageValue") != "AverageValue":
                problems.append(f"{name}: metricType {modifiers['metricType']}")
    unscaled = set(worker_queues) - scaled
    if unscaled:
        problems.append(f"worker Deployments without a ScaledObject: {sorted(unscaled)}")
    return problems


def test_scaled_objects(variant):
    which, _, docs = variant
    assert check_scaled_objects(docs) == []
    for so in by_kind(docs, "ScaledObject").values():
        queue = "{}.{}".format(*workers(docs)[so["spec"]["scaleTargetRef"]["name"]])
        lists = [t["metadata"]["listName"] for t in so["spec"]["triggers"]]
        # The low-priority lists are counted: batch jobs (JOBMESH_BATCH_PRIORITY) wait there.
        assert lists[:4] == [queue, f"{queue}\x06\x163", f"{queue}\x06\x166",
                             f"{queue}\x06\x169"]
        if queue.endswith(".gpu"):
            # Woken by the CPU queue's backlog too: gateways route to .gpu only while a GPU
            # worker is live, so the GPU queue alone could never start the first one.
            assert lists[4:] == priority_lists(queue.replace(".gpu", ".cpu"))
    if which == "gpu":
        assert any(s["spec"]["minReplicaCount"] == 0 for s in by_kind(docs,
                                                                     "ScaledObject").values())


def test_keda_options(helm):
    # Older KEDA: one metric per list (the HPA takes the largest); the triggers stay the same.
    docs = render(helm, {**gpu_values(helm), "keda": {"sumLists": False}})
    assert check_scaled_objects(docs) == []
    assert all("scalingModifiers" not in so["spec"]["advanced"]
               for so in by_kind(docs, "ScaledObject").values())
    # No KEDA: fixed replicas, no KEDA objects.
    docs = render(helm, {"keda": {"enabled": False},
                         "workers": {"ocr": {"cpu": {"replicas": 3}}}})
    assert not [d for d in docs if d["apiVersion"] == KEDA_API]
    replicas = {workers(docs)[n]: by_kind(docs, "Deployment")[n]["spec"]["replicas"]
                for n in workers(docs)}
    assert replicas == {("ocr", "cpu"): 3, ("audio", "cpu"): 1, ("textgen", "cpu"): 1,
                        ("curation", "cpu"): 1, ("compression", "cpu"): 1}


def _first_scaled_object(docs):
    return next(d for d in docs if d["kind"] == "ScaledObject")


@pytest.mark.parametrize("breakage", [
    "wrong-list", "missing-priority-list", "no-target", "not-redis", "gpu-min-1", "api-version",
    "formula"])
def test_scaled_object_checker_catches_breakage(helm, breakage):
    docs = copy.deepcopy(render(helm, gpu_values(helm)))
    so = _first_scaled_object(docs)
    spec = so["spec"]
    if breakage == "wrong-list":
        spec["triggers"][0]["metadata"]["listName"] = "ocr.cpu.typo"
    elif breakage == "missing-priority-list":
        spec["triggers"] = [t for t in spec["triggers"]
                            if not t["metadata"]["listName"].endswith("\x169")]
        spec["advanced"].pop("scalingModifiers")
    elif breakage == "no-target":
        spec["scaleTargetRef"]["name"] = "nope"
    elif breakage == "not-redis":
        spec["triggers"][0]["type"] = "redis-streams"
    elif breakage == "gpu-min-1":
        so = next(d for d in docs if d["kind"] == "ScaledObject"
                  and d["metadata"]["name"].endswith("-gpu"))
        so["spec"]["minReplicaCount"] = 1
    elif breakage == "api-version":
        so["apiVersion"] = "keda.k8s.io/v1alpha1"
    elif breakage == "formula":
        spec["advanced"]["scalingModifiers"]["formula"] = "ocr_cpu_p0"
    assert check_scaled_objects(docs) != []


# ---- values: secrets, Redis, S3, new domains, bad input --------------------------------------

def test_chart_made_secret_carries_the_credentials(helm, tmp_path):
    keys = {"k-tenant": {"tenant": "acme", "role": "tenant"},
            "k-admin": {"tenant": "ops", "role": "admin"}}
    docs = render(helm, {"secrets": {"s3AccessKey": "AK", "s3SecretKey": "SK-long-enough",
                                     "apiKeys": keys}})
    [secret] = by_kind(docs, "Secret").values()
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert data["s3-access-key"] == "AK" and data["s3-secret-key"] == "SK-long-enough"
    path = tmp_path / "api_keys.yaml"
    path.write_text(data["api-keys.yaml"])
    ring = KeyRing.load(path)  # the gateway's own loader accepts the rendered file
    assert ring.lookup("k-admin").role == "admin" and ring.lookup("k-tenant").role == "tenant"
    for name, dep in by_kind(docs, "Deployment").items():
        env = env_of(dep)
        assert env["JOBMESH_S3_SECRET_KEY"]["valueFrom"]["secretKeyRef"] == {
            "name": secret["metadata"]["name"], "key": "s3-secret-key"}, name
    # Credentials change -> pods roll (checksum annotation).
    other = render(helm, {"secrets": {"s3AccessKey": "AK2", "s3SecretKey": "SK-long-enough"}})
    a = next(iter(by_kind(docs, "Deployment").values()))["spec"]["template"]["metadata"]
    b = next(iter(by_kind(other, "Deployment").values()))["spec"]["template"]["metadata"]
    assert a["annotations"]["checksum/secrets"] != b["annotations"]["checksum/secrets"]


def test_existing_secret_is_used_and_none_is_made(helm):
    docs = render(helm, {"secrets": {"existingSecret": "jobmesh-prod"}})
    assert by_kind(docs, "Secret") == {}
    for name, dep in by_kind(docs, "Deployment").items():
        refs = [e["valueFrom"]["secretKeyRef"]["name"] for e in env_of(dep).values()
                if "secretKeyRef" in e.get("valueFrom", {})]
        vols = [v["secret"]["secretName"] for v in dep["spec"]["template"]["spec"]["volumes"]
                if "secret" in v]
        assert refs and set(refs + vols) == {"jobmesh-prod"}, name


def test_redis_url_auth_and_tls(helm):
    docs = render(helm, {"redis": {"url": "rediss://redis.db.example:6380/3",
                                   "auth": {"enabled": True}},
                         "secrets": {"existingSecret": "creds"}})
    assert config_data(docs)["JOBMESH_REDIS_URL"] == "rediss://redis.db.example:6380/3"
    for name, dep in by_kind(docs, "Deployment").items():
        env = container(dep)["env"]
        names = [e["name"] for e in env]
        # $(VAR) expansion only sees variables defined earlier in the list.
        assert names.index("REDIS_PASSWORD") < names.index("JOBMESH_REDIS_URL"), name
        url = env[names.index("JOBMESH_REDIS_URL")]["value"]
        assert url == "rediss://:$(REDIS_PASSWORD)@redis.db.example:6380/3", name
    [auth] = by_kind(docs, "TriggerAuthentication").values()
    assert auth["spec"]["secretTargetRef"] == [{"parameter": "password", "name": "creds",
                                                "key": "redis-password"}]
    for so in by_kind(docs, "ScaledObject").values():
        for trig in so["spec"]["triggers"]:
            assert trig["authenticationRef"]["name"] == auth["metadata"]["name"]
            assert trig["metadata"]["address"] == "redis.db.example:6380"
            assert trig["metadata"]["enableTLS"] == "true"
    assert check_scaled_objects(docs) == []


def test_keda_reaches_a_bare_service_name_through_the_namespace(helm):
    docs = render(helm)
    assert config_data(docs)["JOBMESH_REDIS_URL"] == "redis://redis-master:6379/0"
    for so in by_kind(docs, "ScaledObject").values():
        for trig in so["spec"]["triggers"]:
            assert trig["metadata"]["address"] == f"redis-master.{NAMESPACE}.svc:6379"


def test_s3_endpoints(helm):
    docs = render(helm, {"s3": {"endpoint": "minio.storage:9000",
                                "publicEndpoint": "s3.example.com:443", "secure": True}})
    data = config_data(docs)
    assert data["JOBMESH_S3_ENDPOINT"] == "minio.storage:9000"
    assert data["JOBMESH_S3_PUBLIC_ENDPOINT"] == "s3.example.com:443"
    assert data["JOBMESH_S3_SECURE"] == "true"
    Settings(**{k.removeprefix("JOBMESH_").lower(): v for k, v in data.items()})  # parses


def test_a_new_domain_is_one_values_entry(helm):
    docs = render(helm, {"gateways": {"audio": {"port": DOMAIN_PORTS["audio"],
                                                "metricsPort": GATEWAY_METRICS_PORTS["audio"]}},
                         "workers": {"audio": {"metricsPort": WORKER_METRICS_PORTS["audio"]}}})
    assert "audio" in gateways(docs).values()
    assert ("audio", "cpu") in workers(docs).values()
    assert f"{RELEASE}-gateway-audio-headless" in by_kind(docs, "Service")
    assert check_scaled_objects(docs) == []


def test_gateway_tls_mounts_the_secret_and_probes_over_tls(helm, kubernetes_validate):
    from shared.server.healthcheck import build_parser

    tls = {"enabled": True, "secretName": "gw-tls", "serverName": "gateway.mesh.example",
           "clientAuth": True}
    docs = render(helm, {"gatewayDefaults": {"tls": tls},
                         "gateways": {"audio": {"tls": {"clientAuth": False}}}})
    for doc in docs:
        if doc["apiVersion"] != KEDA_API:
            kubernetes_validate.validate(doc, min_kube_version(), strict=True)
    for name, domain in gateways(docs).items():
        dep = by_kind(docs, "Deployment")[name]
        c, env, mtls = container(dep), env_of(dep), domain != "audio"
        files = {k: v["value"] for k, v in env.items() if k.startswith("JOBMESH_TLS_")}
        assert files["JOBMESH_TLS_CERT_FILE"] == "/etc/jobmesh-tls/tls.crt"
        assert files["JOBMESH_TLS_KEY_FILE"] == "/etc/jobmesh-tls/tls.key"
        assert ("JOBMESH_TLS_CLIENT_CA_FILE" in files) is mtls
        Settings(**{k.removeprefix("JOBMESH_").lower(): v for k, v in files.items()})
        mount = {m["mountPath"]: m for m in c["volumeMounts"]}["/etc/jobmesh-tls"]
        assert mount["readOnly"] is True
        volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
        assert volumes[mount["name"]]["secret"]["secretName"] == "gw-tls"
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            # Kubernetes' gRPC probe cannot do TLS: the shared probe runs in the pod instead.
            assert "grpc" not in c[probe], (name, probe)
            cmd = c[probe]["exec"]["command"]
            assert cmd[:3] == ["python", "-m", "shared.server.healthcheck"]
            args = build_parser().parse_args(cmd[3:])  # flags the probe really has
            assert args.address == f"127.0.0.1:{DOMAIN_PORTS[domain]}"
            assert (args.service, args.tls_server_name) == (JOB_SERVICE, tls["serverName"])
            assert args.tls_ca_file == "/etc/jobmesh-tls/ca.crt"
            assert (args.tls_cert_file == files["JOBMESH_TLS_CERT_FILE"]) is mtls
    for missing in ("secretName", "serverName"):
        with pytest.raises(helm.HelmError, match=f"tls.{missing} is required"):
            render(helm, {"gatewayDefaults": {"tls": {**tls, missing: ""}}})
    with pytest.raises(helm.HelmError, match="clientAuthh"):
        render(helm, {"gatewayDefaults": {"tls": {"clientAuthh": True}}})


@pytest.mark.parametrize("values, reason", [
    ({"s3": {"endpoint": "http://minio:9000"}}, "s3/endpoint"),
    ({"redis": {"url": "redis://:hunter2@redis:6379/0"}}, "redis/url"),
    ({"redis": {"url": "http://redis:6379/0"}}, "redis/url"),
    ({"gatways": {}}, "gatways"),
    ({"config": {"LOG_LEVEL": "DEBUG"}}, "LOG_LEVEL"),
    ({"config": {"JOBMESH_TASK_TIME_LIMIT_S": "10"}}, "JOBMESH_TASK_TIME_LIMIT_S"),
    ({"workers": {"ocr": {"cpu": {"env": {"JOBMESH_DEVICE": "gpu"}}}}}, "JOBMESH_DEVICE"),
    ({"gateways": {"search": {"enabled": True}}}, "gateways.search.port"),
    ({"jobs": {"queuePreference": "tpu"}}, "queuePreference"),
    ({"config": {"JOBMESH_VISIBILITY_TIMEOUT_S": "60"}}, "JOBMESH_VISIBILITY_TIMEOUT_S"),
    ({"jobs": {"visibilityTimeoutSeconds": 1800}}, "must exceed the longest task time limit"),
    ({"workers": {"ocr": {"taskTimeLimitSeconds": 0}}}, "taskTimeLimitSeconds"),
], ids=["s3-scheme", "redis-password-in-url", "redis-scheme", "typo", "not-jobmesh",
        "derived-setting", "device-override", "gateway-without-port", "bad-preference",
        "derived-visibility", "visibility-under-a-limit", "zero-limit"])
def test_bad_values_are_refused(helm, values, reason):
    with pytest.raises(helm.HelmError, match=re.escape(reason)):
        render(helm, values)


def test_values_files_parse_and_differ_only_where_documented(helm):
    gpu = gpu_values(helm)
    assert set(gpu) == {"workerDefaults", "workers"}
    assert all(gpu["workers"][d]["gpu"]["enabled"] is True for d in gpu["workers"])


# ---- gRPC load balancing over the headless Service -------------------------------------------

# What infra/README.md tells clients to use with the headless Service's DNS name.
ROUND_ROBIN = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})


class CountingHealth(health.HealthServicer):
    def __init__(self):
        super().__init__()
        self.calls = 0
        self.set("", health_pb2.HealthCheckResponse.SERVING)

    def Check(self, request, context):
        self.calls += 1
        return super().Check(request, context)


@pytest.fixture()
def two_gateways():
    """Two gRPC servers standing in for two gateway pods behind one headless Service name."""
    servers, servicers, ports = [], [], []
    for _ in range(2):
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        servicer = CountingHealth()
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        ports.append(server.add_insecure_port("127.0.0.1:0"))
        server.start()
        servers.append(server)
        servicers.append(servicer)
    yield servicers, ports
    for server in servers:
        server.stop(None)


@pytest.mark.parametrize("policy", ["round_robin", "pick_first"])
def test_calls_spread_over_pods_only_with_round_robin(two_gateways, policy):
    """Why the headless Service + round_robin: with gRPC's default (pick_first) one channel sends
    every call to one address, which is what a ClusterIP does to connections too."""
    servicers, ports = two_gateways
    # A headless Service's DNS answer is a list of pod addresses; ipv4: gives the same list.
    target = "ipv4:" + ",".join(f"127.0.0.1:{p}" for p in ports)
    options = [("grpc.service_config", ROUND_ROBIN)] if policy == "round_robin" else []
    with grpc.insecure_channel(target, options=options) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        stub = health_pb2_grpc.HealthStub(channel)
        # round_robin uses a subchannel once it is connected: on a busy machine the second one
        # may take a few calls, so call until both have served a share (bounded).
        for n in range(1, 201):
            stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
            if n >= 20 and min(s.calls for s in servicers) >= 5:
                break
    calls = sorted(s.calls for s in servicers)
    if policy == "round_robin":
        assert calls[0] >= 5, calls  # both pods serve
    else:
        assert calls == [0, n], calls  # every call on one pod
