"""Model compression through the whole mesh: CompressionService → Celery on Redis → the
compression worker quantizing / pruning the real PP-OCR recognizer from the S3 registry,
evaluating it against the original, registering the new version; then ModelService promotes
it, the running OCR worker picks it up without a restart, and a rollback returns to the
original. Nothing here is faked."""

from __future__ import annotations

import json
import time

import grpc
import pytest
from jobmesh.compression.v1 import compression_service_pb2 as pb
from jobmesh.compression.v1 import compression_service_pb2_grpc
from jobmesh.jobs.v1 import job_pb2
from jobmesh.models.v1 import model_service_pb2 as models_pb
from jobmesh.models.v1 import model_service_pb2_grpc
from jobmesh.ocr.v1 import ocr_service_pb2, ocr_service_pb2_grpc

from shared.client import job_response
from shared.local.stack import free_port
from tests.conftest import ADMIN_KEY, TENANT_KEY, auth
from tests.integration.helpers import details, render, wait_job

pytestmark = pytest.mark.integration

REC = "ppocr-rec"


@pytest.fixture(scope="module")
def compression_address(stack):
    # Recipes evaluate two models; the suite's 30 s task limit is for OCR-sized tasks.
    stack.start_worker("compression", extra_env={"JOBMESH_TASK_TIME_LIMIT_S": "600",
                                                 "JOBMESH_VISIBILITY_TIMEOUT_S": "1200"})
    port = free_port()
    stack.start_gateway("compression", port)
    stack.wait_consumers("compression.cpu", timeout=120)
    return f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def compression_gateway(compression_address):
    with grpc.insecure_channel(compression_address) as ch:
        yield ch


@pytest.fixture
def comp(compression_gateway):
    return compression_service_pb2_grpc.CompressionServiceStub(compression_gateway)


@pytest.fixture
def models(compression_gateway):
    return model_service_pb2_grpc.ModelServiceStub(compression_gateway)


def _run(channel, request: pb.SubmitCompressRequest, timeout: float = 400) -> job_pb2.Job:
    stub = compression_service_pb2_grpc.CompressionServiceStub(channel)
    job = stub.SubmitCompress(request, metadata=auth(ADMIN_KEY), timeout=30).job
    return wait_job(channel, job.name, ADMIN_KEY, timeout)


def _poll(channel, name: str, timeout: float) -> job_pb2.Job:
    """GetJob every 2 s until done: on a loaded machine a long WaitJob round can miss its own
    deadline, and this job takes minutes."""
    from jobmesh.jobs.v1 import job_service_pb2, job_service_pb2_grpc

    jobs = job_service_pb2_grpc.JobServiceStub(channel)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = jobs.GetJob(job_service_pb2.GetJobRequest(name=name), metadata=auth(ADMIN_KEY),
                          timeout=30).job
        if job.done:
            return job
        time.sleep(2)
    raise AssertionError(f"{name} not done in {timeout} s")


def _serving(models, name: str = REC) -> str:
    return models.GetModel(models_pb.GetModelRequest(name=name), metadata=auth(),
                           timeout=10).model.serving_version


def _ocr_versions(ocr, image: bytes) -> list[str]:
    resp = ocr.Recognize(ocr_service_pb2.RecognizeRequest(image=image), metadata=auth(),
                         timeout=60)
    return list(resp.model_versions)


def _wait_ocr_version(ocr, image: bytes, version: str, timeout: float = 40) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        seen = _ocr_versions(ocr, image)
        if f"{REC}@{version}" in seen or time.monotonic() > deadline:
            return seen
        time.sleep(1)


