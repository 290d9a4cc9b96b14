"""Long transcriptions in chunks: where to cut a recording, which speech each chunk holds, and
how the chunks' transcripts join. Pure functions; `workers.audio.tasks` runs them as one task per
chunk.

Cuts fall in silence as the VAD found it, so no speech segment (hence no word) is split, unless
a single stretch of speech runs longer than a chunk: then it is cut at the chunk's length and a
word may be cut in two.
"""

from __future__ import annotations

Span = tuple[float, float]


def plan_chunks(speech: list[Span], total_s: float, max_s: float) -> list[Span]:
    """Consecutive (start, end) chunks covering [0, total_s), each at most ``max_s`` long.

    Each cut is the latest point within ``max_s`` of the chunk's start that is not inside a
    speech segment: the limit itself when it falls in silence, else the middle of the pause
    before the segment it falls in, unless that would leave a chunk shorter than half of
    ``max_s`` (speech with no pause long enough): then the cut is the limit, inside speech.
    So every chunk but the last is at least ``max_s / 2`` long."""
    if max_s <= 0:
        raise ValueError("max_s must be positive")
    chunks: list[Span] = []
    start = 0.0
    while total_s - start > max_s:
        limit = start + max_s
        cut = limit
        for k, (a, b) in enumerate(speech):
            if a < limit < b:  # the limit falls inside this segment
                pause_start = speech[k - 1][1] if k else 0.0
                mid = (max(pause_start, start) + a) / 2
                if a > start and mid - start >= max_s / 2:
                    cut = mid
                break
        chunks.append((start, cut))
        start = cut
    chunks.append((start, total_s))
    return chunks


def chunk_speech(speech: list[Span], chunk: Span) -> list[Span]:
    """The speech segments inside ``chunk``, clipped to it, in seconds from the chunk's start."""
    a, b = chunk
    return [(round(max(s, a) - a, 3), round(min(e, b) - a, 3)) for s, e in speech
            if e > a and s < b and min(e, b) - max(s, a) > 0]


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
