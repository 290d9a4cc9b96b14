"""`make models`: imports the PP-OCR ONNX models shipped in the installed `rapidocr` package into
the registry (with provenance and sha256) and points `serving` at them when nothing serves yet.

Usage: python -m shared.models.importer [--force-serve]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import logging
from pathlib import Path

from shared.config import Settings
from shared.models.registry import Manifest, ModelRegistry
from shared.storage.artifacts import ArtifactStore

log = logging.getLogger(__name__)

# registry name -> file inside rapidocr/models (rapidocr 3.10's defaults: PP-OCRv6 det/rec small,
# the v2.0 mobile angle classifier).
OCR_MODELS = {
    "ppocr-det": "PP-OCRv6_det_small.onnx",
    "ppocr-cls": "ch_ppocr_mobile_v2.0_cls_mobile.onnx",
    "ppocr-rec": "PP-OCRv6_rec_small.onnx",
}


def tensor_specs(path: Path) -> tuple[list[dict], list[dict]]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def spec(t):
        return {"name": t.name, "dtype": t.type,
                "shape": [d if isinstance(d, int) else -1 for d in t.shape]}

    return [spec(t) for t in sess.get_inputs()], [spec(t) for t in sess.get_outputs()]


def rapidocr_dir() -> Path:
    spec = importlib.util.find_spec("rapidocr")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("rapidocr is not installed: pip install rapidocr==3.10.0")
    return Path(spec.submodule_search_locations[0]) / "models"


def import_ocr_models(registry: ModelRegistry, force_serve: bool = False) -> list[Manifest]:
    """Registers det/cls/rec as version `rapidocr-<pkg version>`; idempotent."""
    pkg_version = importlib.metadata.version("rapidocr")
    version = f"rapidocr-{pkg_version}"
    out = []
    for name, filename in OCR_MODELS.items():
        path = rapidocr_dir() / filename
        inputs, outputs = tensor_specs(path)
        serving = has_serving(registry, name)
        m = registry.register(
            name, version, {"model.onnx": path}, inputs=inputs, outputs=outputs,
            provenance={"package": "rapidocr", "package_version": pkg_version,
                        "source": f"rapidocr/models/{filename}"},
            serve=force_serve or not serving)
        out.append(m)
        log.info("model registered", extra={"model": name, "version": version})
    return out


def registry_for(settings: Settings) -> ModelRegistry:
    """The registry at the settings' S3, with both buckets created if missing."""
    store = ArtifactStore.from_settings(settings)
    store.ensure_bucket(settings.models_bucket)
    store.ensure_bucket(settings.artifacts_bucket)
    return ModelRegistry(store, settings.models_bucket)


def has_serving(registry: ModelRegistry, name: str) -> bool:
    try:
        registry.serving_version(name)
        return True
    except Exception:
        return False


def print_manifests(manifests: list[Manifest]) -> None:
    for m in manifests:
        print(f"{m.name}@{m.version}  {sum(f.size for f in m.files):>10} bytes  "
              f"{m.files[0].sha256[:12]}")


def prepare(settings: Settings, force_serve: bool = False) -> list[Manifest]:
    return import_ocr_models(registry_for(settings), force_serve)


def import_main(prog: str, description: str, prepare_fn, argv: list[str] | None = None) -> int:
    """The CLI every model import script shares: `--force-serve`, then one line per model."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--force-serve", action="store_true",
                        help="point `serving` at the imported versions even if others serve")
    args = parser.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(message)s")
    print_manifests(prepare_fn(Settings(), args.force_serve))
    return 0


def main(argv: list[str] | None = None) -> int:
    return import_main(
        "python -m shared.models.importer",
        "Import the PP-OCR ONNX models from the installed rapidocr package into the model "
        "registry (S3 at JOBMESH_S3_ENDPOINT) and serve them if nothing is.", prepare, argv)


if __name__ == "__main__":
    raise SystemExit(main())
