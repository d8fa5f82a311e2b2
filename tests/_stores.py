"""Synthetic result stores for the leaderboard, compare and page tests: records written straight into
a Store (no training), with scores drawn so that each method's AUC is known roughly in advance."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd

from bench.evaluation.metrics import evaluate
from bench.execution.store import Store
from bench.evaluation.thresholds import threshold


def record(spec, dataset, seed, separation, protocol="paper", sha=None, policy="kde", alpha=0.1,
           status="ok", n=120, rng=None):
    """One run record: 100 normal + 20 anomalous test rows whose scores are shifted by
    ``separation`` (bigger = better AUC); training scores are normal rows' scores."""
    stable = hashlib.sha256(f"{spec}/{dataset}/{seed}".encode()).digest()
    rng = rng or np.random.default_rng(int.from_bytes(stable[:8], "little"))
    y = np.r_[np.zeros(n - 20, int), np.ones(20, int)]
    test = rng.standard_normal(n) + separation * y
    train = rng.standard_normal(300)
    key = hashlib.sha256(json.dumps([spec, dataset, protocol, seed, sha]).encode()).hexdigest()[:24]
    rec = {"key": key, "method": spec.split("[")[0], "spec": spec, "params": "{}",
           "dataset": dataset, "dataset_sha256": sha or f"sha-{dataset}", "protocol": protocol,
           "seed": seed, "status": status, "flags": "", "threshold_policy": policy, "alpha": alpha,
           "created_at": f"2026-01-01T00:00:{seed:02d}", "git_commit": "test",
           "versions": {"python": "3"}, "y_test": y}
    if status == "ok":
        thr = threshold(policy, train, alpha)
        rec.update(train_scores=train, test_scores=test, threshold=thr, **evaluate(y, test, thr))
    return rec


def make_store(path, separations: dict, seeds=(0, 1), **kw) -> pd.DataFrame:
    """``separations``: {(spec, dataset): separation}. Returns the stored frame."""
    store = Store(path)
    try:
        for (spec, dataset), sep in separations.items():
            for seed in seeds:
                store.put(record(spec, dataset, seed, sep, **kw))
        return store.latest()
    finally:
        store.close()
