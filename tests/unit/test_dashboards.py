"""Grafana dashboards, Prometheus scrape config and alert rules, checked offline against the code.

* Every PromQL expression (dashboard targets, alert rules) names only metrics that
  shared/metrics.py defines, with only their labels (plus `le` on histogram buckets); fixed label
  values (gRPC codes, job states, methods, services) are ones the code can emit. This check is
  our own (a small selector scanner), so it runs without extra packages; with `promql-parser`
  installed, every expression is also parsed and the same check runs on the syntax tree.
* alerts_test.yml makes every alert rule fire; with promtool installed it runs, and promtool
  checks prometheus.yml and alerts.yml.
* The dashboards in infra/grafana/dashboards are exactly what infra/grafana/build_dashboards.py
  writes, pick their datasource through a variable (no fixed UID) and lay out without overlaps;
  each domain's dashboard names its real gRPC service and the models its workers load.
* infra/prometheus/prometheus.yml scrapes every gateway and worker of docker-compose.yml on its
  metrics port, and adds no target label that would clash with a metric label.
* README's metric list matches shared/metrics.py.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from shared import metrics
from shared.config import DOMAIN_PORTS, GATEWAY_METRICS_PORTS, WORKER_METRICS_PORTS
from shared.jobs.records import State
from shared.server.interceptors import _split

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "infra" / "grafana"
DASHBOARDS = GRAFANA / "dashboards"
PROMETHEUS = REPO / "infra" / "prometheus"
COMPOSE_FILE = REPO / "docker-compose.yml"

# Labels Prometheus attaches to every series of a target (prometheus.yml): allowed in queries
# on `up` only, never needed by the dashboards.
TARGET_LABELS = {"job", "instance", "role", "compose_service"}
# Metrics that are not ours but that alert rules may use.
FOREIGN = {"up": TARGET_LABELS}
GRAFANA_BUILTINS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


# ---- the catalogue: shared/metrics.py ----------------------------------------------------------

def _catalogue() -> dict[str, set[str]]:
    """Series name -> label names, for every series a metric of shared/metrics.py exposes."""
    series: dict[str, set[str]] = {}
    for obj in vars(metrics).values():
        if not isinstance(obj, MetricWrapperBase):
            continue
        # _labelnames: prometheus_client keeps no public accessor for a labelled metric's labels.
        labels = set(obj._labelnames)
        [desc] = obj.describe()
        if desc.type == "counter":
            series[f"{desc.name}_total"] = labels
        elif desc.type == "histogram":
            series[f"{desc.name}_bucket"] = labels | {"le"}
            series[f"{desc.name}_sum"] = labels
            series[f"{desc.name}_count"] = labels
        else:
            series[desc.name] = labels
    # Gauges a collector produces (GPU, from NVML), declared in shared/metrics.py by name.
    series.update({name: set(labels) for name, (_, labels) in metrics.GPU_GAUGES.items()})
    return series


SERIES = _catalogue()


def _proto_rpcs() -> tuple[set[str], set[str]]:
    """(fully qualified service names, method names) from proto/."""
    services, methods = set(), set()
    for path in (REPO / "proto").rglob("*.proto"):
        text = path.read_text()
        package = re.search(r"^package\s+([\w.]+);", text, re.M).group(1)
        services |= {f"{package}.{s}" for s in re.findall(r"^service\s+(\w+)", text, re.M)}
        methods |= set(re.findall(r"^\s*rpc\s+(\w+)", text, re.M))
    return services, methods


SERVICES, METHODS = _proto_rpcs()
# The probes every gateway serves besides our services (grpcio-health-checking, reflection).
PROBE_SERVICES = {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}


def service_label(service: str) -> str:
    """The `service` label the interceptor records for a call to `service`."""
    return _split(f"/{service}/Method")[0]


# Values the code can put into fixed-vocabulary labels.
KNOWN_VALUES = {
    "code": {c.name for c in grpc.StatusCode},
    "state": {s.value for s in State},
    "method": METHODS | {"Check", "Watch", "ServerReflectionInfo"},
    "service": {service_label(s) for s in SERVICES | PROBE_SERVICES},
    "reason": metrics.finish_reasons() | {metrics.OTHER_REASON, ""},
}


# ---- the expressions ---------------------------------------------------------------------------

def _dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS.glob("*.json"))


def _panels(board: dict) -> list[dict]:
    out = []
    for p in board["panels"]:
        out.append(p)
        out += p.get("panels", [])  # collapsed rows keep their panels inside
    return out


def _dashboard_exprs() -> list[tuple[str, str]]:
    out = []
    for path in _dashboard_files():
        board = json.loads(path.read_text())
        for panel in _panels(board):
            for t in panel.get("targets", []):
                out.append((f"{path.name}: {panel['title']} {t['refId']}", t["expr"]))
        for var in board.get("templating", {}).get("list", []):
            if var["type"] == "query":
                query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
                out.append((f"{path.name}: variable {var['name']}", query))
    return out


def _alert_rules() -> list[dict]:
    doc = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


ALL_EXPRS = _dashboard_exprs() + [(f"alerts.yml: {r['alert']}", r["expr"])
                                  for r in _alert_rules()]


def _substitute(expr: str) -> str:
    for var, value in GRAFANA_BUILTINS.items():
        expr = expr.replace(var, value)
    assert "$" not in re.sub(r'"[^"]*"', "", expr), f"unknown Grafana variable in {expr}"
    return expr


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_IDENT = re.compile(r"(?<![\w.])([a-zA-Z_:][\w:]*)\s*(\{[^{}]*\})?\s*(\()?")
_MATCHER = re.compile(r"(\w+)\s*(=~|!~|!=|=)\s*\x00(\d+)\x00")
_OPERATORS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}


def scan(expr: str) -> tuple[list[tuple[str, list[tuple[str, str, str]]]], set[str], set[str]]:
    """Our own small PromQL scanner: (selectors as (metric, [(label, op, value)]), grouping
    labels, labels made by label_replace). Enough for the expressions in this repo; the
    syntax-tree check below confirms it where promql-parser is installed."""
    strings: list[str] = []

    def hide(m: re.Match) -> str:
        strings.append(m.group(0)[1:-1])
        return f"\x00{len(strings) - 1}\x00"

    text = _STRING.sub(hide, expr)
    grouping = {lab.strip() for labs in _GROUPING.findall(text) for lab in labs.split(",")
                if lab.strip()}
    text = _GROUPING.sub(" ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range and subquery durations
    made = set()
    for m in re.finditer(r"label_replace\s*\(", text):
        # label_replace(v, "dst", ...): the first string after the vector argument.
        made.add(strings[int(re.search(r",\s*\x00(\d+)\x00", text[m.end():]).group(1))])
    selectors = []
    for m in _IDENT.finditer(text):
        name, braces, call = m.groups()
        if call or name in _OPERATORS:
            continue  # a function or aggregation, or a keyword
        matchers = [(lab, op, strings[int(i)]) for lab, op, i in _MATCHER.findall(braces or "")]
        selectors.append((name, matchers))
    return selectors, grouping, made


def _check_selector(where: str, name: str, matchers: list[tuple[str, str, str]]) -> set[str]:
    allowed = SERIES.get(name, FOREIGN.get(name))
    assert allowed is not None, f"{where}: {name} is not defined in shared/metrics.py"
    for label, op, value in matchers:
        assert label in allowed, f"{where}: {name} has no label {label!r} ({sorted(allowed)})"
        known = KNOWN_VALUES.get(label)
        if known is None:
            continue
        # A literal, or a regex that is a plain alternation of names: each must be emittable.
        text = value.replace("\\\\", "\\")
        if op in ("=", "!=") or re.fullmatch(r"[\w.]+(\|[\w.]+)*", text):
            for alt in text.split("|") if op in ("=~", "!~") else [text]:
                assert alt in known, f"{where}: {label}={alt!r} is never emitted"
    return allowed


@pytest.mark.parametrize("where,expr", ALL_EXPRS, ids=[w for w, _ in ALL_EXPRS])
def test_queries_use_only_defined_metrics_and_labels(where, expr):
    expr = _substitute(expr)
    selectors, grouping, made = scan(expr)
    assert selectors, f"{where}: no metric found in {expr}"
    available = set(made)
    for name, matchers in selectors:
        available |= _check_selector(where, name, matchers)
    missing = grouping - available
    assert not missing, f"{where}: groups by {sorted(missing)}, which its metrics lack"
    if not where.startswith("alerts.yml"):  # an alert may watch `up` alone
        assert any(n.startswith("jobmesh_") for n, _ in selectors), f"{where}: no jobmesh metric"


def test_scanner_catches_mistakes():
    """The scanner must see what it is asked to check, or the test above proves nothing."""
    sels, grouping, made = scan('sum by (queue, x) (rate(jobmesh_queue_duration_seconds_bucket'
                                '{queue=~"ocr\\\\..+", le="1"}[5m])) / on (queue) '
                                'label_replace(jobmesh_worker_up, "domain", "$1", "queue", "(.*)")')
    assert sels == [("jobmesh_queue_duration_seconds_bucket", [("queue", "=~", "ocr\\\\..+"),
                                                               ("le", "=", "1")]),
                    ("jobmesh_worker_up", [])]
    assert grouping == {"queue", "x"} and made == {"domain"}
    for bad, message in [
        ("jobmesh_queue_depthz", "not defined"),
        ('jobmesh_queue_depth{model="x"}', "no label"),
        ('jobmesh_requests_total{code="OKAY"}', "never emitted"),
        ('jobmesh_jobs{state=~"RUNNING|DONE"}', "never emitted"),
        ("sum by (domain) (jobmesh_queue_depth)", "groups by"),
    ]:
        with pytest.raises(AssertionError, match=message):
            test_queries_use_only_defined_metrics_and_labels("case", bad)


def test_queries_parse_as_promql():
    """Syntax, and the same name/label check on the parsed tree, for every expression
    (promql-parser, when installed: `pip install promql-parser`)."""
    promql_parser = pytest.importorskip("promql_parser")
    for where, expr in ALL_EXPRS:
        tree = promql_parser.parse(_substitute(expr))  # raises on a syntax error
        found = []

        def visit(node, where=where, found=found):
            if isinstance(node, promql_parser.VectorSelector):
                labels = {m.name for m in node.matchers.matchers if m.name != "__name__"}
                found.append(node.name)
                allowed = SERIES.get(node.name, FOREIGN.get(node.name))
                assert allowed is not None, f"{where}: {node.name} is not in shared/metrics.py"
                assert labels <= allowed, f"{where}: {node.name} has no {labels - allowed}"

        promql_parser.walk(tree, visit)
        # The scanner saw the same selectors as the parser.
        assert sorted(found) == sorted(n for n, _ in scan(_substitute(expr))[0]), where


# ---- dashboards --------------------------------------------------------------------------------

@functools.cache
def _builder():
    spec = importlib.util.spec_from_file_location("jobmesh_build_dashboards",
                                                  GRAFANA / "build_dashboards.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_committed_dashboards_are_what_the_builder_writes():
    builder = _builder()
    built = builder.build()
    assert {p.name for p in _dashboard_files()} == set(built), \
        "run .venv/bin/python infra/grafana/build_dashboards.py"
    for name, board in built.items():
        assert (DASHBOARDS / name).read_text() == builder.render(board), \
            f"{name} differs from the builder's output: run " \
            ".venv/bin/python infra/grafana/build_dashboards.py"


def test_overview_and_one_dashboard_per_gateway_domain():
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    domains = {n.removeprefix("gateway-") for n in raw["services"] if n.startswith("gateway-")}
    assert domains and domains <= set(DOMAIN_PORTS)
    names = {p.name for p in _dashboard_files()}
    assert names == {"jobmesh-overview.json"} | {f"jobmesh-{d}.json" for d in domains}


def _datasource_ok(ds) -> bool:
    return ds == {"type": "prometheus", "uid": "${datasource}"}


@pytest.mark.parametrize("path", _dashboard_files(), ids=lambda p: p.name)
def test_dashboard_structure(path):
    board = json.loads(path.read_text())
    assert board["uid"] == path.stem and board["title"] and "jobmesh" in board["tags"]
    assert "__inputs" not in board and board.get("id") is None
    [var] = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
    assert var["name"] == "datasource" and var["query"] == "prometheus"
    text = path.read_text()
    assert '"uid": "jobmesh-prometheus"' not in text  # the provisioned UID is never named
    ids, cells = set(), set()
    for panel in _panels(board):
        assert panel["id"] not in ids, f"duplicate panel id {panel['id']}"
        ids.add(panel["id"])
        g = panel["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, panel["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"])
                for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine
        if panel["type"] == "row":
            continue
        assert panel["title"] and panel.get("description"), panel["title"]
        assert _datasource_ok(panel["datasource"]), panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        assert all(_datasource_ok(t["datasource"]) for t in panel["targets"]), panel["title"]
        assert panel["fieldConfig"]["defaults"].get("unit"), panel["title"]


def _constants(path: Path) -> dict[str, str]:
    """Module-level string constants of a file, read without importing it (no model deps)."""
    out = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign):
            for tgt in node.targets:
                names = [tgt] if isinstance(tgt, ast.Name) else getattr(tgt, "elts", [])
                values = [node.value] if isinstance(tgt, ast.Name) else getattr(
                    node.value, "elts", [])
                for n, v in zip(names, values, strict=False):
                    if isinstance(n, ast.Name) and isinstance(v, ast.Constant) \
                            and isinstance(v.value, str):
                        out[n.id] = v.value
    return out


# The names each domain's workers load (ServedModels labels them `name@version`).
WORKER_MODELS = {
    "ocr": ("workers/ocr/tasks.py", ("DET", "REC", "CLS")),
    "audio": ("workers/audio/models.py", ("TAGGER_NAME", "VAD_NAME", "ASR_NAME", "VOICE_NAME")),
    "textgen": ("workers/textgen/export.py", ("MODEL_NAME",)),
}


def test_short_service_labels_name_one_service_each():
    """The `service` label drops the package (shared/metrics.py says why); that is only safe
    while no two services share a short name."""
    short = [service_label(s) for s in SERVICES | PROBE_SERVICES]
    assert len(short) == len(set(short)), sorted(short)


def test_probe_services_left_out_are_the_ones_the_interceptor_labels():
    m = re.fullmatch(r'service!~"([\w|]+)"', _builder().NOT_PROBES)
    assert m and set(m.group(1).split("|")) == {service_label(s) for s in PROBE_SERVICES}
    assert _builder().NOT_PROBES in (PROMETHEUS / "alerts.yml").read_text()


def test_domain_dashboards_name_the_real_service_and_models():
    domains = _builder().DOMAINS
    # Compression reads and writes any registered model; curation serves none (yet).
    assert set(domains) == set(WORKER_MODELS) | {"compression", "curation"}
    for name, d in domains.items():
        assert d.service in SERVICES and f".{name}.v1." in d.service, name
        assert d.service_label == service_label(d.service), name
        if name in ("compression", "curation"):
            continue
        models_re = re.compile(d.models.replace("\\\\", "\\"))
        path, consts = WORKER_MODELS[name]
        values = _constants(REPO / path)
        for const in consts:
            assert models_re.fullmatch(f"{values[const]}@v1"), (name, values[const])
        for other, (opath, oconsts) in WORKER_MODELS.items():
            if other != name:
                ovalues = _constants(REPO / opath)
                assert not any(models_re.fullmatch(f"{ovalues[c]}@v1") for c in oconsts), \
                    f"{name}'s model selector also takes {other}'s models"


def test_per_call_stages_are_the_ones_the_workers_record():
    """A domain's per-call section selects stages by name: each must be a stage its workers
    pass to the metered wrappers (a renamed stage would leave the panels empty)."""
    sources = {"audio": ("workers/audio/tasks.py", "workers/audio/metered.py")}
    for name, d in _builder().DOMAINS.items():
        if not d.call_stages:
            continue
        text = "".join((REPO / f).read_text() for f in sources[name])
        for stage in d.call_stages:
            assert f'"{stage}"' in text, (name, stage)


# ---- alert rules -------------------------------------------------------------------------------

def test_alert_rules_are_complete():
    rules = _alert_rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names))
    # The alerts the operators asked for.
    assert {"JobmeshNoWorkerForDomain", "JobmeshQueueWithoutWorker", "JobmeshQueueBacklogGrowing",
            "JobmeshHighErrorRatio", "JobmeshHighLatency"} <= set(names)
    uids = {json.loads(p.read_text())["uid"] for p in _dashboard_files()}
    for r in rules:
        assert re.fullmatch(r"\d+[smh]", r["for"]), r["alert"]
        assert r["labels"]["severity"] in ("warning", "critical"), r["alert"]
        assert r["annotations"]["summary"] and r["annotations"]["description"], r["alert"]
        link = r["annotations"]["dashboard"]
        targets = [link.replace("{{ $labels.domain }}", d) for d in _builder().DOMAINS] \
            if "{{" in link else [link]
        for t in targets:
            assert t.removeprefix("/d/") in uids, f"{r['alert']}: no dashboard {t}"
    by_name = {r["alert"]: r for r in rules}
    assert by_name["JobmeshNoWorkerForDomain"]["for"] == "2m"
    assert "0.05" in by_name["JobmeshHighErrorRatio"]["expr"]


def test_every_alert_has_a_firing_unit_test():
    """alerts_test.yml (run by promtool below) makes every rule fire at least once."""
    doc = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())
    assert doc["rule_files"] == ["alerts.yml"]
    fired = {t["alertname"] for case in doc["tests"] for t in case.get("alert_rule_test", [])
             if t["exp_alerts"]}
    assert fired == {r["alert"] for r in _alert_rules()}


def _promtool() -> str:
    path = os.environ.get("PROMTOOL") or shutil.which("promtool")
    if not path:
        pytest.skip("promtool not installed (Debian: `apt-get install prometheus`, or set "
                    "PROMTOOL to its path)")
    return path


def test_promtool_validates_config_and_runs_the_alert_unit_tests(tmp_path):
    promtool = _promtool()

    def run(*args: str, cwd: Path = PROMETHEUS) -> None:
        proc = subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 0, proc.stdout + proc.stderr

    # The config names the rules where compose mounts them; check it against the repo's file.
    config = (PROMETHEUS / "prometheus.yml").read_text().replace(
        "/etc/prometheus/alerts.yml", str(PROMETHEUS / "alerts.yml"))
    (tmp_path / "prometheus.yml").write_text(config)
    run("check", "config", str(tmp_path / "prometheus.yml"))
    run("check", "rules", "alerts.yml")
    run("test", "rules", "alerts_test.yml")


# ---- Prometheus scrape config vs docker-compose.yml --------------------------------------------

def test_prometheus_scrapes_every_gateway_and_worker_of_compose():
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    prom = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    static = {t: {**sc.get("labels", {})} for sc in jobs["jobmesh-gateways"]["static_configs"]
              for t in sc["targets"]}
    dns = {(n, sd["port"]) for sd in jobs["jobmesh-workers"]["dns_sd_configs"]
           for n in sd["names"]}
    assert all(sd["type"] == "A" for sd in jobs["jobmesh-workers"]["dns_sd_configs"])
    want_gateways, want_workers = set(), set()
    for name, svc in compose["services"].items():
        role, _, rest = name.partition("-")
        domain = rest.removesuffix("-gpu")
        if role == "gateway":
            port = GATEWAY_METRICS_PORTS[domain]
            cmd = svc["command"]
            assert cmd[cmd.index("--metrics-port") + 1] == str(port), name
            want_gateways.add(f"{name}:{port}")
            assert static[f"{name}:{port}"] == {"role": "gateway", "compose_service": name}
        elif role == "worker":
            # Workers take the domain's default metrics port: no flag, no override.
            assert "--metrics-port" not in svc["command"], name
            assert "JOBMESH_METRICS_PORT" not in svc.get("environment", {}), name
            want_workers.add((name, WORKER_METRICS_PORTS[domain]))
    assert set(static) == want_gateways
    assert dns == want_workers
    # Target labels must not shadow a metric label (it would become exported_<label>).
    metric_labels = set().union(*SERIES.values())
    added = {k for sc in jobs["jobmesh-gateways"]["static_configs"] for k in sc["labels"]}
    added |= {rc["target_label"] for rc in jobs["jobmesh-workers"].get("relabel_configs", [])}
    assert added <= TARGET_LABELS and not added & metric_labels


def test_prometheus_config_basics():
    prom = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert prom["rule_files"] == ["/etc/prometheus/alerts.yml"]
    assert prom["global"]["scrape_interval"] == "15s"
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    # $__rate_interval = 4 x the datasource's scrape interval: keep them equal.
    assert ds["datasources"][0]["jsonData"]["timeInterval"] == prom["global"]["scrape_interval"]


# ---- the documented metrics --------------------------------------------------------------------

def test_readme_metric_list_matches_shared_metrics():
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("Metrics use the prefix `jobmesh_`"):]
    section = section[:section.index("\n## ")]
    documented = re.findall(r"^- `(\w+)\{([\w,]*)\}`", section, re.M)
    assert len(documented) >= 9
    defined = {}
    for obj in vars(metrics).values():
        if isinstance(obj, MetricWrapperBase):
            [desc] = obj.describe()
            defined[desc.name.removeprefix("jobmesh_")] = set(obj._labelnames)
    defined |= {name.removeprefix("jobmesh_"): set(labels)
                for name, (_, labels) in metrics.GPU_GAUGES.items()}
    for name, labels in documented:
        base = name.removesuffix("_total")
        assert base in defined, f"README documents {name}, shared/metrics.py lacks it"
        assert set(labels.split(",")) == defined[base], name
