"""Evaluation protocols (../shared/docs/protocol.md): which rows train, which test, and scaling.

Clean training: no anomaly ever reaches ``fit``. MinMax is fitted on the training rows only and
applied to both sets; test values may leave [0, 1] (no silent clipping). The scaling is scikit-learn's
``MinMaxScaler`` itself, as in the authors' notebook: its arithmetic is ``X * scale_ + min_``, which
differs from ``(X - lo) / range`` by an ulp now and then, and an ulp moves rows across the bin edges of
binned methods (HBOS on letter's integer-valued features).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench import BenchError
from bench.data import Dataset


@dataclass(frozen=True)
class Split:
    X_train: np.ndarray  # (n_train, d) scaled
    X_test: np.ndarray  # (n_test, d) scaled
    y_test: np.ndarray  # (n_test,)
    train_idx: np.ndarray
    test_idx: np.ndarray


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


#: protocol name -> (dataset, seed) -> (train indices, test indices).
PROTOCOLS = {"paper": _paper_indices, "resample": _resample_indices}
#: Protocols whose split does not depend on the seed.
SEED_FREE = {"paper"}


def minmax(X_train: np.ndarray, X_test: np.ndarray):
    """scikit-learn's ``MinMaxScaler`` fitted on the training rows (no clipping). A feature constant on
    the training rows gets range 1 (the scaler's own rule for a zero range), so it maps to 0 there."""
    from sklearn.preprocessing import MinMaxScaler

    scaler = MinMaxScaler(clip=False).fit(X_train)
    return scaler.transform(X_train), scaler.transform(X_test)


def make_split(ds: Dataset, protocol: str, seed: int = 0) -> Split:
    if protocol not in PROTOCOLS:
        raise BenchError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    train, test = PROTOCOLS[protocol](ds, seed)
    if ds.y[train].any():
        raise BenchError(f"dataset {ds.name!r}, protocol {protocol!r}: anomalies in the training rows")
    X_train, X_test = minmax(ds.X[train], ds.X[test])
    return Split(X_train, X_test, ds.y[test], train, test)
