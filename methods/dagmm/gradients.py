"""DAGMM's hand-written gradients: an optional accelerator of methods/dagmm/model.py.

The model file defines the compression features (``compression_features``) and the mixture part of
the objective (``mixture_from_memberships``, ``guarded_cholesky``, ``energy``, the penalty on the
covariances' diagonals: ``DAGMM.mixture_terms``) as plain torch, and trains through autograd over
them. This file computes the SAME functions as two fused autograd nodes with written-out backward
passes (``CompressionFeatures``, ``MixtureEnergy``) and registers them as the accelerator ``hand``,
which ``gradients="auto"`` (the default) uses wherever those definitions are the model's (a subclass
that overrides one trains through autograd). Composed, they are about a hundred tiny operations per
mini-batch whose cost is autograd's per-operation bookkeeping; fused, DAGMM costs 2.9-3.0x AE per
iteration instead of 4.3-4.4x (issue 11; docs/performance.md). tests/test_deep_baselines.py checks
values and gradients against the composed helpers in float64, also on the guard's fallback paths, and
tests/test_gan_accelerators.py one training step and short fits of the two paths.
"""
from __future__ import annotations

import math

import torch

from engine.invariant import bmm
from methods.dagmm.model import (_NORM_FLOOR, _PHI_FLOOR, DAGMM, _guard_target, _pick_jitter,
                                 compression_features)


class CompressionFeatures(torch.autograd.Function):
    """``compression_features`` as one autograd node (same forward, the same function's gradient
    written out): about fifteen tiny operations per mini-batch whose autograd bookkeeping costs more
    than their arithmetic. x is data (no gradient); gradients flow to x_r and z_c.
    With dist = sqrt(max(||x - x_r||^2, f^2)), n_r = max(||x_r||, f) (f = _NORM_FLOOR):
        d rel / d x_r = (x_r - x) / (||x|| dist)  where ||x - x_r||^2 >= f^2, else 0
        d cos / d x_r = x / (||x|| n_r) - cos x_r / n_r^2 (the second term where ||x_r|| >= f)."""

    @staticmethod
    def forward(ctx, x, x_r, z_c):
        z = compression_features(x, x_r, z_c)
        ctx.save_for_backward(x, x_r, z)
        return z

    @staticmethod
    def backward(ctx, g):
        x, x_r, z = ctx.saved_tensors
        k = z.shape[-1] - 2
        x_norm = x.norm(dim=-1).clamp_min(_NORM_FLOOR).unsqueeze(-1)
        raw_r = x_r.norm(dim=-1, keepdim=True)
        xr_norm = raw_r.clamp_min(_NORM_FLOOR)
        diff = x_r - x
        sq = (diff ** 2).sum(dim=-1, keepdim=True)
        dist = torch.sqrt(sq.clamp_min(_NORM_FLOOR ** 2))
        g_rel = g[..., k:k + 1] * (sq >= _NORM_FLOOR ** 2).to(g.dtype) / (x_norm * dist)
        g_cos = g[..., k + 1:k + 2]
        cos = z[..., k + 1:k + 2]
        g_xr = (g_rel * diff + g_cos * (x / (x_norm * xr_norm))
                - (g_cos * cos * (raw_r >= _NORM_FLOOR).to(g.dtype) / xr_norm ** 2) * x_r)
        return None, g_xr, g[..., :k]


def _diagonal_blocks(big: torch.Tensor, K: int, m: int) -> torch.Tensor:
    """The K diagonal (m, m) blocks of (S, K m, K m) matrices -> (S, K, m, m), contiguous."""
    S = big.shape[0]
    return big.view(S, K, m, K, m).diagonal(dim1=1, dim2=3).permute(0, 3, 1, 2).contiguous()


def _block_diagonal(blocks: torch.Tensor) -> torch.Tensor:
    """(S, K, m, m) -> the (S, K m, K m) block-diagonal matrices with those blocks."""
    S, K, m, _ = blocks.shape
    out = blocks.new_zeros(S, K, m, K, m)
    out.diagonal(dim1=1, dim2=3).copy_(blocks.permute(0, 2, 3, 1))
    return out.view(S, K * m, K * m)


