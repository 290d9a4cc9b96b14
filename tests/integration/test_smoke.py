import io

from jobmesh.ocr.v1 import ocr_service_pb2 as pb
from jobmesh.ocr.v1 import ocr_service_pb2_grpc
from PIL import Image, ImageDraw, ImageFont

from tests.conftest import auth


def render(text: str) -> bytes:
    font = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", 36)
    img = Image.new("RGB", (40 + 22 * len(text), 80), "white")
    ImageDraw.Draw(img).text((20, 18), text, font=font, fill="black")
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def test_recognize_smoke(channel, worker):
    stub = ocr_service_pb2_grpc.OcrServiceStub(channel)
    resp = stub.Recognize(pb.RecognizeRequest(image=render("Hello jobmesh")), metadata=auth(),
                          timeout=60)
    assert resp.text == "Hello jobmesh"
