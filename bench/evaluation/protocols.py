"""Evaluation protocols (docs/protocol-notes.md): which rows train, which test, and scaling.

``paper`` and ``resample`` train clean: no anomaly ever reaches ``fit``. ``adbench`` is ADBench's
unsupervised setting, whose training rows keep their anomalies (labels hidden); see
``_adbench_indices``. MinMax is fitted on the training rows only and
applied to both sets; test values may leave [0, 1] (no silent clipping). The scaling is scikit-learn's
``MinMaxScaler`` itself, as in the authors' notebook: its arithmetic is ``X * scale_ + min_``, which
differs from ``(X - lo) / range`` by an ulp now and then, and an ulp moves rows across the bin edges of
binned methods (HBOS on letter's integer-valued features).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench import BenchError
from bench.evaluation.data import Dataset


@dataclass(frozen=True)
class Split:
    X_train: np.ndarray  # (n_train, d) scaled
    X_test: np.ndarray  # (n_test, d) scaled
    y_test: np.ndarray  # (n_test,)
    train_idx: np.ndarray  # the dataset's rows among the training rows (synthetic ones come after)
    test_idx: np.ndarray
    n_synthetic: int = 0  # synthetic anomalies appended to the training rows (contaminated protocols)


def _paper_indices(ds: Dataset, seed: int):
    if "paper_split" not in ds.info:
        raise BenchError(f"dataset {ds.name!r}: the paper protocol is the authors' fixed split of the five "
                         "catalogued datasets; use the resample protocol")
    spec = ds.info["paper_split"]
    n = len(ds.y)
    if spec["kind"] == "tail-test":
        train, test = np.arange(0, n - spec["n_test"]), np.arange(n - spec["n_test"], n)
    elif spec["kind"] == "first-normals-test":
        normals = np.flatnonzero(ds.y == 0)
        test_normals = normals[:spec["n_test_normal"]]
        train = normals[spec["n_test_normal"]:]
        test = np.sort(np.concatenate([test_normals, np.flatnonzero(ds.y == 1)]))
    else:
        raise BenchError(f"dataset {ds.name!r}: unknown paper_split kind {spec['kind']!r}")
    return train, test


def _resample_indices(ds: Dataset, seed: int):
    rng = np.random.default_rng(seed)
    normals = np.flatnonzero(ds.y == 0)
    perm = rng.permutation(normals)
    n_train = int(round(0.8 * len(normals)))
    train = np.sort(perm[:n_train])
    test = np.sort(np.concatenate([perm[n_train:], np.flatnonzero(ds.y == 1)]))
    return train, test


#: ADBench's size rules (adbench/datasets/data_generator.py, DataGenerator.generator): a dataset with
#: fewer rows is resampled with replacement up to ADBENCH_MIN_ROWS, one with more is subsampled without
#: replacement to ADBENCH_MAX_ROWS, both before the split; then a stratified split with this test share.
ADBENCH_MIN_ROWS = 1000
ADBENCH_MAX_ROWS = 10_000
ADBENCH_TEST_SIZE = 0.3


def _adbench_indices(ds: Dataset, seed: int):
    """ADBench's unsupervised protocol for seed ``s``, the same rows in the same order as ADBench's
    ``DataGenerator(seed=s)``: it seeds NumPy's global generator with s, draws the size
    normalisation from it, and splits with scikit-learn's ``train_test_split(stratify=y)`` drawing
    from the same generator (no random_state); a ``RandomState(s)`` carried through the same draws is
    that generator. The training rows keep their anomalies, unlabelled (a contaminated training set).

    Under ADBENCH_MIN_ROWS the resampling comes BEFORE the split, so copies of one row can land in
    both the training and the test rows. ADBench's published numbers rest on this; it is kept here so
    that they can be reproduced. ``resample`` is the leak-free alternative for any dataset."""
    from sklearn.model_selection import train_test_split

    rng = np.random.RandomState(seed)
    rows = np.arange(len(ds.y))
    if len(rows) < ADBENCH_MIN_ROWS:
        rows = rng.choice(np.arange(len(ds.y)), ADBENCH_MIN_ROWS, replace=True)
    if len(rows) > ADBENCH_MAX_ROWS:
        rows = rng.choice(np.arange(len(ds.y)), ADBENCH_MAX_ROWS, replace=False)
    train, test = train_test_split(rows, test_size=ADBENCH_TEST_SIZE, shuffle=True, stratify=ds.y[rows],
                                   random_state=rng)
    return train, test


#: protocol name -> (dataset, seed) -> (train indices, test indices).
PROTOCOLS = {"paper": _paper_indices, "resample": _resample_indices, "adbench": _adbench_indices}
#: Protocols whose training rows keep the dataset's anomalies (unlabelled), and a line on each.
CONTAMINATED = {"adbench": "ADBench's unsupervised setting: training anomalies kept, labels hidden"}
#: What each protocol is, for `list` and the tables' context lines.
DESCRIPTIONS = {
    "paper": "the authors' fixed split of the paper's five datasets; clean training rows",
    "resample": "80 % of the normal rows train (seeded), the rest and every anomaly test; clean training",
    "adbench": "ADBench's: under 1,000 rows resampled up to 1,000 with replacement (copies of a row can "
               "land on both sides), over 10,000 subsampled, then a stratified 70/30 split; training "
               "anomalies kept with labels hidden",
}
#: Protocols whose split does not depend on the seed (a contaminated variant always does).
SEED_FREE = {"paper"}

# ---- contaminated training sets (paper Figure 9 (f)) ---------------------------------------------
#: ``<protocol>+adasyn=<rate>``: the protocol's split, then synthetic anomalies made by ADASYN from
#: anomalies held out of the test set are added to the training rows, ``rate`` of them after adding.
CONTAMINATION_TAG = "adasyn"
#: Share of the anomalies held out of the test set as ADASYN's donors (chosen from the seed).
DONOR_SHARE = 0.5
MAX_CONTAMINATION = 0.5
POOL_PER_DONOR = 10


def protocol_name(base: str, contamination: float | None = None) -> str:
    return base if contamination is None else f"{base}+{CONTAMINATION_TAG}={float(contamination):g}"


def parse_protocol(name: str) -> tuple[str, float | None]:
    """``"paper"`` -> ("paper", None); ``"paper+adasyn=0.02"`` -> ("paper", 0.02). BenchError if bad."""
    base, _, option = str(name).partition("+")
    if base not in PROTOCOLS:
        raise BenchError(f"unknown protocol {base!r}; choose one of {', '.join(PROTOCOLS)} "
                         f"(optionally contaminated: e.g. paper+{CONTAMINATION_TAG}=0.02)")
    if not option:
        return base, None
    tag, _, value = option.partition("=")
    try:
        rate = float(value)
    except ValueError:
        rate = None
    if base in CONTAMINATED:
        raise BenchError(f"protocol {name!r}: {base}'s training rows already hold the dataset's own "
                         "anomalies; synthetic contamination is for the clean protocols (paper, resample)")
    if tag != CONTAMINATION_TAG or rate is None or not 0 <= rate < MAX_CONTAMINATION:
        raise BenchError(f"malformed protocol {name!r}: expected {base}+{CONTAMINATION_TAG}=RATE with "
                         f"0 <= RATE < {MAX_CONTAMINATION} (the share of synthetic anomalies in the "
                         "training rows)")
    return base, rate


def _contaminate(ds: Dataset, train: np.ndarray, test: np.ndarray, rate: float, seed: int):
    """Leak-free contamination: a seed-chosen ``DONOR_SHARE`` of the test set's anomalies is taken out
    of the test set (for every rate, 0 included, so the rates share one test set); imbalanced-learn's
    ADASYN synthesises the anomalies from those donors (and, for its density weights, the training
    normals) only, so no test row is in, or is interpolated into, the training rows. Where no donor
    has a normal neighbour ADASYN is undefined and SMOTE (its equal-weight limit) is used. Returns (raw
    training rows with the synthetic ones appended, the remaining test indices, the number added)."""
    from imblearn.over_sampling import ADASYN, SMOTE

    anomalies = test[ds.y[test] == 1]
    rng = np.random.default_rng([seed, 7919])
    n_donors = max(2, int(round(DONOR_SHARE * len(anomalies))))
    if len(anomalies) - n_donors < 1:
        raise BenchError(f"dataset {ds.name!r}: {len(anomalies)} anomalies are too few to hold some "
                         "out for contamination and still test on some")
    donors = np.sort(rng.choice(anomalies, size=n_donors, replace=False))
    test = np.setdiff1d(test, donors)
    n_train = len(train)
    n_synth = int(round(rate * n_train / (1.0 - rate)))
    if n_synth == 0:
        return ds.X[train], test, 0
    X = np.vstack([ds.X[train], ds.X[donors]])
    y = np.r_[np.zeros(n_train, int), np.ones(n_donors, int)]
    # ADASYN rounds each donor's share of the requested count to an integer, so a small request
    # (letter at 0.5%: 6 rows over 50 donors) rounds to nothing. Ask for a pool of at least
    # POOL_PER_DONOR per donor and draw the n_synth rows from it uniformly: the draw keeps ADASYN's
    # density weighting in expectation.
    n_pool = max(n_synth, POOL_PER_DONOR * n_donors)
    strategy, k = {1: n_donors + n_pool}, min(5, n_donors - 1)
    try:
        X_res, _ = ADASYN(sampling_strategy=strategy, n_neighbors=k,
                          random_state=seed).fit_resample(X, y)
    except RuntimeError:
        # No donor has a normal row among its neighbours (optdigits: the anomalies form their own
        # cluster), so ADASYN's weights are 0/0. Their limit is equal weights, which is SMOTE, the
        # fallback imbalanced-learn itself names.
        X_res, _ = SMOTE(sampling_strategy=strategy, k_neighbors=k,
                         random_state=seed).fit_resample(X, y)
    pool = X_res[len(X):]  # imbalanced-learn appends the new rows after the input
    if len(pool) < n_synth:
        raise BenchError(f"dataset {ds.name!r}: ADASYN made {len(pool)} rows, {n_synth} needed for "
                         f"rate {rate}")
    synthetic = pool[np.sort(rng.choice(len(pool), size=n_synth, replace=False))]
    return np.vstack([ds.X[train], synthetic]), test, n_synth


def minmax(X_train: np.ndarray, X_test: np.ndarray):
    """scikit-learn's ``MinMaxScaler`` fitted on the training rows (no clipping). A feature constant on
    the training rows gets range 1 (the scaler's own rule for a zero range), so it maps to 0 there."""
    from sklearn.preprocessing import MinMaxScaler

    scaler = MinMaxScaler(clip=False).fit(X_train)
    return scaler.transform(X_train), scaler.transform(X_test)


def make_split(ds: Dataset, protocol: str, seed: int = 0) -> Split:
    base, rate = parse_protocol(protocol)
    train, test = PROTOCOLS[base](ds, seed)
    if base not in CONTAMINATED and ds.y[train].any():
        raise BenchError(f"dataset {ds.name!r}, protocol {protocol!r}: anomalies in the training rows")
    if rate is None:
        X_train, X_test = minmax(ds.X[train], ds.X[test])
        return Split(X_train, X_test, ds.y[test], train, test)
    raw_train, test, n_synth = _contaminate(ds, train, test, rate, seed)
    X_train, X_test = minmax(raw_train, ds.X[test])
    return Split(X_train, X_test, ds.y[test], train, test, n_synthetic=n_synth)
