"""Request converters (`services/*/convert.py`): any field values a client can put in the proto
give a worker dict or InvalidArgument naming a field; accepted values are within range."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

import shared  # noqa: F401 - puts the generated jobmesh.* stubs on sys.path
from services.audio import convert as audio
from services.ocr import convert as ocr
from services.textgen import convert as textgen
from shared.errors import InvalidArgument
from tests.fuzz.strategies import float32s, int32s, int64s
from tests.fuzz.tally import tried

# The converters' own proto modules, so this file needs no import of the generated stubs.
audio_pb, ocr_pb, textgen_pb = audio.pb, ocr.pb, textgen.pb

texts = st.one_of(st.text(max_size=80), st.sampled_from(["", " ", "\x00", "a" * 65, "en", "EN"]))
long_texts = st.one_of(texts, st.integers(4990, 5010).map(lambda n: "x" * n),
                       st.integers(63990, 64010).map(lambda n: "y" * n))


def refused(call, *args) -> InvalidArgument | None:
    try:
        call(*args)
    except InvalidArgument as exc:
        assert exc.field_violations, "InvalidArgument without a field violation"
        return exc
    return None


@st.composite
def generation_parameters(draw) -> textgen_pb.GenerationParameters:
    p = textgen_pb.GenerationParameters(
        max_new_tokens=draw(int32s), temperature=draw(float32s), top_p=draw(float32s),
        top_k=draw(int32s), stop=draw(st.lists(texts, max_size=10)),
        speculation=draw(st.one_of(st.sampled_from(range(5)), int32s)))
    if draw(st.booleans()):
        p.seed = draw(int64s)
    return p


@st.composite
def generate_requests(draw) -> textgen_pb.GenerateRequest:
    req = textgen_pb.GenerateRequest(parameters=draw(generation_parameters()))
    which = draw(st.sampled_from(["prompt", "conversation", None]))
    if which == "prompt":
        req.prompt = draw(long_texts)
    elif which == "conversation":
        for role, content in draw(st.lists(st.tuples(
                st.one_of(st.sampled_from(textgen.ROLES), texts), long_texts), max_size=4)):
            req.conversation.messages.add(role=role, content=content)
        req.conversation.SetInParent()
    return req


@given(generation_parameters())
def test_textgen_params(p):
    tried("textgen params_to_dict")
    if refused(textgen.params_to_dict, p):
        return
    d = textgen.params_to_dict(p)
    assert 1 <= d["max_new_tokens"] <= textgen.MAX_NEW_TOKENS
    assert math.isfinite(d["temperature"]) and 0 <= d["temperature"] <= 10
    assert math.isfinite(d["top_p"]) and 0 < d["top_p"] <= 1
    assert d["top_k"] >= 0 and len(d["stop"]) <= textgen.MAX_STOPS
    assert d["speculation"] in {"auto", "off", "token_recycling", "prompt_lookup"}


@given(generate_requests())
def test_textgen_generate_request(req):
    tried("textgen generate_request")
    if refused(textgen.generate_request, req):
        return
    d = textgen.generate_request(req)
    if "prompt" in d:
        assert d["prompt"].strip() and len(d["prompt"]) <= textgen.MAX_PROMPT_CHARS
    else:
        assert d["messages"] and all(m["role"] in textgen.ROLES for m in d["messages"])


@given(st.lists(generate_requests(), max_size=4), st.one_of(st.none(), generation_parameters()))
def test_textgen_submit_request(items, default):
    tried("textgen submit_request")
    req = textgen_pb.SubmitGenerateRequest()
    if default is not None:
        req.parameters.CopyFrom(default)
    for k, item in enumerate(items):
        new = req.items.add(custom_id="" if k % 2 else f"id{k}")
        new.parameters.CopyFrom(item.parameters)
        which = item.WhichOneof("input")
        if which == "prompt":
            new.prompt = item.prompt
        elif which == "conversation":
            new.conversation.CopyFrom(item.conversation)
    if refused(textgen.submit_request, req):
        return
    assert len(textgen.submit_request(req)["items"]) == len(items)


@given(float32s, st.booleans(), st.booleans())
def test_ocr_options(conf, classify, no_long):
    tried("ocr options_to_dict")
    opts = ocr_pb.RecognizeOptions(min_confidence=conf, classify_angle=classify,
                                   disable_long_lines=no_long)
    if refused(ocr.options_to_dict, opts):
        return
    d = ocr.options_to_dict(opts)
    assert 0 <= d["min_confidence"] <= 1 and d["long_lines"] is not no_long


@given(int32s, st.booleans(), st.one_of(texts, st.sampled_from(["yamnet", "a-b_c", "é", "١"])))
def test_audio_tag_options(top_k, segments, model):
    tried("audio tag_options")
    req = audio_pb.TagRequest(top_k=top_k, segments=segments, model=model)
    if refused(audio.tag_options, req):
        return
    d = audio.tag_options(req)
    assert 1 <= d["top_k"] <= audio.MAX_TOP_K
    assert d["model"] and len(d["model"]) <= 64 and "/" not in d["model"]


@given(float32s, int32s, int32s)
def test_audio_vad_options(threshold, speech, silence):
    tried("audio vad_options")
    req = audio_pb.DetectSpeechRequest(threshold=threshold, min_speech_ms=speech,
                                       min_silence_ms=silence)
    if refused(audio.vad_options, req):
        return
    d = audio.vad_options(req)
    assert 0 < d["threshold"] < 1
    assert 0 < d["min_speech_ms"] <= 60_000 and 0 < d["min_silence_ms"] <= 60_000


@given(int32s, texts, st.booleans())
def test_audio_asr_options(beam, language, no_vad):
    tried("audio asr_options")
    req = audio_pb.TranscribeRequest(beam_size=beam, language=language, disable_vad=no_vad)
    if refused(audio.asr_options, req):
        return
    d = audio.asr_options(req)
    assert 1 <= d["beam_size"] <= 5 and d["language"] == "en"


@given(long_texts, float32s)
def test_audio_tts_request(text, scale):
    tried("audio tts_request")
    req = audio_pb.SynthesizeRequest(text=text, length_scale=scale)
    if refused(audio.tts_request, req):
        return
    d = audio.tts_request(req)
    assert d["text"].strip() and len(d["text"]) <= audio.MAX_TEXT_CHARS
    assert d["length_scale"] is None or 0.25 <= d["length_scale"] <= 4.0
