"""Classical baselines through PyOD (Zhao et al., JMLR 2019), with every default stated here.

Each adapter converts PyOD's sign convention exactly once: PyOD's ``decision_function`` is already
"higher = more anomalous", which is our ``anomaly_score``. Defaults are PyOD's own unless a reason is
given; none was chosen by looking at test labels. The paper's searched ranges (protocol.md) are
noted where they apply.

| name    | detector (reference)                               | defaults                                  |
|---------|----------------------------------------------------|-------------------------------------------|
| gmm     | Gaussian mixture, negative log-likelihood          | n_components=1, covariance_type="full", reg_covar=1e-6 |
| kde     | kernel density (Parzen 1962), negative log-density | bandwidth="scott" (data-driven rule; PyOD's fixed 1.0 ignores the data's scale) |
| lof     | Local Outlier Factor (Breunig et al. 2000)         | n_neighbors=20, novelty=True              |
| ocsvm   | One-class SVM (Schoelkopf et al. 2001)             | kernel="rbf", gamma="auto", nu=0.1 (PyOD's 0.5 lies outside the paper's range {0.01..0.2}; 0.1 matches alpha) |
| pca     | principal components, Mahalanobis (Shyu et al. 2003) | own implementation, see ``PCADetector``   |
| iforest | Isolation Forest (Liu et al. 2008)                 | n_estimators=100 (paper range {50..300})  |
| abod    | Angle-Based Outlier Detection (Kriegel et al. 2008) | n_neighbors=5, method="fast" (paper range {5..40}) |
| hbos    | Histogram-Based Outlier Score (Goldstein & Dengel 2012) | n_bins=10 (paper range {5..50})       |
| sod     | Subspace Outlier Detection (Kriegel et al. 2009)   | own inductive version (PyOD's is transductive), n_neighbors=20, ref_set=10, alpha=0.8 |

Any other PyOD detector runs as ``pyod:ClassName[param=value,...]`` through ``PyODDetector``.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import io
import pkgutil
import warnings

import numpy as np

from bench import BenchError
from bench.contract.base import Detector
from bench.contract.params import RANDOM_STATE, Interval, Options
from bench.contract.registry import MethodEntry, first_sentence, register, register_namespace

POSITIVE_INT = [Interval(int, 1, None)]


@functools.cache
def pyod_class(cls_name: str) -> type:
    """PyOD's detector class ``cls_name`` (e.g. ``KNN``, ``IForest``), looked up in the module named
    after it first, then in every module of ``pyod.models``. Some of those modules print an install
    hint for an optional dependency when imported ("please install combo first"); the hints are
    swallowed, as the modules are only searched."""
    import pyod.models as pm

    names = [m.name for m in pkgutil.iter_modules(pm.__path__)
             if not m.name.startswith(("_", "pyg_", "ts_"))]
    guess = cls_name.lower()
    for mod in sorted(names, key=lambda m: m != guess):
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                module = importlib.import_module(f"pyod.models.{mod}")
        except Exception:  # noqa: BLE001 - optional dependencies of some PyOD models
            continue
        obj = getattr(module, cls_name, None)
        if isinstance(obj, type) and hasattr(obj, "decision_function"):
            return obj
    raise BenchError(f"PyOD has no detector class {cls_name!r} (spec pyod:{cls_name}); PyOD's "
                     "detectors are listed at pyod.readthedocs.io")


class PyODDetector(Detector):
    """Any PyOD detector by class name, e.g. ``pyod:COPOD`` or ``pyod:KNN[n_neighbors=10]``."""

    #: PyOD returns D(x) = P(real) of these GAAL models as its "higher = more anomalous" score
    #: (pyod issues #119, #237; still so in 3.6.7): their sign is flipped here, once.
    _INVERTED = {"MO_GAAL", "SO_GAAL"}

    def __init__(self, detector: str = "IForest", params: dict | None = None, random_state=0):
        self.detector = detector
        self.params = params
        self.random_state = random_state  # passed on only if the PyOD class takes one

    def _make(self, n_features: int | None = None):
        """PyOD's detector with this spec's parameters, ``random_state`` (where the class takes one and
        the spec does not set it) and, for classes that need the data's width at construction (PyOD 2's
        DeepSVDD: ``n_features``), ``n_features`` (1 before the data is known)."""
        cls = pyod_class(self.detector)
        params = dict(self.params or {})
        takes = inspect.signature(cls.__init__).parameters
        if "random_state" in takes and "random_state" not in params:
            params["random_state"] = self.random_state
        if "n_features" in takes and "n_features" not in params:
            params["n_features"] = 1 if n_features is None else int(n_features)
        return cls(**params)

    @classmethod
    def from_spec(cls, detector: str, params: dict) -> "PyODDetector":
        """The detector of spec ``pyod:<detector>[params]``; BenchError if PyOD's class rejects a
        parameter name."""
        det = cls(detector=detector, params=params)
        try:
            det._make()
        except TypeError as exc:
            raise BenchError(f"pyod:{detector}: {exc}") from exc
        return det

    def fit(self, X):
        X = np.asarray(X, dtype=float)
        self.model_ = self._make(X.shape[1] if X.ndim == 2 else None).fit(X)
        return self

    def anomaly_score(self, X):
        s = np.asarray(self.model_.decision_function(np.asarray(X, dtype=float)), dtype=float)
        return -s if self.detector in self._INVERTED else s


def _pyod_entry(cls_name: str) -> MethodEntry:
    """The ``pyod:`` namespace: ``pyod:ClassName`` is PyOD's class through PyODDetector."""
    pyod_cls = pyod_class(cls_name)
    return MethodEntry(f"pyod:{cls_name}", PyODDetector, {},
                       first_sentence(pyod_cls.__doc__) or f"PyOD's {cls_name}",
                       make=functools.partial(PyODDetector.from_spec, pyod_cls.__name__))


