"""Where long transcriptions are cut, which speech each chunk holds, how the parts join."""

from __future__ import annotations

import pytest

from workers.audio.chunking import (
    chunk_speech,
    merge_transcripts,
    offset_transcript,
    plan_chunks,
)


def _contiguous(chunks, total):
    assert chunks[0][0] == 0.0 and chunks[-1][1] == total
    assert all(a[1] == b[0] for a, b in zip(chunks, chunks[1:], strict=False))


def test_short_file_is_one_chunk():
    assert plan_chunks([(1.0, 2.0)], 9.0, 10.0) == [(0.0, 9.0)]


def test_cuts_fall_in_the_pauses_and_chunks_stay_within_the_limit():
    speech = [(0.5, 3.0), (4.0, 7.5), (8.5, 9.0), (9.5, 14.0), (15.0, 18.0)]
    chunks = plan_chunks(speech, 20.0, 8.0)
    _contiguous(chunks, 20.0)
    assert all(b - a <= 8.0 for a, b in chunks)
    for cut in (b for _, b in chunks[:-1]):
        assert not any(s < cut < e for s, e in speech), cut
    # The first limit (8.0) falls in silence, 7.5..8.5: cut right there.
    assert chunks[0] == (0.0, 8.0)
    # The next (16.0) falls in speech 15..18: cut in the middle of the pause before it.
    assert chunks[1] == (8.0, 14.5)


def test_speech_longer_than_a_chunk_is_cut_at_the_limit():
    chunks = plan_chunks([(0.1, 25.0)], 30.0, 10.0)
    _contiguous(chunks, 30.0)
    assert chunks == [(0.0, 10.0), (10.0, 20.0), (20.0, 30.0)]
    # A pause too early to cut at (chunks would shrink below half the limit) is not used.
    assert plan_chunks([(0.0, 1.0), (1.4, 30.0)], 30.0, 10.0)[0] == (0.0, 10.0)
    with pytest.raises(ValueError):
        plan_chunks([], 5.0, 0.0)


def test_chunk_speech_is_clipped_and_relative():
    speech = [(0.5, 3.0), (4.0, 7.5), (9.5, 14.0)]
    assert chunk_speech(speech, (3.5, 10.0)) == [(0.5, 4.0), (6.0, 6.5)]
    assert chunk_speech(speech, (7.5, 9.5)) == []


def test_parts_join_in_order_with_times_moved():
    part = {"text": "front center", "segments": [{
        "start": 0.25, "end": 1.0, "text": "front center",
        "words": [{"word": "front", "start": 0.25, "end": 0.5, "probability": 0.9},
                  {"word": "center", "start": 0.5, "end": 1.0, "probability": 0.8}]}]}
    moved = offset_transcript(part, 600.0)
    assert moved["segments"][0]["start"] == 600.25
    assert [w["end"] for w in moved["segments"][0]["words"]] == [600.5, 601.0]
    assert part["segments"][0]["start"] == 0.25  # the input is left as it was
    merged = merge_transcripts([offset_transcript(part, 0.0), {"text": "", "segments": []},
                                moved])
    assert merged["text"] == "front center front center"
    assert [s["start"] for s in merged["segments"]] == [0.25, 600.25]
