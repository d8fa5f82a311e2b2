"""AE: a deterministic autoencoder on adVAE's backbone, and the stacked-training plumbing that the deep
baselines (AE, VAE, GAN, WGAN-GP, DAGMM) share.

Wang et al., "adVAE: A self-adversarial variational autoencoder with Gaussian anomaly prior knowledge
for anomaly detection", KBS 190 (2020), Section 4.4: AE uses adVAE's encoder and generator sizes, the
same optimiser (Adam, lr 1e-3), batch size (128) and iteration budget (20000), and scores a row by its
reconstruction error.

AE here: code = the encoder's mu head only (the logvar head exists, so the weights are drawn exactly as
adVAE's, but it is never used or trained); x_r = G(mu); loss = MSE(x, x_r) = per-row sum over features
of (x - x_r)^2, averaged over the batch; score = the same sum of squares for each row.
One iteration = one Adam step on one mini-batch.

The plumbing (``StackedDeepDetector``) trains a group of seeds as one stack of S members
(methods/backbone.py): members with the same number of training rows share every tensor op, each with its
own weight init (``member_generators(seeds)``), mini-batch order (``batch_indices(..., seed)``) and noise
(``member_generators(seeds, NOISE_SALT)``); after training member s is copied out as an S = 1 network,
so a member's scores do not depend on the group it trained in.
"""
from __future__ import annotations


import numpy as np
import torch
from torch import nn

from bench.base import Detector, StackedFit
from bench.registry import register
from bench.telemetry import LossLog
from methods.backbone import (NOISE_SALT, TRAINING_CONSTRAINTS, Encoder, Generator, Shape,
                              batch_indices, latent_size, member_copy, member_generators, pick_device)

#: Rows per chunk when scoring a deterministic network (bounds memory only; scores do not depend on it).
SCORE_CHUNK = 8192


class StackNoise:
    """Per-member noise: each member draws from its own CPU generator (seeded from its seed only), so a
    member's stream is the same alone or in a stack. Draws are stacked to (S, ...) on ``device``."""

    def __init__(self, seeds: list[int], device: torch.device, salt: int = NOISE_SALT):
        self.gens = member_generators(seeds, salt)
        self.device = device

    def normal(self, *shape: int) -> torch.Tensor:  # (S, *shape)
        return torch.stack([torch.randn(*shape, generator=g) for g in self.gens]).to(self.device)

    def uniform(self, *shape: int) -> torch.Tensor:  # (S, *shape), U[0, 1)
        return torch.stack([torch.rand(*shape, generator=g) for g in self.gens]).to(self.device)


class StackBatches:
    """Mini-batches of a stack: member s reshuffles its own rows every epoch from its own seed
    (``batch_indices``). All members have the same row count, so batch sizes agree at every step.
    ``next(X)`` with X (S, n, d) returns the next batch (S, b, d)."""

    def __init__(self, n_rows: int, batch_size: int, n_batches: int, seeds: list[int]):
        self.iters = [batch_indices(n_rows, batch_size, n_batches, s) for s in seeds]

    def next(self, X: torch.Tensor) -> torch.Tensor:
        idx = torch.from_numpy(np.stack([next(it) for it in self.iters])).to(X.device)  # (S, b)
        rows = torch.arange(X.shape[0], device=X.device).unsqueeze(1)  # (S, 1)
        return X[rows, idx]  # (S, b, d)


def all_diverged(log: LossLog) -> bool:
    return all(d is not None for d in log.diverged)


