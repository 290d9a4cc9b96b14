"""Compression recipes on tiny ONNX models built here: int8 dynamic and static (explicit and
measured op-type choice), fp16, 2:4 sparsity by magnitude and Wanda, errors and atomic output.

Op-type choice is driven once by the real timer (whatever this CPU says) and otherwise by a
fixed timer, because its keep/exclude logic is the subject there, not this machine's speed."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from workers.compression.recipes import (
    RecipeError,
    check_2_4,
    int8_dynamic,
    int8_static,
    latency_ms,
    sparsify_2_4,
    to_fp16,
)
from workers.compression.recipes import quantize as quantize_mod

RNG_SEED = 0


def _save(path, nodes, inputs, outputs, initializers, opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def _f32(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def mlp(path, d_in=64, hidden=64, d_out=16, opset=17, seed=RNG_SEED):
    """x [N, d_in] -> MatMul fc1 -> Relu -> MatMul fc2 -> y [N, d_out]."""
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((d_in, hidden)) / np.sqrt(d_in)).astype(np.float32)
    w2 = (rng.standard_normal((hidden, d_out)) / np.sqrt(hidden)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "fc1.weight"], ["h"], name="fc1"),
             helper.make_node("Relu", ["h"], ["r"], name="act"),
             helper.make_node("MatMul", ["r", "fc2.weight"], ["y"], name="fc2")]
    return _save(path, nodes, [_f32("x", ["N", d_in])], [_f32("y", ["N", d_out])],
                 [numpy_helper.from_array(w1, "fc1.weight"),
                  numpy_helper.from_array(w2, "fc2.weight")], opset)


def conv_mlp(path, seed=RNG_SEED):
    """x [N, 3, 16, 16] -> Conv 16 3x3 -> Relu -> Flatten -> MatMul head -> y [N, 32]."""
    rng = np.random.default_rng(seed)
    kernel = (rng.standard_normal((16, 3, 3, 3)) / 5).astype(np.float32)
    head = (rng.standard_normal((16 * 16 * 16, 32)) / 64).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "conv.weight"], ["c"], name="conv",
                              pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="act"),
             helper.make_node("Flatten", ["r"], ["f"], name="flat", axis=1),
             helper.make_node("MatMul", ["f", "head.weight"], ["y"], name="head")]
    return _save(path, nodes, [_f32("x", ["N", 3, 16, 16])], [_f32("y", ["N", 32])],
                 [numpy_helper.from_array(kernel, "conv.weight"),
                  numpy_helper.from_array(head, "head.weight")])


def feeds(count, shape, seed=1, name="x"):
    rng = np.random.default_rng(seed)
    return [{name: rng.standard_normal(shape).astype(np.float32)} for _ in range(count)]


def run(path, feed):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)[0]


def op_types(path):
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def weights(path):
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rel_error(new, ref):
    """Relative L2 error of an output against the fp32 reference."""
    return float(np.linalg.norm(new - ref) / np.linalg.norm(ref))


def fixed_timer(slow: dict[str, float]):
    """A stand-in for compare_latency: fp32 takes 10 ms; a model quantized with only op type T
    takes slow.get(T, 9) ms; any other model 9.5 ms. Records what it timed."""
    timed = []

    def compare(baseline, candidate, probe, repeats=3):
        timed.append(candidate.name)
        for op, ms in slow.items():
            if candidate.name == f"only-{op}.onnx":
                return 10.0, ms
        return 10.0, 9.0 if candidate.name.startswith("only-") else 9.5

    compare.timed = timed
    return compare


# --- int8 dynamic ---------------------------------------------------------------------------


def test_dynamic_given_types_smaller_runs_close(tmp_path):
    src = mlp(tmp_path / "mlp.onnx", d_in=128, hidden=256, d_out=32)
    before = digest(src)
    probe = feeds(2, (8, 128))
    result = int8_dynamic(src, tmp_path / "out", op_types=["MatMul"], probe=probe)
    assert result.model == tmp_path / "out" / "mlp.onnx"
    assert result.model.stat().st_size < 0.5 * src.stat().st_size
    assert "MatMulInteger" in op_types(result.model)
    assert rel_error(run(result.model, probe[0]), run(src, probe[0])) < 0.05
    assert result.params["op_types"] == ["MatMul"]
    assert result.params["op_types_selection"] == "given"
    assert result.params["latency_ms"]["fp32"] > 0 and result.params["latency_ms"]["int8"] > 0
    assert any("ran at" in n and "ms" in n for n in result.notes)
    json.dumps(result.params)
    assert digest(src) == before
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["mlp.onnx"]


def test_dynamic_auto_measures_every_candidate_on_this_cpu(tmp_path):
    src = conv_mlp(tmp_path / "cm.onnx")
    try:
        result = int8_dynamic(src, tmp_path / "out", probe=feeds(2, (4, 3, 16, 16)))
    except RecipeError as exc:  # this CPU may find neither type worth it; the figures say so
        assert exc.field == "recipe.op_types"
        assert "Conv" in exc.problem and "MatMul" in exc.problem and "ms" in exc.problem
        assert list((tmp_path / "out").iterdir()) == []
        return
    for op in ("Conv", "MatMul"):
        assert any(n.startswith(f"{op} ") and " ms vs " in n for n in result.notes)
        assert op in result.params["latency_ms"]["per_op_type"]
    assert result.params["op_types_selection"] == "measured"
    assert set(result.params["op_types"]) <= {"Conv", "MatMul"}


def test_dynamic_auto_excludes_the_type_that_slows_down(tmp_path, monkeypatch):
    timer = fixed_timer({"Conv": 30.0})
    monkeypatch.setattr(quantize_mod, "compare_latency", timer)
    src = conv_mlp(tmp_path / "cm.onnx")
    result = int8_dynamic(src, tmp_path / "out", probe=feeds(1, (2, 3, 16, 16)))
    assert result.params["op_types"] == ["MatMul"]
    assert timer.timed == ["only-MatMul.onnx", "only-Conv.onnx"]  # graph's candidate order
    assert any(n.startswith("Conv excluded") and "3.0x slower" in n and "(30.0 ms vs 10.0 ms)"
               in n for n in result.notes)
    assert any(n.startswith("MatMul kept") and "(9.0 ms vs 10.0 ms)" in n
               for n in result.notes)
    ops = op_types(result.model)
    assert "MatMulInteger" in ops and "ConvInteger" not in ops and "Conv" in ops
    assert result.params["latency_ms"]["int8"] == 9.0


def test_auto_with_nothing_paying_off_refuses_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(quantize_mod, "compare_latency",
                        fixed_timer({"Conv": 30.0, "MatMul": 12.0}))
    src = conv_mlp(tmp_path / "cm.onnx")
    with pytest.raises(RecipeError) as err:
        int8_dynamic(src, tmp_path / "out", probe=feeds(1, (2, 3, 16, 16)))
    assert err.value.field == "recipe.op_types"
    assert "MatMul 12.0 ms vs 10.0 ms" in err.value.problem
    assert "Conv 30.0 ms vs 10.0 ms" in err.value.problem
    assert list((tmp_path / "out").iterdir()) == []


# --- int8 static ----------------------------------------------------------------------------


def test_static_given_types_smaller_runs_close(tmp_path):
    src = mlp(tmp_path / "mlp.onnx", d_in=128, hidden=256, d_out=32)
    calibration = feeds(16, (8, 128), seed=2)
    result = int8_static(src, tmp_path / "out", calibration, op_types=["MatMul"])
    # The first layer (128x256 of the 160k weights) reads the raw input and stays in float;
    # the second is int8.
    assert result.params["nodes_in_float"] == ["fc1"]
    assert result.model.stat().st_size < 0.9 * src.stat().st_size
    ops = op_types(result.model)
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    test_feed = feeds(1, (8, 128), seed=3)[0]
    assert rel_error(run(result.model, test_feed), run(src, test_feed)) < 0.1
    params = result.params
    assert params["per_channel"] is True and params["activation_type"] == "QUInt8"
    assert params["calibration_samples"] == 16 and params["op_types"] == ["MatMul"]
    assert params["pre_process"] in ("full", "without symbolic shape inference", "skipped")
    assert "latency_ms" not in params  # no probe, nothing timed
    json.dumps(params)


def test_static_per_channel_lifts_old_opset(tmp_path):
    src = mlp(tmp_path / "mlp.onnx", opset=11)
    result = int8_static(src, tmp_path / "out", feeds(4, (8, 64)), op_types=["MatMul"])
    assert result.params["opset"] == 13
    assert any(n.startswith("Opset 11 converted to 13") for n in result.notes)
    feed = feeds(1, (8, 64), seed=5)[0]
    assert rel_error(run(result.model, feed), run(src, feed)) < 0.1


def test_static_pre_process_failure_falls_back_and_dumps_nothing_here(tmp_path, monkeypatch):
    """ORT's symbolic shape inference dumps the model into the current directory when it
    fails; the recipe runs pre-processing where that dump is cleaned up, and goes on."""
    monkeypatch.setattr(quantize_mod, "_PRE_PROCESS",
                        "open('sym_shape_infer_temp.onnx', 'w').write('dump')\n"
                        "raise Exception('Incomplete symbolic shape inference')\n")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    src = mlp(tmp_path / "mlp.onnx")
    result = int8_static(src, tmp_path / "out", feeds(2, (8, 64)), op_types=["MatMul"])
    assert result.params["pre_process"] == "skipped"
    assert any(n.startswith("quant_pre_process failed (full: Exception: Incomplete symbolic")
               for n in result.notes)
    assert list(cwd.iterdir()) == []
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["mlp.onnx"]


def test_static_auto_keeps_both_and_times_the_combination(tmp_path, monkeypatch):
    timer = fixed_timer({})
    monkeypatch.setattr(quantize_mod, "compare_latency", timer)
    src = conv_mlp(tmp_path / "cm.onnx")
    result = int8_static(src, tmp_path / "out", feeds(4, (2, 3, 16, 16)),
                         per_channel=False, probe=feeds(1, (2, 3, 16, 16)))
    assert result.params["op_types"] == ["MatMul", "Conv"]
    assert timer.timed == ["only-MatMul.onnx", "only-Conv.onnx", "int8.onnx"]
    assert any(n.startswith("The int8 model (MatMul, Conv) ran at 0.95x") for n in result.notes)
    feed = feeds(1, (2, 3, 16, 16), seed=7)[0]
    assert rel_error(run(result.model, feed), run(src, feed)) < 0.1


# --- fp16 -----------------------------------------------------------------------------------


def test_fp16_halves_weights_and_keeps_float32_io(tmp_path):
    src = mlp(tmp_path / "mlp.onnx")
    result = to_fp16(src, tmp_path / "out")
    model = onnx.load(str(result.model))
    assert {t.data_type for t in model.graph.initializer} == {TensorProto.FLOAT16}
    io = [*model.graph.input, *model.graph.output]
    assert {v.type.tensor_type.elem_type for v in io} == {TensorProto.FLOAT}
    sizes = result.params["float_initializer_bytes"]
    assert sizes["before"] == 2 * sizes["after"] == (64 * 64 + 64 * 16) * 4
    feed = feeds(1, (8, 64))[0]
    np.testing.assert_allclose(run(result.model, feed), run(src, feed), rtol=2e-2, atol=2e-2)
    assert any("GPU" in n for n in result.notes)


# --- 2:4 sparsity ---------------------------------------------------------------------------


def groups_of_four(values, axis):
    return (values.reshape(-1, 4, values.shape[1]).transpose(0, 2, 1) if axis == 0
            else values.reshape(values.shape[0], -1, 4))


def test_magnitude_zeros_exactly_the_two_smallest_of_each_four(tmp_path):
    src = mlp(tmp_path / "mlp.onnx")
    before = digest(src)
    result = sparsify_2_4(src, tmp_path / "out")
    new, old = weights(result.model), weights(src)
    for name in ("fc1.weight", "fc2.weight"):
        kept = groups_of_four(new[name], 0)
        dense = np.abs(groups_of_four(old[name], 0))
        assert ((kept == 0).sum(axis=-1) == 2).all()
        dropped = np.where(kept == 0, dense, -np.inf).max(axis=-1)
        survivors = np.where(kept != 0, dense, np.inf).min(axis=-1)
        assert (dropped <= survivors).all()
    assert check_2_4(result.model, ".*") == {"matrices": 2, "groups": (64 * 64 + 64 * 16) // 4,
                                               "violations": 0}
    assert check_2_4(src, ".*")["violations"] > 0
    assert result.params["matrices"] == 2
    assert result.params["zero_fraction_pruned_matrices"] == 0.5
    assert any("no speedup" in n for n in result.notes)
    assert digest(src) == before
    json.dumps(result.params)


def test_include_restricts_the_matrices(tmp_path):
    src = mlp(tmp_path / "mlp.onnx")
    result = sparsify_2_4(src, tmp_path / "out", include=r"^fc1")
    new, old = weights(result.model), weights(src)
    np.testing.assert_array_equal(new["fc2.weight"], old["fc2.weight"])
    assert result.params["matrices"] == 1
    assert check_2_4(result.model, "fc1")["violations"] == 0
    assert check_2_4(result.model, "fc2")["violations"] > 0


def skewed_layer(path):
    """x [N, 8] -> Relu -> MatMul W [8, 4]: row 0 of W is tiny, every other row large."""
    rng = np.random.default_rng(RNG_SEED)
    w = (rng.uniform(0.5, 1.0, (8, 4)) * rng.choice([-1, 1], (8, 4))).astype(np.float32)
    w[0] = 0.05
    nodes = [helper.make_node("Relu", ["x"], ["h"], name="act"),
             helper.make_node("MatMul", ["h", "proj.weight"], ["y"], name="proj")]
    return _save(path, nodes, [_f32("x", ["N", 8])], [_f32("y", ["N", 4])],
                 [numpy_helper.from_array(w, "proj.weight")])


def test_wanda_keeps_weights_on_loud_features_and_errs_less(tmp_path):
    src = skewed_layer(tmp_path / "skew.onnx")
    rng = np.random.default_rng(3)
    calibration = []
    for _ in range(4):
        x = np.abs(rng.standard_normal((16, 8))).astype(np.float32)
        x[:, 0] *= 100.0  # feature 0 is loud: its tiny weights carry most of the output
        calibration.append({"x": x})
    magnitude = sparsify_2_4(src, tmp_path / "magnitude")
    wanda = sparsify_2_4(src, tmp_path / "wanda", method="wanda", calibration=calibration)
    assert (weights(magnitude.model)["proj.weight"][0] == 0).all()
    assert (weights(wanda.model)["proj.weight"][0] != 0).all()
    assert check_2_4(wanda.model, ".*")["violations"] == 0

    def error(path):
        return sum(float(np.abs(run(path, f) - run(src, f)).mean()) for f in calibration)

    assert error(wanda.model) < 0.5 * error(magnitude.model)
    assert wanda.params["calibration_samples"] == 4


def test_gemm_trans_b_and_tied_weights(tmp_path):
    """Gemm with transB (W is [out, in]) and one weight read by two MatMuls: pruned once,
    along the right axis, with Wanda norms from both readers."""
    rng = np.random.default_rng(RNG_SEED)
    gemm_w = rng.standard_normal((32, 64)).astype(np.float32)  # [out, in]
    tied = rng.standard_normal((32, 32)).astype(np.float32)
    nodes = [helper.make_node("Gemm", ["x", "gemm.weight"], ["a"], name="gemm", transB=1),
             helper.make_node("MatMul", ["a", "tied.weight"], ["b"], name="first"),
             helper.make_node("Relu", ["b"], ["c"], name="act"),
             helper.make_node("MatMul", ["c", "tied.weight"], ["y"], name="second")]
    src = _save(tmp_path / "tied.onnx", nodes, [_f32("x", [8, 64])], [_f32("y", [8, 32])],
                [numpy_helper.from_array(gemm_w, "gemm.weight"),
                 numpy_helper.from_array(tied, "tied.weight")])
    result = sparsify_2_4(src, tmp_path / "out", method="wanda",
                          calibration=feeds(3, (8, 64)))
    new = weights(result.model)
    assert ((groups_of_four(new["gemm.weight"], 1) == 0).sum(axis=-1) == 2).all()
    assert ((groups_of_four(new["tied.weight"], 0) == 0).sum(axis=-1) == 2).all()
    assert result.params["matrices"] == 2
    assert any("tied" in n for n in result.notes)
    assert check_2_4(result.model, ".*") == {"matrices": 2, "groups": (32 * 64 + 32 * 32) // 4,
                                               "violations": 0}


# --- errors, atomic output, timing ----------------------------------------------------------


@pytest.mark.parametrize("call, field", [
    (lambda s, d: sparsify_2_4(s, d, method="wanda"), "eval.calibration_samples"),
    (lambda s, d: sparsify_2_4(s, d, method="random"), "recipe.method"),
    (lambda s, d: sparsify_2_4(s, d, include="nothing-like-this"), "recipe.include"),
    (lambda s, d: sparsify_2_4(s, d, include="("), "recipe.include"),
    (lambda s, d: sparsify_2_4(s, d, method="wanda", calibration=feeds(1, (8, 63))),
     "eval.calibration_samples"),
    (lambda s, d: int8_dynamic(s, d), "recipe.probe"),
    (lambda s, d: int8_dynamic(s, d, op_types=["Conv"]), "recipe.op_types"),
    (lambda s, d: int8_dynamic(s, d, op_types=["Gemm"]), "recipe.op_types"),
    (lambda s, d: int8_dynamic(s, d, op_types=[]), "recipe.op_types"),
    (lambda s, d: int8_dynamic(s, d, op_types=["MatMul"], probe=feeds(1, (8, 64), name="z")),
     "recipe.probe"),
    (lambda s, d: int8_static(s, d, []), "eval.calibration_samples"),
    (lambda s, d: int8_static(s, d, feeds(1, (8, 64)).__add__([{"x": [1.0]}])),
     "eval.calibration_samples"),
    (lambda s, d: int8_static(s, d, feeds(2, (8, 64))), "recipe.probe"),
    (lambda s, d: to_fp16(s, d, keep_io_types="yes"), "recipe.keep_io_types"),
])
def test_bad_parameters_name_their_field_and_write_nothing(tmp_path, call, field):
    src = mlp(tmp_path / "mlp.onnx")
    with pytest.raises(RecipeError) as err:
        call(src, tmp_path / "out")
    assert err.value.field == field
    assert isinstance(err.value, ValueError)
    out = tmp_path / "out"
    assert not out.exists() or list(out.iterdir()) == []


def test_bad_model_and_self_overwrite_are_refused(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(RecipeError) as err:
        to_fp16(junk, tmp_path / "out")
    assert err.value.field == "model"
    src = mlp(tmp_path / "mlp.onnx")
    with pytest.raises(RecipeError) as err:
        sparsify_2_4(src, tmp_path)
    assert err.value.field == "dst_dir"
    assert digest(src) == digest(mlp(tmp_path / "again.onnx"))


def test_failure_midway_leaves_no_partial_file(tmp_path, monkeypatch):
    src = mlp(tmp_path / "mlp.onnx")
    out = tmp_path / "out"

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(onnx, "save", broken_save)
    with pytest.raises(OSError):
        sparsify_2_4(src, out)
    with pytest.raises(OSError):
        to_fp16(src, out)
    monkeypatch.undo()

    def broken_timer(*args, **kwargs):
        raise RuntimeError("probe run failed")

    monkeypatch.setattr(quantize_mod, "compare_latency", broken_timer)
    with pytest.raises(RuntimeError):
        int8_dynamic(src, out, probe=feeds(1, (8, 64)))
    assert list(out.iterdir()) == []


def test_latency_ms_is_a_positive_median(tmp_path):
    src = mlp(tmp_path / "mlp.onnx")
    ms = latency_ms(src, feeds(2, (8, 64)), repeats=2)
    assert isinstance(ms, float) and 0 < ms < 1000
    with pytest.raises(RecipeError):
        latency_ms(src, [])
