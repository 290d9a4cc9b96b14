"""The audio worker: decoding and resampling (`decode`, `resample`), sound tagging (`yamnet`,
`qparams`), voice activity (`vad`), block-by-block processing (`streaming`), speech recognition
(`asr`), speech synthesis (`tts`), word error rate (`wer`), model registration (`models`) and
the Celery tasks (`tasks`)."""
