"""How many inputs each decoder was given in this session, for the figures in
docs/RELIABILITY.md (Hypothesis counts examples per test, not per decoder)."""

from __future__ import annotations

from collections import Counter

TRIED: Counter[str] = Counter()


def tried(decoder: str) -> None:
    TRIED[decoder] += 1
