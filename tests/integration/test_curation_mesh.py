"""Data curation through the whole mesh: shards uploaded to the S3 server with presigned URLs,
CurationService → Celery on Redis → one shard task per shard on the curation worker (datatrove
filters, py3langid, MinHash) → the global dedup stage → curated shards, removed documents with
reasons and a report back in S3. Nothing here is faked."""

from __future__ import annotations

import gzip
import json
import os
import urllib.request

import grpc
import pytest
from google.protobuf import struct_pb2
from jobmesh.curation.v1 import curation_service_pb2 as pb
from jobmesh.curation.v1 import curation_service_pb2_grpc
from jobmesh.jobs.v1 import job_pb2

from shared.client import job_response
from shared.client.sdk import http_put
from shared.local.stack import free_port
from tests.conftest import ADMIN_KEY, TENANT_KEY, auth
from tests.integration.helpers import details, wait_job

pytestmark = pytest.mark.integration

# Real prose: the opening paragraphs of licence texts shipped with Debian.
LICENCES = ["/usr/share/common-licenses/Apache-2.0", "/usr/share/common-licenses/MPL-2.0",
            "/usr/share/common-licenses/GPL-3", "/usr/share/common-licenses/Artistic"]


def paragraphs() -> list[str]:
    out = []
    for path in LICENCES:
        text = open(path, encoding="utf-8").read()
        for para in text.split("\n\n"):
            words = para.split()
            if len(words) >= 60:
                out.append(" ".join(words))
    return out


def shard(docs: list[dict]) -> bytes:
    return gzip.compress("".join(json.dumps(d) + "\n" for d in docs).encode())


def step(name: str, **params) -> pb.Step:
    s = struct_pb2.Struct()
    s.update(params)
    return pb.Step(step=name, params=s)


@pytest.fixture(scope="module")
def curation_address(stack):
    from shared.config import Settings
    from shared.models.registry import ModelRegistry
    from shared.storage.artifacts import ArtifactStore
    from workers.curation.embeddings import register_embedding_model
    from workers.textgen.export import register_textgen_model

    # The reference LM of the lm_perplexity / llm_detect steps and of ScoreTexts.
    settings = Settings(**{k.removeprefix("JOBMESH_").lower(): v for k, v in stack.env.items()})
    registry = ModelRegistry(ArtifactStore.from_settings(settings), settings.models_bucket)
    register_textgen_model(registry)
    register_embedding_model(registry)  # embed_dedup and domain_cluster
    # 300 s: the fine-tune job loads SmolLM2 (~30 s) and exports it (~60 s) on busy cores.
    stack.start_worker("curation", extra_env={"JOBMESH_TASK_TIME_LIMIT_S": "300",
                                              "JOBMESH_VISIBILITY_TIMEOUT_S": "600"})
    port = free_port()
    stack.start_gateway("curation", port)
    stack.wait_consumers("curation.cpu", timeout=120)
    return f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def curation(curation_address):
    with grpc.insecure_channel(curation_address) as ch:
        yield ch


@pytest.fixture
def cur(curation):
    return curation_service_pb2_grpc.CurationServiceStub(curation)


def upload(cur, path: str, data: bytes) -> None:
    up = cur.CreateShardUpload(pb.CreateShardUploadRequest(path=path, size=len(data)),
                               metadata=auth(), timeout=10)
    http_put(up.upload_url, data, "application/octet-stream", 30)


def wait(channel, job: job_pb2.Job) -> job_pb2.Job:
    return wait_job(channel, job.name, TENANT_KEY)


PIPELINE = [step("language", languages=["en"]), step("gopher_repetition"),
            step("exact_dedup"), step("minhash_dedup", threshold=0.7)]


