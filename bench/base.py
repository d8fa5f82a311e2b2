"""The detector contract every method follows.

- ``__init__`` stores parameters and does nothing else (scikit-learn discipline: ``get_params``,
  ``set_params`` and ``clone`` come from ``BaseEstimator``).
- ``fit(X_train) -> self``; anything learned ends with ``_``.
- ``anomaly_score(X) -> (n,) float array``: HIGHER = MORE ANOMALOUS. scikit-learn's
  ``score_samples``/``decision_function`` mean the opposite; each adapter converts once.
- Methods with randomness take ``random_state`` (an int); the runner sets it from the run's seed.
- Optional, for the run record: ``history_`` (training telemetry, a dict of equal-length lists with an
  ``"iteration"`` key and one key per loss term), ``device_`` (``"cpu"``, ``"cuda"``...),
  ``flags_`` (list of health flags such as ``"loss-never-decreased"``).
- ``fit_group(detectors, X_trains)``: the runner hands a group of runs of the same method, dataset,
  protocol and parameters except ``random_state`` (i.e. several seeds; for the ``resample`` protocol
  each member has its own training rows) to this classmethod, at most ``max_group_size`` at once.
  It returns one item per member: the fitted detector, or the Exception that member failed with (a
  failing member must not take its group down). The default fits them one by one; a method may
  override it to train them together (e.g. stacked networks: ``methods.stacked.StackedFit``), as long
  as each member ends up fitted as if it had been fitted alone (same seed -> the same scores bit for
  bit, whatever the grouping: the run key does not name the group).
- ``quick_params``: parameter values for ``--quick`` runs (small iteration budgets).
- ``monitored_losses``: the ``history_`` keys the "loss never decreased" health flag looks at
  (default: all of them).
- ``threshold_family``: which threshold the ``paper`` policy gives the method (``bench.thresholds``):
  ``"reconstruction"`` (kde at alpha, as the paper for AE, VAE, DAGMM and adVAE) or ``"pyod"``
  (default: PyOD's training-score percentile at the contamination rate). A new method chooses.
"""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator


class TrainingDiverged(RuntimeError):
    """A training loss became non-finite. The run is stored as ``failed`` with this message."""

    def __init__(self, iteration: int, term: str, value: float):
        super().__init__(f"non-finite loss {term}={value} at iteration {iteration}")
        self.iteration = iteration


class Detector(BaseEstimator):
    """Base class: subclass, define ``__init__`` (store only), ``fit`` and ``anomaly_score``."""

    #: Bump when a change to the implementation should invalidate stored runs of this method.
    version = "2"  # 2: inputs scaled by sklearn's MinMaxScaler (ulp-level change)
    #: Largest group ``fit_group`` should receive at once (1 = no benefit from grouping).
    max_group_size = 1
    #: Parameter values used by ``run --quick`` (e.g. ``{"n_iter": 300}``).
    quick_params: dict = {}
    #: ``history_`` keys checked by the loss-never-decreased flag (None = all).
    monitored_losses: list | None = None
    #: The ``paper`` threshold policy's family: "reconstruction" (kde) or "pyod" (percentile).
    threshold_family = "pyod"

    def fit(self, X: np.ndarray) -> "Detector":  # pragma: no cover - interface
        raise NotImplementedError

    def anomaly_score(self, X: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    @classmethod
    def fit_group(cls, detectors: list["Detector"],
                  X_trains: list[np.ndarray]) -> list["Detector | Exception"]:
        out = []
        for det, X in zip(detectors, X_trains):
            try:
                out.append(det.fit(X))
            except Exception as exc:  # noqa: BLE001 - recorded as the member's failure
                out.append(exc)
        return out
