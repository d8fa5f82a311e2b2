import math

import numpy as np
import pytest

from bench import BenchError
from bench.evaluation.metrics import evaluate
from bench.evaluation.thresholds import threshold


def test_metrics_against_hand_values():
    y = np.array([0, 0, 1, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8])
    m = evaluate(y, s, threshold=0.38)
    # AUC: of the 4 (anomaly, normal) pairs, 3 are ordered right -> 0.75.
    assert m["auc"] == pytest.approx(0.75)
    # AP: ranks 0.8 (hit, P=1), 0.4 (miss), 0.35 (hit, P=2/3) -> (1 + 2/3) / 2.
    assert m["ap"] == pytest.approx((1 + 2 / 3) / 2)
    # Flagged: 0.4 and 0.8 -> one true positive of two flagged, one of two anomalies.
    assert (m["precision"], m["recall"], m["f1"]) == pytest.approx((0.5, 0.5, 0.5))
    assert evaluate(y, s, threshold=0.8)["precision"] == 1.0  # score >= threshold is flagged


def _phi(x):
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def test_kde_threshold_is_the_exact_quantile_of_a_silverman_kde():
    s = np.array([0.0, 2.0])
    # Silverman: bw = std(ddof=1) * (n * 3/4) ** (-1/5) = sqrt(2) * 1.5 ** -0.2
    bw = math.sqrt(2) * 1.5 ** -0.2
    assert bw == pytest.approx(1.30406, abs=1e-5)
    t = threshold("kde", s, alpha=0.1)
    cdf = 0.5 * (_phi(t / bw) + _phi((t - 2) / bw))
    assert cdf == pytest.approx(0.9, abs=1e-9)
    # hand bisection of the same equation
    lo, hi = 0.0, 10.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if 0.5 * (_phi(mid / bw) + _phi((mid - 2) / bw)) < 0.9:
            lo = mid
        else:
            hi = mid
    assert t == pytest.approx(lo, abs=1e-8)
    assert t == pytest.approx(3.1357, abs=1e-4)


def test_kde_threshold_large_sample_matches_normal_quantile():
    s = np.random.default_rng(0).standard_normal(20000)
    # KDE of N(0,1) data is N(0, 1 + bw^2): its 0.9 quantile is 1.2816 * sqrt(1 + bw^2)
    bw = s.std(ddof=1) * (20000 * 0.75) ** -0.2
    assert threshold("kde", s) == pytest.approx(1.28155 * math.sqrt(1 + bw**2), abs=0.03)


def test_percentile_threshold():
    s = np.arange(1.0, 11.0)
    assert threshold("percentile", s, alpha=0.1) == pytest.approx(9.1)  # 9 + 0.1 * (10 - 9)


def test_bad_policy_and_alpha():
    with pytest.raises(BenchError, match="kde"):
        threshold("kdee", np.arange(5.0))
    with pytest.raises(BenchError, match="alpha"):
        threshold("kde", np.arange(5.0), alpha=1.5)


def test_paper_policy_follows_the_method_family():
    s = np.random.default_rng(0).gamma(2.0, size=300)
    # reconstruction-based methods: kde at alpha (paper Table 4 caption)
    assert threshold("paper", s, 0.1, family="reconstruction") == threshold("kde", s, 0.1)
    # the others: PyOD's rule, the training-score percentile at the contamination rate
    pyod_rule = np.percentile(s, 100 * (1 - 0.1))
    assert threshold("paper", s, 0.1, family="pyod") == pytest.approx(pyod_rule, rel=1e-12)
    assert threshold("paper", s, 0.1) == pytest.approx(pyod_rule, rel=1e-12)  # undeclared -> PyOD
    with pytest.raises(BenchError, match="threshold_family"):
        threshold("paper", s, 0.1, family="deep")


def test_every_method_declares_a_known_family():
    from bench.contract import registry
    from bench.contract.base import Detector
    from bench.evaluation.thresholds import FAMILIES

    assert Detector.threshold_family == "pyod"
    family = {n: registry.entry(n).cls.threshold_family for n in registry.names()}
    assert set(family.values()) <= set(FAMILIES)
    for name in ("ae", "vae", "dagmm", "advae", "e-advae", "g-advae"):
        assert family[name] == "reconstruction", name
    for name in ("gan", "wgan-gp", "mo-gaal", "ocsvm", "iforest", "abod", "hbos", "sod", "lof"):
        assert family[name] == "pyod", name