def test_sharded_pipeline_filters_dedups_across_shards_and_reports(cur, curation):
    paras = paragraphs()
    assert len(paras) >= 12
    base = paras[:12]
    near = base[3].split()
    near[5:7] = ["altered", "words"]  # a near-duplicate of base[3], planted in another shard
    shard_a = [{"id": f"a{n}", "text": t} for n, t in enumerate(base[:6])] + [
        {"id": "a-de", "text": "Dies ist ein deutscher Absatz über Lizenzen und freie Software, "
                               "der nicht englisch ist und deshalb entfernt werden muss."},
        {"id": "a-rep", "text": "\n".join(["the same line again and again"] * 40)}]
    shard_b = [{"id": f"b{n}", "text": t} for n, t in enumerate(base[6:])] + [
        {"id": "b-exact", "text": base[0].upper()},  # an exact duplicate after normalisation
        {"id": "b-near", "text": " ".join(near)}]
    upload(cur, "it/run1/in/a.jsonl.gz", shard(shard_a))
    upload(cur, "it/run1/in/b.jsonl.gz", shard(shard_b))

    sub = cur.SubmitCurate(pb.SubmitCurateRequest(
        input_prefix="it/run1/in", output_prefix="it/run1/out", pipeline=PIPELINE),
        metadata=auth(), timeout=30)
    done = wait(curation, sub.job)
    assert done.state == job_pb2.JOB_STATE_SUCCEEDED, done.error
    summary = job_response(done)
    assert (summary.shards, summary.documents_in) == (2, 16)
    assert summary.documents_kept == 12 and summary.documents_removed == 4
    steps = {s.step: s for s in summary.steps}
    assert steps["language"].reasons["language:de"] == 1
    assert sum(steps["gopher_repetition"].reasons.values()) == 1
    assert steps["exact_dedup"].removed == 1 and steps["minhash_dedup"].removed == 1
    assert done.progress.done == done.progress.total == 2

    report = cur.GetReport(pb.GetReportRequest(name=done.name), metadata=auth(), timeout=10)
    html = urllib.request.urlopen(report.report_html_url, timeout=10).read().decode()
    assert "<svg" in html and "Removed documents by reason" in html
    outputs = {o.key.rsplit("/", 1)[1]: o for o in summary.outputs}
    assert set(outputs) == {"a.jsonl.gz", "b.jsonl.gz"}


def test_bad_shard_fails_the_job_naming_it_and_a_rerun_resumes(cur, curation):
    paras = paragraphs()
    good = shard([{"id": f"g{n}", "text": t} for n, t in enumerate(paras[:4])])
    upload(cur, "it/run2/in/good.jsonl.gz", good)
    upload(cur, "it/run2/in/bad.jsonl.gz", gzip.compress(b'{"id": "x", "text": "ok"}\nnot json\n'))
    request = pb.SubmitCurateRequest(input_prefix="it/run2/in", output_prefix="it/run2/out",
                                     pipeline=[step("gopher_repetition"), step("exact_dedup")])
    done = wait(curation, cur.SubmitCurate(request, metadata=auth(), timeout=30).job)
    assert done.state == job_pb2.JOB_STATE_FAILED
    assert "bad.jsonl.gz:2" in done.error.message and "no output was written" in \
        done.error.message
    # Fixed shard, same request: the good shard's marker lets the rerun skip it.
    upload(cur, "it/run2/in/bad.jsonl.gz", shard([{"id": "x", "text": paras[5]}]))
    done = wait(curation, cur.SubmitCurate(request, metadata=auth(), timeout=30).job)
    assert done.state == job_pb2.JOB_STATE_SUCCEEDED, done.error
    summary = job_response(done)
    assert summary.shards_resumed == 1 and summary.documents_in == 5


