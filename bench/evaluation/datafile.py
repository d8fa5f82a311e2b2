"""Reading a user's own dataset file: ``.mat`` (ODDS layout), ``.npz`` (ADBench layout) or ``.csv``.

Every way a file can be unfit for the benchmark is a one-line BenchError naming the file and what
to do: unreadable, no ``X``/``y`` or no label column, labels other than 0/1, no anomalies or no normal
rows, NaN or inf in X, non-numeric columns, fewer than ``MIN_NORMALS`` normal rows.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from bench import BenchError

SUFFIXES = (".mat", ".npz", ".csv")
DEFAULT_LABEL_COLUMNS = ("y", "label")
#: The resample protocol trains on 80% of the normal rows and tests on the rest: below this there is
#: too little of either to mean anything.
MIN_NORMALS = 10


def read(path: Path, label_col: str | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """(X (n, d) float64, y (n,) int64 with 1 = anomaly, facts for the record) of a dataset file."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise BenchError(f"dataset file {path}: unsupported type {path.suffix or '(none)'!r}; use .mat "
                         "(ODDS layout: X and y), .npz (ADBench layout: X and y) or .csv (features and a "
                         "label column)")
    if not path.is_file():
        raise BenchError(f"dataset file {path} not found" + (" (it is a directory)" if path.is_dir() else ""))
    if label_col is not None and suffix != ".csv":
        raise BenchError(f"dataset file {path}: --label-col applies to .csv files; a {suffix} file holds "
                         "its labels in the array y")
    facts = {"file": str(path), "format": suffix[1:]}
    if suffix == ".csv":
        X, y, facts["label_col"], columns = _read_csv(path, label_col)
    else:
        X, y = _read_arrays(path, suffix)
        columns = None
    y = _labels(path, y, len(X))
    _check_features(path, X, columns)
    n_anom = int(y.sum())
    if n_anom == 0:
        raise BenchError(f"dataset file {path}: no anomalies (no label 1); AUC and AP need both classes")
    if n_anom == len(y):
        raise BenchError(f"dataset file {path}: no normal rows (no label 0); the methods train on normals")
    if len(y) - n_anom < MIN_NORMALS:
        raise BenchError(f"dataset file {path}: only {len(y) - n_anom} normal rows; at least {MIN_NORMALS} "
                         "are needed (80% of them train, the rest test)")
    facts.update(rows=len(y), features=X.shape[1], anomalies=n_anom)
    return X, y, facts


def _read_arrays(path: Path, suffix: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        if suffix == ".mat":
            import scipy.io

            arrays = {k: v for k, v in scipy.io.loadmat(path).items() if not k.startswith("__")}
        else:
            if not zipfile.is_zipfile(path):  # np.load would call it "pickled data"
                raise ValueError("not a zip archive of .npy arrays (write one with np.savez(path, X=X, y=y))")
            with np.load(path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
    except Exception as exc:  # noqa: BLE001 - any parse failure: not a readable file of this type
        why = " ".join(str(exc).split()) or type(exc).__name__
        hint = " (MATLAB v7.3 files are HDF5; save with -v7)" if "7.3" in why or "HDF" in why else ""
        raise BenchError(f"dataset file {path}: cannot read it as {suffix}: {why[:200]}{hint}") from exc
    missing = [k for k in ("X", "y") if k not in arrays]
    if missing:
        raise BenchError(f"dataset file {path}: no array {' or '.join(map(repr, missing))} (expected X: rows x "
                         f"features and y: 1 = anomaly); it holds {', '.join(map(repr, arrays)) or 'nothing'}")
    X, y = np.asarray(arrays["X"]), np.asarray(arrays["y"])
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise BenchError(f"dataset file {path}: X must be a non-empty rows x features array, got shape "
                         f"{X.shape}")
    if X.dtype.kind not in "biuf":
        raise BenchError(f"dataset file {path}: X must be numeric, got dtype {X.dtype}")
    if y.ndim > 1 and sorted(y.shape)[:-1] != [1] * (y.ndim - 1):
        raise BenchError(f"dataset file {path}: y must be a vector of labels, got shape {y.shape}")
    return X.astype(np.float64), y.reshape(-1)


def _read_csv(path: Path, label_col: str | None):
    import pandas as pd

    try:
        df = pd.read_csv(path)
    except Exception as exc:  # noqa: BLE001 - empty, binary or malformed text
        why = " ".join(str(exc).split()) or type(exc).__name__
        raise BenchError(f"dataset file {path}: cannot read it as CSV: {why[:200]}") from exc
    if label_col is None:
        found = [c for c in DEFAULT_LABEL_COLUMNS if c in df.columns]
        if len(found) != 1:
            what = "both 'y' and 'label'" if found else "no column 'y' or 'label'"
            raise BenchError(f"dataset file {path}: {what}; name the label column (1 = anomaly) with "
                             f"--label-col. Columns: {_names(df.columns)}")
        label_col = found[0]
    elif label_col not in df.columns:
        raise BenchError(f"dataset file {path}: no label column {label_col!r} (--label-col). Columns: "
                         f"{_names(df.columns)}")
    features = df.drop(columns=[label_col])
    if features.shape[1] == 0 or len(df) == 0:
        raise BenchError(f"dataset file {path}: needs at least one feature column and one row besides the "
                         f"label column {label_col!r}")
    text = [c for c in features.columns if not (pd.api.types.is_numeric_dtype(features[c]))]
    if text:
        raise BenchError(f"dataset file {path}: non-numeric column(s) {_names(text)}; encode them as numbers "
                         "or drop them")
    return features.to_numpy(dtype=np.float64), df[label_col].to_numpy(), label_col, list(features.columns)


def _labels(path: Path, y: np.ndarray, n: int) -> np.ndarray:
    if len(y) != n:
        raise BenchError(f"dataset file {path}: {len(y)} labels for {n} rows")
    try:
        yf = y.astype(np.float64)
    except (TypeError, ValueError):
        yf = None
    if yf is None or not np.isin(yf, (0.0, 1.0)).all():
        odd = [v for v in dict.fromkeys(y.tolist()) if yf is None or v not in (0, 1)]
        raise BenchError(f"dataset file {path}: labels must be 0 (normal) or 1 (anomaly); found "
                         f"{', '.join(map(repr, odd[:5]))}{' ...' if len(odd) > 5 else ''}")
    return yf.astype(np.int64)


def _check_features(path: Path, X: np.ndarray, columns: list | None) -> None:
    bad = ~np.isfinite(X)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        where = f"column {columns[col]!r}" if columns else f"feature {col}"
        raise BenchError(f"dataset file {path}: X holds {int(bad.sum())} NaN or infinite value(s) (first in "
                         f"row {row + 1}, {where}); remove or impute them")


def _names(cols) -> str:
    cols = [str(c) for c in cols]
    return ", ".join(map(repr, cols[:12])) + (f" ... ({len(cols)} in all)" if len(cols) > 12 else "")
