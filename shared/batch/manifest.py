"""Batch manifests: JSONL, one request per line, `{"custom_id": "...", "body": {...}}`.

Parsing is all-or-nothing: every line is checked and every bad line is reported with its
1-based line number, so a client fixes its manifest in one round instead of one error at a
time, and no work starts on a manifest that has any bad line. Blank lines are skipped (but
still counted for line numbers, so numbers match an editor's)."""

from __future__ import annotations

import json
from dataclasses import dataclass

MAX_CUSTOM_ID = 64
MAX_REPORTED = 100  # bad lines listed in one error; the count says how many there were


@dataclass(frozen=True)
class Line:
    number: int  # 1-based, as an editor shows it
    custom_id: str
    body: dict


@dataclass(frozen=True)
class LineError:
    number: int
    message: str

    def __str__(self) -> str:
        return f"line {self.number}: {self.message}"


class ManifestError(ValueError):
    """The manifest as a whole is unusable (too large, not UTF-8, empty)."""


def parse(data: bytes, *, max_lines: int, max_bytes: int) -> tuple[list[Line], list[LineError]]:
    """(lines, errors). Raises ManifestError when the manifest as a whole is refused."""
    if len(data) > max_bytes:
        raise ManifestError(f"is {len(data)} bytes; the limit is {max_bytes}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"is not UTF-8 (byte {exc.start})") from None
    lines: list[Line] = []
    errors: list[LineError] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        if len(lines) + len(errors) >= max_lines:
            raise ManifestError(f"has more than {max_lines} lines; the limit is {max_lines}")
        line, error = _parse_line(number, raw, seen)
        if error is not None:
            errors.append(error)
        else:
            lines.append(line)
    if not lines and not errors:
        raise ManifestError("has no lines")
    return lines, errors


def _parse_line(number: int, raw: str, seen: dict[str, int]
                ) -> tuple[Line | None, LineError | None]:
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        return None, LineError(number, f"is not JSON ({exc.msg} at column {exc.colno})")
    if not isinstance(obj, dict):
        return None, LineError(number, "must be a JSON object")
    custom_id = obj.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return None, LineError(number, "custom_id must be a non-empty string")
    if len(custom_id) > MAX_CUSTOM_ID:
        return None, LineError(number, f"custom_id is longer than {MAX_CUSTOM_ID} characters")
    if custom_id in seen:
        return None, LineError(number, f"custom_id {custom_id!r} repeats line "
                                       f"{seen[custom_id]}")
    extra = set(obj) - {"custom_id", "body"}
    if "file" in extra:
        return None, LineError(number, "`file` lines are for the CLI, which uploads the file "
                                       "and writes the body; send `body`")
    if extra:
        return None, LineError(number, f"unknown keys {sorted(extra)}")
    body = obj.get("body")
    if not isinstance(body, dict):
        return None, LineError(number, "body must be a JSON object (the request as proto-JSON)")
    seen[custom_id] = number
    return Line(number, custom_id, body), None


def describe(errors: list[LineError]) -> str:
    shown = "; ".join(str(e) for e in errors[:5])
    more = f"; and {len(errors) - 5} more" if len(errors) > 5 else ""
    return f"{len(errors)} bad line{'s' if len(errors) != 1 else ''}: {shown}{more}"
