"""Label-free anomaly scores from a trained discriminator (critic), shared by GAN, WGAN-GP and MO-GAAL
(issue 12). The paper's score (-log D(x), -f(x), 1 - D(x)) stays each method's default; these are
options, selected by the method's ``score`` parameter.

Why (diagnosis, README "Discriminator scores"): a discriminator is trained to separate the training
rows from generated rows. Its value far from both is extrapolation: an anomaly may get a higher or a
lower value than the normal rows, and which one changes during training and with the seed, so the
one-sided paper score ranks anomalies as the most normal in some runs and as the most anomalous in
others. The options:

- ``two-sided``: |D(x) - m| / s, m and s the median and the MAD (x 1.4826) of D's output (logit or
  critic value) on the training rows: atypical in either direction = anomalous. This is the classical
  robust z-score of the output, read as a one-dimensional feature of the row.
- ``snapshots``: the mean over ``n_snapshots`` copies of D taken at evenly spaced iterations of
  training (the last one is the final D) of each copy's two-sided score. A snapshot ensemble (Huang et
  al., "Snapshot Ensembles", ICLR 2017): the direction of the extrapolation changes between snapshots,
  its magnitude far from the data less so, and the average does not depend on where training stopped.
- ``anogan`` (GAN and WGAN-GP, which have a generator of the data): Schlegl et al., "Unsupervised
  Anomaly Detection with Generative Adversarial Networks to Guide Marker Discovery", IPMI 2017,
  Section 2.2: search the latent z minimising
      L(z) = (1 - lambda) * sum |x - G(z)| + lambda * sum |f(x) - f(G(z))|,
  f = the discriminator's last hidden layer (feature matching), lambda = 0.1 and Gamma = 500 steps as
  in the paper; the score is L at the last step. Here z starts at 0 (the prior's mode, so a row's score
  does not depend on its position in the batch or on a seed) and moves by Adam. It asks whether the
  generator can produce the row, which is defined on and off the manifold, instead of reading the
  discriminator's extrapolated value.
EGBAD / ALAD (an encoder trained with the GAN, Zenati et al. 2018) and f-AnoGAN's encoder (Schlegl et
al. 2019) would need a different training, so they are not options of these baselines.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from bench.contract.params import Interval, Options

PAPER = "paper"
SCORES_ALL = (PAPER, "two-sided", "snapshots")
SCORES_GENERATIVE = SCORES_ALL + ("anogan",)

#: MAD -> standard deviation of a normal distribution.
_MAD_SCALE = 1.4826


def score_constraints(generative: bool) -> dict:
    """The ``parameter_constraints`` entries of the score options."""
    out = {"score": [Options(*(SCORES_GENERATIVE if generative else SCORES_ALL))],
           "n_snapshots": [Interval(int, 1, None)]}
    if generative:
        out.update(latent_steps=[Interval(int, 1, None)], fm_weight=[Interval(float, 0, 1)],
                   latent_lr=[Interval(float, 0, None, closed="neither")])
    return out


def snapshot_iterations(n_iter: int, n_snapshots: int) -> set[int]:
    """The (0-based) iterations after which a snapshot is taken: n_snapshots evenly spaced, the last
    one the last iteration (fewer when n_iter < n_snapshots)."""
    n_iter, n = int(n_iter), int(n_snapshots)
    return {-(-(j + 1) * n_iter // n) - 1 for j in range(n)}


def reference(train_out: torch.Tensor) -> tuple[float, float]:
    """(median, scale) of D's output on the training rows (float64). scale = 1.4826 MAD; if the MAD is
    0 (more than half the rows tie) the mean absolute deviation from the median, else 1."""
    v = train_out.double().cpu()
    med = float(v.median()) if len(v) else 0.0
    dev = (v - med).abs()
    scale = _MAD_SCALE * float(dev.median()) if len(v) else 0.0
    if not scale > 0:
        scale = float(dev.mean()) if len(v) else 0.0
    return med, (scale if scale > 0 else 1.0)


def two_sided(out: torch.Tensor, ref: tuple[float, float]) -> torch.Tensor:
    """|out - median| / scale in float64, (n,)."""
    med, scale = ref
    return (out.double() - med).abs() / scale


def latent_search(G, features, X: torch.Tensor, k: int, steps: int, fm_weight: float,
                  lr: float, chunk: int = 4096) -> torch.Tensor:
    """AnoGAN's score of each row of X (n, d) with S = 1 networks: G ((1, m, k) -> (1, m, d)) and
    ``features`` ((1, m, d) -> (1, m, h)). Returns the loss L(z) at the last step, (n,) float64.
    Rows are independent (their own z, Adam is elementwise), so chunking changes nothing."""
    out = []
    for start in range(0, len(X), chunk):
        x = X[start:start + chunk].unsqueeze(0)  # (1, c, d)
        with torch.no_grad():
            fx = features(x)
        z = torch.zeros(1, x.shape[1], k, device=x.device, requires_grad=True)
        opt = torch.optim.Adam([z], lr=lr)
        for step in range(int(steps) + 1):
            with torch.enable_grad():
                gz = G(z)
                loss = ((1.0 - fm_weight) * (x - gz).abs().sum(-1)
                        + fm_weight * (fx - features(gz)).abs().sum(-1))  # (1, c)
                if step == steps:
                    break
                opt.zero_grad()
                loss.sum().backward(inputs=[z])
            opt.step()
        out.append(loss.detach()[0].double())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def ensemble(outs: list[torch.Tensor], refs: list[tuple[float, float]]) -> torch.Tensor:
    """Mean over snapshots of their two-sided scores, (n,) float64."""
    return torch.stack([two_sided(o, r) for o, r in zip(outs, refs)]).mean(0)


def frozen_copy(module: nn.Module) -> nn.Module:
    """A detached copy of a (stacked) module with parameters of its own (a snapshot): training's
    parameters are views into the optimizer's flat buffer, so they are cloned."""
    out = copy.deepcopy(module)
    for m in out.modules():
        for name, p in list(m.named_parameters(recurse=False)):
            setattr(m, name, nn.Parameter(p.detach().clone(), requires_grad=False))
    return out


