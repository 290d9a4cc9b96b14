"""What one compression run produced, next to its parent: size, latency and quality.

A `CompressionReport` is written beside a compressed model (JSON, for tools) and shown to people
(Markdown). Ratios are derived, never stored as fields: `size_ratio` is parent size / new size
(3.9 = 3.9x smaller), `latency_ratio` new / parent (0.5 = twice as fast), and `metric_delta`
new - parent in the metric's own unit. The JSON carries the derived values too, for readers that
do not load this class; `from_json` ignores them.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from typing import Any

METRICS = {  # metric -> (label, lower is better)
    "cer": ("character error rate", True),
    "perplexity": ("perplexity", True),
    "cosine": ("cosine similarity to the parent", False),
    # What the embedding and generic families report (families.py): 1 - mean cosine.
    "cosine_distance": ("1 - cosine agreement with the parent", True),
    "task_loss": ("task loss (nats/token)", True),
}


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else math.nan


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


@dataclass
class CompressionReport:
    model: str  # registry name, e.g. "smollm2-135m-instruct"
    parent_version: str
    version: str  # the compressed model's version
    recipe: str  # e.g. "int8-dynamic", "wanda-50"
    params: dict[str, Any]
    notes: list[str]
    size_bytes: int
    parent_size_bytes: int
    metric: str  # one of METRICS
    parent_metric: float
    metric_value: float
    latency_ms: float
    parent_latency_ms: float

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {sorted(METRICS)}, got {self.metric!r}")

    @property
    def size_ratio(self) -> float:
        """Parent size / new size: how many times smaller (NaN for an empty model)."""
        return _ratio(self.parent_size_bytes, self.size_bytes)

    @property
    def latency_ratio(self) -> float:
        """New latency / parent latency: below 1 is faster (NaN without a parent time)."""
        return _ratio(self.latency_ms, self.parent_latency_ms)

    @property
    def metric_delta(self) -> float:
        return self.metric_value - self.parent_metric

    def to_json(self) -> bytes:
        """UTF-8 JSON, keys sorted; non-finite derived values become null."""
        data = asdict(self)
        data["derived"] = {name: _finite_or_none(getattr(self, name))
                           for name in ("size_ratio", "latency_ratio", "metric_delta")}
        return json.dumps(data, indent=2, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_json(cls, raw: bytes | str) -> CompressionReport:
        """Inverse of `to_json`; unknown keys (the derived values among them) are ignored."""
        data = json.loads(raw)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_markdown(self) -> str:
        """A short summary: a table of size, latency and metric (before, after, change), then
        the recipe with its parameters and the notes as bullets."""
        label, lower_is_better = METRICS[self.metric]
        delta = self.metric_delta
        better = delta < 0 if lower_is_better else delta > 0
        verdict = "unchanged" if delta == 0 else ("better" if better else "worse")
        lines = [
            f"### {self.model} {self.version} (from {self.parent_version})",
            "",
            "| | parent | compressed | change |",
            "|---|---:|---:|---:|",
            f"| size | {_mib(self.parent_size_bytes)} | {_mib(self.size_bytes)} | "
            f"{self.size_ratio:.2f}x smaller |",
            f"| latency | {self.parent_latency_ms:.1f} ms | {self.latency_ms:.1f} ms | "
            f"{self.latency_ratio:.2f}x |",
            f"| {label} | {self.parent_metric:.4g} | {self.metric_value:.4g} | "
            f"{delta:+.4g} ({verdict}) |",
            "",
            f"Recipe: `{self.recipe}`" + (" with " + ", ".join(
                f"`{k}={v}`" for k, v in sorted(self.params.items())) if self.params else ""),
        ]
        if self.notes:
            lines += ["", *(f"- {note}" for note in self.notes)]
        return "\n".join(lines) + "\n"


def _mib(size: int) -> str:
    if size < 2**20:  # adapters: tens of KiB
        return f"{size / 2**10:.1f} KiB"
    return f"{size / 2**20:.1f} MiB"
