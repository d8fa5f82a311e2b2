"""Check of the evaluation path with the adVAE authors' released weights.

``run_reference`` loads the authors' trained encoder and generator for each dataset (their repository
WangXuhongCN/adVAE, folder checkpoints/; committed here in checkpoints/) through the
``load`` function it is given (adVAE's, from tools/commands/reference.py, which also registers the
``reference`` command: plumbing never imports a definition), scores the paper split with L latent
samples through the benchmark's own scoring code, thresholds the training scores with the exact
``kde`` policy and the authors' ``kde-grid-legacy`` one, and computes the metrics. Split, scaling,
scoring, threshold and metrics all run on networks nobody here trained, so a wrong step anywhere shows
up as a wrong number.

Checkpoint directory (the data's rule, bench.evaluation.data.candidate_dirs): ``checkpoints_dir`` (--checkpoints) or
else $ADVAE_BENCH_CHECKPOINTS if given, and then only there; otherwise the copy committed in the
repository's ``checkpoints/``. Files: ``<dataset>-encoder.pt`` and ``<dataset>-decoder.pt``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from bench import BenchError
from bench.evaluation import data
from bench.evaluation.metrics import METRICS, evaluate
from bench.evaluation.protocols import make_split
from bench.evaluation.thresholds import threshold

CHECKPOINTS_ENV = "ADVAE_BENCH_CHECKPOINTS"
CHECKPOINTS_SOURCE = ("the adVAE authors' public repository WangXuhongCN/adVAE, folder checkpoints/ "
                      "(<dataset>selfADVAEencoder / decoder), saved as <dataset>-encoder.pt / -decoder.pt")
POLICIES = ("kde", "kde-grid-legacy")
COLUMNS = ["dataset", "threshold_policy", *METRICS, "threshold"]


def checkpoint_paths(dataset: str, checkpoints_dir=None) -> tuple[Path, Path]:
    """(encoder, decoder) files of ``dataset``; BenchError listing every place looked in if missing."""
    dirs = data.candidate_dirs(checkpoints_dir, CHECKPOINTS_ENV, "checkpoints")
    return tuple(data.find_file(f"{dataset}-{part}.pt", dirs, f"adVAE reference {part} of {dataset!r}",
                                CHECKPOINTS_SOURCE) for part in ("encoder", "decoder"))


#: ``load(encoder_path, decoder_path) -> (n_features, score)`` with ``score(X, L, seed) -> (n,)``.
Loader = Callable[[Path, Path], tuple[int, Callable[[np.ndarray, int, int], np.ndarray]]]


def run_reference(out_dir, load: Loader, data_dir=None, checkpoints_dir=None, L: int = 1000,
                  seed: int = 0, datasets=None) -> pd.DataFrame:
    """Score the paper split of each dataset with the authors' weights (read by ``load``); write
    ``reference.csv`` and ``reference.md`` to ``out_dir`` and return the table (one row per dataset
    and threshold policy)."""
    if int(L) < 1:
        raise BenchError(f"--L must be >= 1 (latent samples per scored row), got {L}")
    rows = []
    for name in datasets or data.default_datasets():
        ds = data.load(name, data_dir)
        split = make_split(ds, "paper", seed)
        enc_path, dec_path = checkpoint_paths(name, checkpoints_dir)
        n_features, score = load(enc_path, dec_path)
        if n_features != ds.X.shape[1]:
            raise BenchError(f"reference weights {enc_path} expect {n_features} features, dataset "
                             f"{name!r} has {ds.X.shape[1]}: the checkpoint belongs to another dataset")
        train = score(split.X_train, L, seed)
        test = score(split.X_test, L, seed)
        for policy in POLICIES:
            thr = threshold(policy, train)
            rows.append({"dataset": name, "threshold_policy": policy,
                         **evaluate(split.y_test, test, thr), "threshold": thr})
    df = pd.DataFrame(rows, columns=COLUMNS)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "reference.csv", index=False)
    (out / "reference.md").write_text(_markdown(df, L, seed))
    return df


def _markdown(df: pd.DataFrame, L: int, seed: int) -> str:
    lines = ["# adVAE reference weights on the paper split", "",
             f"The authors' released encoder and generator, scored with L = {L} latent samples (seed "
             f"{seed}) by the benchmark's scoring code; thresholds from the training scores (alpha 0.1).",
             "", "| dataset | threshold | AUC | AP | precision | recall | F1 | threshold value |",
             "|---|---|---|---|---|---|---|---|"]
    for r in df.itertuples(index=False):
        lines.append(f"| {r.dataset} | {r.threshold_policy} | {r.auc:.4f} | {r.ap:.4f} | "
                     f"{r.precision:.4f} | {r.recall:.4f} | {r.f1:.4f} | {r.threshold:.6g} |")
    return "\n".join(lines) + "\n"
