"""Word error rate: normalisation and word-level Levenshtein distance."""

from __future__ import annotations

import pytest

from workers.audio.wer import normalize_words, word_error_rate, word_errors


def test_normalisation_ignores_case_and_punctuation():
    assert normalize_words("Front, CENTER!") == ["front", "center"]
    assert normalize_words("Don't\u2019 stop — well-known (3.5)") == ["dont", "stop", "well",
                                                                      "known", "3", "5"]
    assert normalize_words("  ...  ") == []


def test_identical_up_to_case_and_punctuation():
    assert word_error_rate("The quick brown fox.", "the quick brown fox") == 0.0
    assert word_error_rate("I'm fine, thanks!", "I\u2019m fine. Thanks.") == 0.0


@pytest.mark.parametrize("hyp,edits", [
    ("the quick brown fox", 0),
    ("the quick red fox", 1),  # substitution
    ("the brown fox", 1),  # deletion
    ("the very quick brown fox", 1),  # insertion
    ("quick the brown fox", 2),  # a swap is two edits
    ("", 4),
    ("fox brown quick the", 4),
])
def test_edit_counts(hyp, edits):
    assert word_errors("The quick brown fox", hyp) == (edits, 4)
    assert word_error_rate("The quick brown fox", hyp) == edits / 4


def test_rate_can_exceed_one_and_is_not_symmetric():
    assert word_error_rate("yes", "no no no") == 3.0
    assert word_error_rate("no no no", "yes") == 1.0


def test_empty_reference_is_refused():
    with pytest.raises(ValueError, match="reference"):
        word_error_rate("?!", "anything")
    assert word_errors("", "two words") == (2, 0)  # summable over a corpus all the same
