"""Text generation: SmolLM2 on ONNX Runtime with a KV cache and lossless speculative decoding."""
