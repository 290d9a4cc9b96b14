"""Near-duplicates by meaning (`embed_dedup`) and topic clusters (`domain_cluster`) from
all-MiniLM-L6-v2 sentence embeddings (workers/curation/embeddings.py, ONNX Runtime).

Two passes, like MinHash (dedup.py). Shard stage: `encode` embeds each kept document (its first
`max_chars` characters; the model reads at most 256 tokens of them) into a unit vector of 384
float16 values, stored base64 (1,024 characters a document) in the shard's work files. Global
stage: `near_duplicate_groups` compares every pair of documents across all shards by cosine
similarity, as blocked matrix products in numpy, joins pairs at or above the threshold with
union-find (dedup.UnionFind) and keeps the smallest id of each cluster (the rule of
`minhash_dedup`, so the answer does not depend on shard order).

Limits: the pairwise pass is exact, not approximate: O(n² × 384) multiply-adds and n × 384 × 4
bytes of float32 in memory. Meant for up to ~100k documents in one run: the global stage runs in
one task, under the task time limit, and 20,000 random vectors took 9.0 s here (10,000: 3.2 s;
2 busy cores), so 100k is ~4 min. Beyond that, use minhash_dedup or an ANN index. float16
storage moves a cosine by at most ~1e-3, so a threshold is honoured to about that precision.

`kmeans` (spherical k-means, k-means++ seeding, fixed seed) labels documents with a topic
cluster for `domain_cluster`; it removes nothing.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from workers.curation.dedup import UnionFind
from workers.curation.documents import Document
from workers.curation.embeddings import MODEL_NAME, Embedder

MODEL = MODEL_NAME  # the embedding model's registry name
DIMENSION = 384
_BLOCK = 2048  # rows per block: a 2048 x 2048 float32 similarity block is 16 MiB
_embedders: dict[tuple[str, int], Embedder] = {}


def embedder(folder: Path, batch_size: int = 32):
    """The process's `Embedder` for an export folder (loaded once: an ORT session costs ~1 s)."""
    key = (str(folder), batch_size)
    if key not in _embedders:
        _embedders[key] = Embedder(folder, batch_size=batch_size)
    return _embedders[key]


def encode(docs: Sequence[Document], folder: Path, max_chars: int = 2000,
           batch_size: int = 32) -> list[str]:
    """Per document, its unit-norm embedding as base64 of 384 little-endian float16 values."""
    vectors = embedder(folder, batch_size).embed([d.text[:max_chars] for d in docs])
    return [base64.b64encode(v.astype("<f2").tobytes()).decode("ascii") for v in vectors]


def decode(values: Sequence[str]) -> np.ndarray:
    """[n, 384] float32 from `encode`'s strings; ValueError for one of another size."""
    out = np.empty((len(values), DIMENSION), np.float32)
    for row, value in enumerate(values):
        vec = np.frombuffer(base64.b64decode(value), dtype="<f2")
        if vec.size != DIMENSION:
            raise ValueError(f"an embedding has {vec.size} values, not {DIMENSION}")
        out[row] = vec
    return out


def similar_pairs(vectors: np.ndarray, threshold: float, block: int = _BLOCK):
    """Yields (i, j) with i < j for every pair of rows whose dot product is >= threshold,
    one block of rows against the blocks at and after it (each pair computed once)."""
    n = len(vectors)
    for start in range(0, n, block):
        rows = vectors[start:start + block]
        for other in range(start, n, block):
            sims = rows @ vectors[other:other + block].T
            if other == start:
                sims = np.triu(sims, k=1)  # the block against itself: above the diagonal
            for i, j in zip(*np.nonzero(sims >= threshold), strict=True):
                yield start + int(i), other + int(j)


def near_duplicate_groups(vectors_by_doc: dict[str, str], threshold: float = 0.9
                          ) -> dict[str, str]:
    """doc id -> kept id (the smallest id of its cluster), for every document in a cluster of
    two or more; clusters are the connected components of the pairs with cosine >= threshold."""
    ids = sorted(vectors_by_doc)
    sets = UnionFind(range(len(ids)))
    for i, j in similar_pairs(decode([vectors_by_doc[d] for d in ids]), threshold):
        sets.union(i, j)
    return {ids[i]: ids[root] for i, root in sets.groups().items()}


def kmeans(vectors: np.ndarray, k: int, *, iterations: int = 20, seed: int = 0
           ) -> tuple[np.ndarray, np.ndarray]:
    """(labels [n], centroids [k', 384]) of spherical k-means on unit vectors: k-means++ seeds
    (by cosine distance, `seed`), then assign by the highest cosine and re-normalise the means,
    until no label changes or `iterations`. k' = min(k, n); an emptied cluster keeps its
    centroid. Deterministic for the same vectors in the same order."""
    n = len(vectors)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros((0, vectors.shape[1]), np.float32)
    k = min(k, n)
    rng = np.random.default_rng(seed)
    centroids = [vectors[rng.integers(n)]]
    distance = np.maximum(1.0 - vectors @ centroids[0], 0.0)
    for _ in range(1, k):
        total = distance.sum()
        pick = rng.choice(n, p=distance / total) if total > 0 else rng.integers(n)
        centroids.append(vectors[pick])
        distance = np.minimum(distance, np.maximum(1.0 - vectors @ vectors[pick], 0.0))
    centres = np.stack(centroids).astype(np.float32)
    labels = np.full(n, -1, np.int64)
    for _ in range(iterations):
        new = np.argmax(vectors @ centres.T, axis=1)
        if np.array_equal(new, labels):
            break
        labels = new
        for c in range(k):
            members = vectors[labels == c]
            if len(members):
                mean = members.sum(axis=0)
                centres[c] = mean / max(float(np.linalg.norm(mean)), 1e-12)
    return labels, centres


def deduplicate(step, vectors_by_doc: dict[str, str]
                ) -> tuple[dict[str, tuple[str, str]], dict[str, dict], dict]:
    """The `embed_dedup` global pass, in the shape of pipeline.GLOBAL_PASSES: (removed: doc id
    -> ("duplicate", "duplicate_of:<kept id>"), metadata: none, report: {clusters: how many
    near-duplicate clusters})."""
    groups = near_duplicate_groups(vectors_by_doc, step.threshold)
    removed = {d: ("duplicate", f"duplicate_of:{kept}") for d, kept in groups.items()
               if d != kept}
    return removed, {}, {"clusters": len(set(groups.values()))}


def cluster(step, vectors_by_doc: dict[str, str]
            ) -> tuple[dict[str, tuple[str, str]], dict[str, dict], dict]:
    """The `domain_cluster` global pass: k-means over the documents in id order. Returns
    (removed: none, metadata: doc id -> {cluster, cluster_similarity (cosine to the centroid,
    4 decimals)}, report: {clusters: [{cluster, size, example (the id nearest the centroid)}]})."""
    ids = sorted(vectors_by_doc)
    vectors = decode([vectors_by_doc[d] for d in ids])
    labels, centres = kmeans(vectors, step.k, iterations=step.iterations, seed=step.seed)
    sims = np.einsum("ij,ij->i", vectors, centres[labels]) if len(ids) else np.zeros(0)
    metadata = {d: {"cluster": int(c), "cluster_similarity": round(float(s), 4)}
                for d, c, s in zip(ids, labels, sims, strict=True)}
    clusters = []
    for c in range(len(centres)):
        members = np.flatnonzero(labels == c)
        if len(members):
            best = members[np.argmax(sims[members])]
            clusters.append({"cluster": c, "size": int(len(members)), "example": ids[best]})
    return {}, metadata, {"clusters": clusters}
