"""The detector contract every method follows.

- ``__init__`` stores parameters and does nothing else (scikit-learn discipline: ``get_params``,
  ``set_params`` and ``clone`` come from ``BaseEstimator``).
- ``fit(X_train) -> self``; anything learned ends with ``_``.
- ``anomaly_score(X) -> (n,) float array``: HIGHER = MORE ANOMALOUS. It is PyOD's
  ``decision_function``; scikit-learn's ``score_samples``/``decision_function`` mean the opposite, so
  the contract names the sign instead of borrowing either name; each adapter converts once.
- Methods with randomness take ``random_state`` (an int); the runner sets it from the run's seed.
- Optional, for the run record: ``history_`` (training telemetry, a dict of equal-length lists with an
  ``"iteration"`` key and one key per loss term), ``device_`` (``"cpu"``, ``"cuda"``...),
  ``flags_`` (list of health flags such as ``"loss-never-decreased"``).
- ``fit_group(detectors, X_trains)``: the runner hands a group of runs of the same method, dataset,
  protocol and parameters except ``random_state`` (i.e. several seeds; for the ``resample`` protocol
  each member has its own training rows) to this classmethod, at most ``max_group_size`` at once.
  A method whose training takes some parameters per member declares them in ``member_params``
  (``engine.stacked.StackedFit``); its groups then also mix values of those parameters (the
  settings of a sweep), grouped by class, dataset, protocol and the other parameters.
  It returns one item per member: the fitted detector, or the Exception that member failed with (a
  failing member must not take its group down). The default fits them one by one; a method may
  override it to train them together (e.g. stacked networks: ``engine.stacked.StackedFit``), as long
  as each member ends up fitted as if it had been fitted alone (same seed -> the same scores bit for
  bit, whatever the grouping: the run key does not name the group).
- ``quick_params``: parameter values for ``--quick`` runs (small iteration budgets).
- ``monitored_losses``: the ``history_`` keys the "loss never decreased" health flag looks at
  (default: all of them).
- ``threshold_family``: which threshold the ``paper`` policy gives the method (``bench.evaluation.thresholds``):
  ``"reconstruction"`` (kde at alpha, as the paper for AE, VAE, DAGMM and adVAE) or ``"pyod"``
  (default: PyOD's training-score percentile at the contamination rate). A new method chooses.
- ``parameter_constraints``: which values each parameter takes (bench.contract.params), with relations between
  parameters in ``_check_combinations``: scikit-learn's ``_parameter_constraints`` in structure, under
  a public name because its values are this suite's constraint types, which scikit-learn's own
  validator does not read. ``validate_params`` checks both; the registry calls it for
  every spec before the first fit, and ``fit_group`` calls it again for direct use.
"""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator

from bench.contract import params as _params
from bench.contract.interrupts import method_failure


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
    #: parameter name -> the values it takes (bench.contract.params: Interval, Options, bool, str, None, Check).
    parameter_constraints: dict = {}

    def validate_params(self) -> None:
        """Raise bench.contract.params.InvalidParameter (a ValueError) for a value the method does not take."""
        _params.check(type(self).__name__, self.parameter_constraints, self.get_params(deep=False))
        self._check_combinations()

    def _check_combinations(self) -> None:
        """Relations between parameters (e.g. ``ref_set < n_neighbors``): raise InvalidParameter."""

    def _invalid(self, detail: str) -> _params.InvalidParameter:
        return _params.InvalidParameter(type(self).__name__, detail)

    def fit(self, X: np.ndarray) -> "Detector":  # pragma: no cover - interface
        raise NotImplementedError

    def anomaly_score(self, X: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    @classmethod
    def fit_group(cls, detectors: list["Detector"],
                  X_trains: list[np.ndarray]) -> list["Detector | Exception"]:
        for det in detectors:
            det.validate_params()
        out = []
        for det, X in zip(detectors, X_trains):
            try:
                out.append(det.fit(X))
            except BaseException as exc:  # noqa: BLE001 - recorded as the member's failure ...
                if not method_failure(exc):
                    raise  # ... unless it is the user's Ctrl-C
                out.append(exc)
        return out
