"""GAN baseline on adVAE's backbone (Wang et al., KBS 2020, Section 4.4; Goodfellow et al., NIPS 2014).

Networks (engine/backbone.py): generator = adVAE's G (k -> h -> h -> d, Sigmoid output, inputs are
MinMax-scaled), latent z ~ N(0, I) of size k; discriminator D = d -> h -> h -> 1 with a Sigmoid, D(x) =
probability that x is a real (training) row. D returns its logit here and the Sigmoid is applied inside
the losses (binary cross-entropy with logits): the same function, numerically stable. (``softplus`` and
``sigmoid`` are engine/invariant.py's stack-size invariant versions, so a member fits as it would alone.)

Losses per mini-batch (non-saturating form, Goodfellow et al. Section 3):
    loss_D = -mean log D(x) - mean log(1 - D(G(z)))
    loss_G = -mean log D(G(z))
One iteration = one D step then one G step on the same mini-batch of b real rows and b latent draws
(D re-evaluated on G(z) after its step). Adam, lr 1e-3, default betas, batch 128, 20000 iterations:
adVAE's settings (the paper's deep baselines share them; Goodfellow et al. give no tabular recipe).

Score: -log D(x) = softplus(-logit(x)), computed in float64 ("how strongly the discriminator calls a
row fake"; higher = more anomalous). It ranks rows exactly as 1 - D(x) does (both decrease with the
logit) but does not saturate to ties at 0 for very normal rows.

Telemetry: loss_D, loss_G, D_real = mean D(x), D_fake = mean D(G(z)) (before the D step), and
divergence = 2 log 2 - loss_D: at the optimal D this is 2 JSD(data || generator) (Goodfellow et al.,
Theorem 1), i.e. the discriminator's estimate of how far the generator is from the data.
Health check (``monitored_losses``): neither adversarial loss is expected to decrease in a healthy run
(loss_D falls while D learns, then rises back towards 2 log 2 as G catches up; loss_G rises as D
improves), so the flag watches ``divergence``: it rises from ~0 while D learns and must fall as G
approaches the data. If it never falls below its early level, G never got closer to the data than it
was at the start (D won the game, vanishing gradients, or G stuck), which is a broken run.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from bench.contract.registry import register
from bench.execution.telemetry import LossLog
from engine.backbone import TRAINING_CONSTRAINTS, Discriminator, Generator
from engine.discriminator_scores import StackedDiscriminatorScores, score_constraints
from engine.invariant import StackAdam, sigmoid, softplus
from engine.stacked import Feed, StackedDeepDetector, all_diverged, rows, store_params

_LOG4 = math.log(4.0)  # 2 log 2: loss_D of a discriminator that cannot tell data from generator


@register("gan")
class GAN(StackedDiscriminatorScores, StackedDeepDetector):
    """GAN on adVAE's backbone (G = adVAE's generator, D = d -> h -> h -> 1 Sigmoid); score = -log D(x).

    Parameters: n_iter (20000 generator updates, one D update each), batch_size (128), lr (1e-3, Adam
    for both networks), latent_dim (None -> about d / 3, at most 32: backbone.MAX_LATENT), log_every, device ("auto" = GPU when
    present), random_state (init, batch order, latent noise).
    score: "paper" (-log D(x), the default), "two-sided", "snapshots" (over n_snapshots copies of D,
    20) or "anogan" (latent_steps 500, fm_weight 0.1, latent_lr 0.01): engine/discriminator_scores.py.
    """

    # 3: training noise from the shared feeder engine/stacked.Feed (new random streams; issue 14)
    version = "3"

    monitored_losses = ["divergence"]
    parameter_constraints = {**TRAINING_CONSTRAINTS, **score_constraints(generative=True)}
    cost = 1.75  # per iteration, relative to AE (measured, issue 11): orders the groups, never a result

    def __init__(self, n_iter: int = 20000, batch_size: int = 128, lr: float = 1e-3,
                 latent_dim: int | None = None, log_every: int = 100, device: str = "auto",
                 random_state: int = 0, score: str = "paper", n_snapshots: int = 20,
                 latent_steps: int = 500, fm_weight: float = 0.1, latent_lr: float = 0.01):
        store_params(self, locals())

    def _build(self, shape, gens):
        return nn.ModuleDict({"G": Generator(shape, gens, sigmoid=True),
                              "D": Discriminator(shape, gens, sigmoid=False)})  # D returns logits

    def _train(self, nets, X, seeds, log: LossLog):
        G, D = nets["G"], nets["D"]
        k = G.fc3.weight.shape[1]
        opt_g = StackAdam(G.parameters(), lr=self.lr)
        opt_d = StackAdam(D.parameters(), lr=self.lr)
        opt_g.attach()
        opt_d.attach()
        n_iter = int(self.n_iter)
        feed = Feed(X, int(self.batch_size), n_iter, seeds, noise={"z": ("normal", k)})
        plan = self._snapshot_plan(n_iter)
        for it, (real, noise) in enumerate(feed):  # real (S, b, d)
            fake = G(rows(noise["z"], real.shape[1]))  # (S, b, d)

            # D step: real rows labelled 1, generated rows 0.
            logit_real, logit_fake = D(real), D(fake.detach())  # (S, b) each
            loss_d = softplus(-logit_real).mean(1) + softplus(logit_fake).mean(1)  # (S,)
            opt_d.zero_grad()
            loss_d.sum().backward(inputs=list(D.parameters()))
            opt_d.step()

            # G step (non-saturating): maximise log D(G(z)) under the updated D.
            loss_g = softplus(-D(fake)).mean(1)  # (S,)
            opt_g.zero_grad()
            loss_g.sum().backward(inputs=list(G.parameters()))
            opt_g.step()

            log.record(it, force=it == n_iter - 1, loss_D=loss_d.detach(), loss_G=loss_g.detach(),
                       divergence=_LOG4 - loss_d.detach(),
                       D_real=sigmoid(logit_real.detach()).mean(1),
                       D_fake=sigmoid(logit_fake.detach()).mean(1))
            self._snapshot(nets, it, plan)
            if all_diverged(log):
                break

    @staticmethod
    def _paper_score(logit):
        return softplus(-logit.double())  # -log D(x), (n,)