def test_int8_recipe_registers_promotes_and_rolls_back(compression_gateway, models, channel,
                                                       worker):
    original = _serving(models)
    done = _run(compression_gateway, pb.SubmitCompressRequest(
        model=REC, recipe=pb.Recipe(int8_dynamic=pb.Int8Dynamic()),
        eval=pb.EvalSpec(samples=24)))
    assert done.state == job_pb2.JOB_STATE_SUCCEEDED, done.error
    result = job_response(done)
    assert result.parent_version == original and result.metric == "cer"
    assert result.size_ratio > 1.0 and not result.promoted
    # Every op type the recipe tried is accounted for with a measurement.
    assert result.notes and any("ms" in n for n in result.notes)
    assert {a.key.rsplit("/", 1)[1] for a in done.result.artifacts} == {"report.json",
                                                                        "report.md"}
    model = models.GetModel(models_pb.GetModelRequest(name=REC), metadata=auth(),
                            timeout=10).model
    new = next(v for v in model.versions if v.version == result.version)
    assert new.provenance.parent_version == original
    assert json.loads(new.provenance.source.removeprefix("recipe:"))["name"] == "int8_dynamic"
    assert {"model.onnx", "report.json", "report.md"} <= {f.path for f in new.files}
    assert model.serving_version == original  # registered, not serving

    # The same recipe again lands on the same version (no second copy).
    again = job_response(_run(compression_gateway, pb.SubmitCompressRequest(
        model=REC, recipe=pb.Recipe(int8_dynamic=pb.Int8Dynamic()),
        eval=pb.EvalSpec(samples=24))))
    assert again.version == result.version

    ocr = ocr_service_pb2_grpc.OcrServiceStub(channel)
    image = render("Compressed models still read text")
    with pytest.raises(grpc.RpcError) as err:
        models.PromoteModel(models_pb.PromoteModelRequest(name=REC, version=result.version),
                            metadata=auth(), timeout=10)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    try:
        promoted = models.PromoteModel(
            models_pb.PromoteModelRequest(name=REC, version=result.version),
            metadata=auth(ADMIN_KEY), timeout=10)
        assert promoted.previous_version == original
        assert promoted.model.serving_history[0] == original
        # The running OCR worker switches within its refresh interval, without a restart.
        assert f"{REC}@{result.version}" in _wait_ocr_version(ocr, image, result.version)
    finally:
        back = models.RollbackModel(models_pb.RollbackModelRequest(name=REC),
                                    metadata=auth(ADMIN_KEY), timeout=10)
    assert back.model.serving_version == original
    assert back.previous_version == result.version
    assert f"{REC}@{original}" in _wait_ocr_version(ocr, image, original)
    with pytest.raises(grpc.RpcError) as err:  # nothing earlier to return to now
        models.RollbackModel(models_pb.RollbackModelRequest(name=REC),
                             metadata=auth(ADMIN_KEY), timeout=10)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_sparse_2_4_on_the_recognizer_reports_accuracy(compression_gateway):
    done = _run(compression_gateway, pb.SubmitCompressRequest(
        model=REC, recipe=pb.Recipe(sparse_2_4=pb.Sparse24(
            method=pb.Sparse24.METHOD_MAGNITUDE)), eval=pb.EvalSpec(samples=16)))
    assert done.state == job_pb2.JOB_STATE_SUCCEEDED, done.error
    result = job_response(done)
    assert result.metric == "cer" and result.metric_value >= 0
    assert any("2:4" in n for n in result.notes)


def test_tensorrt_on_a_cpu_worker_fails_with_a_reason(compression_gateway, comp):
    recipes = {r.name: r for r in comp.ListRecipes(pb.ListRecipesRequest(), metadata=auth(),
                                                   timeout=10).recipes}
    assert recipes["int8_dynamic"].available
    assert not recipes["tensorrt"].available and "TensorRT" in recipes["tensorrt"].reason
    done = _run(compression_gateway, pb.SubmitCompressRequest(
        model=REC, recipe=pb.Recipe(tensorrt=pb.TensorRT())), timeout=60)
    assert done.state == job_pb2.JOB_STATE_FAILED
    assert done.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert "TensorrtExecutionProvider" in done.error.message