class MixtureEnergy(torch.autograd.Function):
    """The mixture part of a stack's training objective as ONE autograd node:
    z (S, N, m), gamma (S, N, K) -> (e (S,), cov_diag (S,)) with
        e = mean_i E(z_i) under phi, mu, Sigma = mixture_from_memberships(z, gamma) and the factor
            guarded_cholesky(Sigma, eps)   (the sample energy, ``energy(...).mean(1)``),
        cov_diag = sum_k sum_j 1 / (Sigma_kjj + cov_eps).
    The same function as composing those helpers under autograd, with the backward pass written out
    (below). Why: composed, these are about a hundred tiny operations per mini-batch (K covariances of
    m x m, their factors, the per-row Mahalanobis terms) whose cost is per-operation overhead, not
    arithmetic (profile: docs/performance.md). Here all K components go through each operation at once,
    and the per-component matrix products run as ONE product per member with block-diagonal
    matrices (S products of (K m)-wide matrices instead of S K products of m-wide ones: more
    arithmetic, far fewer calls). Every operation is stack-size invariant (engine/invariant.py:
    elementwise, reductions inside a member, ``bmm``, batched LAPACK).

    The Mahalanobis terms use the precision A_k^-1 (``cholesky_inverse`` of the guarded factor):
    W_ik = A_k^-1 d_ik, maha_ik = d_ik . W_ik, d_ik = z_i - mu_k, A_k = the factorised matrix.
    Backward, with q_ik = (g_e / N) r_ik (r = the rows' responsibilities, softmax over k of the
    log-terms):
        dL/dd_ik = q_ik W_ik,   dL/dA_k = 1/2 (sum_i q_ik) A_k^-1 - 1/2 sum_i q_ik W_ik W_ik^T,
        dL/dphi_k = -(sum_i q_ik) / phi_k (0 under the floor),  dL/dSigma_kjj += -g_c / (Sigma_kjj + eps)^2,
    then through Sigma = (gamma * d)^T d / n_k, mu = gamma^T z / n_k, phi = n_k / N, n_k = sum_i gamma_ik
    as autograd would (a matrix on the diagonal fallback passes only its diagonal's gradient).
    ``tests/test_deep_baselines.py`` checks values and gradients against the composed helpers."""

    @staticmethod
    def forward(ctx, z, gamma, eps: float, cov_eps: float):
        S, N, m = z.shape
        K = gamma.shape[-1]
        n_k = gamma.sum(dim=1)  # (S, K)
        denom = n_k.clamp_min(torch.finfo(z.dtype).tiny)
        phi = n_k / N
        mu = bmm(gamma.transpose(1, 2), z) / denom.unsqueeze(-1)  # (S, K, m)
        D = z.unsqueeze(2) - mu.unsqueeze(1)  # (S, N, K, m): d_ik
        Dw = (D * gamma.unsqueeze(-1)).view(S, N, K * m)  # gamma_ik d_ik
        sigma = _diagonal_blocks(bmm(Dw.transpose(1, 2), D.view(S, N, K * m)), K, m)
        sigma = sigma / denom[..., None, None]  # (S, K, m, m)
        eye = torch.eye(m, dtype=z.dtype, device=z.device)
        chol, info = torch.linalg.cholesky_ex(sigma + eps * eye)  # the guard's first attempt
        fallback = None
        if not bool(((info == 0) & torch.isfinite(chol).all(dim=-1).all(dim=-1)).all()):
            jitter, fallback = _pick_jitter(sigma, eps)
            chol = torch.linalg.cholesky_ex(_guard_target(sigma, jitter, fallback))[0]
        prec = torch.cholesky_inverse(chol)  # (S, K, m, m)
        W = bmm(D.view(S, N, K * m), _block_diagonal(prec)).view(S, N, K, m)  # A_k^-1 d_ik
        maha = (W * D).sum(dim=-1)  # (S, N, K)
        log_det = 2.0 * torch.log(chol.diagonal(dim1=-2, dim2=-1)).sum(dim=-1)  # (S, K)
        log_norm = 0.5 * (log_det + m * math.log(2.0 * math.pi))
        log_terms = (torch.log(phi.clamp_min(_PHI_FLOOR)).unsqueeze(1) - 0.5 * maha
                     - log_norm.unsqueeze(1))  # (S, N, K)
        lse = torch.logsumexp(log_terms, dim=-1)  # (S, N)
        e = -lse.mean(dim=1)
        s_diag = sigma.diagonal(dim1=-2, dim2=-1)  # (S, K, m)
        cov_diag = (1.0 / (s_diag + cov_eps)).sum(dim=(-2, -1))
        ctx.save_for_backward(z, gamma, n_k, denom, phi, mu, D, sigma, prec, W, log_terms, lse)
        ctx.fallback, ctx.cov_eps = fallback, cov_eps
        return e, cov_diag

    @staticmethod
    def backward(ctx, g_e, g_c):
        z, gamma, n_k, denom, phi, mu, D, sigma, prec, W, log_terms, lse = ctx.saved_tensors
        S, N, K, m = D.shape
        q = torch.exp(log_terms - lse.unsqueeze(-1)) * (g_e / N)[:, None, None]  # (S, N, K)
        Q = q.sum(dim=1)  # (S, K)
        Wq = W * q.unsqueeze(-1)  # (S, N, K, m): dL/dd_ik through the energy
        outer = _diagonal_blocks(bmm(Wq.view(S, N, K * m).transpose(1, 2), W.view(S, N, K * m)), K, m)
        d_a = 0.5 * (Q[..., None, None] * prec - outer)  # dL/dA (S, K, m, m)
        s_diag = sigma.diagonal(dim1=-2, dim2=-1)
        if ctx.fallback is not None:  # where(fallback, diag_embed(clamp_min(diag, 0)), sigma)
            kept = torch.diag_embed(d_a.diagonal(dim1=-2, dim2=-1) * (s_diag >= 0).to(d_a.dtype))
            d_a = torch.where(ctx.fallback[..., None, None], kept, d_a)
        pen = -g_c[:, None, None] / (s_diag + ctx.cov_eps) ** 2  # (S, K, m)
        G = (d_a + torch.diag_embed(pen)) / denom[..., None, None]  # dL/d(Dw^T D), symmetric
        d_denom = -(G * sigma).sum(dim=(-2, -1))  # (S, K)
        GD = bmm(D.view(S, N, K * m), _block_diagonal(G)).view(S, N, K, m)  # G_k d_ik
        d_D = Wq + 2.0 * gamma.unsqueeze(-1) * GD  # (S, N, K, m)
        d_gamma = (GD * D).sum(dim=-1)  # (S, N, K): d_ik^T G_k d_ik
        d_M = -d_D.sum(dim=1) / denom.unsqueeze(-1)  # dL/d(gamma^T z) (S, K, m)
        d_denom = d_denom - (d_M * mu).sum(dim=-1)
        d_gamma = d_gamma + bmm(z, d_M.transpose(1, 2))  # (S, N, K)
        dz = d_D.sum(dim=2) + bmm(gamma, d_M)  # (S, N, m)
        d_phi = -Q / phi * (phi >= _PHI_FLOOR).to(Q.dtype)
        d_n = d_denom * (n_k >= torch.finfo(n_k.dtype).tiny).to(Q.dtype) + d_phi / N  # (S, K)
        return dz, d_gamma + d_n.unsqueeze(1), None, None


@DAGMM.accelerator("hand")
class HandGradients:
    """The ``hand`` accelerator: ``DAGMM.features`` and ``DAGMM.mixture_terms`` as the fused nodes
    (same forward values, hand-written backward)."""

    def __init__(self, det: DAGMM):
        self.cov_eps = float(det.cov_eps)

    @staticmethod
    def features(x: torch.Tensor, x_r: torch.Tensor, z_c: torch.Tensor) -> torch.Tensor:
        return CompressionFeatures.apply(x, x_r, z_c)

    def mixture_terms(self, z: torch.Tensor, gamma: torch.Tensor):
        return MixtureEnergy.apply(z, gamma, self.cov_eps, self.cov_eps)
