"""The audio service end to end: gRPC gateway → Celery on Redis → audio worker with the real
YAMNet and silero VAD, on real recordings from Debian packages (alsa-utils' voice clips, the
freedesktop sound theme)."""

from __future__ import annotations

import base64
import io
import json
import re
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import soundfile as sf
from jobmesh.audio.v1 import audio_service_pb2 as pb
from jobmesh.audio.v1 import audio_service_pb2_grpc
from jobmesh.jobs.v1 import job_pb2, job_service_pb2_grpc
from jobmesh.jobs.v1 import job_service_pb2 as jobs_pb

from tests.conftest import AUDIO_WORKER_ENV, TENANT_KEY, auth
from tests.integration.helpers import details

pytestmark = pytest.mark.integration

SOUNDS = Path("/usr/share/sounds")
SPEECH = SOUNDS / "alsa" / "Front_Center.wav"
PHONE = SOUNDS / "freedesktop" / "stereo" / "phone-incoming-call.oga"


@pytest.fixture(scope="module")
def audio(audio_stack):
    if not SPEECH.exists() or not PHONE.exists():
        pytest.skip("needs alsa-utils and sound-theme-freedesktop (.ci/run installs them)")
    with grpc.insecure_channel(audio_stack) as ch:
        yield audio_service_pb2_grpc.AudioServiceStub(ch), job_service_pb2_grpc.JobServiceStub(
            ch)


def wav(samples: np.ndarray, rate: int, fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt)
    return buf.getvalue()


def tone(seconds: float, rate: int = 44100) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def test_tag_speech_and_a_phone_ringing(audio):
    stub, _ = audio
    r = stub.Tag(pb.TagRequest(audio=SPEECH.read_bytes()), metadata=auth(), timeout=60)
    assert r.top[0].label == "Speech" and len(r.top) == 5
    assert r.info.sample_rate == 48000 and r.info.format == "WAV"
    assert r.model_version.startswith("yamnet@")
    r = stub.Tag(pb.TagRequest(audio=PHONE.read_bytes(), top_k=3, segments=True),
                 metadata=auth(), timeout=60)
    assert {c.label for c in r.top[:2]} & {"Telephone bell ringing", "Telephone", "Ringtone"}
    assert len(r.top) == 3 and r.info.format == "OGG"
    assert len(r.segments) >= 2
    starts = [s.start_seconds for s in r.segments]
    assert starts == sorted(starts) and starts[1] - starts[0] == pytest.approx(0.48)
    assert all(s.end_seconds - s.start_seconds == pytest.approx(0.96) for s in r.segments)


def test_a_large_inline_input_travels_through_s3_and_is_deleted_after_the_call(audio, stack):
    """Over JOBMESH_INLINE_STAGE_BYTES (256 KiB) an inline file is staged in S3 for the call
    (not sent base64 through Redis); the staged object is gone once the call returns, and a
    bad value found by the worker still names `audio`."""
    from shared.config import Settings
    from shared.storage.artifacts import ArtifactStore, tenant_key

    stub, _ = audio
    data = wav(tone(4.0, 48000), 48000)  # 4 s of 16-bit PCM at 48 kHz: 384 KB
    assert len(data) > 256 * 1024
    r = stub.Tag(pb.TagRequest(audio=data, top_k=3), metadata=auth(), timeout=60)
    assert r.info.duration_seconds == pytest.approx(4.0) and len(r.top) == 3
    settings = Settings(**{k.removeprefix("JOBMESH_").lower(): v for k, v in stack.env.items()})
    store = ArtifactStore.from_settings(settings)
    assert store.list_keys(settings.artifacts_bucket, tenant_key("tenant-a", "staged")) == []
    bad = tone(4.0, 48000)
    bad[100_000] = np.nan  # past the header the gateway checks: found while decoding
    buf = io.BytesIO()
    sf.write(buf, bad, 48000, format="WAV", subtype="FLOAT")
    with pytest.raises(grpc.RpcError) as e:
        stub.Tag(pb.TagRequest(audio=buf.getvalue()), metadata=auth(), timeout=60)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(e.value)["violations"][0][0] == "audio"
    assert store.list_keys(settings.artifacts_bucket, tenant_key("tenant-a", "staged")) == []


