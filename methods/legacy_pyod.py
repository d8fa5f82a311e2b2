"""Two PyOD detectors as ADBench ran them (2022), for reproducing ADBench's published table.

ADBench's Table D4 was made with older PyOD code whose arithmetic today's PyOD no longer has. Both
classes here write that arithmetic out (no code copied); neither is tuned, neither has a parameter.
Use PyOD's own classes (``pyod:PCA``, ``pyod:ECOD``) for the detectors as PyOD ships them today.

pca-pyod1: PyOD 1.0's PCA (Shyu et al. 2003, as PyOD implements it) standardises the features, takes
every principal component of the training rows, and scores a row by the sum over the components of its
Euclidean distance to the unit eigenvector v_j (as a point), divided by v_j's explained-variance ratio:

    score(x) = sum_j || z(x) - v_j ||_2 / w_j,      z = standardised x.

The distance to v_j depends on the sign of v_j, which is arbitrary. scikit-learn fixes it by a
convention, and that convention changed: up to 1.4 the full SVD's signs made the largest entry of each
left singular vector positive (``svd_flip(u_based_decision=True)``), since 1.5 the largest entry of
each right singular vector (and ``svd_solver="auto"`` may now take a covariance eigendecomposition,
where a zero-variance component comes out with w_j = 0 and every score infinite). PyOD's current
``PCA`` therefore scores differently from the PyOD 1.0 + scikit-learn 1.1 that ADBench ran: on cardio
(seeds 1-3) AUC 0.809 against ADBench's 0.9555, and infinite scores on campaign. Here: a full SVD
(LAPACK gesdd, as scikit-learn 1.1 called it) of the centred standardised rows, the signs of the left
singular vectors' largest entries made positive, w_j = s_j^2 / sum s^2.

ecod-pyod098: ECOD (Li et al., TKDE 2022) scores a row by summing over the features a tail
probability -log ECDF, taken on the training and the scored rows together (PyOD's ECOD is
transductive in that way). PyOD up to 0.9.8 aggregated the left tail U_l, the right tail U_r and the
skewness-chosen tail U_skew with ``np.maximum(U_skew, U_l, U_r)``, whose third argument is numpy's
``out``: the score was sum_j max(U_skew, U_l), the right tail entering only through U_skew. ADBench's
ECOD column is that score to all four printed decimals (cardio 0.9444, glass 0.757, donors 0.7445);
PyOD 0.9.9 onwards takes max(U_skew, max(U_l, U_r)), which moves AUC by up to 0.15 (donors).
"""
from __future__ import annotations

import numpy as np

from bench.contract.base import Detector
from bench.contract.registry import register


@register("pca-pyod1")
class PCAPyOD1(Detector):
    """PyOD 1.0's PCA (scikit-learn 1.1's full SVD and sign rule), the PCA of ADBench's Table D4:
    sum over all components of the distance to the unit eigenvector, weighted by 1 / explained
    variance ratio."""

    parameter_constraints: dict = {}

    def __init__(self):
        pass

    def fit(self, X):
        from scipy import linalg

        X = np.asarray(X, dtype=float)
        self.mean_ = X.mean(axis=0)
        std = X.std(axis=0)
        self.scale_ = np.where(std > 0, std, 1.0)  # StandardScaler's rule for a constant feature
        Z = (X - self.mean_) / self.scale_
        U, S, Vt = linalg.svd(Z - Z.mean(axis=0), full_matrices=False)
        signs = np.sign(U[np.argmax(np.abs(U), axis=0), range(U.shape[1])])
        signs[signs == 0] = 1.0
        self.components_ = Vt * signs[:, None]  # svd_flip(U, Vt, u_based_decision=True)
        var = S**2 / max(len(X) - 1, 1)
        self.weights_ = var / var.sum()
        return self

    def anomaly_score(self, X):
        from scipy.spatial.distance import cdist

        Z = (np.asarray(X, dtype=float) - self.mean_) / self.scale_
        with np.errstate(divide="ignore"):
            return np.sum(cdist(Z, self.components_) / self.weights_, axis=1)


@register("ecod-pyod098")
class ECODPyOD098(Detector):
    """ECOD as PyOD 0.9.8 computed it, the ECOD of ADBench's Table D4: sum over features of
    max(U_skew, U_l), left-tail -log ECDF on the training and scored rows together."""

    parameter_constraints: dict = {}

    def __init__(self):
        pass

    def fit(self, X):
        self.X_train_ = np.asarray(X, dtype=float)
        return self

    @staticmethod
    def _ecdf(X):
        """Per column, the share of the column's values <= each value (statsmodels' ECDF)."""
        return np.stack([np.searchsorted(np.sort(c), c, side="right") / len(c) for c in X.T], axis=1)

    def anomaly_score(self, X):
        from scipy.stats import skew

        X = np.concatenate([self.X_train_, np.asarray(X, dtype=float)])
        u_l = -np.log(self._ecdf(X))
        u_r = -np.log(self._ecdf(-X))
        with np.errstate(invalid="ignore", divide="ignore"):
            sign = np.sign(np.nan_to_num(skew(X, axis=0)))  # a constant column: skewness 0
        u_skew = -u_l * np.sign(sign - 1) + u_r * np.sign(sign + 1)
        return np.maximum(u_skew, u_l).sum(axis=1)[len(self.X_train_):]
