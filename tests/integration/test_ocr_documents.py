"""Documents through the mesh: PDF (pypdfium2) and multi-page TIFF, per-page results, reading
order across columns, paragraphs, progress by page, the searchable-text artifact, page limits."""

from __future__ import annotations

import io
import json

import grpc
import pytest
from jobmesh.jobs.v1 import job_pb2, job_service_pb2_grpc
from jobmesh.jobs.v1 import job_service_pb2 as jobs_pb
from jobmesh.ocr.v1 import ocr_service_pb2 as pb
from jobmesh.ocr.v1 import ocr_service_pb2_grpc
from PIL import Image, ImageDraw, ImageFont

from tests.conftest import auth
from tests.integration.helpers import FONTS, details

pytestmark = pytest.mark.integration

PAGES = [["Page one heading", "The first page has two lines"],
         ["Second page text", "More words on page two"],
         ["Third page", "The end of the document"]]


def _page(lines: list[str], size=(1240, 1754)) -> Image.Image:
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.truetype(FONTS + "DejaVuSans.ttf", 36)
    for k, text in enumerate(lines):
        draw.text((120, 150 + 70 * k), text, font=font, fill="black")
    return img


def _pdf(pages: list[list[str]]) -> bytes:
    imgs = [_page(p) for p in pages]
    buf = io.BytesIO()
    imgs[0].save(buf, "PDF", resolution=150, save_all=True, append_images=imgs[1:])
    return buf.getvalue()


def _tiff(pages: list[list[str]]) -> bytes:
    imgs = [_page(p, (1000, 500)) for p in pages]
    buf = io.BytesIO()
    imgs[0].save(buf, "TIFF", save_all=True, append_images=imgs[1:], compression="tiff_lzw")
    return buf.getvalue()


@pytest.fixture
def ocr(channel, worker):
    return ocr_service_pb2_grpc.OcrServiceStub(channel)


@pytest.mark.parametrize("make", [_pdf, _tiff], ids=["pdf", "tiff"])
def test_multi_page_documents_give_per_page_results(ocr, make):
    resp = ocr.Recognize(pb.RecognizeRequest(image=make(PAGES)), metadata=auth(), timeout=120)
    assert [p.page_number for p in resp.pages] == [1, 2, 3]
    assert [p.text for p in resp.pages] == ["\n".join(lines) for lines in PAGES]
    assert resp.text == "\f".join("\n".join(lines) for lines in PAGES)
    assert [ln.page for ln in resp.lines] == [1, 1, 2, 2, 3, 3]


def test_two_column_page_reads_column_by_column_with_paragraphs(ocr):
    img = Image.new("RGB", (1400, 900), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.truetype(FONTS + "DejaVuSans.ttf", 32)
    draw.text((80, 60), "A title across both columns of the page", font=font, fill="black")
    left = ["Left column first", "left column second", "", "", "Left new paragraph"]
    right = ["Right column first", "right column second"]
    for k, text in enumerate(left):
        draw.text((80, 200 + 55 * k), text, font=font, fill="black")
    for k, text in enumerate(right):
        draw.text((760, 200 + 55 * k), text, font=font, fill="black")
    buf = io.BytesIO()
    img.save(buf, "PNG")
    resp = ocr.Recognize(pb.RecognizeRequest(image=buf.getvalue()), metadata=auth(),
                         timeout=60)
    [page] = resp.pages
    assert [p.text for p in page.paragraphs] == [
        "A title across both columns of the page",
        "Left column first\nleft column second", "Left new paragraph",
        "Right column first\nright column second"]


def test_async_document_reports_pages_as_progress_and_writes_searchable_text(ocr, channel,
                                                                           stack):
    from shared.config import Settings
    from shared.storage.artifacts import ArtifactRef, ArtifactStore

    jobs = job_service_pb2_grpc.JobServiceStub(channel)
    sub = ocr.SubmitRecognize(pb.SubmitRecognizeRequest(image=_pdf(PAGES)), metadata=auth(),
                              timeout=30)
    events = list(jobs.WatchJob(jobs_pb.WatchJobRequest(name=sub.job.name), metadata=auth(),
                                timeout=120))
    progress = [(e.job.progress.done, e.job.progress.total) for e in events
                if e.type == jobs_pb.JOB_EVENT_TYPE_PROGRESS]
    assert (1, 3) in progress and (2, 3) in progress
    done = events[-1].job
    assert done.state == job_pb2.JOB_STATE_SUCCEEDED
    [ref] = [a for a in done.result.artifacts if a.key.endswith("/searchable.json")]
    settings = Settings(**{k.removeprefix("JOBMESH_").lower(): v for k, v in stack.env.items()})
    doc = json.loads(ArtifactStore.from_settings(settings).get_bytes(
        ArtifactRef(ref.bucket, ref.key, ref.sha256)))
    assert [p["page"] for p in doc["pages"]] == [1, 2, 3]
    box = doc["pages"][0]["lines"][0]["box"]
    assert all(0 <= x <= 1 and 0 <= y <= 1 for x, y in box)


def test_page_limit_is_invalid_argument_naming_it(ocr):
    with pytest.raises(grpc.RpcError) as e:
        ocr.Recognize(pb.RecognizeRequest(image=_pdf(PAGES * 2)), metadata=auth(), timeout=60)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    d = details(e.value)
    assert d["reason"] == "INPUT_TOO_LARGE" and "limit is 5" in d["violations"][0][1]
    with pytest.raises(grpc.RpcError) as e:
        ocr.Recognize(pb.RecognizeRequest(image=b"%PDF-1.7 garbage"), metadata=auth(),
                      timeout=60)
    assert details(e.value)["reason"] == "UNDECODABLE_INPUT"
