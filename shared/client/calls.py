"""What each SDK call sends, built once for both clients: a `Call` names the domain whose
gateway answers, the stub, the method and the request message. `Client` (sync) and
`AsyncClient` (asyncio) only differ in how they send it."""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf import message
from jobmesh.audio.v1 import audio_service_pb2 as audio_pb
from jobmesh.audio.v1 import audio_service_pb2_grpc
from jobmesh.compression.v1 import compression_service_pb2 as compression_pb
from jobmesh.compression.v1 import compression_service_pb2_grpc
from jobmesh.curation.v1 import curation_service_pb2 as curation_pb
from jobmesh.curation.v1 import curation_service_pb2_grpc
from jobmesh.jobs.v1 import (
    batch_service_pb2,
    batch_service_pb2_grpc,
    job_service_pb2,
    job_service_pb2_grpc,
)
from jobmesh.ocr.v1 import ocr_service_pb2, ocr_service_pb2_grpc
from jobmesh.textgen.v1 import textgen_service_pb2 as textgen_pb
from jobmesh.textgen.v1 import textgen_service_pb2_grpc

SPECULATION = {"off": textgen_pb.SPECULATION_OFF, "auto": textgen_pb.SPECULATION_AUTO,
               "token_recycling": textgen_pb.SPECULATION_TOKEN_RECYCLING,
               "prompt_lookup": textgen_pb.SPECULATION_PROMPT_LOOKUP}


@dataclass(frozen=True)
class Call:
    domain: str  # which endpoint answers (`endpoint_for(domain)`)
    stub: type
    method: str
    request: message.Message


def generation_params(max_new_tokens: int = 0, temperature: float = 0.0, top_p: float = 0.0,
                      top_k: int = 0, seed: int | None = None, stop: list[str] | None = None,
                      speculation: str = "auto") -> textgen_pb.GenerationParameters:
    p = textgen_pb.GenerationParameters(max_new_tokens=max_new_tokens, temperature=temperature,
                                        top_p=top_p, top_k=top_k, stop=stop or [],
                                        speculation=SPECULATION[speculation])
    if seed is not None:
        p.seed = seed
    return p


def generation(prompt: str | None, messages: list[dict] | None, params: dict,
               cls=textgen_pb.GenerateRequest):
    """A Generate(Stream)Request from a prompt or chat messages and parameter keywords
    (max_new_tokens, temperature, top_p, top_k, seed, stop, speculation)."""
    req = cls(parameters=generation_params(**params))
    if messages is not None:
        req.conversation.messages.extend(textgen_pb.ChatMessage(**m) for m in messages)
    else:
        req.prompt = prompt or ""
    return req


def textgen_generate(prompt, messages, params) -> Call:
    return Call("textgen", textgen_service_pb2_grpc.TextGenerationServiceStub, "Generate",
                generation(prompt, messages, params))


def textgen_stream(prompt, messages, params) -> Call:
    return Call("textgen", textgen_service_pb2_grpc.TextGenerationServiceStub,
                "GenerateStream",
                generation(prompt, messages, params, textgen_pb.GenerateStreamRequest))


def ocr_options(classify_angle: bool, min_confidence: float, long_lines: bool):
    return ocr_service_pb2.RecognizeOptions(classify_angle=classify_angle,
                                            min_confidence=min_confidence,
                                            disable_long_lines=not long_lines)


def ocr_recognize(image: bytes, classify_angle: bool = False, min_confidence: float = 0.0,
                  long_lines: bool = True) -> Call:
    return Call("ocr", ocr_service_pb2_grpc.OcrServiceStub, "Recognize",
                ocr_service_pb2.RecognizeRequest(
                    image=image, options=ocr_options(classify_angle, min_confidence,
                                                     long_lines)))


def ocr_submit(image: bytes, request_id: str = "", classify_angle: bool = False,
               min_confidence: float = 0.0, long_lines: bool = True) -> Call:
    return Call("ocr", ocr_service_pb2_grpc.OcrServiceStub, "SubmitRecognize",
                ocr_service_pb2.SubmitRecognizeRequest(
                    request_id=request_id, image=image,
                    options=ocr_options(classify_angle, min_confidence, long_lines)))


