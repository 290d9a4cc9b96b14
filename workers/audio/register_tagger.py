"""`python -m workers.audio.register_tagger`: an operator registers a sound tagger they hold (a
PANNs CNN14 ONNX, say, which jobmesh does not ship) through the registry's admin API, after
checking here that the audio worker will load it; `TagRequest.model` then selects it by name.

    python -m workers.audio.register_tagger panns-cnn14 cnn14-v1 \\
        --onnx Cnn14.onnx --labels class_labels_indices.csv --serve

The ONNX is checked as the worker loads it (`workers.audio.taggers`): a PANNs waveform
[batch, samples] or log-mel [batch, 1, frames, 64] input, or YAMNet's patch; one output score
per label. The labels file is AudioSet's class map (`index,mid,display_name`, 527 rows for
PANNs). Both go up with presigned URLs (`CreateModelUpload`), then `RegisterModel` records the
version (the gateway hashes the files and reads the tensor specs into the manifest). Endpoint and
admin key resolve as for the `jobmesh` CLI (flags > environment > `.jobmesh/local.env`). Exit
codes as the CLI's: 0 ok, 1 refused, 2 usage (a file the worker would not load), 3 unreachable,
4 auth refused.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from shared.cli.main import exit_code, report
from shared.client.errors import JobmeshClientError
from shared.client.sdk import Client
from shared.client.settings import ClientSettings, ConfigError
from workers.audio.models import LABELS_FILE
from workers.audio.taggers import load_tagger


def check(onnx: Path, labels: Path) -> str:
    """A one-line description of the tagger the worker will make; raises ValueError/OSError."""
    t = load_tagger(onnx, labels)
    form = ("YAMNet patch" if not hasattr(t, "waveform_input") else
            "waveform" if t.waveform_input else "log-mel")
    return (f"{type(t).__name__}: {form} input at {t.rate} Hz, windows of {t.patch_s:g} s "
            f"every {t.hop_s:g} s, {len(t.labels)} classes")


def register(client: Client, name: str, version: str, onnx: Path, labels: Path, *,
             serve: bool = False, source: str = ""):
    """Uploads `model.onnx` and `labels.csv` and registers `name@version` (admin key)."""
    return client.register_model(
        name, version, {"model.onnx": onnx.read_bytes(), LABELS_FILE: labels.read_bytes()},
        serve=serve, source=source or f"operator upload: {onnx.name} + {labels.name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.audio.register_tagger",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("name", help="registry name, e.g. panns-cnn14 (TagRequest.model)")
    parser.add_argument("version", help="version label, e.g. cnn14-mAP0.431")
    parser.add_argument("--onnx", type=Path, required=True, help="the tagger's ONNX file")
    parser.add_argument("--labels", type=Path, required=True,
                        help="class map CSV (index,mid,display_name), one row per output")
    parser.add_argument("--serve", action="store_true", help="point `serving` at it")
    parser.add_argument("--source", default="", help="provenance note (where it came from)")
    parser.add_argument("--endpoint", help="gateway host:port")
    parser.add_argument("--api-key", help="an admin key")
    args = parser.parse_args(argv)
    try:
        print(check(args.onnx, args.labels))
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        settings = ClientSettings.resolve(args.endpoint, args.api_key)
        with Client(settings) as client:
            model = register(client, args.name, args.version, args.onnx, args.labels,
                             serve=args.serve, source=args.source)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except JobmeshClientError as exc:
        report(exc)
        return exit_code(exc)
    print(f"registered {args.name}@{args.version}; serving: {model.serving_version or '-'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
