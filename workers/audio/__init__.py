"""The audio worker: decoding and resampling (`decode`, `resample`), sound tagging (`yamnet`,
`qparams`; `panns` for an operator's PANNs model, `taggers` telling them apart,
`register_tagger` to register one), voice activity (`vad`), block-by-block processing
(`streaming`), speech recognition (`asr`), speech synthesis (`tts`), word error rate (`wer`),
model registration (`models`), ONNX sessions (`sessions`) and the Celery tasks (`tasks`)."""
