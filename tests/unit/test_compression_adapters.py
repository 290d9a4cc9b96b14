"""LoRA adapter registry entries (adapter.json, weights in either format, task texts) and the
`compeft` recipe's request validation; no model needed."""

from __future__ import annotations

import numpy as np
import pytest
from jobmesh.compression.v1 import compression_service_pb2 as pb

from services.compression import convert
from shared.errors import FailedPrecondition, InvalidArgument
from workers.compression import adapters, compeft
from workers.compression.lora import LoraConfig

BASE = "smollm2-135m-instruct@gguf-q4_1-onnx-v2"


def _spec(**kw) -> adapters.AdapterSpec:
    return adapters.AdapterSpec(base_model=BASE, lora=LoraConfig(steps=2, seq_len=32), **kw)


def test_spec_round_trips_and_names_its_weights():
    spec = _spec()
    assert adapters.AdapterSpec.from_json(spec.to_json()) == spec
    assert spec.weights == adapters.SAFETENSORS and spec.base_name == "smollm2-135m-instruct"
    packed = _spec(format="compeft", compeft={"density": 0.3, "alpha": 2.0,
                                              "task_vector": False})
    assert adapters.AdapterSpec.from_json(packed.to_json()) == packed
    assert packed.weights == adapters.COMPEFT


@pytest.mark.parametrize("kw", [{"format": "gguf"}, {"format": "compeft"},
                                {"compeft": {"density": 0.3}}])
def test_spec_refuses_inconsistent_fields(kw):
    with pytest.raises(ValueError):
        _spec(**kw)


def test_missing_spec_is_a_failed_precondition(tmp_path):
    assert not adapters.is_adapter(tmp_path)
    with pytest.raises(FailedPrecondition):
        adapters.read_spec(tmp_path)


def test_compressed_version_loads_to_what_compeft_decompresses(tmp_path):
    rng = np.random.default_rng(0)
    update = {"m.lora_A.weight": rng.standard_normal((4, 40)).astype(np.float32),
              "m.lora_B.weight": rng.standard_normal((40, 4)).astype(np.float32)}
    blob = compeft.to_bytes(compeft.compress(update, 0.25, 3.0))
    (tmp_path / adapters.COMPEFT).write_bytes(blob)
    (tmp_path / adapters.SPEC).write_text(_spec(format="compeft", compeft={
        "density": 0.25, "alpha": 3.0, "task_vector": False}).to_json())
    loaded = adapters.load_adapter_version(tmp_path)
    expected = compeft.decompress(compeft.compress(update, 0.25, 3.0))
    assert set(loaded) == set(expected)
    for name in expected:
        np.testing.assert_array_equal(loaded[name], expected[name])


def test_texts_round_trip(tmp_path):
    texts = ["Format: https://x\nFiles: *", "line one\n\nline \"two\""]
    assert adapters.read_texts(adapters.write_texts(tmp_path / "v.jsonl", texts)) == texts


def _request(**compeft_fields) -> pb.SubmitCompressRequest:
    return pb.SubmitCompressRequest(model="a-lora", recipe=pb.Recipe(
        compeft=pb.ComPEFT(**compeft_fields)))


def test_compeft_request_defaults_and_texts_beside_the_recipe():
    req = convert.submit_request(_request(validation_texts=["a b c"]))
    recipe = req["recipe"]
    assert recipe["name"] == "compeft" and recipe["density"] == 0.3 and recipe["alphas"] == []
    assert req["validation_texts"] == ["a b c"] and "validation_sha256" in recipe
    other = convert.submit_request(_request(validation_texts=["other"]))["recipe"]
    # Other texts, another derived version; no texts, no digest.
    assert convert.derived_version("v1", recipe) != convert.derived_version("v1", other)
    assert "validation_sha256" not in convert.submit_request(_request())["recipe"]


@pytest.mark.parametrize("fields, field", [
    ({"density": 1.5}, "recipe.compeft.density"),
    ({"density": -0.1}, "recipe.compeft.density"),
    ({"density": float("nan")}, "recipe.compeft.density"),
    ({"alphas": [2.0, 0.0]}, "recipe.compeft.alphas[1]"),
    ({"alphas": [float("inf")]}, "recipe.compeft.alphas[0]"),
    ({"alphas": [1.0] * 17}, "recipe.compeft.alphas"),
    ({"validation_texts": ["x"], "validation_ref": {"bucket": "b", "key": "k"}},
     "recipe.compeft.validation_ref"),
    ({"validation_ref": {"key": "k"}}, "recipe.compeft.validation_ref"),
    ({"validation_texts": ["x" * (convert.MAX_VALIDATION_CHARS + 1)]},
     "recipe.compeft.validation_texts"),
])
def test_bad_compeft_requests_name_the_field(fields, field):
    with pytest.raises(InvalidArgument) as err:
        convert.submit_request(_request(**fields))
    assert [name for name, _ in err.value.field_violations] == [field]
