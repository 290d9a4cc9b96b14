"""Deduplication across shards: exact (normalised-text hash) and near (MinHash-LSH).

Both run in two passes, so shards can be processed apart: per shard, a key or signature per
document (`exact_keys`, `minhash_signatures`, small enough to store next to the shard); then one
global pass over all of them (`duplicate_groups`, `near_duplicate_groups`) that says, for each
document in a group, which one is kept: the smallest id, so the answer does not depend on shard
order.

Normalisation (both): Unicode NFKC, lowercase, every character that is neither a word
character nor whitespace removed (punctuation and symbols: "don't!" -> "dont"), whitespace runs
collapsed to one space, ends stripped.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable

import numpy as np

from workers.curation.documents import Document

_NOT_WORD_OR_SPACE = re.compile(r"[^\w\s]+")
_SPACES = re.compile(r"\s+")
SCHEME = "affine32"  # datasketch's MinHash scheme: a signature is num_perm uint32 values


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    return _SPACES.sub(" ", _NOT_WORD_OR_SPACE.sub("", text)).strip()


def exact_keys(docs: Iterable[Document]) -> list[str]:
    """sha1 (hex) of each document's normalised text: equal keys, duplicate documents."""
    return [hashlib.sha1(normalise(d.text).encode()).hexdigest() for d in docs]


def duplicate_groups(keys_by_doc: dict[str, str]) -> dict[str, str]:
    """doc id -> kept id (the smallest id with the same key), for every document whose key is
    shared; documents not in the result are unique."""
    by_key: dict[str, list[str]] = {}
    for doc_id, key in keys_by_doc.items():
        by_key.setdefault(key, []).append(doc_id)
    return {doc_id: min(ids) for ids in by_key.values() if len(ids) > 1 for doc_id in ids}


def shingles(text: str, shingle: int = 5) -> set[bytes]:
    """Word `shingle`-grams of the normalised text; a shorter text is one shingle, an empty one
    none (its signature is all max values: empty documents match each other)."""
    words = normalise(text).split()
    if len(words) <= shingle:
        return {" ".join(words).encode()} if words else set()
    return {" ".join(words[i:i + shingle]).encode() for i in range(len(words) - shingle + 1)}


def minhash_signatures(docs: Iterable[Document], num_perm: int = 128, shingle: int = 5,
                       seed: int = 1) -> list[np.ndarray]:
    """One MinHash signature per document (datasketch, `SCHEME`, sha1 of each shingle): a
    uint32 array of num_perm values; `.tobytes()` stores it."""
    from datasketch import MinHash

    sets = (shingles(d.text, shingle) for d in docs)
    return [m.hashvalues.copy() for m in
            MinHash.generator(sets, num_perm=num_perm, seed=seed, scheme=SCHEME)]


def _as_array(sig: bytes | np.ndarray, num_perm: int, doc_id: str) -> np.ndarray:
    arr = np.frombuffer(sig, dtype=np.uint32) if isinstance(sig, bytes | bytearray) else sig
    if arr.shape != (num_perm,):
        raise ValueError(f"signature of {doc_id!r} has {arr.size} values, not {num_perm}")
    return arr


def near_duplicate_groups(sigs_by_doc: dict[str, bytes | np.ndarray], threshold: float = 0.8,
                          num_perm: int = 128, false_negative_weight: float = 0.9
                          ) -> dict[str, str]:
    """doc id -> kept id (the smallest id of its cluster), for every document in a cluster of
    two or more; documents not in the result are unique.

    Candidates come from datasketch's MinHashLSH; a candidate pair joins only when its
    estimated Jaccard (share of equal signature values) is >= threshold. Because candidates are
    verified, the bands are chosen to favour recall (`false_negative_weight` 0.9: at threshold
    0.8, 128 permutations, a pair at Jaccard 0.8 becomes a candidate with probability 0.87,
    against 0.40 with datasketch's equal weights). Clusters are the connected components of the
    verified pairs (union-find), so A~B and B~C put A and C together even when A and C are
    further apart."""
    from datasketch import LeanMinHash, MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm,
                     weights=(1 - false_negative_weight, false_negative_weight))
    sets = UnionFind()
    arrays: dict[str, np.ndarray] = {}
    for doc_id in sorted(sigs_by_doc):
        arr = _as_array(sigs_by_doc[doc_id], num_perm, doc_id)
        arrays[doc_id] = arr
        sets.add(doc_id)
        minhash = LeanMinHash(seed=1, hashvalues=arr, scheme=SCHEME)
        for other in lsh.query(minhash):
            if np.count_nonzero(arrays[other] == arr) / num_perm >= threshold:
                sets.union(doc_id, other)
        lsh.insert(doc_id, minhash)
    return sets.groups()


class UnionFind:
    """Disjoint sets of comparable items (path halving); the root of a set is its smallest
    item, so "keep the root" keeps the smallest id whatever order the pairs came in."""

    def __init__(self, items: Iterable = ()):
        self.parent = {x: x for x in items}

    def add(self, x) -> None:
        self.parent.setdefault(x, x)

    def root(self, x):
        parent = self.parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(self, a, b) -> None:
        ra, rb = self.root(a), self.root(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def groups(self) -> dict:
        """item -> its set's root, for every item in a set of two or more."""
        roots = {x: self.root(x) for x in self.parent}
        sizes = Counter(roots.values())
        return {x: r for x, r in roots.items() if sizes[r] > 1}
