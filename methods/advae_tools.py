"""adVAE's tools, beside adVAE: the ``reference`` command (the authors' released weights through the
benchmark's evaluation path) and the ``perf`` command (training and scoring speed, both gradient
paths). They are registered with the CLI through ``bench.registry.register_command``, so the plumbing
reaches them without importing a definition.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bench import BenchError, config, data
from bench.data import REPO_ROOT
from bench.protocols import make_split
from bench.registry import register_command
from methods.advae import AdVAE, load_reference
from methods.stacked import l_sample_scores

PAPER_CONFIG = REPO_ROOT / "configs" / "paper.toml"
WARMUP_ITERATIONS = 20


# ---- reference ----------------------------------------------------------------------------------
def load_checkpoints(encoder_path: Path, decoder_path: Path):
    """``bench.reference`` loader: the authors' (E, G) as (n_features, score(X, L, seed)). A file that
    is not a PyTorch state_dict (truncated, another format) or holds other layers is a BenchError."""
    try:
        E, G = load_reference(encoder_path, decoder_path)
    except (ValueError, KeyError) as exc:
        raise BenchError(f"{encoder_path} / {decoder_path} do not hold the adVAE authors' encoder "
                         f"(fc1, fc2, fcmu, fclogvar) and decoder (fc3, fc4, fcxmu) weights ({exc}); "
                         "fetch them again from WangXuhongCN/adVAE, folder checkpoints/") from exc
    except Exception as exc:  # noqa: BLE001 - torch.load's errors on a damaged file vary
        raise BenchError(f"cannot read the checkpoint {encoder_path} or {decoder_path}: it is truncated "
                         f"or not a PyTorch file ({type(exc).__name__}); fetch it again from "
                         "WangXuhongCN/adVAE, folder checkpoints/") from exc

    def score(X: np.ndarray, L: int, seed: int) -> np.ndarray:
        return l_sample_scores(E, G, X, L=L, seed=seed)

    return E.fc1.weight.shape[1], score


def _reference_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=str(REPO_ROOT / "results" / "reference"),
                   help="output directory (default: %(default)s)")
    p.add_argument("--checkpoints", help="directory holding <dataset>-encoder.pt / -decoder.pt")
    p.add_argument("--data-dir", help="directory holding the .mat files")
    p.add_argument("--L", type=int, default=1000, help="latent samples per row (default: %(default)s)")


def _reference(a: argparse.Namespace) -> int:
    from bench.reference import run_reference
    from bench.store import writable_dir

    writable_dir(a.out)  # before minutes of scoring, not after
    df = run_reference(a.out, load_checkpoints, data_dir=a.data_dir, checkpoints_dir=a.checkpoints,
                       L=a.L)
    print(df.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"wrote {Path(a.out) / 'reference.csv'} and reference.md")
    return 0


register_command("reference", "score the adVAE authors' released weights (check of the evaluation path)",
                 _reference_arguments, _reference)


# ---- perf ---------------------------------------------------------------------------------------
def run_perf(datasets=None, n_iter: int = 200, L: int = 1000, group_sizes=(1, 5),
             gradients=("hand",), data_dir=None) -> pd.DataFrame:
    """Time ``n_iter`` adVAE iterations per dataset, gradient path and group size S, and the scoring
    of the paper split's test rows with L samples, on one thread; print a table and return it.

    Every dataset uses the paper configuration (configs/paper.toml) and the paper split. A short
    warm-up fit runs first so one-time costs are not counted; the timed fits include everything a
    real fit does (batch and noise preparation, telemetry every 100 iterations)."""
    if int(n_iter) < 1:
        raise BenchError(f"--n-iter must be >= 1 (iterations to time), got {n_iter}")
    if int(L) < 1:
        raise BenchError(f"--L must be >= 1 (latent samples per scored row), got {L}")
    bad = [g for g in gradients if g not in ("hand", "autograd")]
    if bad or not gradients:
        raise BenchError(f"--gradients takes hand and/or autograd, got {','.join(gradients) or 'nothing'}")
    full_budget = AdVAE().n_iter  # the paper's 20000 iterations
    exp = config.load(PAPER_CONFIG)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one core, as the runner gives each run
    rows = []
    try:
        for name in datasets or list(data.catalogue()):
            split = make_split(data.load(name, data_dir), "paper")
            params = exp.params_for("advae", name)
            scored = None
            for grad in gradients:
                AdVAE(**params, n_iter=WARMUP_ITERATIONS, gradients=grad).fit(split.X_train)
                for S in group_sizes:
                    dets = [AdVAE(**params, n_iter=n_iter, L=L, gradients=grad, random_state=s)
                            for s in range(S)]
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
                                 "n_train": len(split.X_train), "gradients": grad, "group_size": S,
                                 "ms_per_iteration": 1e3 * per_iter,
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


def _perf_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--datasets", type=lambda t: [x.strip() for x in t.split(",") if x.strip()],
                   help="comma-separated dataset names (default: all)")
    p.add_argument("--n-iter", type=int, default=200, help="iterations to time (default: %(default)s)")
    p.add_argument("--L", type=int, default=1000, help="latent samples per row (default: %(default)s)")
    p.add_argument("--group-sizes", default="1,5",
                   help="stack sizes S to time, comma-separated (default: %(default)s)")
    p.add_argument("--gradients", default="hand",
                   help="gradient paths to time: hand, autograd or hand,autograd (default: %(default)s)")
    p.add_argument("--data-dir", help="directory holding the .mat files")


def _perf(a: argparse.Namespace) -> int:
    try:
        sizes = tuple(int(s) for s in a.group_sizes.split(","))
    except ValueError:
        raise BenchError(f"--group-sizes must look like 1,5, got {a.group_sizes!r}") from None
    if not sizes or min(sizes) < 1:
        raise BenchError(f"--group-sizes must be >= 1, got {a.group_sizes!r}")
    run_perf(datasets=a.datasets, n_iter=a.n_iter, L=a.L, group_sizes=sizes,
             gradients=tuple(g.strip() for g in a.gradients.split(",") if g.strip()),
             data_dir=a.data_dir)
    return 0


register_command("perf", "time adVAE training iterations (hand-written and autograd gradients) and "
                         "L-sample scoring", _perf_arguments, _perf)
