"""AE: a deterministic autoencoder on adVAE's backbone.

Wang et al., "adVAE: A self-adversarial variational autoencoder with Gaussian anomaly prior knowledge
for anomaly detection", KBS 190 (2020), Section 4.4: AE uses adVAE's encoder and generator sizes, the
same optimiser (Adam, lr 1e-3), batch size (128) and iteration budget (20000), and scores a row by its
reconstruction error.

AE here: code = the encoder's mu head only (the logvar head exists, so the weights are drawn exactly as
adVAE's, but it is never used or trained); x_r = G(mu); loss = MSE(x, x_r) = per-row sum over features
of (x - x_r)^2, averaged over the batch; score = the same sum of squares for each row.
One iteration = one Adam step on one mini-batch.

Trained as a seed stack by engine/stacked.py (``StackedDeepDetector``), which the other deep methods
share.
"""
from __future__ import annotations

import torch

from bench.contract.registry import register
from engine.stacked import StackedDeepDetector, chunked, store_params


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

    threshold_family = "reconstruction"  # paper policy: kde at alpha (paper Table 4 caption)
    cost = 1  # per iteration, relative to AE (measured, issue 11): orders the groups, never a result

    monitored_losses = ["mse"]  # the only term: a reconstruction that never improves is broken

    def __init__(self, n_iter: int = 20000, batch_size: int = 128, lr: float = 1e-3,
                 latent_dim: int | None = None, log_every: int = 100, device: str = "auto",
                 random_state: int = 0):
        store_params(self, locals())

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
