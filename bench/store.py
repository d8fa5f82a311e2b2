"""The result store: one SQLite database per experiment output directory.

One row per run, written in a single transaction, so killing the process at any moment loses at
most the run in flight and never corrupts the store. Raw train and test scores (and the test
labels) are kept as .npy blobs, so metrics, tables and plots are recomputed without re-training.
"""
from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd

COLUMNS = {
    "key": "TEXT PRIMARY KEY", "method": "TEXT", "spec": "TEXT", "params": "TEXT",
    "dataset": "TEXT", "dataset_sha256": "TEXT", "protocol": "TEXT", "seed": "INTEGER",
    "status": "TEXT", "error": "TEXT", "flags": "TEXT",
    "auc": "REAL", "ap": "REAL", "precision": "REAL", "recall": "REAL", "f1": "REAL",
    "threshold_policy": "TEXT", "alpha": "REAL", "threshold": "REAL",
    "fit_seconds": "REAL", "score_seconds": "REAL", "group_size": "INTEGER", "device": "TEXT",
    "versions": "TEXT", "git_commit": "TEXT", "created_at": "TEXT", "history": "TEXT",
    "train_scores": "BLOB", "test_scores": "BLOB", "y_test": "BLOB",
}
BLOBS = ("train_scores", "test_scores", "y_test")
DB_NAME = "runs.sqlite"


def to_blob(arr) -> bytes | None:
    if arr is None:
        return None
    buf = io.BytesIO()
    np.save(buf, np.asarray(arr), allow_pickle=False)
    return buf.getvalue()


def from_blob(blob) -> np.ndarray | None:
    return None if blob is None else np.load(io.BytesIO(blob), allow_pickle=False)


class Store:
    def __init__(self, out_dir: str | Path):
        self.path = Path(out_dir) / DB_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(self.path, timeout=60)
        self.conn.execute("PRAGMA journal_mode=WAL")
        cols = ", ".join(f"{k} {v}" for k, v in COLUMNS.items())
        with self.conn:
            self.conn.execute(f"CREATE TABLE IF NOT EXISTS runs ({cols})")

    def close(self):
        self.conn.close()

    def ok_keys(self) -> set[str]:
        return {k for (k,) in self.conn.execute("SELECT key FROM runs WHERE status = 'ok'")}

    def put(self, record: dict) -> None:
        row = {k: record.get(k) for k in COLUMNS}
        for k in BLOBS:
            row[k] = to_blob(record.get(k))
        for k in ("params", "versions", "history"):
            if row[k] is not None and not isinstance(row[k], str):
                row[k] = json.dumps(row[k], sort_keys=True, default=repr)
        names = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        with self.conn:  # one transaction per run
            self.conn.execute(f"INSERT OR REPLACE INTO runs ({names}) VALUES ({marks})",
                              list(row.values()))

    def frame(self, with_blobs: bool = False) -> pd.DataFrame:
        cols = [c for c in COLUMNS if with_blobs or c not in BLOBS]
        df = pd.read_sql_query(f"SELECT {', '.join(cols)} FROM runs ORDER BY created_at", self.conn)
        if with_blobs:
            for k in BLOBS:
                df[k] = df[k].map(from_blob)
        return df

    def latest(self, with_blobs: bool = False) -> pd.DataFrame:
        """The newest run for each (spec, dataset, protocol, seed): a run recomputed with other
        parameters or a newer method version replaces the older one in tables and plots."""
        df = self.frame(with_blobs)
        return df.drop_duplicates(["spec", "dataset", "protocol", "seed"], keep="last").reset_index(drop=True)
