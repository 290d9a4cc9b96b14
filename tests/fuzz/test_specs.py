"""Job specs a client writes: curation pipelines (step names and free-form Struct params, checked
against each step's schema at the gateway) and compression requests (recipe oneof, ComPEFT
alphas and texts, promotion thresholds). Any value gives a worker dict or InvalidArgument naming
a field; nothing else escapes (it would be INTERNAL)."""

from __future__ import annotations

import pytest
from google.protobuf import json_format
from hypothesis import given
from hypothesis import strategies as st

import shared  # noqa: F401 - puts the generated jobmesh.* stubs on sys.path
from services.compression import convert as compression
from services.curation import convert as curation
from shared.errors import InvalidArgument
from tests.fuzz.strategies import float32s, int32s
from tests.fuzz.tally import tried
from workers.curation.steps import STEP_TYPES

curation_pb, compression_pb = curation.pb, compression.pb

names = st.one_of(st.text(max_size=40), st.sampled_from(["", "..", "a" * 101, "model@v1"]))
# What a Struct can hold: JSON values (numbers arrive as doubles, NaN and ±inf included).
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.floats(), st.integers(-2**60, 2**60),
              st.text(max_size=30)),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=12)
param_names = st.one_of(st.text(max_size=16), st.sampled_from(
    ["threshold", "languages", "min_score", "keep_fraction", "max_chars", "step", "seed",
     "prior_model", "conditional_model", "system", "num_perm", "shingle", "k"]))


def _struct(params: dict):
    struct = curation_pb.Step().params
    try:
        struct.update(params)
    except (ValueError, TypeError):  # a value a Struct cannot hold never reaches the gateway
        return None
    return struct


@st.composite
def pipelines(draw) -> list:
    steps = []
    for _ in range(draw(st.integers(0, 5))):
        step = curation_pb.Step(step=draw(st.one_of(st.sampled_from(sorted(STEP_TYPES)), names)))
        struct = _struct(draw(st.dictionaries(param_names, json_values, max_size=5)))
        if struct is not None and draw(st.booleans()):
            step.params.CopyFrom(struct)
        steps.append(step)
    return steps


@pytest.mark.timeout(1800)  # `make fuzz`: 20,000 pipelines run past the default 300 s
@given(pipelines())
def test_curation_pipeline(steps):
    tried("curation pipeline")
    try:
        curation.check_pipeline(curation.pipeline_to_list(steps))
    except InvalidArgument as exc:
        assert exc.field_violations, "InvalidArgument without a field violation"
        assert all(f.startswith("pipeline") for f, _ in exc.field_violations)


@st.composite
def recipes(draw) -> compression_pb.Recipe:
    r = compression_pb.Recipe()
    kind = draw(st.sampled_from(["none", "int8_dynamic", "int8_static", "fp16", "sparse_2_4",
                                 "compeft", "tensorrt"]))
    ops = st.lists(st.one_of(st.sampled_from(["MatMul", "Conv", "Gemm", "LSTM"]), names),
                   max_size=5)
    if kind == "int8_dynamic":
        r.int8_dynamic.op_types.extend(draw(ops))
    elif kind == "int8_static":
        r.int8_static.op_types.extend(draw(ops))
        r.int8_static.calibration = draw(st.one_of(st.integers(0, 4), int32s))
        r.int8_static.per_tensor = draw(st.booleans())
    elif kind == "fp16":
        r.fp16.SetInParent()
    elif kind == "sparse_2_4":
        r.sparse_2_4.include = draw(st.one_of(names, st.sampled_from(["(", "[a-", "*", "mlp"])))
        r.sparse_2_4.method = draw(st.one_of(st.integers(0, 3), int32s))
    elif kind == "compeft":
        r.compeft.density = draw(float32s)
        r.compeft.alphas.extend(draw(st.lists(float32s, max_size=12)))
        r.compeft.validation_texts.extend(draw(st.lists(st.text(max_size=50), max_size=4)))
        r.compeft.task_vector = draw(st.booleans())
    elif kind == "tensorrt":
        r.tensorrt.fp16 = draw(st.booleans())
    return r


@given(recipes(), names, names, float32s, float32s, int32s, int32s)
def test_compression_submit(recipe, model, version, delta, ratio, samples, calibration):
    tried("compression request")
    req = compression_pb.SubmitCompressRequest(model=model, version=version, recipe=recipe)
    req.promotion.max_metric_delta = delta
    req.promotion.max_latency_ratio = ratio
    req.eval.samples = samples
    req.eval.calibration_samples = calibration
    try:
        out = compression.submit_request(req)
    except InvalidArgument as exc:
        assert exc.field_violations, "InvalidArgument without a field violation"
        return
    assert out["recipe"]["name"] in compression.RECIPES or out["recipe"]["name"] == "compeft"
    json_format.MessageToDict(req)  # what was accepted is a well-formed message


def test_a_param_json_cannot_hold_is_refused_naming_it():
    """Found by this suite: ±inf or NaN in a step's Struct params escaped as INTERNAL."""
    step = curation_pb.Step(step="c4_quality")
    step.params.update({"x": [float("inf")]})
    try:
        curation.pipeline_to_list([step])
    except InvalidArgument as exc:
        assert exc.field_violations[0][0] == "pipeline[0].params"
    else:
        raise AssertionError("accepted a param that is not JSON")