@pytest.mark.parametrize("request_, code, field", [
    (pb.SubmitCompressRequest(model=REC), grpc.StatusCode.INVALID_ARGUMENT, "recipe"),
    (pb.SubmitCompressRequest(model=REC, recipe=pb.Recipe(int8_dynamic=pb.Int8Dynamic(
        op_types=["Softmax"]))), grpc.StatusCode.INVALID_ARGUMENT,
     "recipe.int8_dynamic.op_types[0]"),
    (pb.SubmitCompressRequest(model=REC, recipe=pb.Recipe(sparse_2_4=pb.Sparse24(
        include="(unclosed"))), grpc.StatusCode.INVALID_ARGUMENT, "recipe.sparse_2_4.include"),
    (pb.SubmitCompressRequest(model=REC, recipe=pb.Recipe(fp16=pb.Float16()),
                              eval=pb.EvalSpec(samples=-1)),
     grpc.StatusCode.INVALID_ARGUMENT, "eval.samples"),
    (pb.SubmitCompressRequest(model="Bad Name", recipe=pb.Recipe(fp16=pb.Float16())),
     grpc.StatusCode.INVALID_ARGUMENT, "model"),
    (pb.SubmitCompressRequest(model="no-such-model", recipe=pb.Recipe(fp16=pb.Float16())),
     grpc.StatusCode.NOT_FOUND, None),
    (pb.SubmitCompressRequest(model=REC, version="v404", recipe=pb.Recipe(fp16=pb.Float16())),
     grpc.StatusCode.NOT_FOUND, None),
])
def test_bad_requests_are_refused_before_queueing(comp, request_, code, field):
    with pytest.raises(grpc.RpcError) as err:
        comp.SubmitCompress(request_, metadata=auth(ADMIN_KEY), timeout=10)
    assert err.value.code() == code
    if field:
        assert field in [f for f, _ in details(err.value)["violations"]]


