"""Per-document LM statistics and the zero-shot machine-text detector: the calibration's order
statistic and direction on synthetic numbers, the entropy arithmetic, and a small real scoring
run with the SmolLM2 export (skipped when the export is missing)."""

from __future__ import annotations

import math
import random
import string
from pathlib import Path

import numpy as np
import pytest

from workers.curation.detect import Calibration, calibrate, is_machine, statistic
from workers.curation.lm_scores import LmScorer, LmScores, nll_and_entropy
from workers.textgen.export import default_export_dir, is_valid

# -- calibration ----------------------------------------------------------------------------


def test_calibrate_takes_the_floor_n_plus_1_fpr_th_smallest():
    stats = [float(x) for x in range(100, 0, -1)]  # 100 .. 1, unsorted on purpose
    # n = 100, fpr 0.05: k = floor(101 * 0.05) = 5 -> the 5th smallest, 5.0
    cal = calibrate(stats, 0.05)
    assert cal == Calibration(threshold=5.0, false_positive_rate=0.05, human_samples=100)
    # n = 40 (the benchmark's size): k = floor(41 * 0.05) = 2, not ceil's 3 (3/41 > 5 %)
    assert calibrate([float(x) for x in range(1, 41)], 0.05).threshold == 2.0
    assert calibrate([float(x) for x in range(1, 20)], 0.05).threshold == 1.0  # n = 19: k = 1
    assert calibrate([float(x) for x in range(1, 11)], 0.2).threshold == 2.0  # 11 * 0.2 = 2.2


def test_flagged_means_below_the_threshold_and_the_bound_holds():
    cal = calibrate([float(x) for x in range(1, 101)], 0.05)  # threshold 5.0
    assert is_machine(4.99, cal) and is_machine(-3.0, cal)
    assert not is_machine(5.0, cal) and not is_machine(50.0, cal)
    assert not is_machine(math.nan, cal)
    # Exchangeable human statistics: the rate of flagged new ones stays under the target.
    rng = np.random.default_rng(0)
    flagged = []
    for _ in range(2000):
        sample = rng.normal(size=41)
        flagged.append(is_machine(sample[-1], calibrate(list(sample[:-1]), 0.05)))
    assert np.mean(flagged) <= 0.05 + 0.015  # 2/41 = 4.9 % expected, binomial noise


def test_calibrate_refuses_what_it_cannot_bound():
    with pytest.raises(ValueError, match="need at least 19"):
        calibrate([float(x) for x in range(18)], 0.05)
    with pytest.raises(ValueError):
        calibrate([1.0] * 50, 0.0)
    with pytest.raises(ValueError):
        calibrate([1.0] * 49 + [math.nan], 0.05)


def test_statistic_is_log_perplexity_minus_entropy():
    s = LmScores(tokens=10, mean_nll=3.0, perplexity=math.exp(3.0), mean_entropy=2.5)
    assert statistic(s) == pytest.approx(0.5)
    assert math.isnan(statistic(LmScores.empty()))


def test_nll_and_entropy_match_the_definitions():
    logits = np.array([[0.0, 0.0, 0.0, 0.0], [10.0, 0.0, 0.0, -5.0]], np.float32)
    nll, entropy = nll_and_entropy(logits, np.array([2, 0]))
    assert nll[0] == pytest.approx(math.log(4)) and entropy[0] == pytest.approx(math.log(4))
    p = np.exp(logits[1].astype(np.float64))
    p /= p.sum()
    assert nll[1] == pytest.approx(-math.log(p[0]))
    assert entropy[1] == pytest.approx(float(-(p * np.log(p)).sum()))


# -- real model -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scorer() -> LmScorer:
    folder = default_export_dir()
    if not is_valid(folder):
        pytest.skip(f"no SmolLM2 export in {folder} (python -m workers.textgen.export)")
    return LmScorer(Path(folder) / "model.onnx", Path(folder) / "tokenizer.json",
                    max_tokens=128, window=64)


def test_real_scores_are_finite_and_separate_repetition_from_noise(scorer):
    rng = random.Random(0)
    noise = "".join(rng.choice(string.ascii_letters + string.digits + "#%&") for _ in range(300))
    # A repeated phrase, not one repeated token: with every token identical, every position's
    # attention reads identical values, so the model cannot tell the 50th " the" from the 2nd
    # (SmolLM2 gives " the" after " the" 4.7 nats wherever it is).
    repeated = "The cat sat on the mat. " * 20
    english = "The quick brown fox jumps over the lazy dog while the cat sleeps by the fire."
    got = scorer.score([repeated, noise, english, "", "a"])
    assert len(got) == 5
    for s in got[:3]:
        assert s.tokens > 0
        assert all(math.isfinite(v) for v in (s.mean_nll, s.perplexity, s.mean_entropy))
        assert s.mean_entropy > 0
        assert s.perplexity == pytest.approx(math.exp(s.mean_nll))
    assert got[0].tokens == 128 - 2  # two windows of 64 tokens, 63 scored each
    assert got[0].mean_nll < 1.5 and got[1].mean_nll > 4.5  # measured 0.90 and 5.74
    assert got[3].tokens == 0 and got[4].tokens == 0 and math.isnan(got[3].mean_nll)


def test_batching_does_not_change_scores(scorer):
    texts = ["Windows of different lengths are padded on the right in a batch.",
             "Short text.", "Another document, about licences and software distribution."]
    together = scorer.score(texts)
    alone = [scorer.score([t])[0] for t in texts]
    for a, b in zip(together, alone, strict=True):
        assert a.tokens == b.tokens
        assert a.mean_nll == pytest.approx(b.mean_nll, abs=1e-4)
        assert a.mean_entropy == pytest.approx(b.mean_entropy, abs=1e-4)
