"""Where long transcriptions are cut, and how the parts join."""

from __future__ import annotations

import numpy as np
import pytest

from workers.audio.chunking import loudness, merge_transcripts, offset_transcript, plan_chunks

RATE = 16000


def _contiguous(chunks, total):
    assert chunks[0][0] == 0.0 and chunks[-1][1] == total
    assert all(a[1] == b[0] for a, b in zip(chunks, chunks[1:], strict=False))


def _bursts(spans: list[tuple[float, float]], total: float) -> np.ndarray:
    """Noise during `spans` (sounds), digital silence elsewhere."""
    rng = np.random.default_rng(0)
    wave = np.zeros(int(total * RATE), np.float32)
    for a, b in spans:
        wave[int(a * RATE):int(b * RATE)] = 0.1 * rng.standard_normal(int(b * RATE) -
                                                                      int(a * RATE))
    return wave


def test_loudness_streams_like_the_whole_signal():
    wave = _bursts([(0.5, 1.0)], 2.05)
    whole = loudness([wave], RATE)
    assert len(whole) == 21  # 20 frames of 100 ms and a partial one
    blocks = [wave[k:k + 3001] for k in range(0, len(wave), 3001)]
    np.testing.assert_allclose(loudness(blocks, RATE), whole, rtol=1e-5)
    assert whole[:5].max() == 0 and whole[6:10].min() > 0.05


def test_short_file_is_one_chunk():
    assert plan_chunks(np.ones(90, np.float32), 9.0, 10.0) == [(0.0, 9.0)]


def test_cuts_fall_in_the_pauses_and_chunks_stay_within_bounds():
    sounds = [(0.5, 3.0), (4.0, 7.5), (8.5, 9.0), (9.5, 14.0), (15.0, 18.0)]
    loud = loudness([_bursts(sounds, 20.0)], RATE)
    chunks = plan_chunks(loud, 20.0, 8.0)
    _contiguous(chunks, 20.0)
    assert all(4.0 <= b - a <= 8.0 for a, b in chunks[:-1]) and chunks[-1][1] - chunks[-1][0] <= 8
    for cut in (b for _, b in chunks[:-1]):
        assert not any(s <= cut <= e for s, e in sounds), cut
    # The latest quiet frame of the first chunk's second half (4..8 s) is the pause 7.5..8.5.
    assert chunks[0] == (0.0, 7.95)


def test_without_a_pause_the_cut_is_the_quietest_moment():
    loud = np.ones(300, np.float32)
    loud[170] = 0.2  # a dip at 17.0-17.1 s, in the second chunk's second half
    chunks = plan_chunks(loud, 30.0, 10.0)
    _contiguous(chunks, 30.0)
    assert chunks[0] == (0.0, 9.95)  # all equal: the latest frame
    assert chunks[1] == (9.95, 17.05)
    with pytest.raises(ValueError):
        plan_chunks(loud, 5.0, 0.0)


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
