"""Where a benchmark's figures go: the markdown table printed and written to
`bench/results/<name>.md`, every figure to `<name>.json` (unless `write` is off)."""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def publish(name: str, lines: list[str], figures: dict, write: bool = True) -> str:
    report = "\n".join(lines) + "\n"
    print(report)
    if write:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"{name}.md").write_text(report)
        (RESULTS / f"{name}.json").write_text(json.dumps(figures, indent=2) + "\n")
    return report
