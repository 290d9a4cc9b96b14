"""Text generation: SmolLM2-135M-Instruct on ONNX Runtime with a KV cache, token streaming and
lossless train-free speculative decoding (Token Recycling, prompt lookup).

Modules: `export` (GGUF -> ONNX decoder step, registry import; needs torch/transformers, export
time only), `tokenizer` (tokenizers + jinja2 chat template, incremental detokenization),
`decoding` (the Generator: prefill, KV cache, sampling, stops, cancellation, batches),
`speculation` (drafters and the draft tree), `session` (a plain ORT CPU session for tools).
Serving imports only onnxruntime, tokenizers, jinja2 and numpy.
"""

from workers.textgen.decoding import (
    GenerationParams,
    GenerationResult,
    Generator,
    Usage,
)
from workers.textgen.session import OrtSession, load_generator
from workers.textgen.speculation import TokenRecycler, shared_recycler
from workers.textgen.tokenizer import IncrementalDecoder, InvalidGenerationParam, TextTokenizer

__all__ = [
    "GenerationParams", "GenerationResult", "Generator", "IncrementalDecoder",
    "InvalidGenerationParam", "OrtSession", "TextTokenizer", "TokenRecycler", "Usage",
    "load_generator", "shared_recycler",
]
