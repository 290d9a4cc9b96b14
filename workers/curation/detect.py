"""Zero-shot detection of LLM-generated text, after Radvand et al., "Zero-Shot Statistical Tests
for LLM-Generated Text Detection using Finite Sample Concentration Inequalities".

The statistic is the log-perplexity of a text under a reference LM minus the mean entropy of
the LM's predictive distributions over the same positions (`LmScores`). For text the model
samples itself at temperature 1, each token's surprisal has expectation equal to that position's
entropy, so the statistic concentrates around 0 (below it when sampled at temperature < 1 or
with top-p/top-k); human text is more surprising than the model expects, so its statistic is
positive. The paper tests the absolute deviation from 0 with concentration bounds; here the test
is one-sided: a text is flagged as machine-generated when its statistic is LOW.

The threshold is calibrated on human texts only (no machine samples needed), conformal-style:
with n human statistics and a target false-positive rate a, the threshold is the k-th smallest
of them, k = floor((n + 1) * a), and a text is flagged when its statistic is strictly below it.
If a new human text is exchangeable with the calibration texts, its rank among all n + 1 is
uniform, so P(flagged) <= k / (n + 1) <= a. (The ceil((n + 1) * a)-th order statistic is the
conformal quantile for rejecting HIGH values with a non-strict comparison; for this direction
it would exceed the target: n = 40, a = 0.05 gives 3/41 = 7.3 %.) k >= 1 needs
n >= 1/a - 1 human texts (19 at 5 %).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from workers.curation.lm_scores import LmScores


def statistic(s: LmScores) -> float:
    """Log-perplexity minus mean entropy (nats/token); low means machine-like. NaN for a text
    with nothing scored."""
    return s.mean_nll - s.mean_entropy


@dataclass
class Calibration:
    threshold: float  # flag as machine when the statistic is strictly below this
    false_positive_rate: float  # the target rate a; the bound is floor((n+1)a)/(n+1) <= a
    human_samples: int  # n


def calibrate(human_stats: list[float], false_positive_rate: float = 0.05) -> Calibration:
    """The threshold for `is_machine` from statistics of human texts (see the module
    docstring). Works for any statistic where low means machine (plain log-perplexity too).
    Raises ValueError on a rate outside (0, 1), non-finite statistics, or too few samples for
    the rate."""
    if not 0.0 < false_positive_rate < 1.0:
        raise ValueError("false_positive_rate must be in (0, 1)")
    values = sorted(float(x) for x in human_stats)
    if any(not math.isfinite(x) for x in values):
        raise ValueError("human statistics must be finite")
    n = len(values)
    # The 1e-9 keeps a product like 20 * 0.05 = 0.99999... from losing a whole order statistic.
    k = math.floor((n + 1) * false_positive_rate + 1e-9)
    if k < 1:
        need = math.ceil(1.0 / false_positive_rate - 1.0 - 1e-9)
        raise ValueError(f"{n} human samples cannot bound the false-positive rate at "
                         f"{false_positive_rate}: need at least {need}")
    return Calibration(threshold=values[k - 1], false_positive_rate=false_positive_rate,
                       human_samples=n)


def is_machine(stat: float, cal: Calibration) -> bool:
    """True when `stat` is below the calibrated threshold; a NaN statistic is never flagged."""
    return stat < cal.threshold
