"""Audio models' core: decoding and resampling (`decode`, `resample`), YAMNet sound tagging
(`yamnet`, with `qparams` for its quantized input and output), silero voice activity (`vad`).
Pure numpy + onnxruntime + soundfile; the Celery tasks sit on top.
"""