def test_detect_speech_in_a_voice_clip_and_none_in_a_tone(audio):
    stub, _ = audio
    r = stub.DetectSpeech(pb.DetectSpeechRequest(audio=SPEECH.read_bytes()), metadata=auth(),
                          timeout=60)
    assert len(r.segments) >= 1 and 0.5 < r.speech_seconds < r.info.duration_seconds
    assert r.model_version.startswith("silero-vad@")
    r = stub.DetectSpeech(pb.DetectSpeechRequest(audio=wav(tone(3.0), 44100)),
                          metadata=auth(), timeout=60)
    assert list(r.segments) == [] and r.info.duration_seconds == pytest.approx(3.0)


@pytest.mark.parametrize("data, field, reason", [
    (b"", "audio", "INVALID_ARGUMENT"),
    (b"RIFF\x00\x00\x00\x00WAVEjunkjunk", "audio", "UNDECODABLE_INPUT"),
    (b"not audio at all" * 100, "audio", "UNDECODABLE_INPUT"),
])
def test_bad_files_name_the_field(audio, data, field, reason):
    stub, _ = audio
    with pytest.raises(grpc.RpcError) as e:
        stub.Tag(pb.TagRequest(audio=data), metadata=auth(), timeout=30)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    d = details(e.value)
    assert d["violations"][0][0] == field and d["reason"] == reason


def test_limits_are_refused_before_any_job(audio):
    stub, _ = audio
    for req, field in ((pb.TagRequest(audio=wav(tone(0.5, 2000), 2000)), "audio"),
                       (pb.TagRequest(audio=wav(np.zeros(0, np.float32), 16000)), "audio"),
                       (pb.TagRequest(audio=SPEECH.read_bytes(), top_k=51), "top_k"),
                       (pb.TagRequest(), "audio")):
        with pytest.raises(grpc.RpcError) as e:
            stub.Tag(req, metadata=auth(), timeout=30)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, req
        assert details(e.value)["violations"][0][0] == field
    with pytest.raises(grpc.RpcError) as e:
        stub.DetectSpeech(pb.DetectSpeechRequest(audio=SPEECH.read_bytes(), threshold=1.5),
                          metadata=auth(), timeout=30)
    assert details(e.value)["violations"][0][0] == "threshold"


@pytest.mark.parametrize("model", ["no-such-tagger", "silero-vad"])
def test_unknown_tagger_is_refused_by_the_worker(audio, model):
    stub, _ = audio
    with pytest.raises(grpc.RpcError) as e:
        stub.Tag(pb.TagRequest(audio=SPEECH.read_bytes(), model=model),
                 metadata=auth(), timeout=30)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(e.value)["violations"][0][0] == "model"