class StackedDeepDetector(StackedFit, Detector):
    """Base of the deep baselines on the stacked backbone. A subclass defines ``__init__`` (with at
    least n_iter, batch_size, lr, latent_dim, log_every, device, random_state), ``_build`` (the stacked
    networks), ``_train`` (the training loop, recording every loss term in the LossLog) and ``_score``
    (S = 1 networks -> (n,) float64 scores); optionally ``_after_fit`` (e.g. DAGMM's mixture)."""

    version = "2"  # 2: inputs scaled by sklearn's MinMaxScaler (ulp-level change)
    max_group_size = 8
    quick_params = {"n_iter": 300}
    parameter_constraints = TRAINING_CONSTRAINTS  # a subclass adds its own: {**TRAINING_CONSTRAINTS, ...}

    # ---- subclass hooks ---------------------------------------------------------------------
    def _build(self, shape: Shape, gens: list[torch.Generator]) -> nn.ModuleDict:
        """adVAE's encoder E and generator G (the AE and VAE networks); GANs and DAGMM override."""
        return nn.ModuleDict({"E": Encoder(shape, gens), "G": Generator(shape, gens)})

    def _train(self, nets: nn.ModuleDict, X: torch.Tensor, seeds: list[int], log: LossLog) -> None:
        raise NotImplementedError

    def _score(self, X: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _after_fit(self, X: torch.Tensor) -> None:
        """Called on each fitted member with its own training rows (n, d), networks already copied."""

    # ---- fitting ------------------------------------------------------------------------------
    @classmethod
    def _fit_stack(cls, dets, Xs):
        proto = dets[0]
        if Xs[0].ndim != 2 or Xs[0].shape[0] < 2 or Xs[0].shape[1] < 1:
            raise ValueError(f"{cls.__name__} needs a 2-d training array with at least 2 rows, got "
                             f"shape {Xs[0].shape}")
        n, d = Xs[0].shape
        if not all(np.isfinite(X).all() for X in Xs):
            raise ValueError(f"{cls.__name__}: training rows contain NaN or inf")
        device = pick_device(proto.device)
        seeds = [int(det.random_state) for det in dets]
        shape = Shape(d, latent_size(proto.latent_dim, d))
        nets = proto._build(shape, member_generators(seeds)).to(device)
        X = torch.from_numpy(np.stack(Xs)).to(device)  # (S, n, d)
        log = LossLog(len(dets), every=proto.log_every)
        proto._train(nets, X, seeds, log)
        out = []
        for s, det in enumerate(dets):
            if log.diverged[s] is not None:
                out.append(log.diverged[s])
                continue
            det.networks_ = member_copy(nets, s)
            det.shape_ = shape
            det.n_features_in_ = d
            det.device_ = str(device)
            det.history_ = log.history[s]
            with torch.no_grad():
                det._after_fit(X[s])
            out.append(det)
        return out

    def _descend(self, nets: nn.ModuleDict, X: torch.Tensor, seeds: list[int], log: LossLog,
                 loss_terms) -> None:
        """The plain loop of AE, VAE and DAGMM: one Adam step on all parameters per mini-batch.
        ``loss_terms(x (S, b, d), noise) -> (objective (S,), terms)``: the objective is minimised, every
        entry of the dict ``terms`` of (S,) tensors is recorded."""
        opt = torch.optim.Adam(nets.parameters(), lr=self.lr)
        n_iter = int(self.n_iter)
        batches = StackBatches(X.shape[1], int(self.batch_size), n_iter, seeds)
        noise = StackNoise(seeds, X.device)
        for it in range(n_iter):
            objective, terms = loss_terms(batches.next(X), noise)
            opt.zero_grad(set_to_none=True)
            objective.sum().backward()  # members are independent: the sum trains each on its own
            opt.step()
            log.record(it, force=it == n_iter - 1, **{k: v.detach() for k, v in terms.items()})
            if all_diverged(log):
                break

    # ---- scoring ------------------------------------------------------------------------------
    def anomaly_score(self, X: np.ndarray) -> np.ndarray:
        if not hasattr(self, "networks_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit() first")
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(f"{type(self).__name__}: expected rows of {self.n_features_in_} features, "
                             f"got shape {X.shape}")
        if len(X) == 0:
            return np.zeros(0)
        dev = next(self.networks_.parameters()).device
        with torch.no_grad():
            scores = self._score(torch.from_numpy(X).to(dev))
        return scores.double().cpu().numpy().reshape(-1)


def chunked(fn, X: torch.Tensor, chunk: int = SCORE_CHUNK) -> torch.Tensor:
    """Apply a row-wise ``fn`` ((c, d) -> (c,)) in row chunks; returns (n,)."""
    if len(X) == 0:
        return torch.zeros(0, dtype=torch.float64)
    return torch.cat([fn(X[i:i + chunk]) for i in range(0, len(X), chunk)])


def squared_error(x: torch.Tensor, x_r: torch.Tensor) -> torch.Tensor:
    """MSE as adVAE defines it: per-row sum over features of (x - x_r)^2. (..., d) -> (...)."""
    return ((x - x_r) ** 2).sum(dim=-1)


@register("ae")
class AE(StackedDeepDetector):
    """Autoencoder on adVAE's backbone (deterministic latent, MSE); score = reconstruction error.

    Parameters: n_iter (20000, adVAE's budget), batch_size (128), lr (1e-3, Adam), latent_dim (None ->
    about d / 3; the paper config sets the authors' k per dataset), log_every (telemetry period),
    device ("auto" = GPU when present), random_state (weight init and batch order).
    """

    monitored_losses = ["mse"]  # the only term: a reconstruction that never improves is broken

    def __init__(self, n_iter: int = 20000, batch_size: int = 128, lr: float = 1e-3,
                 latent_dim: int | None = None, log_every: int = 100, device: str = "auto",
                 random_state: int = 0):
        self.n_iter = n_iter
        self.batch_size = batch_size
        self.lr = lr
        self.latent_dim = latent_dim
        self.log_every = log_every
        self.device = device
        self.random_state = random_state

    def _train(self, nets, X, seeds, log):
        E, G = nets["E"], nets["G"]

        def loss_terms(x, noise):  # x (S, b, d)
            mu, _ = E(x)  # (S, b, k); logvar unused: deterministic code
            mse = squared_error(x, G(mu)).mean(dim=1)  # (S,)
            return mse, {"mse": mse}

        self._descend(nets, X, seeds, log, loss_terms)

    def _score(self, X):
        E, G = self.networks_["E"], self.networks_["G"]

        def err(x):  # (c, d) -> (c,)
            x_r = G(E(x.unsqueeze(0))[0])[0]  # (c, d)
            return squared_error(x.double(), x_r.double())

        return chunked(err, X)
