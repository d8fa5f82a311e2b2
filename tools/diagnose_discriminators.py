"""DIAGNOSTIC (issue 12): why GAN, WGAN-GP and MO-GAAL score near chance. USES TEST LABELS.

Writes to runs/diagnostics/ (nothing in the suite reads it back; nothing here chooses anything); the
committed copy is results/diagnostics/:
  hist_<method>_<dataset>.png   D's raw output (logit / critic value) at the end of training on the
                                training rows, normal test rows and anomalous test rows, one panel a seed
  curves_<method>.png           test AUC of the paper's score during training, one panel a dataset
  curves.csv                    method, dataset, seed, iteration, auc (paper score of that snapshot)
  scores.csv                    method, dataset, seed, score, status, auc, ap: the paper's score and
                                each label-free option of engine/discriminator_scores.py, from the
                                same fits (training does not depend on ``score``), so they equal what
                                ``run_bench.py run --methods 'gan[score=...]'`` stores for the runs
  dead.csv                      method, dataset, seed, share of D's last hidden units that are zero on
                                every training row at the end (a constant D = a degenerate run)
Settings: the paper config (protocol paper, latent sizes of configs/paper.toml, default n_iter).
GAN and WGAN-GP: one stack of the five seeds a dataset, snapshots of D every n_iter/40 iterations
(the ``snapshots`` score uses every second one, i.e. its default n_snapshots = 20, same iterations).
MO-GAAL: a snapshot after every iteration (its runs are a few hundred iterations long).

    python tools/diagnose_discriminators.py [--methods gan,wgan-gp,mo-gaal] [--datasets ...] [--n-iter N]
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root

import numpy as np  # noqa: E402
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from bench.evaluation import data
from bench.evaluation.protocols import make_split
from engine.discriminator_scores import snapshot_iterations
from methods.gan import GAN
from methods.mo_gaal import MOGAAL
from methods.wgan_gp import WGANGP

LATENT = {"letter": 11, "cardio": 7, "satellite": 12, "optdigits": 16, "pendigits": 5}  # paper.toml
CLASSES = {"gan": GAN, "wgan-gp": WGANGP, "mo-gaal": MOGAAL}
SEEDS = [0, 1, 2, 3, 4]
N_DIAG = 40  # GAN / WGAN-GP snapshots for the curves; the score uses every second one (20)


def auc_ap(y, s):
    if np.ptp(s) == 0 or not np.isfinite(s).all():
        return "degenerate", float("nan"), float("nan")
    return "ok", float(roc_auc_score(y, s)), float(average_precision_score(y, s))


def append(path: Path, header: list[str], rows: list[list]) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as fh:
        w = csv.writer(fh)
        if new:
            w.writerow(header)
        w.writerows(rows)


def fit(method: str, dataset: str, splits, n_iter: int | None):
    cls = CLASSES[method]
    if method == "mo-gaal":
        dets = []
        for seed, sp in zip(SEEDS, splits):
            n = len(sp.X_train)
            total = 75 * (n // min(500, n))  # epochs (3 * 25) x batches: every iteration
            dets.append(MOGAAL(score="snapshots", n_snapshots=total, random_state=seed,
                               device="cpu").fit(sp.X_train))
        return dets
    kw = {} if n_iter is None else {"n_iter": n_iter}
    dets = [cls(latent_dim=LATENT[dataset], score="snapshots", n_snapshots=N_DIAG, random_state=s,
                device="cpu", **kw) for s in SEEDS]
    return cls.fit_group(dets, [sp.X_train for sp in splits])


def raw(method, D, X: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(np.asarray(X, dtype=np.float32))
    with torch.no_grad():
        out = D(x) if method == "mo-gaal" else D(x.unsqueeze(0))[0]
    return out.double().numpy()


def paper_from_raw(method, out):
    return -out if method == "wgan-gp" else -out  # -log D, 1 - D and -f all decrease with the output


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default="gan,wgan-gp,mo-gaal")
    ap.add_argument("--datasets", default="letter,cardio,satellite,optdigits,pendigits")
    ap.add_argument("--n-iter", type=int, default=None)
    ap.add_argument("--out", default="runs/diagnostics")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "README.txt").write_text(
        "DIAGNOSTIC output of tools/diagnose_discriminators.py (issue 12). Uses TEST LABELS. Nothing in the "
        "suite reads it; nothing was chosen from it.\n"
        f"Method versions: gan {GAN.version}, wgan-gp {WGANGP.version}, mo-gaal {MOGAAL.version}.\n")
    for method in a.methods.split(","):
        for dataset in a.datasets.split(","):
            t0 = time.time()
            ds = data.load(dataset)
            splits = [make_split(ds, "paper", s) for s in SEEDS]
            dets = fit(method, dataset, splits, a.n_iter)
            curve_rows, score_rows, dead_rows = [], [], []
            fig, axes = plt.subplots(1, len(SEEDS), figsize=(3.2 * len(SEEDS), 2.6))
            for seed, sp, det, ax in zip(SEEDS, splits, dets, axes):
                if isinstance(det, Exception):
                    score_rows.append([method, dataset, seed, "all", f"failed: {det}", "", ""])
                    ax.set_title(f"seed {seed}: failed")
                    continue
                y = sp.y_test.astype(int)
                if method == "mo-gaal":
                    snaps, D = det.snapshots_, det.discriminator_
                    n_total = len(snaps)
                    its = sorted(snapshot_iterations(n_total, n_total))
                    every = max(1, n_total // 75)
                    curve_idx = list(range(every - 1, n_total, every))
                else:
                    snaps, D = list(det.networks_["snapshots"]), det.networks_["D"]
                    n_total = int(det.n_iter)
                    its = sorted(snapshot_iterations(n_total, N_DIAG))
                    curve_idx = list(range(len(snaps)))
                for j in curve_idx:
                    _, auc, _ = auc_ap(y, paper_from_raw(method, raw(method, snaps[j], sp.X_test)))
                    curve_rows.append([method, dataset, seed, its[j] + 1, auc])
                # End-of-training output histograms.
                tr, te = raw(method, D, sp.X_train), raw(method, D, sp.X_test)
                lo, hi = np.percentile(np.r_[tr, te], [0.5, 99.5])
                bins = np.linspace(lo, hi + 1e-9, 40)
                for v, lab in ((tr, "train"), (te[y == 0], "test normal"), (te[y == 1], "test anomaly")):
                    ax.hist(np.clip(v, lo, hi), bins=bins, density=True, histtype="step", label=lab)
                ax.set_title(f"seed {seed}", fontsize=9)
                # Dead units of the last hidden layer (GAN / WGAN-GP: fc2; MO-GAAL: fc1).
                with torch.no_grad():
                    x = torch.from_numpy(np.asarray(sp.X_train, dtype=np.float32))
                    if method == "mo-gaal":
                        h = torch.relu(D.fc1(x))
                    else:
                        h = torch.relu(D.fc2(torch.relu(D.fc1(x.unsqueeze(0)))))[0]
                dead_rows.append([method, dataset, seed, float((h.max(0).values <= 0).float().mean())])
                # Scores: the paper's and each option, from this one fit.
                xtr = torch.from_numpy(np.asarray(sp.X_train, dtype=np.float32))
                options = ["paper", "two-sided", "snapshots"] + ([] if method == "mo-gaal" else ["anogan"])
                for opt in options:
                    det.score = opt
                    if method == "mo-gaal":
                        if opt == "snapshots":
                            det.snapshots_ = [snaps[i] for i in sorted(
                                snapshot_iterations(n_total, 20))]
                        det._reference(xtr)
                    else:
                        if opt == "snapshots":
                            idx = [its.index(i) for i in sorted(snapshot_iterations(n_total, 20))]
                            det.networks_["snapshots"] = torch.nn.ModuleList([snaps[i] for i in idx])
                        det._after_fit(xtr)
                    s_tr = det.anomaly_score(sp.X_train)
                    s_te = det.anomaly_score(sp.X_test)
                    status, auc, apv = auc_ap(y, s_te)
                    if np.ptp(s_tr) == 0:
                        status = "degenerate"
                    score_rows.append([method, dataset, seed, opt, status, auc, apv])
                if method == "mo-gaal":
                    det.snapshots_ = snaps
            axes[0].legend(fontsize=7)
            fig.suptitle(f"DIAGNOSTIC (test labels): {method} on {dataset}, D output at end of training",
                         fontsize=10)
            fig.tight_layout()
            fig.savefig(out / f"hist_{method}_{dataset}.png", dpi=70)
            plt.close(fig)
            append(out / "curves.csv", ["method", "dataset", "seed", "iteration", "auc"], curve_rows)
            append(out / "scores.csv", ["method", "dataset", "seed", "score", "status", "auc", "ap"],
                   score_rows)
            append(out / "dead.csv", ["method", "dataset", "seed", "dead_share"], dead_rows)
            print(f"{method} {dataset}: {time.time() - t0:.0f}s", flush=True)
    return 0


def plot_curves(out="runs/diagnostics") -> None:
    """curves_<method>.png from curves.csv (run after all datasets of a method are done)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    df = pd.read_csv(Path(out) / "curves.csv")
    for method, g in df.groupby("method"):
        dsets = list(dict.fromkeys(g["dataset"]))
        fig, axes = plt.subplots(1, len(dsets), figsize=(3.2 * len(dsets), 2.6), squeeze=False)
        for ax, dname in zip(axes[0], dsets):
            for seed, h in g[g["dataset"] == dname].groupby("seed"):
                ax.plot(h["iteration"], h["auc"], lw=1, label=f"seed {seed}")
            ax.axhline(0.5, color="k", lw=0.5)
            ax.set_ylim(0, 1)
            ax.set_title(dname, fontsize=9)
            ax.set_xlabel("iteration", fontsize=8)
        axes[0][0].set_ylabel("test AUC (paper score)", fontsize=8)
        axes[0][0].legend(fontsize=6)
        fig.suptitle(f"DIAGNOSTIC (test labels): {method}, AUC of D's snapshots during training",
                     fontsize=10)
        fig.tight_layout()
        fig.savefig(Path(out) / f"curves_{method}.png", dpi=70)
        plt.close(fig)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "plot":
        plot_curves(*sys.argv[2:])
        sys.exit(0)
    sys.exit(main())
