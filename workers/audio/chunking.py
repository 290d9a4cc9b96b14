"""Long transcriptions in chunks: where to cut a recording, and how the chunks' transcripts
join. Pure functions; `workers.audio.long_transcribe` runs them as one task per chunk.

Cuts fall at the quietest moment near each chunk's end, found from a loudness profile (RMS per
100 ms) that costs one streamed pass over the decoded file, far cheaper than running the VAD
over hours in one task (the VAD runs per chunk instead). A cut lands in a pause unless the last
half of a chunk has none: then in its quietest 100 ms.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

Span = tuple[float, float]
FRAME_SECONDS = 0.1


def loudness(blocks: Iterable[np.ndarray], rate: int, frame_s: float = FRAME_SECONDS
             ) -> np.ndarray:
    """RMS of each ``frame_s`` frame of a stream of mono blocks (the last frame may be
    partial); float32, one value per frame."""
    size = max(1, round(rate * frame_s))
    rest = np.zeros(0, np.float32)
    out: list[np.ndarray] = []
    for block in blocks:
        x = np.concatenate([rest, np.asarray(block, np.float32)])
        whole = len(x) - len(x) % size
        if whole:
            frames = x[:whole].reshape(-1, size).astype(np.float64)
            out.append(np.sqrt((frames * frames).mean(axis=1)).astype(np.float32))
        rest = x[whole:]
    if len(rest):
        out.append(np.array([np.sqrt(np.mean(rest.astype(np.float64) ** 2))], np.float32))
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def plan_chunks(loud: np.ndarray, total_s: float, max_s: float,
                frame_s: float = FRAME_SECONDS) -> list[Span]:
    """Consecutive (start, end) chunks covering [0, total_s), each at most ``max_s`` long and,
    but for the last, at least ``max_s / 2``: each cut is at the centre of the quietest frame
    (the latest of equally quiet ones) in the second half of the chunk."""
    if max_s <= 0:
        raise ValueError("max_s must be positive")
    chunks: list[Span] = []
    start = 0.0
    while total_s - start > max_s:
        lo = int(np.ceil((start + max_s / 2) / frame_s - 0.5))  # centres >= start + max_s / 2
        hi = min(int(np.floor((start + max_s) / frame_s - 0.5)), len(loud) - 1)  # <= limit
        if lo > hi:
            cut = start + max_s
        else:
            window = loud[lo:hi + 1]
            quietest = hi - int(np.argmin(window[::-1]))
            cut = round((quietest + 0.5) * frame_s, 3)
        chunks.append((start, cut))
        start = cut
    chunks.append((start, total_s))
    return chunks


def offset_transcript(result: dict, offset_s: float) -> dict:
    """A chunk's transcript (``Transcriber.transcribe``'s dict) with its times moved by
    ``offset_s``: the chunk's start in the recording."""

    def at(t: float) -> float:
        return round(t + offset_s, 3)

    return {"text": result.get("text", ""), "segments": [
        {**s, "start": at(s["start"]), "end": at(s["end"]),
         "words": [{**w, "start": at(w["start"]), "end": at(w["end"])}
                   for w in s.get("words", [])]}
        for s in result.get("segments", [])]}


def merge_transcripts(parts: list[dict]) -> dict:
    """The chunks' transcripts (times already in the recording's seconds), in chunk order, as
    one transcript."""
    segments = [s for p in parts for s in p.get("segments", [])]
    return {"text": " ".join(p["text"] for p in parts if p.get("text")), "segments": segments}