def _audio(method: str, request: message.Message) -> Call:
    return Call("audio", audio_service_pb2_grpc.AudioServiceStub, method, request)


def audio_tag(audio: bytes, top_k: int = 0, segments: bool = False, model: str = "") -> Call:
    return _audio("Tag", audio_pb.TagRequest(audio=audio, top_k=top_k, segments=segments,
                                             model=model))


def audio_detect_speech(audio: bytes, threshold: float = 0.0, min_speech_ms: int = 0,
                        min_silence_ms: int = 0) -> Call:
    return _audio("DetectSpeech", audio_pb.DetectSpeechRequest(
        audio=audio, threshold=threshold, min_speech_ms=min_speech_ms,
        min_silence_ms=min_silence_ms))


def audio_transcribe(audio: bytes, vad: bool = True, beam_size: int = 0) -> Call:
    return _audio("Transcribe", audio_pb.TranscribeRequest(audio=audio, disable_vad=not vad,
                                                           beam_size=beam_size))


def audio_synthesize(text: str, length_scale: float = 0.0) -> Call:
    return _audio("Synthesize", audio_pb.SynthesizeRequest(text=text,
                                                           length_scale=length_scale))


def jobs(method: str, request: message.Message) -> Call:
    return Call("jobs", job_service_pb2_grpc.JobServiceStub, method, request)


def wait_job(name: str, timeout_s: float) -> Call:
    req = job_service_pb2.WaitJobRequest(name=name)
    req.timeout.FromNanoseconds(int(timeout_s * 1e9))
    return jobs("WaitJob", req)


def create_batch(service: str, method: str, request_id: str = "",
                 completion_window_s: float | None = None) -> Call:
    """CreateBatch without its manifest (the caller sets `inline_manifest` or `input_file`)."""
    req = batch_service_pb2.CreateBatchRequest(request_id=request_id, service=service,
                                               method=method)
    if completion_window_s is not None:
        req.completion_window.FromNanoseconds(int(completion_window_s * 1e9))
    return Call(service, batch_service_pb2_grpc.BatchServiceStub, "CreateBatch", req)



def manifest_upload(service: str, size: int) -> Call:
    """A presigned PUT for a batch manifest too large to send inline."""
    return Call(service, batch_service_pb2_grpc.BatchServiceStub, "CreateManifestUpload",
                batch_service_pb2.CreateManifestUploadRequest(size=size))


def batch_results(service: str, name: str) -> Call:
    return Call(service, batch_service_pb2_grpc.BatchServiceStub, "GetBatchResults",
                batch_service_pb2.GetBatchResultsRequest(name=name))


def create_upload(service: str, content_type: str, size: int) -> Call:
    """A presigned PUT for an OCR image or audio file too large to send inline."""
    pb, stub = {"ocr": (ocr_service_pb2, ocr_service_pb2_grpc.OcrServiceStub),
                "audio": (audio_pb, audio_service_pb2_grpc.AudioServiceStub)}[service]
    return Call(service, stub, "CreateUpload",
                pb.CreateUploadRequest(content_type=content_type, size=size))

RECIPE_NAMES = ("int8_dynamic", "int8_static", "fp16", "sparse_2_4", "tensorrt", "compeft")