def test_a_panns_tagger_registered_by_an_operator_serves_by_name(audio, audio_stack, tmp_path):
    """The operator's path for PANNs CNN14 (not shipped): register the ONNX and its 527-class
    map through the admin API, then Tag with `model=` its name. The ONNX is a STAND-IN with
    CNN14's layer layout, reduced widths and seeded random weights (tests/fixtures/cnn14.py):
    its scores mean nothing; the labels, windows and 32 kHz path are what is checked."""
    pytest.importorskip("torch")
    from shared.client import Client, ClientSettings
    from shared.client.errors import JobmeshClientError
    from tests.conftest import ADMIN_KEY
    from tests.fixtures import cnn14
    from workers.audio import register_tagger

    onnx = cnn14.export(tmp_path / "cnn14.onnx", waveform=True)
    labels = cnn14.labels_csv(tmp_path / "class_labels_indices.csv")
    assert "waveform input at 32000 Hz" in register_tagger.check(onnx, labels)
    with Client(ClientSettings(endpoint=audio_stack, api_key=TENANT_KEY)) as c:
        with pytest.raises(JobmeshClientError) as refused:  # registry writes need an admin key
            register_tagger.register(c, "panns-cnn14", "standin", onnx, labels, serve=True)
        assert refused.value.code == grpc.StatusCode.PERMISSION_DENIED
    with Client(ClientSettings(endpoint=audio_stack, api_key=ADMIN_KEY)) as c:
        model = register_tagger.register(c, "panns-cnn14", "standin", onnx, labels, serve=True)
    assert model.serving_version == "standin"
    assert [i["shape"] for i in model_inputs(audio_stack, "panns-cnn14")] == [[-1, -1]]

    stub, _ = audio
    r = stub.Tag(pb.TagRequest(audio=PHONE.read_bytes(), model="panns-cnn14", top_k=10,
                               segments=True), metadata=auth(), timeout=60)
    assert r.model_version == "panns-cnn14@standin" and len(r.top) == 10
    assert all(c.label == f"Test class {c.index}" and 0 <= c.index < 527 for c in r.top)
    scores = [c.score for c in r.top]
    assert scores == sorted(scores, reverse=True) and 0 < scores[-1] <= scores[0] < 1
    # 2 s windows every 1 s of the 32 kHz signal, the last one zero-padded past the end.
    seconds = r.info.duration_seconds
    assert len(r.segments) == max(1, 1 + int(np.ceil(max(0.0, seconds - 2.0))))
    assert [s.start_seconds for s in r.segments] == [float(i) for i in range(len(r.segments))]
    assert all(s.end_seconds - s.start_seconds == pytest.approx(2.0) for s in r.segments)
    assert all(len(s.top) == 3 and s.top[0].label.startswith("Test class ")
               for s in r.segments)
    # The default tagger is unchanged.
    assert stub.Tag(pb.TagRequest(audio=SPEECH.read_bytes()), metadata=auth(),
                    timeout=60).model_version.startswith("yamnet@")


def model_inputs(endpoint: str, name: str) -> list[dict]:
    """The serving version's input specs, as the registry's manifest records them."""
    from shared.client import Client, ClientSettings

    with Client(ClientSettings(endpoint=endpoint, api_key=TENANT_KEY)) as c:
        model = c.get_model(name)
    serving = next(v for v in model.versions if v.version == model.serving_version)
    return [{"name": t.name, "shape": list(t.shape)} for t in serving.inputs]


def test_submit_tag_of_a_long_uploaded_file_reports_progress(audio, audio_stack):
    from shared.client import Client, ClientSettings

    stub, jobs = audio
    # 4 minutes of a tone with noise as 48 kHz stereo FLAC (~17 MB, over the message limit):
    # uploaded through a presigned URL, then decoded by the worker in 30 s blocks.
    rng = np.random.default_rng(0)
    mono = tone(240.0, 48000) + 0.02 * rng.standard_normal(240 * 48000).astype(np.float32)
    data = wav(np.stack([mono, mono], axis=1), 48000, "FLAC")
    with Client(ClientSettings(endpoint=audio_stack, api_key=TENANT_KEY)) as c:
        ref = c.upload("audio", data, "audio/flac")
    job = stub.SubmitTag(pb.SubmitTagRequest(request_id="long-tag", request=pb.TagRequest(
        audio_ref=ref, top_k=3)), metadata=auth(), timeout=60).job
    done = jobs.WaitJob(jobs_pb.WaitJobRequest(name=job.name), metadata=auth(), timeout=180).job
    assert done.state == job_pb2.JOB_STATE_SUCCEEDED, done.error
    assert (done.progress.done, done.progress.total) == (240, 240)
    resp = pb.TagResponse()
    done.result.response.Unpack(resp)
    assert resp.info.channels == 2 and resp.info.duration_seconds == pytest.approx(240.0)
    assert len(resp.top) == 3


def test_batch_of_files_through_the_cli(audio_stack, audio, tmp_path):
    from tests.integration.test_cli import cli

    (tmp_path / "speech.wav").write_bytes(SPEECH.read_bytes())
    (tmp_path / "phone.oga").write_bytes(PHONE.read_bytes())
    lines = [{"custom_id": "a", "file": "speech.wav"}, {"custom_id": "b", "file": "phone.oga"},
             {"custom_id": "c", "file": "speech.wav", "body": {"topK": 1}}]
    (tmp_path / "clips.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    r = cli("batch", "submit", "clips.jsonl", "--service", "audio", "--endpoint", audio_stack,
            "--api-key", TENANT_KEY, "--output", "json", cwd=tmp_path, timeout=180)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    rows = {x["custom_id"]: x["response"] for x in map(json.loads, open(doc["files"]["output"]))}
    assert rows["a"]["top"][0]["label"] == "Speech" and len(rows["c"]["top"]) == 1
    r = cli("audio", "tag", tmp_path / "speech.wav", "--top-k", "2", "--endpoint", audio_stack,
            "--api-key", TENANT_KEY, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].endswith("Speech")


