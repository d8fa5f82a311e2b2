"""Metrics (anomalies are the positive class), all computed from stored scores."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_fscore_support, roc_auc_score

METRICS = ("auc", "ap", "precision", "recall", "f1")


def evaluate(y_true: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """AUC and AP (sklearn definitions) from the scores; precision, recall and F1 of the decision
    ``score >= threshold``."""
    y_true = np.asarray(y_true).astype(int)
    scores = np.asarray(scores, dtype=float)
    pred = (scores >= threshold).astype(int)
    p, r, f, _ = precision_recall_fscore_support(y_true, pred, average="binary", zero_division=0)
    return {"auc": float(roc_auc_score(y_true, scores)),
            "ap": float(average_precision_score(y_true, scores)),
            "precision": float(p), "recall": float(r), "f1": float(f)}