def compression_recipe(name: str, *, op_types: list[str] | None = None, per_tensor: bool = False,
                       method: str = "wanda", include: str = "", fp16: bool = False,
                       calibration: str = "percentile", density: float = 0.0,
                       alphas: list[float] | None = None, task_vector: bool = False,
                       validation_texts: list[str] | None = None) -> compression_pb.Recipe:
    """A Recipe message from flat options; options a recipe does not take are ignored."""
    if name == "int8_dynamic":
        return compression_pb.Recipe(int8_dynamic=compression_pb.Int8Dynamic(
            op_types=op_types or []))
    if name == "int8_static":
        calibrations = {"percentile": compression_pb.Int8Static.CALIBRATION_PERCENTILE,
                        "minmax": compression_pb.Int8Static.CALIBRATION_MINMAX,
                        "entropy": compression_pb.Int8Static.CALIBRATION_ENTROPY}
        if calibration not in calibrations:
            raise ValueError(f"unknown calibration {calibration!r} (percentile, minmax, "
                             "entropy)")
        return compression_pb.Recipe(int8_static=compression_pb.Int8Static(
            op_types=op_types or [], per_tensor=per_tensor,
            calibration=calibrations[calibration]))
    if name == "fp16":
        return compression_pb.Recipe(fp16=compression_pb.Float16())
    if name == "sparse_2_4":
        methods = {"wanda": compression_pb.Sparse24.METHOD_WANDA,
                   "magnitude": compression_pb.Sparse24.METHOD_MAGNITUDE}
        if method not in methods:
            raise ValueError(f"unknown 2:4 method {method!r} (wanda or magnitude)")
        return compression_pb.Recipe(sparse_2_4=compression_pb.Sparse24(
            method=methods[method], include=include))
    if name == "tensorrt":
        return compression_pb.Recipe(tensorrt=compression_pb.TensorRT(fp16=fp16))
    if name == "compeft":
        return compression_pb.Recipe(compeft=compression_pb.ComPEFT(
            density=density, alphas=alphas or [], task_vector=task_vector,
            validation_texts=validation_texts or []))
    raise ValueError(f"unknown recipe {name!r} (one of {', '.join(RECIPE_NAMES)})")


def compression_submit(model: str, recipe: compression_pb.Recipe, *, version: str = "",
                       samples: int = 0, calibration_samples: int = 0, promote: bool = False,
                       max_metric_delta: float = 0.0, max_latency_ratio: float = 0.0,
                       target_version: str = "", request_id: str = "") -> Call:
    return Call("compression", compression_service_pb2_grpc.CompressionServiceStub,
                "SubmitCompress", compression_pb.SubmitCompressRequest(
                    model=model, version=version, recipe=recipe,
                    eval=compression_pb.EvalSpec(samples=samples,
                                                 calibration_samples=calibration_samples),
                    promotion=compression_pb.PromotionPolicy(
                        promote=promote, max_metric_delta=max_metric_delta,
                        max_latency_ratio=max_latency_ratio),
                    target_version=target_version, request_id=request_id))


def compression_recipes() -> Call:
    return Call("compression", compression_service_pb2_grpc.CompressionServiceStub,
                "ListRecipes", compression_pb.ListRecipesRequest())


def curation_pipeline(steps: list[dict]) -> list[curation_pb.Step]:
    """`[{step: NAME, ...params}]` (the pipeline YAML's shape) as Step messages."""
    from google.protobuf import struct_pb2

    out = []
    for n, entry in enumerate(steps):
        if not isinstance(entry, dict) or "step" not in entry:
            raise ValueError(f"pipeline[{n}] must be a mapping with a `step` key")
        params = struct_pb2.Struct()
        params.update({k: v for k, v in entry.items() if k != "step"})
        out.append(curation_pb.Step(step=str(entry["step"]), params=params))
    return out


def _curation(method: str, request: message.Message) -> Call:
    return Call("curation", curation_service_pb2_grpc.CurationServiceStub, method, request)


def curation_submit(pipeline: list[dict], output_prefix: str, *, input_prefix: str = "",
                    text_field: str = "", id_field: str = "", request_id: str = "") -> Call:
    return _curation("SubmitCurate", curation_pb.SubmitCurateRequest(
        input_prefix=input_prefix, output_prefix=output_prefix,
        pipeline=curation_pipeline(pipeline), text_field=text_field, id_field=id_field,
        request_id=request_id))


def curation_score(texts: list[str]) -> Call:
    return _curation("ScoreTexts", curation_pb.ScoreTextsRequest(texts=texts))


def curation_report(name: str) -> Call:
    return _curation("GetReport", curation_pb.GetReportRequest(name=name))


def curation_steps() -> Call:
    return _curation("ListSteps", curation_pb.ListStepsRequest())


def curation_upload(path: str, size: int) -> Call:
    return _curation("CreateShardUpload", curation_pb.CreateShardUploadRequest(path=path,
                                                                              size=size))