def test_synthesize_lines_in_a_batch(audio, audio_stack, stack):
    """CreateBatch runs Synthesize lines on the audio worker; a WAV over the inline limit
    (256 KiB in the test worker: JOBMESH_AUDIO_INLINE_OUTPUT_BYTES) is stored beside the
    batch's files and the line's response references it; a bad line is refused up front."""
    from shared.client import Client, ClientSettings
    from shared.client.errors import JobmeshClientError
    from shared.config import Settings
    from shared.storage.artifacts import ArtifactRef, ArtifactStore

    long_text = " ".join(["The meeting has been moved to Thursday afternoon.",
                          "Please call me back tomorrow morning."] * 2)
    lines = [{"custom_id": "short", "body": {"text": "Your order has shipped."}},
             {"custom_id": "long", "body": {"text": long_text, "lengthScale": 1.2}}]
    manifest = "\n".join(json.dumps(x) for x in lines).encode() + b"\n"
    with Client(ClientSettings(endpoint=audio_stack, api_key=TENANT_KEY), timeout_s=60) as c:
        with pytest.raises(JobmeshClientError) as bad:
            c.create_batch("audio", "Synthesize", b'{"custom_id": "x", "body": {"text": ""}}\n')
        assert bad.value.code == grpc.StatusCode.INVALID_ARGUMENT and "line 1" in str(bad.value)
        job = c.create_batch("audio", "Synthesize", manifest)
        assert c.wait_job(job.name, 120).state == job_pb2.JOB_STATE_SUCCEEDED
        _, out, errors = c.batch_results(job.name, "audio")
    assert errors == []
    rows = {x["custom_id"]: x["response"] for x in out}
    short = sf.info(io.BytesIO(base64.b64decode(rows["short"]["audio"])))
    assert short.samplerate == 22050 and 0.5 < short.duration < 5
    ref = rows["long"]["audioRef"]
    assert ref["key"].startswith(f"tenants/tenant-a/{job.name}/lines/speech-")
    settings = Settings(**{k.removeprefix("JOBMESH_").lower(): v
                           for k, v in stack.env.items()})
    data = ArtifactStore.from_settings(settings).get_bytes(ArtifactRef(ref["bucket"], ref["key"]))
    assert len(data) > 256 * 1024 and int(ref["size"]) == len(data)
    assert sf.info(io.BytesIO(data)).duration == pytest.approx(rows["long"]["durationSeconds"])


def test_transcribe_a_voice_clip_with_word_times(audio):
    stub, _ = audio
    pad = np.zeros(2 * 48000, np.float32)
    import soundfile as sf_

    wave, rate = sf_.read(io.BytesIO(SPEECH.read_bytes()), dtype="float32")
    padded = wav(np.concatenate([pad, wave, pad]), rate)
    r = stub.Transcribe(pb.TranscribeRequest(audio=padded), metadata=auth(), timeout=120)
    words = [w for s in r.segments for w in s.words]
    assert "front" in r.text.lower() and "center" in r.text.lower(), r.text
    assert r.model_version.startswith("whisper-tiny-en@")
    # The speech sits after 2 s of silence: VAD pre-segmentation maps times back to the file.
    assert 1.9 < words[0].start_seconds and words[-1].end_seconds < 2.0 + len(wave) / rate + 0.3
    assert [w.start_seconds for w in words] == sorted(w.start_seconds for w in words)


