"""DAGMM: Zong, Song, Min, Cheng, Lumezanu, Cho, Chen, "Deep Autoencoding Gaussian Mixture Model for
Unsupervised Anomaly Detection", ICLR 2018; a baseline of the adVAE paper (Wang et al., KBS 2020).

Compression network on adVAE's backbone: z_c = mu of adVAE's encoder E (the logvar
head is built, so the weights are drawn as adVAE's, but unused), x' = G(z_c) with adVAE's generator as
the decoder. Low-dimensional representation z = [z_c, z_r] with the two reconstruction features of the
paper, z_r = (relative Euclidean distance ||x - x'|| / ||x||, cosine similarity x.x' / (||x|| ||x'||));
m = k + 2 dimensions.

Estimation network, the paper's layout: z (m) -> 10, Tanh, Dropout(0.5) -> n_gmm,
Softmax = gamma, the soft membership of the row in each of the n_gmm = 4 mixture components. Dropout masks
come from the member's own noise generator; dropout is off when scoring and when fitting the final
mixture (deterministic scores).

Mixture from the memberships, on a mini-batch while training:
    phi_k = mean_i gamma_ik,  mu_k = sum_i gamma_ik z_i / sum_i gamma_ik,
    Sigma_k = sum_i gamma_ik (z_i - mu_k)(z_i - mu_k)^T / sum_i gamma_ik
Sample energy: E(z) = -log sum_k phi_k N(z; mu_k, Sigma_k), computed as a log-sum-exp.
Objective, per mini-batch:
    J = mean_i ||x_i - x'_i||^2 + lambda_energy * mean_i E(z_i) + lambda_cov_diag * sum_k sum_j 1 / Sigma_kjj
with lambda_energy = 0.1 and lambda_cov_diag = 0.005 (the paper's values); the reconstruction error is
adVAE's MSE (sum over features).

Score: E(z) under the mixture fitted, after training, on ALL training rows (dropout off): phi, mu, Sigma
from the training rows' memberships, in float64. Higher energy = more anomalous.

Guards (a feature that is constant, e.g. a constant input column, a dead latent unit, or a perfect
reconstruction making the cosine constant, makes Sigma_k singular; the paper's penalty on 1 / Sigma_kjj
is aimed at the same singularity): Sigma_k + cov_eps * I, then a Cholesky factorisation; a matrix whose
factorisation fails gets 10x more jitter, up to 8 times, then falls back to its (jittered) diagonal.
The jitter is picked without gradients and one factorisation of matrices known to succeed carries the
gradient, so a failed attempt cannot leak NaN into training. log|2 pi Sigma_k| and the Mahalanobis terms
come from the Cholesky factor, never from an explicit inverse or determinant. Norms are floored at
_NORM_FLOOR so that an all-zero row (or reconstruction) gives finite z_r; phi_k is floored before its log.

Gradients: the model trains through autograd over these definitions (``DAGMM.features`` =
``compression_features``, ``DAGMM.mixture_terms`` = the mixture, its guarded factor, the mean energy and
the diagonal penalty). The same two functions as fused autograd nodes with written-out backward passes
are an optional accelerator registered beside this file (``gradients.py``, "hand"), checked against
these helpers: ``gradients="auto"`` (the default) uses it while the definitions are these,
``"autograd"`` trains through them (the same model, other rounding).

Schedule: Adam, lr 1e-3, batch 128, 20000 iterations (one iteration = one Adam step on one mini-batch),
adVAE's settings as the paper's comparison shares them. Zong et al. tune epochs, batch (128 or 1024)
and lr (1e-4) per dataset; those choices do not transfer to these datasets.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from bench.contract.params import Interval
from bench.contract.registry import register
from engine.accelerators import GRADIENTS, GRADIENTS_CONSTRAINT, Accelerated  # noqa: F401 (GRADIENTS)
from engine.backbone import TRAINING_CONSTRAINTS, Encoder, Generator, StackedLinear
from engine.stacked import SCORE_CHUNK, StackedDeepDetector, chunked, rows, store_params
from methods.ae import squared_error

#: Smallest norm used in a denominator (inputs are MinMax-scaled; 1e-6 of a feature's range).
_NORM_FLOOR = 1e-6
#: Smallest mixture weight taken to the log (a component that no row belongs to).
_PHI_FLOOR = 1e-12
#: Jitter attempts: cov_eps * 10^j for j < _JITTER_STEPS, then the diagonal fallback.
_JITTER_STEPS = 8
#: What an accelerator computes (and differentiates) in place of autograd; a subclass that overrides
#: one trains through autograd.
DEFINITIONS = ("features", "mixture_terms")


class EstimationNet(nn.Module):
    """z (S, B, m) -> gamma (S, B, n_gmm): m -> hidden, Tanh, Dropout, -> n_gmm, Softmax."""

    def __init__(self, m: int, hidden: int, n_gmm: int, gens: list[torch.Generator]):
        super().__init__()
        self.fc1 = StackedLinear(m, hidden, gens)
        self.fc2 = StackedLinear(hidden, n_gmm, gens)

    def forward(self, z: torch.Tensor, drop_mask: torch.Tensor | None = None) -> torch.Tensor:
        hid = torch.tanh(self.fc1(z))  # (S, B, hidden)
        if drop_mask is not None:  # (S, B, hidden), already scaled by 1 / (1 - p)
            hid = hid * drop_mask
        return torch.softmax(self.fc2(hid), dim=-1)


def compression_features(x: torch.Tensor, x_r: torch.Tensor, z_c: torch.Tensor) -> torch.Tensor:
    """z = [z_c, relative Euclidean distance, cosine similarity].
    x (..., d), x_r (..., d), z_c (..., k) -> (..., k + 2)."""
    x_norm = x.norm(dim=-1).clamp_min(_NORM_FLOOR)
    xr_norm = x_r.norm(dim=-1).clamp_min(_NORM_FLOOR)
    # sqrt of a floored square: finite gradient even when x_r == x exactly
    dist = torch.sqrt(((x - x_r) ** 2).sum(dim=-1).clamp_min(_NORM_FLOOR ** 2))
    rel = dist / x_norm
    cos = (x * x_r).sum(dim=-1) / (x_norm * xr_norm)
    return torch.cat([z_c, rel.unsqueeze(-1), cos.unsqueeze(-1)], dim=-1)


def mixture_from_memberships(z: torch.Tensor, gamma: torch.Tensor):
    """phi, mu, Sigma from memberships: z (..., N, m), gamma (..., N, K) -> phi (..., K),
    mu (..., K, m), Sigma (..., K, m, m).
    One component at a time, so memory stays O(N m)."""
    n_k = gamma.sum(dim=-2)  # (..., K)
    phi = n_k / gamma.shape[-2]
    denom = n_k.clamp_min(torch.finfo(z.dtype).tiny)
    mu = (gamma.transpose(-1, -2) @ z) / denom.unsqueeze(-1)  # (..., K, m)
    covs = []
    for k in range(gamma.shape[-1]):
        diff = z - mu[..., k:k + 1, :]  # (..., N, m)
        weighted = diff * gamma[..., k:k + 1]  # (..., N, m)
        covs.append(weighted.transpose(-1, -2) @ diff / denom[..., k, None, None])  # (..., m, m)
    return phi, mu, torch.stack(covs, dim=-3)


def _pick_jitter(sigma: torch.Tensor, eps: float):
    """The guard's choice for each matrix of sigma (..., m, m), without gradients: (jitter (...), the
    smallest eps * 10^j (j < _JITTER_STEPS) for which sigma + jitter * I factorises; fallback (...) bool,
    True where none does (the matrix is then replaced by its diagonal))."""
    eye = torch.eye(sigma.shape[-1], dtype=sigma.dtype, device=sigma.device)
    batch = sigma.shape[:-2]
    with torch.no_grad():
        jitter = torch.full(batch, eps * 10.0 ** _JITTER_STEPS, dtype=sigma.dtype, device=sigma.device)
        todo = torch.ones(batch, dtype=torch.bool, device=sigma.device)
        for j in range(_JITTER_STEPS):
            factor, info = torch.linalg.cholesky_ex(sigma + (eps * 10.0 ** j) * eye)
            ok = todo & (info == 0) & torch.isfinite(factor).all(dim=-1).all(dim=-1)
            jitter = torch.where(ok, torch.full_like(jitter, eps * 10.0 ** j), jitter)
            todo = todo & ~ok
            if not bool(todo.any()):
                break
    return jitter, todo


def _guard_target(sigma: torch.Tensor, jitter: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    """The matrix the guard factorises: sigma (or its diagonal, clamped at 0, where ``fallback``)
    + jitter * I."""
    eye = torch.eye(sigma.shape[-1], dtype=sigma.dtype, device=sigma.device)
    diagonal = torch.diag_embed(sigma.diagonal(dim1=-2, dim2=-1).clamp_min(0.0))
    return torch.where(fallback[..., None, None], diagonal, sigma) + jitter[..., None, None] * eye


def guarded_cholesky(sigma: torch.Tensor, eps: float) -> torch.Tensor:
    """Cholesky factor of sigma + jitter * I (..., m, m). Each matrix gets the smallest jitter
    eps * 10^j (j < _JITTER_STEPS) for which its factorisation succeeds; a matrix for which none does
    is replaced by its (jittered) diagonal. The jitter is chosen without gradients, then ONE
    differentiable factorisation runs on matrices known to succeed: a failed attempt's NaN factor never
    enters the graph (masking it with ``where`` would still send NaN gradients back)."""
    jitter, todo = _pick_jitter(sigma, eps)
    return torch.linalg.cholesky_ex(_guard_target(sigma, jitter, todo))[0]


def energy(z: torch.Tensor, phi: torch.Tensor, mu: torch.Tensor, chol: torch.Tensor) -> torch.Tensor:
    """Sample energy E(z) = -log sum_k phi_k N(z; mu_k, L_k L_k^T).
    z (..., N, m), phi (..., K), mu (..., K, m), chol (..., K, m, m) lower-triangular -> (..., N)."""
    m = z.shape[-1]
    eye = torch.eye(m, dtype=chol.dtype, device=chol.device).expand_as(chol)
    chol_inv = torch.linalg.solve_triangular(chol, eye, upper=False)  # (..., K, m, m)
    diff = z.unsqueeze(-2) - mu.unsqueeze(-3)  # (..., N, K, m)
    # L^-1 (z - mu) as a broadcast product and sum, not a batched matrix-vector product (whose CPU
    # rounding can depend on the batch size, i.e. on the stack size S)
    y = (chol_inv.unsqueeze(-4) * diff.unsqueeze(-2)).sum(dim=-1)  # (..., N, K, m)
    maha = (y ** 2).sum(dim=-1)  # (..., N, K)
    log_det = 2.0 * torch.log(chol.diagonal(dim1=-2, dim2=-1)).sum(dim=-1)  # (..., K) log|Sigma|
    log_norm = 0.5 * (log_det + m * math.log(2.0 * math.pi))  # (..., K) log sqrt|2 pi Sigma|
    log_terms = torch.log(phi.clamp_min(_PHI_FLOOR)).unsqueeze(-2) - 0.5 * maha - log_norm.unsqueeze(-2)
    return -torch.logsumexp(log_terms, dim=-1)


@register("dagmm")
class DAGMM(Accelerated, StackedDeepDetector):
    """DAGMM (Zong et al., ICLR 2018): autoencoder on adVAE's backbone + estimation network + Gaussian
    mixture; score = sample energy under the mixture fitted on the training rows.

    Parameters: n_gmm (4 components), est_hidden (10), dropout (0.5), lambda_energy (0.1),
    lambda_cov_diag (0.005), cov_eps (1e-6, jitter added to every covariance), n_iter (20000),
    batch_size (128), lr (1e-3, Adam), latent_dim (None -> about d / 3, at most 32: backbone.MAX_LATENT), log_every, device ("auto" = GPU
    when present), random_state (init, batch order, dropout masks), gradients ("auto": the fused nodes
    of gradients.py where the definitions are this class's, autograd where a subclass overrides one;
    "hand"; "autograd").
    """

    threshold_family = "reconstruction"  # paper policy: kde at alpha (paper Table 4 caption)
    # 3: training noise from the shared feeder engine/stacked.Feed (new random streams; issue 14)
    # 4: the mixture energy and the compression features train through fused autograd nodes
    #    (MixtureEnergy, CompressionFeatures; issue 11): same function, other rounding
    version = "4"
    cost = 3.0  # per iteration, relative to AE (measured 2.9-3.0 x, issue 11): orders the groups, never a result

    # The objective J that Adam minimises: if it never decreases the run is broken. Its terms alone may
    # legitimately rise (the reconstruction error when the covariance penalty dominates, the energy
    # while the representation spreads out).
    monitored_losses = ["loss"]
    parameter_constraints = {**TRAINING_CONSTRAINTS, "n_gmm": [Interval(int, 1, None)],
                             "est_hidden": [Interval(int, 1, None)],
                             "dropout": [Interval(float, 0, 1, closed="left")],
                             "lambda_energy": [Interval(float, 0, None)],
                             "lambda_cov_diag": [Interval(float, 0, None)],
                             "cov_eps": [Interval(float, 0, None)],
                             "gradients": GRADIENTS_CONSTRAINT}
    #: What an accelerator (``gradients.py``: "hand", with ``features`` and ``mixture_terms``) computes.
    definitions = DEFINITIONS

    def __init__(self, n_gmm: int = 4, est_hidden: int = 10, dropout: float = 0.5,
                 lambda_energy: float = 0.1, lambda_cov_diag: float = 0.005, cov_eps: float = 1e-6,
                 n_iter: int = 20000, batch_size: int = 128, lr: float = 1e-3,
                 latent_dim: int | None = None, log_every: int = 100, device: str = "auto",
                 random_state: int = 0, gradients: str = "auto"):
        store_params(self, locals())

    def _build(self, shape, gens):
        return nn.ModuleDict({"E": Encoder(shape, gens), "G": Generator(shape, gens),
                              "est": EstimationNet(shape.k + 2, int(self.est_hidden), int(self.n_gmm),
                                                   gens)})

    # ---- the definitions (plain torch; training differentiates them with autograd) -------------
    @staticmethod
    def features(x: torch.Tensor, x_r: torch.Tensor, z_c: torch.Tensor) -> torch.Tensor:
        """z = [z_c, relative Euclidean distance, cosine similarity] (``compression_features``)."""
        return compression_features(x, x_r, z_c)

    def mixture_terms(self, z: torch.Tensor, gamma: torch.Tensor):
        """The mixture part of the objective on a stack's mini-batch, z (S, N, m), gamma (S, N, K) ->
        (mean_i E(z_i) (S,), sum_k sum_j 1 / (Sigma_kjj + cov_eps) (S,)), with phi, mu, Sigma from the
        memberships and the guarded Cholesky factor of Sigma."""
        eps = float(self.cov_eps)
        phi, mu, sigma = mixture_from_memberships(z, gamma)
        e = energy(z, phi, mu, guarded_cholesky(sigma, eps)).mean(dim=1)
        return e, (1.0 / (sigma.diagonal(dim1=-2, dim2=-1) + eps)).sum(dim=(-2, -1))

    def represent(self, nets, x, defs=None):
        """x (S, B, d) -> (z (S, B, k+2), x' (S, B, d)); ``defs`` supplies ``features`` (default: this
        detector's definition; in training, the accelerator's when one is used)."""
        z_c, _ = nets["E"](x)  # (S, B, k): mu head only
        x_r = nets["G"](z_c)
        return (defs or self).features(x, x_r, z_c), x_r

    def objective(self, nets, x, keep, defs=None):
        """J = mean_i ||x_i - x'_i||^2 + lambda_energy mean_i E(z_i) + lambda_cov_diag sum 1 / Sigma_kjj
        per member (S,), and its terms, on a mini-batch x (S, b, d) with dropout's keep mask (S, b,
        hidden), already scaled by 1 / (1 - p). ``defs``: as in ``represent``."""
        z, x_r = self.represent(nets, x, defs)
        gamma = nets["est"](z, keep)  # (S, b, K)
        e, cov_diag = (defs or self).mixture_terms(z, gamma)  # (S,)
        recon = squared_error(x, x_r).mean(dim=1)  # (S,)
        loss = recon + self.lambda_energy * e + self.lambda_cov_diag * cov_diag
        return loss, {"loss": loss, "recon": recon, "energy": e, "cov_diag": cov_diag}

    # ---- training -------------------------------------------------------------------------------
    def _train(self, nets, X, seeds, log):
        """One Adam step on J per mini-batch (``objective``), through the "hand" accelerator's fused
        nodes when ``uses_hand_gradients()``, else through autograd over the definitions."""
        p = float(self.dropout)
        hidden = int(self.est_hidden)
        defs = self.accelerators["hand"](self) if self.uses_hand_gradients() else self

        def loss_terms(x, noise):  # x (S, b, d)
            keep = (rows(noise["u"], x.shape[1]) >= p).to(x.dtype) / (1.0 - p)  # (S, b, hidden)
            return self.objective(nets, x, keep, defs)

        self._descend(nets, X, seeds, log, loss_terms, noise={"u": ("uniform", hidden)})

    def _features(self, X: torch.Tensor) -> torch.Tensor:
        """Deterministic z of rows X (n, d) -> (n, k+2) float64 (eval mode: no dropout)."""
        return chunked(lambda x: self.represent(self.networks_, x.unsqueeze(0))[0][0].double(), X,
                       SCORE_CHUNK)

    def _after_fit(self, X):
        """Fit phi, mu, Sigma on every training row, after training, for scoring."""
        z = self._features(X)  # (n, m) float64
        est = self.networks_["est"]
        gamma = torch.cat([est(z[i:i + SCORE_CHUNK].float().unsqueeze(0))[0].double()
                           for i in range(0, len(z), SCORE_CHUNK)])  # (n, K)
        phi, mu, sigma = mixture_from_memberships(z, gamma)
        self.phi_ = phi.cpu().numpy()
        self.mu_ = mu.cpu().numpy()
        self.sigma_ = sigma.cpu().numpy()
        self._chol = guarded_cholesky(sigma, float(self.cov_eps))  # (K, m, m)
        self._phi, self._mu = phi, mu

    def _score(self, X):
        z = self._features(X)  # (n, m)
        return chunked(lambda zc: energy(zc, self._phi, self._mu, self._chol), z, 2048)