register_namespace("pyod", _pyod_entry)


class _PyODAdapter(Detector):
    """Named adapter: subclasses set ``_pyod = "module.Class"`` and list their parameters in
    ``__init__``; every parameter is passed to the PyOD constructor as is."""

    _pyod = ""

    def fit(self, X):
        self.validate_params()
        module, cls = self._pyod.rsplit(".", 1)
        model_cls = getattr(importlib.import_module(f"pyod.models.{module}"), cls)
        self.model_ = model_cls(**self.get_params()).fit(np.asarray(X, dtype=float))
        return self

    def anomaly_score(self, X):
        return np.asarray(self.model_.decision_function(np.asarray(X, dtype=float)), dtype=float)


@register("gmm")
class GMM(_PyODAdapter):
    """Gaussian mixture model; score = negative log-likelihood."""
    version = "3"  # 3: one BLAS thread per run (issue 11 executors): last-bit changes seen in the full run

    _pyod = "gmm.GMM"
    parameter_constraints = {
        "n_components": POSITIVE_INT, "covariance_type": [Options("full", "tied", "diag", "spherical")],
        "reg_covar": [Interval(float, 0, None)], "random_state": RANDOM_STATE}

    def __init__(self, n_components=1, covariance_type="full", reg_covar=1e-6, random_state=0):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.reg_covar = reg_covar
        self.random_state = random_state


@register("kde")
class KDE(_PyODAdapter):
    """Kernel density estimate; score = negative log-density."""

    _pyod = "kde.KDE"
    parameter_constraints = {
        "bandwidth": [Interval(float, 0, None, closed="neither"), Options("scott", "silverman")],
        "algorithm": [Options("auto", "ball_tree", "kd_tree")]}

    def __init__(self, bandwidth="scott", algorithm="auto"):
        self.bandwidth = bandwidth
        self.algorithm = algorithm


@register("lof")
class LOF(_PyODAdapter):
    """Local Outlier Factor (novelty mode: test rows are scored against the training rows)."""
    version = "3"  # 3: one BLAS thread per run (issue 11 executors): last-bit changes seen in the full run

    _pyod = "lof.LOF"
    parameter_constraints = {"n_neighbors": POSITIVE_INT, "novelty": [bool]}

    def __init__(self, n_neighbors=20, novelty=True):
        self.n_neighbors = n_neighbors
        self.novelty = novelty


