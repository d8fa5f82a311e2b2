"""Decision thresholds, each computed from a method's own TRAINING scores (never from test labels).

- ``kde`` (default): the exact (1 - alpha) quantile of a Gaussian KDE of the training scores with
  Silverman's bandwidth (adVAE paper Section 3.5): solve F(s) = 1 - alpha, where F is the KDE's CDF
  (a mean of normal CDFs), by root finding.
- ``percentile``: the plain empirical (1 - alpha) quantile (numpy's default linear interpolation).
- ``kde-grid-legacy``: the adVAE authors' grid computation (registered by ``register_policy`` below).
- ``paper``: what the adVAE paper used for each method's family. Every detector declares its
  ``threshold_family`` (``bench.contract.base.Detector``): ``"reconstruction"`` (AE, VAE, DAGMM and the adVAE
  family: the paper's Table 4 caption states the kde threshold at alpha = 0.1) gets ``kde``; ``"pyod"``
  (the default, for every other method: the paper ran its other baselines in PyOD, whose rule is
  the training-score percentile at the contamination rate, here alpha) gets ``percentile``.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import optimize, stats

from bench import BenchError

DEFAULT_POLICY = "kde"
DEFAULT_ALPHA = 0.1

POLICIES: dict[str, Callable[[np.ndarray, float], float]] = {}
#: The ``paper`` policy: threshold family -> the concrete policy used for it.
PAPER_POLICY = "paper"
FAMILIES = {"reconstruction": "kde", "pyod": "percentile"}


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


def resolve(policy: str, family: str | None = None) -> str:
    """The concrete policy that computes a threshold: ``policy`` itself, or for ``paper`` the policy
    of the method's threshold family (``None`` = the default family, PyOD's rule)."""
    if policy == PAPER_POLICY:
        family = family or "pyod"
        if family not in FAMILIES:
            raise BenchError(f"unknown threshold family {family!r}; a method's threshold_family must "
                             f"be one of {', '.join(FAMILIES)}")
        return FAMILIES[family]
    if policy not in POLICIES:
        raise BenchError(f"unknown threshold policy {policy!r}; choose one of "
                         f"{', '.join(POLICIES)}")
    return policy


@register_policy(PAPER_POLICY)
def paper_threshold(train_scores: np.ndarray, alpha: float = DEFAULT_ALPHA) -> float:
    """Listed with the others so configs and ``list`` know the name; it is resolved per method by
    ``threshold(..., family=...)``, never called directly."""
    raise TypeError("the paper policy depends on the method: call bench.evaluation.thresholds.threshold(policy, "
                    "scores, alpha, family=<the detector's threshold_family>)")


def threshold(policy: str, train_scores: np.ndarray, alpha: float = DEFAULT_ALPHA,
              family: str | None = None) -> float:
    """The decision threshold of ``policy`` at ``alpha`` from a method's training scores;
    ``family`` (the method's ``threshold_family``) matters only to the ``paper`` policy."""
    concrete = resolve(policy, family)
    if not 0.0 < alpha < 1.0:
        raise BenchError(f"alpha must be in (0, 1), got {alpha}")
    return POLICIES[concrete](np.asarray(train_scores, dtype=float), alpha)


@register_policy("kde-grid-legacy")
def kde_grid_legacy_threshold(train_scores: np.ndarray, alpha: float = DEFAULT_ALPHA) -> float:
    """The adVAE authors' own computation of the KDE threshold, for reproducing the paper's recall/F1.

    Source: ``learning_threshold`` in the authors' evaluation notebook ``self_adVAE-test.ipynb``
    (public repository WangXuhongCN/adVAE), called with 0.9 = 1 - alpha::

        dens = sm.nonparametric.KDEUnivariate(train_recon_error.astype(np.float))
        bound = np.linspace(min(train_recon_error), max(train_recon_error), 1024)
        dens.fit(bw='silverman', gridsize=1024)
        threshold = bound[min(np.where(dens.cdf > alpha)[0])]

    What that arithmetic is (statsmodels' ``KDEUnivariate.fit``: Gaussian kernel, FFT, cut = 3),
    reproduced here without statsmodels:
    - bandwidth bw = 0.9 * min(std (ddof 1), IQR / 1.349) * n^(-1/5): statsmodels' "silverman" rule
      (not scipy's, which the exact ``kde`` policy uses); the std alone when the IQR is 0;
    - support grid: 1024 points evenly from min - 3 bw to max + 3 bw;
    - ``dens.cdf``: the KDE's CDF at each support point (statsmodels integrates the density from -inf
      point to point with quad and sums; here the closed form mean_i Phi((t - s_i) / bw), the value that
      integration approximates);
    - the index i of the first support point whose CDF EXCEEDS 1 - alpha is then read off a SECOND
      grid, 1024 points evenly from min to max (no 3 bw margins): bound[i]. For an index in the lower
      half of the grid bound[i] lies above support[i], so the threshold is somewhat higher than the
      true quantile (and off by up to one grid step besides).
    """
    s = np.asarray(train_scores, dtype=float)
    if np.ptp(s) == 0:  # a KDE of constant scores is undefined; the quantile is that constant
        return float(s[0])
    q75, q25 = np.percentile(s, [75, 25])  # scipy's scoreatpercentile: linear interpolation
    std = np.std(s, ddof=1)
    sigma = min(std, (q75 - q25) / 1.349) if q75 > q25 else std
    bw = 0.9 * sigma * len(s) ** (-0.2)
    support = np.linspace(s.min() - 3 * bw, s.max() + 3 * bw, 1024)
    cdf = np.array([stats.norm.cdf((t - s) / bw).mean() for t in support])
    bound = np.linspace(s.min(), s.max(), 1024)
    return float(bound[np.flatnonzero(cdf > 1.0 - alpha).min()])
