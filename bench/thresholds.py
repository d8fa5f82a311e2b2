"""Decision thresholds, each computed from a method's own TRAINING scores (never from test labels).

- ``kde`` (default): the exact (1 - alpha) quantile of a Gaussian KDE of the training scores with
  Silverman's bandwidth (adVAE paper Section 3.5): solve F(s) = 1 - alpha, where F is the KDE's CDF
  (a mean of normal CDFs), by root finding.
- ``percentile``: the plain empirical (1 - alpha) quantile (numpy's default linear interpolation).
- ``kde-grid-legacy``: the adVAE authors' grid computation (registered by ``register_policy`` below).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import optimize, stats

from bench import BenchError

DEFAULT_POLICY = "kde"
DEFAULT_ALPHA = 0.1

POLICIES: dict[str, Callable[[np.ndarray, float], float]] = {}


def register_policy(name: str):
    def deco(fn):
        POLICIES[name] = fn
        return fn
    return deco


def silverman_kde(train_scores: np.ndarray) -> stats.gaussian_kde:
    return stats.gaussian_kde(np.asarray(train_scores, dtype=float), bw_method="silverman")


@register_policy("kde")
def kde_threshold(train_scores: np.ndarray, alpha: float = DEFAULT_ALPHA) -> float:
    s = np.asarray(train_scores, dtype=float)
    if np.ptp(s) == 0:  # a KDE of constant scores is undefined; the quantile is that constant
        return float(s[0])
    kde = silverman_kde(s)
    bw = float(np.sqrt(kde.covariance[0, 0]))
    target = 1.0 - alpha
    # F(s) = mean_i Phi((s - s_i) / bw): exact, vectorised.
    cdf = lambda v: float(stats.norm.cdf((v - s) / bw).mean()) - target  # noqa: E731
    lo, hi = s.min() - 10 * bw, s.max() + 10 * bw
    return float(optimize.brentq(cdf, lo, hi, xtol=1e-12 * max(1.0, abs(hi)), maxiter=500))


@register_policy("percentile")
def percentile_threshold(train_scores: np.ndarray, alpha: float = DEFAULT_ALPHA) -> float:
    return float(np.quantile(np.asarray(train_scores, dtype=float), 1.0 - alpha))


def threshold(policy: str, train_scores: np.ndarray, alpha: float = DEFAULT_ALPHA) -> float:
    if policy not in POLICIES:
        raise BenchError(f"unknown threshold policy {policy!r}; choose one of {', '.join(POLICIES)}")
    if not 0.0 < alpha < 1.0:
        raise BenchError(f"alpha must be in (0, 1), got {alpha}")
    return POLICIES[policy](np.asarray(train_scores, dtype=float), alpha)