@register("ocsvm")
class OCSVM(_PyODAdapter):
    """One-class SVM with an RBF kernel."""

    _pyod = "ocsvm.OCSVM"
    parameter_constraints = {
        "kernel": [Options("linear", "poly", "rbf", "sigmoid")],
        "nu": [Interval(float, 0, 1, closed="right")],
        "gamma": [Interval(float, 0, None, closed="neither"), Options("auto", "scale")]}

    def __init__(self, kernel="rbf", nu=0.1, gamma="auto"):
        self.kernel = kernel
        self.nu = nu
        self.gamma = gamma


@register("iforest")
class IForest(_PyODAdapter):
    """Isolation Forest."""

    _pyod = "iforest.IForest"
    parameter_constraints = {
        "n_estimators": POSITIVE_INT,
        "max_samples": [Options("auto"), Interval(int, 1, None), Interval(float, 0, 1, closed="right")],
        "random_state": RANDOM_STATE}

    def __init__(self, n_estimators=100, max_samples="auto", random_state=0):
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.random_state = random_state


@register("abod")
class ABOD(_PyODAdapter):
    """Angle-Based Outlier Detection (fast variant on the k nearest neighbours)."""
    version = "3"  # 3: one BLAS thread per run (issue 11 executors): last-bit changes seen in the full run

    _pyod = "abod.ABOD"
    parameter_constraints = {"n_neighbors": POSITIVE_INT, "method": [Options("fast", "default")]}

    def __init__(self, n_neighbors=5, method="fast"):
        self.n_neighbors = n_neighbors
        self.method = method

    def fit(self, X):
        with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            super().fit(X)
        self.floor_ = float(np.nanmin(self.model_.decision_scores_))
        return self

    def anomaly_score(self, X):
        # PyOD's ABOD returns NaN for a row whose neighbours all coincide with it (duplicate rows,
        # e.g. 4 training rows of cardio): no angle is defined, the variance of an empty set is NaN.
        # Such a row sits inside a cluster of identical points, the most inlying place there is, so
        # it gets the lowest score seen on the training rows.
        with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            score = super().anomaly_score(X)
        return np.where(np.isnan(score), self.floor_, score)


@register("hbos")
class HBOS(_PyODAdapter):
    """Histogram-Based Outlier Score."""

    _pyod = "hbos.HBOS"
    parameter_constraints = {"n_bins": [Interval(int, 2, None), Options("auto")],
                             "alpha": [Interval(float, 0, 1, closed="neither")],
                             "tol": [Interval(float, 0, 1, closed="neither")]}

    def __init__(self, n_bins=10, alpha=0.1, tol=0.5):
        self.n_bins = n_bins
        self.alpha = alpha
        self.tol = tol


