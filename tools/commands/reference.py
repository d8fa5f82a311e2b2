"""adVAE's tools, beside adVAE: the ``reference`` command (the authors' released weights through the
benchmark's evaluation path), registered with the CLI through ``bench.contract.registry.register_command``, so
the plumbing reaches it without importing a definition. (The ``perf`` command, for every deep method,
is tools/commands/perf.py.)
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from bench import BenchError
from bench.evaluation.data import REPO_ROOT
from bench.contract.registry import register_command
from engine.backbone import Encoder, Generator, Shape, load_linear_state, member_generators
from engine.stacked import l_sample_scores


def load_reference(encoder_path, decoder_path, device: str = "cpu") -> tuple[Encoder, Generator]:
    """The adVAE authors' released weights (state_dicts of their Encoder: fc1, fc2, fcmu, fclogvar, and
    Decoder: fc3, fc4, fcxmu) as an S = 1 (E, G) pair for ``stacked.l_sample_scores``."""
    enc = torch.load(encoder_path, map_location="cpu", weights_only=True)
    dec = torch.load(decoder_path, map_location="cpu", weights_only=True)
    h, d = enc["fc1.weight"].shape
    k = enc["fcmu.weight"].shape[0]
    shape = Shape(d, k, h)
    gens = member_generators([0])  # any init: every weight is overwritten
    E, G = Encoder(shape, gens), Generator(shape, gens)
    load_linear_state(E, enc)
    load_linear_state(G, dec)
    for p in [*E.parameters(), *G.parameters()]:
        p.requires_grad_(False)
    return E.to(device).eval(), G.to(device).eval()


# ---- reference ----------------------------------------------------------------------------------
def load_checkpoints(encoder_path: Path, decoder_path: Path):
    """``bench.evaluation.reference`` loader: the authors' (E, G) as (n_features, score(X, L, seed)). A file that
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
    p.add_argument("--out", default=str(REPO_ROOT / "runs" / "reference"),
                   help="output directory (default: %(default)s)")
    p.add_argument("--checkpoints", help="directory holding <dataset>-encoder.pt / -decoder.pt")
    p.add_argument("--data-dir", help="directory holding the .mat files")
    p.add_argument("--L", type=int, default=1000, help="latent samples per row (default: %(default)s)")


def _reference(a: argparse.Namespace) -> int:
    from bench.evaluation.reference import run_reference
    from bench.execution.store import not_published, writable_dir

    writable_dir(not_published(a.out))  # before minutes of scoring, not after
    df = run_reference(a.out, load_checkpoints, data_dir=a.data_dir, checkpoints_dir=a.checkpoints,
                       L=a.L)
    print(df.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"wrote {Path(a.out) / 'reference.csv'} and reference.md")
    return 0


register_command("reference", "score the adVAE authors' released weights (check of the evaluation path)",
                 _reference_arguments, _reference)
