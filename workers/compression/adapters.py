"""LoRA adapters as registry entries of their own (family `lora-adapter`, runtime `peft-lora`).

A version folder holds:

- `adapter.json`: `{"format": "peft-lora" | "compeft", "base_model": "name@version",
  "lora": {LoraConfig fields}, "compeft": {"density", "alpha", "task_vector"}}` (the last for
  compressed versions only);
- the weights: `adapter.safetensors` (peft's state dict, see lora.py) or `adapter.compeft`
  (`compeft.to_bytes`: positions, signs and one scale per tensor);
- optionally `validation.jsonl` and `test.jsonl` (`{"text": ...}` per line): held-out documents
  of the adapter's task, the default text to tune ComPEFT's alpha on and to report task loss on.

The manifest's provenance names the base model (`base_model`, also in adapter.json) and, for a
compressed version, the parent version. `load_adapter_version` turns either weights format back
into the dense peft state dict that `lora.task_loss` applies. Adapters run on the base model in
PyTorch: `base_model` knows how to load SmolLM2 from its GGUF package (the same weights as its
ONNX export); any other base is FAILED_PRECONDITION.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.errors import FailedPrecondition
from workers.compression import compeft
from workers.compression.lora import LoraConfig, initial_adapter, load_adapter

FAMILY = "lora-adapter"
RUNTIME = "peft-lora"
SPEC = "adapter.json"
SAFETENSORS = "adapter.safetensors"
COMPEFT = "adapter.compeft"
VALIDATION, TEST = "validation.jsonl", "test.jsonl"
FORMATS = {"peft-lora": SAFETENSORS, "compeft": COMPEFT}


@dataclass(frozen=True)
class AdapterSpec:
    base_model: str  # name@version of the model the adapter applies to
    lora: LoraConfig
    format: str = "peft-lora"
    compeft: dict | None = None  # density, alpha, task_vector (format "compeft" only)

    def __post_init__(self):
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {sorted(FORMATS)}, got {self.format!r}")
        if "@" not in self.base_model:
            raise ValueError(f"base_model must be name@version, got {self.base_model!r}")
        if (self.format == "compeft") != (self.compeft is not None):
            raise ValueError("compeft parameters go with format compeft, and only with it")

    @property
    def weights(self) -> str:
        return FORMATS[self.format]

    @property
    def base_name(self) -> str:
        return self.base_model.split("@", 1)[0]

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["lora"]["target_modules"] = list(self.lora.target_modules)
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, raw: str | bytes) -> AdapterSpec:
        data = json.loads(raw)
        return cls(base_model=data["base_model"], lora=LoraConfig(**data["lora"]),
                   format=data.get("format", "peft-lora"), compeft=data.get("compeft"))


def is_adapter(folder: Path) -> bool:
    return (Path(folder) / SPEC).is_file()


def read_spec(folder: Path) -> AdapterSpec:
    """The folder's adapter.json; FAILED_PRECONDITION when it is missing or malformed."""
    try:
        return AdapterSpec.from_json((Path(folder) / SPEC).read_text())
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FailedPrecondition(f"{folder.name}: not a LoRA adapter version ({exc})") from exc


def read_texts(path: Path) -> list[str]:
    """The `text` of every line of a JSONL file (blank lines skipped)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["text"] for line in lines if line.strip()]


def write_texts(path: Path, texts: list[str]) -> Path:
    Path(path).write_text("".join(json.dumps({"text": t}) + "\n" for t in texts),
                          encoding="utf-8")
    return Path(path)


@functools.cache
def base_model(name: str) -> tuple[Any, Any]:
    """(PyTorch model, HF tokenizer) of a base model adapters can run on, loaded once per
    process (~20 s and ~0.9 GB for SmolLM2)."""
    from workers.textgen.export import MODEL_NAME, load_reference_model

    if name != MODEL_NAME:
        raise FailedPrecondition(f"adapters need their base model in PyTorch; this worker "
                                 f"loads {MODEL_NAME} only, not {name}",
                                 metadata={"model": name})
    return load_reference_model()


def load_adapter_version(folder: Path, model=None) -> dict[str, Any]:
    """The adapter of a version folder as a dense peft state dict (torch tensors for
    `adapter.safetensors`, float32 numpy arrays for `adapter.compeft`). A compressed task
    vector needs the base `model` (default: `base_model(...)`) to regenerate peft's seeded
    initialisation A0."""
    spec = read_spec(folder)
    path = Path(folder) / spec.weights
    if spec.format == "peft-lora":
        return load_adapter(path)
    restored = compeft.decompress(compeft.from_bytes(path.read_bytes()))
    if spec.compeft.get("task_vector"):
        if model is None:
            model = base_model(spec.base_name)[0]
        restored = compeft.apply_task_vector(initial_adapter(model, spec.lora), restored)
    return restored


def register_adapter(registry, name: str, version: str, folder: Path, *,
                     provenance: dict | None = None, extra: dict[str, Path] | None = None,
                     serve: bool = False):
    """Registers the adapter files in `folder` (adapter.json, its weights, the texts when
    present) plus `extra` (e.g. reports) as `name@version` with runtime `peft-lora` and the
    base model in the provenance. Returns the Manifest."""
    folder = Path(folder)
    spec = read_spec(folder)
    files = {n: folder / n for n in (SPEC, spec.weights, VALIDATION, TEST)
             if (folder / n).is_file()}
    files.update(extra or {})
    return registry.register(name, version, files, runtime=RUNTIME, serve=serve,
                             provenance={**(provenance or {}), "base_model": spec.base_model})