def test_compression_needs_an_admin_key(comp):
    with pytest.raises(grpc.RpcError) as err:
        comp.SubmitCompress(pb.SubmitCompressRequest(
            model=REC, recipe=pb.Recipe(fp16=pb.Float16())), metadata=auth(), timeout=10)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_register_model_from_uploaded_files(models, compression_gateway):
    from shared.client.sdk import http_put
    from shared.models.importer import rapidocr_dir

    data = (rapidocr_dir() / "ch_ppocr_mobile_v2.0_cls_mobile.onnx").read_bytes()
    up = models.CreateModelUpload(models_pb.CreateModelUploadRequest(size=len(data)),
                                  metadata=auth(ADMIN_KEY), timeout=10)
    http_put(up.upload_url, data, "application/octet-stream", 30)
    req = models_pb.RegisterModelRequest(
        name="uploaded-cls", version="v1", files=[models_pb.RegisterFile(
            path="model.onnx", source=up.ref)], serve=True,
        provenance=models_pb.Provenance(source="uploaded by a test"))
    model = models.RegisterModel(req, metadata=auth(ADMIN_KEY), timeout=60).model
    assert model.serving_version == "v1"
    [version] = model.versions
    assert version.inputs[0].name == "x" and version.files[0].size == len(data)
    # Same files again: a no-op. A file path escaping the version: refused, naming the field.
    models.RegisterModel(req, metadata=auth(ADMIN_KEY), timeout=60)
    bad = models_pb.RegisterModelRequest(name="uploaded-cls", version="v2", files=[
        models_pb.RegisterFile(path="../x.onnx", source=up.ref)])
    with pytest.raises(grpc.RpcError) as err:
        models.RegisterModel(bad, metadata=auth(ADMIN_KEY), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(err.value)["violations"][0][0] == "files[0].path"


# SmolLM2 loads twice (here and in the worker) and the job scores the adapter three times:
# 519 s measured on 2 cores shared at load average ~15.
@pytest.mark.timeout(900)
def test_compeft_makes_an_adapter_version_that_loads_as_reported(stack, compression_gateway,
                                                                   comp, models, tmp_path):
    """A real (tiny, 2-step) LoRA adapter on SmolLM2 enters the registry through the admin
    path, the `compeft` recipe runs through gRPC and Celery, and the compressed version loads
    back to the task loss its report states."""
    from shared.config import Settings
    from shared.models.registry import ModelRegistry
    from shared.storage.artifacts import ArtifactStore
    from workers.compression import adapters
    from workers.compression.lora import LoraConfig, spread_blocks, task_loss, token_blocks
    from workers.compression.train_adapter import train_and_register

    settings = Settings(**{k.removeprefix("JOBMESH_").lower(): v for k, v in stack.env.items()})
    registry = ModelRegistry(ArtifactStore.from_settings(settings), settings.models_bucket)
    name, cfg = "test-dep5-lora", LoraConfig(steps=2, batch=2, seq_len=32, lr=3e-3)
    train_and_register(registry, "v1", cfg, name=name, serve=True,
                       max_files={"train": 6, "validation": 2, "test": 2})
    # Recipes and models must match, refused at the gateway.
    for model, recipe in ((name, pb.Recipe(int8_dynamic=pb.Int8Dynamic())),
                          (REC, pb.Recipe(compeft=pb.ComPEFT()))):
        with pytest.raises(grpc.RpcError) as err:
            comp.SubmitCompress(pb.SubmitCompressRequest(model=model, recipe=recipe),
                                metadata=auth(ADMIN_KEY), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert [f for f, _ in details(err.value)["violations"]] == ["recipe"]

    job = comp.SubmitCompress(pb.SubmitCompressRequest(
        model=name, recipe=pb.Recipe(compeft=pb.ComPEFT(density=0.3, alphas=[2.0],
                                                        task_vector=True)),
        eval=pb.EvalSpec(samples=2)), metadata=auth(ADMIN_KEY), timeout=30).job
    done = _poll(compression_gateway, job.name, timeout=700)
    assert done.state == job_pb2.JOB_STATE_SUCCEEDED, done.error
    result = job_response(done)
    assert result.metric == "task_loss" and result.parent_version == "v1"
    assert result.size_ratio > 8 and not result.promoted
    model = models.GetModel(models_pb.GetModelRequest(name=name), metadata=auth(),
                            timeout=10).model
    new = next(v for v in model.versions if v.version == result.version)
    assert new.runtime == adapters.RUNTIME and new.provenance.parent_version == "v1"
    assert new.provenance.base_model.startswith("smollm2-135m-instruct@")
    assert {adapters.COMPEFT, adapters.SPEC, "report.json"} <= {f.path for f in new.files}

    _, folder = registry.fetch(name, result.version, tmp_path)
    report = json.loads((folder / "report.json").read_text())
    assert report["params"]["alpha"] == 2.0 and report["params"]["task_vector"]
    assert report["params"]["ratio_fp16"] > 8
    base, tok = adapters.base_model(adapters.read_spec(folder).base_name)
    test = spread_blocks(token_blocks(tok, adapters.read_texts(folder / adapters.TEST), 32), 2)
    loaded = task_loss(base, test, adapters.load_adapter_version(folder, base), cfg)
    assert loaded == pytest.approx(result.metric_value, abs=1e-4)
    assert task_loss(base, test, None, cfg) == pytest.approx(report["params"]["base_loss"],
                                                             abs=1e-4)


def test_cli_models_and_compression(compression_address):
    from tests.integration.test_cli import cli

    base = ("--endpoint", compression_address, "--api-key", ADMIN_KEY)
    r = cli("compression", "recipes", *base)
    assert r.returncode == 0, r.stderr
    assert "int8_static" in r.stdout and "TensorRT execution provider" in r.stdout
    r = cli("compression", "submit", "--model", f"{REC}:no-such-version", "--recipe", "fp16",
            *base)
    assert r.returncode == 1 and "NOT_FOUND" in r.stderr
    r = cli("models", "show", REC, *base)
    assert r.returncode == 0 and "serving" in r.stdout, r.stderr
    r = cli("models", "promote", REC, *base)
    assert r.returncode == 2 and "NAME:VERSION" in r.stderr
    r = cli("models", "promote", f"{REC}:v1", "--api-key", TENANT_KEY,
            "--endpoint", compression_address)
    assert r.returncode == 4  # auth refused: promotion needs an admin key
