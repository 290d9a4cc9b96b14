"""Compression recipes: each turns a source ONNX model into a new file in a destination folder
and says what it measured and decided (`RecipeResult`), or refuses with a `RecipeError` naming
the parameter at fault.

Modules: `common` (result and error types, the workspace that writes atomically, feed checks,
CPU latency), `quantize` (int8 dynamic and static QDQ, op types chosen by measured latency),
`fp16` (float16 for GPU serving), `sparsity` (2:4 pruning by magnitude or Wanda, and its check).
onnx and onnxruntime are imported inside the functions that use them.
"""

from workers.compression.recipes.common import (
    Calibration,
    RecipeError,
    RecipeResult,
    latency_ms,
)
from workers.compression.recipes.fp16 import to_fp16
from workers.compression.recipes.quantize import int8_dynamic, int8_static
from workers.compression.recipes.sparsity import check_2_4, sparsify_2_4

__all__ = [
    "Calibration", "RecipeError", "RecipeResult", "check_2_4", "int8_dynamic", "int8_static",
    "latency_ms", "sparsify_2_4", "to_fp16",
]
