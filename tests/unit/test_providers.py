from shared.runners.onnx import choose_providers

ALL = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def test_best_available_first_and_cpu_last():
    assert choose_providers(ALL) == ALL
    assert choose_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert choose_providers(["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        "CUDAExecutionProvider", "CPUExecutionProvider"]


def test_override_keeps_only_available_and_always_cpu():
    assert choose_providers(["CPUExecutionProvider"], "TensorrtExecutionProvider") == [
        "CPUExecutionProvider"]
    assert choose_providers(ALL, "CUDAExecutionProvider") == [
        "CUDAExecutionProvider", "CPUExecutionProvider"]