class StackedDiscriminatorScores:
    """Mixin of the stacked GANs (GAN, WGAN-GP): the ``score`` options on networks G and D
    (engine/backbone.py Discriminator, fc1 -> fc2 -> out). The class defines ``_paper_score(out)``
    (D's raw output, (n,) -> the paper's score, float64). Call ``self._snapshot(nets, it)`` after each
    training iteration."""

    def _snapshot_plan(self, n_iter: int) -> set[int]:
        return snapshot_iterations(n_iter, self.n_snapshots) if self.score == "snapshots" else set()

    def _snapshot(self, nets: nn.ModuleDict, it: int, plan: set[int]) -> None:
        if it in plan:
            if "snapshots" not in nets:
                nets["snapshots"] = nn.ModuleList()
            nets["snapshots"].append(frozen_copy(nets["D"]))

    @staticmethod
    def _out(D, X: torch.Tensor) -> torch.Tensor:
        """D's raw output (logit or critic value) of S = 1 network D on rows (n, d): (n,)."""
        return torch.cat([D(X[i:i + 8192].unsqueeze(0))[0] for i in range(0, len(X), 8192)]) \
            if len(X) else torch.zeros(0)

    def _after_fit(self, X: torch.Tensor) -> None:
        if self.score == "two-sided":
            self.reference_ = [reference(self._out(self.networks_["D"], X))]
        elif self.score == "snapshots":
            self.reference_ = [reference(self._out(D, X)) for D in self.networks_["snapshots"]]

    def _score(self, X: torch.Tensor) -> torch.Tensor:
        nets = self.networks_
        if self.score == "two-sided":
            return two_sided(self._out(nets["D"], X), self.reference_[0])
        if self.score == "snapshots":
            return ensemble([self._out(D, X) for D in nets["snapshots"]], self.reference_)
        if self.score == "anogan":
            G, D = nets["G"], nets["D"]
            return latent_search(G, lambda x: torch.relu(D.fc2(torch.relu(D.fc1(x)))), X,
                                 G.fc3.weight.shape[1], self.latent_steps, float(self.fm_weight),
                                 float(self.latent_lr))
        return self._paper_score(self._out(nets["D"], X))
