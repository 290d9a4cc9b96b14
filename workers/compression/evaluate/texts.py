"""Real English text for evaluating compressed models, the same on every run.

Provenance: the licence texts Debian installs in /usr/share/common-licenses (no download, no
generated text). They are split in two disjoint groups so that a recipe can calibrate on one and
be judged on the other:

- `held_out_text`: Apache-2.0, MPL-2.0, Artistic, BSD and CC0-1.0, for perplexity.
- `calibration_text`: GPL-3, LGPL-2.1 and GFDL-1.3, for quantisation and pruning calibration.
- `text_lines`: short runs of words from all of them, for rendered OCR lines (the recognizer is
  never calibrated on text, so no split is needed there).

Licences are legal prose that language models have seen often: perplexity on them is lower than
on fresh text, but a compressed model that forgets language still shows up as a rise.
Whitespace is cleaned (one space inside a paragraph, a blank line between paragraphs) and only
printable ASCII is kept. Choices come from `random.Random(seed)`, so a seed fixes the output.
"""

from __future__ import annotations

import random
import re
from functools import cache
from pathlib import Path

LICENSE_DIR = Path("/usr/share/common-licenses")
HELD_OUT = ("Apache-2.0", "MPL-2.0", "Artistic", "BSD", "CC0-1.0")
CALIBRATION = ("GPL-3", "LGPL-2.1", "GFDL-1.3")

_ART = re.compile(r"([^\w\s])\1\1")  # "___", "---", "***": rules and boxes, not prose


def _clean(text: str) -> str:
    """One paragraph on one line: printable ASCII only, whitespace runs to one space."""
    return " ".join("".join(ch if 32 <= ord(ch) < 127 else " " for ch in text).split())


def _is_prose(paragraph: str) -> bool:
    if len(paragraph) < 3 or _ART.search(paragraph):
        return False
    visible = paragraph.replace(" ", "")
    return sum(ch.isalpha() for ch in visible) >= 0.6 * len(visible)


@cache
def _paragraphs(name: str) -> tuple[str, ...]:
    """The prose paragraphs of one licence file (blank-line separated in the file)."""
    path = LICENSE_DIR / name
    if not path.is_file():
        return ()
    raw = path.read_text(encoding="utf-8", errors="replace")
    blocks = (_clean(block) for block in re.split(r"\n\s*\n", raw))
    return tuple(block for block in blocks if _is_prose(block))


def _documents(names: tuple[str, ...]) -> list[tuple[str, ...]]:
    docs = [p for p in (_paragraphs(name) for name in names) if p]
    if not docs:
        raise RuntimeError(f"none of {', '.join(names)} found in {LICENSE_DIR} "
                           "(Debian: base-files)")
    return docs


def _assemble(names: tuple[str, ...], max_chars: int, seed: int) -> str:
    """Whole documents in a seeded order, paragraphs in file order, cut at a word boundary so
    that the result is at most `max_chars` long."""
    if max_chars < 1:
        raise ValueError("max_chars must be >= 1")
    docs = _documents(names)
    random.Random(seed).shuffle(docs)
    out: list[str] = []
    used = 0
    for paragraph in (p for doc in docs for p in doc):
        room = max_chars - used - (2 if out else 0)
        if room <= 0:
            break
        if len(paragraph) > room:
            head = paragraph[:room + 1]  # a space right after the cut still ends a word
            head = head.rsplit(" ", 1)[0] if " " in head else ""
            if head:
                out.append(head)
            break
        out.append(paragraph)
        used += len(paragraph) + (2 if len(out) > 1 else 0)
    return "\n\n".join(out)


def held_out_text(max_chars: int = 20000, seed: int = 0) -> str:
    """Up to `max_chars` characters of licence prose never used by `calibration_text`;
    paragraphs separated by a blank line. The seed orders the documents."""
    return _assemble(HELD_OUT, max_chars, seed)


def calibration_text(max_chars: int = 20000, seed: int = 0) -> str:
    """Like `held_out_text`, from the disjoint calibration licences."""
    return _assemble(CALIBRATION, max_chars, seed)


def text_lines(n: int, seed: int = 0, min_chars: int = 12, max_chars: int = 48) -> list[str]:
    """`n` runs of consecutive words from the licences, each `min_chars` to `max_chars` long,
    printable ASCII with single spaces and no leading or trailing space. Raises ValueError for
    bounds no run of words can meet."""
    if not 1 <= min_chars <= max_chars:
        raise ValueError("need 1 <= min_chars <= max_chars")
    words = [p.split() for p in (p for doc in _documents(HELD_OUT + CALIBRATION) for p in doc)]
    words = [w for w in words if len(w) >= 2]
    rng = random.Random(seed)
    lines: list[str] = []
    for _ in range(n):
        for _attempt in range(1000):
            paragraph = rng.choice(words)
            start = rng.randrange(len(paragraph))
            target = rng.randint(min_chars, max_chars)
            line = paragraph[start]
            for word in paragraph[start + 1:]:
                if len(line) + 1 + len(word) > target:
                    break
                line += " " + word
            if min_chars <= len(line) <= max_chars:
                lines.append(line)
                break
        else:
            raise ValueError(f"no run of words of {min_chars}-{max_chars} characters found")
    return lines
