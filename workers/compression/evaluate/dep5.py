"""A small real task for LoRA adapters: Debian's machine-readable copyright files (DEP-5).

Every /usr/share/doc/*/copyright that starts with `Format:` is a structured document (Files,
Copyright and License stanzas) that SmolLM2 predicts poorly out of the box and learns in a few
dozen steps: a task where an adapter makes a measurable difference. No download; the set is
whatever this Debian image installed, so splits are assigned per file by a seeded hash of its
content (`split_of`), stable as packages come and go.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

DOC_DIR = Path("/usr/share/doc")
MAX_CHARS = 2000  # head of each file: the DEP-5 header and Files stanzas, less pasted licence
SPLIT_SEED = 0
TEST_FRACTION = VALIDATION_FRACTION = 0.1


def copyright_documents(doc_dir: Path = DOC_DIR, minimum: int = 30) -> list[tuple[str, str]]:
    """(package, text) of every `doc_dir`/*/copyright in DEP-5 format (first line
    `Format: ...`), exact duplicates (shared or symlinked files) once under the first package
    name in sorted order, each cut to MAX_CHARS at a line end. Raises RuntimeError when fewer
    than `minimum` are found."""
    seen: set[str] = set()
    docs = []
    for path in sorted(Path(doc_dir).glob("*/copyright")):
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if not text.startswith("Format:"):
            continue
        digest = hashlib.sha256(text.encode()).hexdigest()
        if digest in seen:
            continue
        seen.add(digest)
        head = text[:MAX_CHARS]
        if len(text) > MAX_CHARS and "\n" in head:
            head = head.rsplit("\n", 1)[0]
        docs.append((path.parent.name, head))
    if len(docs) < minimum:
        raise RuntimeError(f"only {len(docs)} DEP-5 copyright files under {doc_dir}")
    return docs


def split_of(text: str, seed: int = SPLIT_SEED) -> str:
    """A file's split from a seeded hash of its content: stable when packages are installed or
    removed (the set under /usr/share/doc changes as other work installs packages), and equal
    contents always land in the same split."""
    point = int(hashlib.sha256(f"{seed}:{text}".encode()).hexdigest()[:8], 16) / 2 ** 32
    if point < TEST_FRACTION:
        return "test"
    return "validation" if point < TEST_FRACTION + VALIDATION_FRACTION else "train"


def split_documents(docs: list[tuple[str, str]], seed: int = SPLIT_SEED) -> dict[str, list]:
    """Whole files to train / validation / test by `split_of`, in package-name order."""
    out: dict[str, list] = {"train": [], "validation": [], "test": []}
    for package, text in docs:
        out[split_of(text, seed)].append((package, text))
    return out
