"""Training telemetry and health checks shared by every iterative method.

A method keeps one ``LossLog`` per fit; ``history`` for member s becomes that detector's
``history_`` (stored with the run). The runner derives health flags from it.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from bench.contract.base import TrainingDiverged


class LossLog:
    """Records each loss term every ``every`` iterations, per stack member; raises on non-finite.

    ``record(it, L_T=tensor(S,), L_G=...)`` takes per-member values (a (S,) tensor, or a float for
    S = 1). Values are checked for finiteness at every call; a non-finite value in member s marks that
    member diverged (``diverged[s]`` = TrainingDiverged) so a stack can finish its healthy members.
    ``members={name: [bool per member]}`` names the terms only some members have (a stack whose
    members have different switches): a member without a term neither records nor checks it, so its
    history is the one it has alone.
    """

    def __init__(self, n_members: int = 1, every: int = 100):
        self.every = max(1, int(every))
        self.history = [{"iteration": []} for _ in range(n_members)]
        self.diverged: list[TrainingDiverged | None] = [None] * n_members

    def record(self, iteration: int, force: bool = False, members: dict | None = None,
               **terms) -> None:
        keep = force or iteration % self.every == 0
        values = {k: (v.detach().reshape(-1).double().cpu().numpy() if torch.is_tensor(v)
                      else np.atleast_1d(np.asarray(v, dtype=float))) for k, v in terms.items()}
        members = members or {}
        for s, hist in enumerate(self.history):
            if self.diverged[s] is not None:
                continue
            mine = {k: v for k, v in values.items() if k not in members or members[k][s]}
            for k, v in mine.items():
                val = float(v[s] if v.size > 1 else v[0])
                if not math.isfinite(val):
                    self.diverged[s] = TrainingDiverged(iteration, k, val)
                    break
            if keep and self.diverged[s] is None:
                hist["iteration"].append(int(iteration))
                for k, v in mine.items():
                    hist.setdefault(k, []).append(float(v[s] if v.size > 1 else v[0]))

    def raise_if_diverged(self, s: int = 0) -> None:
        if self.diverged[s] is not None:
            raise self.diverged[s]


def health_flags(history: dict | None, monitored: list[str] | None = None) -> list[str]:
    """Flags derived from a run's telemetry. ``loss-never-decreased``: no monitored loss term ends
    (mean of its last 10% of records) below where it started (mean of its first 10%)."""
    if not history or len(history.get("iteration", [])) < 10:
        return []
    keys = monitored or [k for k in history if k != "iteration"]
    decreased = False
    for k in keys:
        v = np.asarray(history.get(k, []), dtype=float)
        if v.size < 10:
            continue
        w = max(1, v.size // 10)
        if v[-w:].mean() < v[:w].mean():
            decreased = True
    return [] if decreased else ["loss-never-decreased"]
