"""Word error rate: how far a transcript is from the reference, in word edits.

Both texts are normalised the same way first, so that only the words count: case is folded,
apostrophes are dropped inside words ("don't" and "dont" agree, and so do the straight and the
typographic apostrophe) and any other punctuation separates words ("well-known" is two words).
Numbers are not spelt out: "2" and "two" differ, as in most published WER tables.
"""

from __future__ import annotations

import re

_APOSTROPHES = re.compile(r"['\u2019\u02bc]")
_NOT_WORD = re.compile(r"[^\w]+")


def normalize_words(text: str) -> list[str]:
    """The words of ``text`` after case folding and punctuation removal."""
    return _NOT_WORD.sub(" ", _APOSTROPHES.sub("", text.casefold())).split()


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(substitutions + deletions + insertions, reference words): the minimum number of word
    edits turning the reference into the hypothesis (Levenshtein over words). Sum both over
    a corpus and divide for a corpus WER; averaging per-sentence rates weights short sentences
    too much."""
    ref, hyp = normalize_words(reference), normalize_words(hypothesis)
    # One row of the edit-distance table at a time: memory is O(len(hyp)).
    row = list(range(len(hyp) + 1))
    for i, word in enumerate(ref, 1):
        diagonal, row[0] = row[0], i
        for j, other in enumerate(hyp, 1):
            diagonal, row[j] = row[j], min(row[j] + 1,  # deletion
                                           row[j - 1] + 1,  # insertion
                                           diagonal + (word != other))  # substitution or match
    return row[-1], len(ref)


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word edits divided by the reference's word count: 0 for a perfect transcript; it can
    exceed 1 when the hypothesis inserts words. A reference without words is refused
    (ValueError): the rate is undefined."""
    edits, words = word_errors(reference, hypothesis)
    if words == 0:
        raise ValueError("reference: has no words; the word error rate is undefined")
    return edits / words
