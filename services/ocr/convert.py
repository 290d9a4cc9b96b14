"""OcrService messages ⇄ the JSON the OCR worker takes and returns. The only OCR code that
touches `*_pb2`; validation of request fields happens here so errors name proto fields."""

from __future__ import annotations

import base64

from jobmesh.ocr.v1 import ocr_service_pb2 as pb

from shared.errors import InvalidArgument
from shared.jobs.convert import artifact_pb
from shared.storage.artifacts import ArtifactRef

RECOGNIZE_TASK = "jobmesh.ocr.v1.recognize"
RECOGNIZE_BATCH_TASK = "jobmesh.ocr.v1.recognize_batch"  # several coalesced sync requests
_PATHS = {"single": pb.RECOGNITION_PATH_SINGLE, "windowed": pb.RECOGNITION_PATH_WINDOWED}


def options_to_dict(options: pb.RecognizeOptions, field: str = "options") -> dict:
    conf = options.min_confidence
    if not 0.0 <= conf <= 1.0 or conf != conf:  # NaN fails both comparisons' negation
        raise InvalidArgument.for_field(f"{field}.min_confidence", "must be within 0..1")
    return {"min_confidence": conf or 0.5, "classify_angle": bool(options.classify_angle),
            "long_lines": not options.disable_long_lines}


def ref_from_pb(ref, field: str) -> ArtifactRef:
    if not ref.bucket or not ref.key:
        raise InvalidArgument.for_field(field, "needs bucket and key")
    return ArtifactRef(ref.bucket, ref.key, ref.sha256, ref.size, ref.content_type)


def source_of(request) -> tuple[str, bytes | ArtifactRef]:
    """("image", bytes) or ("image_ref", ArtifactRef); raises naming the missing field."""
    which = request.WhichOneof("source")
    if which is None:
        raise InvalidArgument.for_field("image", "is required (or image_ref)")
    if which == "image":
        if not request.image:
            raise InvalidArgument.for_field("image", "is empty")
        return "image", request.image
    return "image_ref", ref_from_pb(request.image_ref, "image_ref")


def worker_request(image: bytes | None, ref: ArtifactRef | None, options: dict,
                   store_result: bool) -> dict:
    req: dict = {"options": options, "store_result": store_result}
    if image is not None:
        req["image_b64"] = base64.b64encode(image).decode()
    else:
        req["image_ref"] = ref.to_dict()
    return req


def _line(line: dict) -> pb.TextLine:
    return pb.TextLine(text=line["text"], confidence=line["confidence"],
                       box=[pb.Point(x=x, y=y) for x, y in line["box"]],
                       path=_PATHS.get(line.get("path", ""), pb.RECOGNITION_PATH_UNSPECIFIED),
                       windows=int(line.get("windows", 1)),
                       tiled_detection=bool(line.get("tiled", False)),
                       page=int(line.get("page", 1)))


def response_from_result(result: dict) -> pb.RecognizeResponse:
    pages = [
        pb.Page(page_number=int(p["page"]), width=int(p["width"]), height=int(p["height"]),
                lines=[_line(ln) for ln in p["lines"]],
                paragraphs=[pb.Paragraph(text=q["text"], line_indices=q["lines"])
                            for q in p.get("paragraphs", [])],
                text=p.get("text", ""))
        for p in result.get("pages", [])
    ]
    lines = [_line(line) for line in result.get("lines", [])]
    return pb.RecognizeResponse(
        lines=lines, text=result.get("text", "\n".join(line.text for line in lines)),
        image_width=int(result.get("width", 0)), image_height=int(result.get("height", 0)),
        model_versions=result.get("model_versions", []), pages=pages)


def upload_response(ref: ArtifactRef, url: str, expire_epoch: float) -> pb.CreateUploadResponse:
    from shared.jobs.convert import ts

    return pb.CreateUploadResponse(upload_url=url, ref=artifact_pb(ref.to_dict()),
                                   expire_time=ts(expire_epoch))
