"""Speed of adVAE on one core: time per training iteration, the extrapolated time of a full paper-budget
fit (alone, and per member when S seeds train as one stack), and the time of L-sample scoring.

Every dataset uses the paper configuration (configs/paper.toml: the authors' latent size, lambda and
m_z) and the paper split. A short warm-up fit runs first so one-time costs are not counted; the timed
fits include everything a real fit does (batch and noise preparation, telemetry every 100 iterations).
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd

from bench import config, data
from bench.data import REPO_ROOT
from bench.protocols import make_split

PAPER_CONFIG = REPO_ROOT / "configs" / "paper.toml"
WARMUP_ITERATIONS = 20


def run_perf(datasets=None, n_iter: int = 200, L: int = 1000, group_sizes=(1, 5),
             data_dir=None) -> pd.DataFrame:
    """Time ``n_iter`` adVAE iterations per dataset and group size S, and the scoring of the paper
    split's test rows with L samples; print a table and return it (one row per dataset and S)."""
    import torch

    from methods.advae import AdVAE

    full_budget = AdVAE().n_iter  # the paper's 20000 iterations
    exp = config.load(PAPER_CONFIG)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one core, as the runner gives each run
    rows = []
    try:
        for name in datasets or list(data.catalogue()):
            split = make_split(data.load(name, data_dir), "paper")
            params = exp.params_for("advae", name)
            AdVAE(**params, n_iter=WARMUP_ITERATIONS).fit(split.X_train)
            scored = None
            for S in group_sizes:
                dets = [AdVAE(**params, n_iter=n_iter, L=L, random_state=s) for s in range(S)]
                t0 = time.perf_counter()
                fitted = AdVAE.fit_group(dets, [split.X_train] * S)
                seconds = time.perf_counter() - t0
                if scored is None and not isinstance(fitted[0], Exception):
                    t0 = time.perf_counter()
                    fitted[0].anomaly_score(split.X_test)
                    scored = time.perf_counter() - t0
                per_iter = seconds / n_iter
                rows.append({"dataset": name, "d": split.X_train.shape[1],
                             "k": dets[0].latent_size(split.X_train.shape[1]),
                             "n_train": len(split.X_train), "n_test": len(split.X_test),
                             "group_size": S, "ms_per_iteration": 1e3 * per_iter,
                             "full_fit_s": per_iter * full_budget,
                             "full_fit_per_member_s": per_iter * full_budget / S,
                             "score_test_s": scored if scored is not None else np.nan})
    finally:
        torch.set_num_threads(threads)
    df = pd.DataFrame(rows)
    how = "measured" if n_iter == full_budget else f"extrapolated from {n_iter}"
    print(f"adVAE on one core: full fit = {full_budget} iterations ({how}), scoring = paper-split "
          f"test rows with L = {L}")
    print(df.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    return df