@pytest.mark.parametrize("request_, field", [
    (pb.SubmitCurateRequest(input_prefix="x", output_prefix="y"), "pipeline"),
    (pb.SubmitCurateRequest(input_prefix="x", output_prefix="y",
                            pipeline=[step("minhash_dedup", threshold=2)]),
     "pipeline[0].threshold"),
    (pb.SubmitCurateRequest(input_prefix="x", output_prefix="y",
                            pipeline=[step("no_such_step")]), "pipeline[0].step"),
    (pb.SubmitCurateRequest(input_prefix="x", output_prefix="y",
                            pipeline=[step("language", bogus=1)]), "pipeline[0].bogus"),
    (pb.SubmitCurateRequest(input_prefix="../etc", output_prefix="y",
                            pipeline=[step("exact_dedup")]), "input_prefix"),
    (pb.SubmitCurateRequest(input_prefix="it/nothing-here", output_prefix="y",
                            pipeline=[step("exact_dedup")]), "input_prefix"),
    (pb.SubmitCurateRequest(input_prefix="it/run1/in", output_prefix="it/run1/in/out",
                            pipeline=[step("exact_dedup")]), "output_prefix"),
])
def test_bad_requests_name_the_field(cur, request_, field):
    with pytest.raises(grpc.RpcError) as err:
        cur.SubmitCurate(request_, metadata=auth(), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in [f for f, _ in details(err.value)["violations"]]


def test_score_texts_and_list_steps(cur):
    english = paragraphs()[0]
    resp = cur.ScoreTexts(pb.ScoreTextsRequest(texts=[english, "Bonjour à tous, ceci est un "
                                                       "texte écrit en français."]),
                          metadata=auth(), timeout=60)
    en, fr = resp.scores
    assert en.language == "en" and fr.language == "fr"
    assert en.filters["gopher_repetition"] == "" and en.signals["words"] >= 60
    assert 0 <= en.profanity < 0.5
    assert 1 < en.perplexity < 200 and en.machine_text_statistic > 0  # human prose
    steps = {s.step: s for s in cur.ListSteps(pb.ListStepsRequest(), metadata=auth(),
                                              timeout=10).steps}
    assert steps["minhash_dedup"].kind == "dedup"
    assert "threshold" in json.loads(steps["minhash_dedup"].params_schema)["properties"]
    with pytest.raises(grpc.RpcError) as err:
        cur.ScoreTexts(pb.ScoreTextsRequest(texts=["x"] * 65), metadata=auth(), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_cli_upload_submit_wait_and_score(curation_address, tmp_path):
    from tests.integration.test_cli import cli

    paras = paragraphs()
    (tmp_path / "s1.jsonl").write_text("".join(json.dumps({"doc": f"d{n}", "body": t}) + "\n"
                                               for n, t in enumerate(paras[:3] + paras[:1])))
    (tmp_path / "pipeline.yaml").write_text(
        "# every step: {step: NAME, ...params}\n- step: language\n  languages: [en]\n"
        "- step: exact_dedup\n")
    base = ("--endpoint", curation_address, "--api-key", TENANT_KEY)
    r = cli("curation", "upload", tmp_path / "s1.jsonl", "--prefix", "cli/in", *base)
    assert r.returncode == 0, r.stderr
    r = cli("curation", "submit", "--input-prefix", "cli/in", "--output-prefix", "cli/out",
            "--pipeline", tmp_path / "pipeline.yaml", "--text-field", "body", "--id-field",
            "doc", "--wait", *base, timeout=240)
    assert r.returncode == 0, r.stderr
    assert "4 documents in 1 shards: 3 kept, 1 removed" in r.stdout
    assert "exact_dedup:duplicate 1" in r.stdout
    r = cli("curation", "score", "Ceci est une phrase en français, pas en anglais.", *base)
    assert r.returncode == 0 and "language fr" in r.stdout, r.stderr
    (tmp_path / "bad.yaml").write_text("- step: minhash_dedup\n  threshold: 7\n")
    r = cli("curation", "submit", "--input-prefix", "cli/in", "--output-prefix", "cli/out2",
            "--pipeline", tmp_path / "bad.yaml", *base)
    assert r.returncode == 1 and "pipeline[0].threshold" in r.stderr


def test_lm_steps_score_with_the_registered_reference_model(cur, curation):
    import random

    rng = random.Random(7)
    noise = " ".join("".join(rng.choice("qxzjkvbwy") for _ in range(rng.randint(3, 9)))
                     for _ in range(120))
    docs = [{"id": f"p{n}", "text": t} for n, t in enumerate(paragraphs()[:3])]
    docs.append({"id": "noise", "text": noise})
    upload(cur, "it/lm/in/s.jsonl.gz", shard(docs))
    done = wait(curation, cur.SubmitCurate(pb.SubmitCurateRequest(
        input_prefix="it/lm/in", output_prefix="it/lm/out",
        pipeline=[step("lm_perplexity", max_perplexity=60), step("llm_detect", threshold=-0.5)]),
        metadata=auth(), timeout=30).job)
    assert done.state == job_pb2.JOB_STATE_SUCCEEDED, done.error
    summary = job_response(done)
    steps = {s.step: s for s in summary.steps}
    assert dict(steps["lm_perplexity"].reasons) == {"lm_perplexity:too_high": 1}
    assert steps["llm_detect"].removed == 0 and summary.documents_kept == 3


def _docstrings(count: int) -> list[str]:
    """Module docstrings of Python's standard library: the target domain."""
    import ast
    import sysconfig
    from pathlib import Path

    out = []
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        doc = ast.get_docstring(ast.parse(path.read_bytes())) or ""
        if len(doc.split()) >= 60:
            out.append(doc)
        if len(out) == count:
            return out
    return out


def _wait_long(channel, name: str, key: str, timeout: float = 600.0) -> job_pb2.Job:
    """Like wait_job, for a job of minutes on busy cores: each WaitJob round asks the server
    to answer within 30 s and gives the answer 30 s more to arrive."""
    import time

    from google.protobuf import duration_pb2
    from jobmesh.jobs.v1 import job_service_pb2, job_service_pb2_grpc

    jobs = job_service_pb2_grpc.JobServiceStub(channel)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = jobs.WaitJob(job_service_pb2.WaitJobRequest(
            name=name, timeout=duration_pb2.Duration(seconds=30)), metadata=auth(key),
            timeout=60).job
        if done.done:
            return done
    raise AssertionError(f"{name} not done in {timeout} s")


@pytest.mark.skipif(not os.environ.get("JOBMESH_SLOW_TESTS"),
                    reason="minutes of CPU (SmolLM2 LoRA fine-tune, merge, ONNX export, two "
                           "650 MB models through S3): make test-slow")
@pytest.mark.timeout(1200)
def test_color_filter_with_a_fine_tuned_conditional_model(cur, curation, stack):
    """SubmitFineTune (a tiny LoRA: 2 steps) registers a conditional model; a curation job's
    color_filter step scores with it and the prior and keeps the top half across two shards."""
    from jobmesh.curation.v1.curation_service_pb2 import FineTuneResult

    target = _docstrings(12)
    request = pb.SubmitFineTuneRequest(target_texts=target[:8], model_name="it-color-py",
                                       lora_rank=4, steps=2, seq_len=32, batch=2)
    with pytest.raises(grpc.RpcError) as err:  # registry writes: admin only
        cur.SubmitFineTune(request, metadata=auth(), timeout=10)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    done = _wait_long(curation, cur.SubmitFineTune(request, metadata=auth(ADMIN_KEY),
                                                   timeout=30).job.name, ADMIN_KEY)
    assert done.state == job_pb2.JOB_STATE_SUCCEEDED, done.error
    tuned = job_response(done)
    assert isinstance(tuned, FineTuneResult) and not tuned.reused
    assert tuned.model.startswith("it-color-py@lora-") and tuned.target_documents == 8
    assert tuned.parent == "smollm2-135m-instruct@gguf-q4_1-onnx-v2" and tuned.train_blocks >= 2
    again = _wait_long(curation, cur.SubmitFineTune(request, metadata=auth(ADMIN_KEY),
                                                    timeout=30).job.name, ADMIN_KEY)
    assert job_response(again).reused and job_response(again).model == tuned.model

    docs = [{"id": f"py{n}", "text": t} for n, t in enumerate(target[8:])] + \
        [{"id": f"lic{n}", "text": t} for n, t in enumerate(paragraphs()[:4])]
    upload(cur, "it/color/in/a.jsonl.gz", shard(docs[::2]))
    upload(cur, "it/color/in/b.jsonl.gz", shard(docs[1::2]))
    done = _wait_long(curation, cur.SubmitCurate(pb.SubmitCurateRequest(
        input_prefix="it/color/in", output_prefix="it/color/out",
        pipeline=[step("color_filter", conditional_model=tuned.model, keep_fraction=0.5,
                       max_tokens=32)]), metadata=auth(), timeout=30).job.name, TENANT_KEY)
    assert done.state == job_pb2.JOB_STATE_SUCCEEDED, done.error
    summary = job_response(done)
    assert (summary.documents_in, summary.documents_kept) == (8, 4)
    assert dict(summary.steps[0].reasons) == {"color_filter:below_cut": 4}
    # The cut is global: every kept document scores at least every removed one.
    kept, removed = _outputs(stack, summary)
    assert len(kept) == len(removed) == 4
    for r in removed:
        assert r["reason"] == f"color_filter:below_cut:{r['color_score']:.4f}"
    assert min(k["color_score"] for k in kept) >= max(r["color_score"] for r in removed)

    with pytest.raises(grpc.RpcError) as err:  # an unknown model never queues
        cur.SubmitCurate(pb.SubmitCurateRequest(
            input_prefix="it/color/in", output_prefix="it/color/out2",
            pipeline=[step("color_filter", conditional_model="it-color-py@lora-nope",
                           threshold=0.0)]), metadata=auth(), timeout=30)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "pipeline[0].conditional_model" in err.value.details()


def _outputs(stack, summary) -> tuple[list[dict], list[dict]]:
    """The curated and the removed documents of a run, read back from the S3 server."""
    from shared.config import Settings
    from shared.storage.artifacts import ArtifactRef, ArtifactStore

    store = ArtifactStore.from_settings(
        Settings(**{k.removeprefix("JOBMESH_").lower(): v for k, v in stack.env.items()}))
    kept, removed = [], []
    for o in summary.outputs:
        kept += [json.loads(line) for line in gzip.decompress(store.get_bytes(
            ArtifactRef(o.bucket, o.key))).splitlines()]
        removed += [json.loads(line) for line in store.get_bytes(ArtifactRef(
            o.bucket, f"{summary.output_prefix}removed/{o.key.rsplit('/', 1)[1]}.jsonl"
        )).splitlines()]
    return kept, removed


def test_embed_dedup_and_domain_cluster_with_the_registered_minilm(cur, curation, stack):
    """An edited and a reordered copy of two paragraphs, planted in the other shard, are
    removed as near-duplicates of their originals (MiniLM ONNX from the registry, cosine 0.99
    against at most 0.79 between distinct paragraphs); domain_cluster labels what stays."""
    paras = paragraphs()[:12]
    edited = paras[3].split()
    edited[5:7] = ["altered", "words"]
    sentences = paras[5].split(". ")
    docs_a = [{"id": f"a{n}", "text": t} for n, t in enumerate(paras[:6])]
    docs_b = [{"id": f"b{n}", "text": t} for n, t in enumerate(paras[6:])] + [
        {"id": "b-edited", "text": " ".join(edited)},
        {"id": "b-reordered", "text": ". ".join(sentences[1:] + sentences[:1])}]
    upload(cur, "it/embed/in/a.jsonl.gz", shard(docs_a))
    upload(cur, "it/embed/in/b.jsonl.gz", shard(docs_b))
    done = wait(curation, cur.SubmitCurate(pb.SubmitCurateRequest(
        input_prefix="it/embed/in", output_prefix="it/embed/out",
        pipeline=[step("embed_dedup", threshold=0.9), step("domain_cluster", k=3)]),
        metadata=auth(), timeout=30).job)
    assert done.state == job_pb2.JOB_STATE_SUCCEEDED, done.error
    summary = job_response(done)
    assert (summary.documents_in, summary.documents_kept) == (14, 12)
    steps = {s.step: s for s in summary.steps}
    assert dict(steps["embed_dedup"].reasons) == {"embed_dedup:duplicate": 2}
    assert (steps["domain_cluster"].kept, steps["domain_cluster"].removed) == (12, 0)
    kept, removed = _outputs(stack, summary)
    assert {r["id"]: r["reason"] for r in removed} == {
        "b-edited": "embed_dedup:duplicate_of:a.jsonl.gz/a3",
        "b-reordered": "embed_dedup:duplicate_of:a.jsonl.gz/a5"}
    assert len(kept) == 12 and {k["cluster"] for k in kept} == {0, 1, 2}
    listed = {s.step: s for s in cur.ListSteps(pb.ListStepsRequest(), metadata=auth(),
                                               timeout=10).steps}
    for name, kind, param in (("embed_dedup", "dedup", "threshold"),
                              ("domain_cluster", "annotate", "k"),
                              ("drain_templates", "dedup", "dedup_by_template")):
        assert listed[name].kind == kind
        assert param in json.loads(listed[name].params_schema)["properties"]


def test_drain_templates_over_loghub_hdfs_lines_in_two_shards(cur, curation, stack):
    """Raw Loghub HDFS lines, split over two shards: one Drain pass over both keeps the first
    record of each template, gives every kept record its template and parameters, and the
    report counts the records per template."""
    from workers.curation import log_steps, loghub
    from workers.curation.documents import Document
    from workers.curation.steps import DrainTemplatesStep

    path = loghub.default_root() / "HDFS" / "HDFS_2k.log"
    if not path.is_file():
        pytest.skip(f"{path} is missing (the Loghub 2k samples)")
    lines = path.read_text(encoding="utf-8").splitlines()[:80]
    upload(cur, "it/logs/in/a.jsonl.gz", shard([{"id": f"{n}", "text": t}
                                                for n, t in enumerate(lines[:40])]))
    upload(cur, "it/logs/in/b.jsonl.gz", shard([{"id": f"{n}", "text": t}
                                                for n, t in enumerate(lines[40:], 40)]))
    done = wait(curation, cur.SubmitCurate(pb.SubmitCurateRequest(
        input_prefix="it/logs/in", output_prefix="it/logs/out",
        pipeline=[step("drain_templates", system="HDFS", dedup_by_template=True)]),
        metadata=auth(), timeout=30).job)
    assert done.state == job_pb2.JOB_STATE_SUCCEEDED, done.error
    summary = job_response(done)
    # The same pass in-process gives the templates the mesh must have found.
    spec = DrainTemplatesStep(system="HDFS", dedup_by_template=True)
    contents = log_steps.contents(spec, [Document(str(n), t) for n, t in enumerate(lines)])
    _, expected, report = log_steps.mine(spec, dict(enumerate(contents)))
    assert summary.documents_in == 80 and summary.documents_kept == len(expected) >= 3
    kept, removed = _outputs(stack, summary)
    assert sorted(int(k["id"]) for k in kept) == sorted(expected)
    for k in kept:
        assert (k["template"], k["parameters"]) == (expected[int(k["id"])]["template"],
                                                    expected[int(k["id"])]["parameters"])
    assert all(r["reason"].startswith("drain_templates:duplicate_template:") for r in removed)
    got = cur.GetReport(pb.GetReportRequest(name=done.name), metadata=auth(), timeout=10)
    html = urllib.request.urlopen(got.report_html_url, timeout=10).read().decode()
    assert "Log templates (drain_templates)" in html
    top = report["templates"][0]
    assert f"<td>{top['count']:,}</td><td>1</td>" in html and sum(
        t["count"] for t in report["templates"]) == 80