def test_a_long_transcription_runs_in_chunks_cut_in_silence(audio):
    """The test worker cuts SubmitTranscribe jobs into chunks of at most 4 s
    (JOBMESH_AUDIO_CHUNK_SECONDS): four voice clips with 1.5 s pauses (~13 s) run as several
    chunk tasks whose transcripts join in order, word times in the recording's seconds."""
    stub, jobs = audio
    clips = ["Front_Center", "Front_Left", "Front_Right", "Side_Left"]
    pause = np.zeros(int(1.5 * 48000), np.float32)
    parts, starts = [pause], []
    for name in clips:
        wave, rate = sf.read(str(SOUNDS / "alsa" / f"{name}.wav"), dtype="float32")
        starts.append(sum(len(p) for p in parts) / rate)
        parts += [wave, pause]
    recording = np.concatenate(parts)
    job = stub.SubmitTranscribe(pb.SubmitTranscribeRequest(
        request_id="chunked-asr", request=pb.TranscribeRequest(audio=wav(recording, 48000))),
        metadata=auth(), timeout=60).job
    done = jobs.WaitJob(jobs_pb.WaitJobRequest(name=job.name), metadata=auth(), timeout=120).job
    assert done.state == job_pb2.JOB_STATE_SUCCEEDED, done.error
    seconds = len(recording) / 48000
    assert (done.progress.done, done.progress.total) == (int(seconds), int(seconds + 0.999))
    chunks = re.search(r"\((\d+) of (\d+) chunks\)", done.progress.message)
    assert chunks and chunks[1] == chunks[2] and int(chunks[1]) >= 3, done.progress.message
    r = pb.TranscribeResponse()
    done.result.response.Unpack(r)
    text = r.text.lower()
    for word in ("front", "center", "left", "right", "side"):
        assert word in text, text
    assert text.index("center") < text.index("right") < text.index("side"), text
    words = [w for s in r.segments for w in s.words]
    assert [w.start_seconds for w in words] == sorted(w.start_seconds for w in words)
    # Every clip's words lie within that clip, in the recording's seconds.
    side = next(w for w in words if "side" in w.word.lower())
    assert starts[3] - 0.3 < side.start_seconds < starts[3] + 1.5
    assert r.info.duration_seconds == pytest.approx(seconds)
    assert r.model_version.startswith("whisper-tiny-en@")


def test_synthesize_then_transcribe_round_trip(audio):
    from workers.audio.wer import word_error_rate

    stub, _ = audio
    text = "The quick brown fox jumps over the lazy dog."
    r = stub.Synthesize(pb.SynthesizeRequest(text=text), metadata=auth(), timeout=120)
    assert r.WhichOneof("output") == "audio" and r.sample_rate == 22050
    info = sf.info(io.BytesIO(r.audio))
    assert info.samplerate == 22050 and 1.0 < info.duration < 6.0
    assert r.duration_seconds == pytest.approx(info.duration, abs=0.01)
    back = stub.Transcribe(pb.TranscribeRequest(audio=r.audio), metadata=auth(), timeout=120)
    # Up to three misheard words in nine (the voice's noise is unseeded): a broken pipeline
    # scores near 1.
    assert word_error_rate(text, back.text) <= 0.34, back.text


@pytest.mark.parametrize("req, field", [
    (pb.SynthesizeRequest(text="   "), "text"),
    (pb.SynthesizeRequest(text="x" * 5001), "text"),
    (pb.SynthesizeRequest(text="Hello.", length_scale=9), "length_scale"),
])
def test_bad_synthesis_requests_name_the_field(audio, req, field):
    stub, _ = audio
    with pytest.raises(grpc.RpcError) as e:
        stub.Synthesize(req, metadata=auth(), timeout=30)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(e.value)["violations"][0][0] == field