@register("sod")
class SOD(Detector):
    """Subspace Outlier Detection, scoring new rows against the training rows (inductive).

    Kriegel, Kroeger, Schubert & Zimek, "Outlier Detection in Axis-Parallel Subspaces of High
    Dimensional Data", PAKDD 2009. Why not PyOD's SOD: its ``decision_function(X)`` rebuilds the
    neighbourhoods inside X itself, so a test row is judged against the other TEST rows (transductive:
    its score depends on what else is in the batch). Test sets here are up to 35% anomalies that
    resemble each other, so they become each other's reference sets (planted outliers: AUC 0.10;
    optdigits 0.40). Here, as in the paper's novelty setting, the reference set of a row comes from
    the training rows: its ``n_neighbors`` nearest training rows define its neighbourhood, the
    ``ref_set`` training rows sharing most of those neighbours (shared-nearest-neighbour similarity,
    ties broken by row order) form its reference set, and the score is PyOD's/the paper's: the
    distance to the reference set's mean in the attributes where the reference set's variance is
    below ``alpha`` times the mean variance, divided by the number of such attributes (square root).
    Defaults as PyOD's: n_neighbors=20, ref_set=10, alpha=0.8.
    """
    version = "3"  # 3: one BLAS thread per run (issue 11 executors): last-bit changes seen in the full run

    parameter_constraints = {"n_neighbors": [Interval(int, 2, None)], "ref_set": POSITIVE_INT,
                             "alpha": [Interval(float, 0, 1, closed="right")], "chunk_rows": POSITIVE_INT}

    def __init__(self, n_neighbors=20, ref_set=10, alpha=0.8, chunk_rows=2048):
        self.n_neighbors = n_neighbors
        self.ref_set = ref_set
        self.alpha = alpha
        self.chunk_rows = chunk_rows

    def _indicator(self, knn_idx):
        from scipy import sparse

        n, k = knn_idx.shape
        return sparse.csr_matrix((np.ones(n * k, dtype=np.int32), knn_idx.ravel(),
                                  np.arange(0, n * k + 1, k)), shape=(n, len(self.X_)))

    def _check_combinations(self):
        if not self.ref_set < self.n_neighbors:
            raise self._invalid(f"ref_set ({self.ref_set}) must be below n_neighbors ({self.n_neighbors})")

    def fit(self, X):
        from sklearn.neighbors import NearestNeighbors

        self.validate_params()
        self.X_ = np.asarray(X, dtype=float)
        if not self.n_neighbors < len(self.X_):
            raise ValueError(f"sod: n_neighbors ({self.n_neighbors}) must be below the number of "
                             f"training rows ({len(self.X_)})")
        self.nn_ = NearestNeighbors(n_neighbors=self.n_neighbors).fit(self.X_)
        train_knn = self.nn_.kneighbors(return_distance=False)  # (n, k), self excluded
        self.train_knn_t_ = self._indicator(train_knn).T.tocsr()  # (n_train, n_train)
        return self

    def anomaly_score(self, X):
        X = np.asarray(X, dtype=float)
        out = np.empty(len(X))
        for start in range(0, len(X), self.chunk_rows):
            x = X[start:start + self.chunk_rows]  # (c, d)
            knn = self.nn_.kneighbors(x, return_distance=False)  # (c, k)
            shared = (self._indicator(knn) @ self.train_knn_t_).toarray()  # (c, n_train) counts
            # top ref_set by shared count, ties by row index (stable sort of -count)
            ref = np.argsort(-shared, axis=1, kind="stable")[:, :self.ref_set]  # (c, r)
            R = self.X_[ref]  # (c, r, d)
            means = R.mean(axis=1)  # (c, d)
            var = R.var(axis=1)  # (c, d)
            expect = self.alpha * var.sum(axis=1, keepdims=True) / X.shape[1]  # (c, 1)
            rel = var < expect  # (c, d) relevant attributes
            n_rel = rel.sum(axis=1)
            dist = (rel * (x - means) ** 2).sum(axis=1)
            out[start:start + len(x)] = np.where(n_rel > 0, np.sqrt(dist / np.maximum(n_rel, 1)), 0.0)
        return out


@register("pca")
class PCADetector(Detector):
    """PyOD's PCA detector, made safe for features that are constant on the training rows.

    Shyu et al., "A novel anomaly detection scheme based on principal component classifier", 2003.

    PyOD standardises each feature and divides each component's contribution by its explained
    variance ratio; a feature constant on the training rows (cardio, optdigits) gives a zero standard
    deviation and zero-variance components, hence infinite scores (on optdigits an AUC of exactly 0.5).
    Here the standardisation uses a standard deviation of 1 for constant features (they are centred,
    not scaled), and PyOD's PCA keeps only the components with non-negligible variance
    (``n_components`` = numerical rank of the training rows). PyOD's scoring rule is unchanged.
    Defaults: PyOD's (all retained components selected, weighted by explained variance).
    """

    parameter_constraints = {"rel_tol": [Interval(float, 0, 1, closed="neither")], "weighted": [bool]}

    def __init__(self, rel_tol=1e-9, weighted=True):
        self.rel_tol = rel_tol
        self.weighted = weighted

    def _standardise(self, X):
        return (np.asarray(X, dtype=float) - self.mean_) / self.std_

    def fit(self, X):
        from pyod.models.pca import PCA

        self.validate_params()
        X = np.asarray(X, dtype=float)
        self.mean_ = X.mean(axis=0)
        std = X.std(axis=0)
        self.std_ = np.where(std > 0, std, 1.0)
        Z = self._standardise(X)
        sing = np.linalg.svd(Z - Z.mean(axis=0), compute_uv=False)
        rank = int((sing**2 > self.rel_tol * max((sing**2).max(), np.finfo(float).tiny)).sum())
        self.model_ = PCA(n_components=max(rank, 1), standardization=False,
                          weighted=self.weighted).fit(Z)
        return self

    def anomaly_score(self, X):
        return np.asarray(self.model_.decision_function(self._standardise(X)), dtype=float)