def test_cli_synthesize_and_transcribe(audio_stack, audio, tmp_path):
    from tests.integration.test_cli import cli

    base = ["--endpoint", audio_stack, "--api-key", TENANT_KEY]
    r = cli("audio", "synthesize", "Your order has shipped.", "--out", tmp_path / "o.wav", *base,
            cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    assert sf.info(str(tmp_path / "o.wav")).samplerate == 22050
    r = cli("audio", "transcribe", tmp_path / "o.wav", "--words", *base, cwd=tmp_path,
            timeout=120)
    assert r.returncode == 0, r.stderr
    from workers.audio.wer import word_error_rate

    words = [line.split()[-1] for line in r.stdout.splitlines()]
    # The voice samples noise inside its graph (no seed), so a word may come back misheard
    # ("shipped" -> "shit" in one run): the bound allows two misses in four words; a broken
    # pipeline scores near 1.
    assert word_error_rate("Your order has shipped.", " ".join(words)) <= 0.5, words


def _voice_clips_recording(names: list[str], pause_s: float) -> np.ndarray:
    pause = np.zeros(int(pause_s * 48000), np.float32)
    return np.concatenate([pause] + [np.concatenate([sf.read(
        str(SOUNDS / "alsa" / f"{n}.wav"), dtype="float32")[0], pause]) for n in names])


def _wait_chunks_stored(jobs, name: str, at_least: int) -> tuple[int, int] | None:
    """(stored, total) once the job's progress says `at_least` chunks are stored."""
    for _ in range(600):
        seen = jobs.GetJob(jobs_pb.GetJobRequest(name=name), metadata=auth(), timeout=10).job
        found = re.search(r"\((\d+) of (\d+) chunks\)", seen.progress.message)
        if found and int(found[1]) >= at_least:
            return int(found[1]), int(found[2])
        time.sleep(0.05)
    return None


def test_a_chunked_transcription_cancels_between_chunks(audio):
    stub, jobs = audio
    recording = _voice_clips_recording(["Front_Center", "Front_Left", "Front_Right",
                                        "Side_Left", "Side_Right", "Rear_Left"], 1.0)
    job = stub.SubmitTranscribe(pb.SubmitTranscribeRequest(
        request_id="chunked-asr-cancel", request=pb.TranscribeRequest(
            audio=wav(recording, 48000))), metadata=auth(), timeout=60).job
    stored = _wait_chunks_stored(jobs, job.name, 1)
    assert stored and stored[0] < stored[1], "the job finished before the cancel"
    jobs.CancelJob(jobs_pb.CancelJobRequest(name=job.name), metadata=auth(), timeout=10)
    done = jobs.WaitJob(jobs_pb.WaitJobRequest(name=job.name), metadata=auth(), timeout=60).job
    assert done.state == job_pb2.JOB_STATE_CANCELLED, job_pb2.JobState.Name(done.state)


def test_a_chunked_transcription_resumes_after_kill_9(audio, stack):
    """Kill -9 the worker once some chunks are stored: after a restart, only the chunks not
    stored run again (the one in flight is redelivered), and the transcript is whole. Last in
    the module: it restarts the audio worker."""
    import redis

    from shared.jobs.records import chunk_deliveries_key

    stub, jobs = audio
    recording = _voice_clips_recording(["Front_Center", "Front_Left", "Front_Right",
                                        "Side_Left", "Side_Right", "Rear_Left", "Front_Center",
                                        "Front_Left"], 1.0)
    job = stub.SubmitTranscribe(pb.SubmitTranscribeRequest(
        request_id="chunked-asr-kill", request=pb.TranscribeRequest(
            audio=wav(recording, 48000))), metadata=auth(), timeout=60).job
    stored, total = _wait_chunks_stored(jobs, job.name, 2) or (None, None)
    assert stored is not None and stored < total, "the job finished before the kill"
    stack.kill("worker-audio")
    stack.start_worker("audio", extra_env=AUDIO_WORKER_ENV)
    done = jobs.WaitJob(jobs_pb.WaitJobRequest(name=job.name), metadata=auth(), timeout=120).job
    assert done.state == job_pb2.JOB_STATE_SUCCEEDED, done.error
    deliveries = {int(k): int(v) for k, v in redis.Redis.from_url(
        stack.env["JOBMESH_REDIS_URL"]).hgetall(
        chunk_deliveries_key(job.name.split("/", 1)[1])).items()}
    assert sorted(deliveries) == list(range(total))
    # At most the chunk in flight at the kill ran twice; stored chunks never ran again.
    assert sum(deliveries.values()) <= total + 1, deliveries
    r = pb.TranscribeResponse()
    done.result.response.Unpack(r)
    assert r.text.lower().count("front") >= 4, r.text
    words = [w for s in r.segments for w in s.words]
    assert [w.start_seconds for w in words] == sorted(w.start_seconds for w in words)
