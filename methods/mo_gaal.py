"""MO-GAAL: Multiple-Objective Generative Adversarial Active Learning.

Liu, Li, Zhou, Jiang, Sun, Wang, He, "Generative Adversarial Active Learning for Unsupervised
Outlier Detection", IEEE TKDE 32(8), 2020 (online 2019), Section 4.2 and Algorithm 1; the authors'
Keras code is github.com/leibinghe/GAAL-based-outlier-detection (MO-GAAL.py, PARAMETERS.txt).

The method
----------
A discriminator D (probability that a row is real data) is trained against k sub-generators
G_0..G_{k-1} that produce "potential outliers". Each iteration:

1. Quantile targets. D scores every training row; T_i is the (i/k) quantile of those outputs, so
   T_0 = min D(x) (the least typical real row) ... T_{k-1} = the 0.9 quantile (k = 10).
2. Discriminator step (dynamic weighting). A batch of B real rows (label 1) is joined by B potential
   outliers (label 0), of which sub-generator G_i contributes the share n_i proportional to (k - i):
   generators aiming at the low quantiles (the fringe of the data) get the most weight in D's
   loss, the one imitating typical rows the least. Binary cross-entropy, mean over 2B rows.
3. Generator step. Every G_i gets fresh noise z ~ U(0, 1)^d and minimises the cross-entropy between
   D(G_i(z)) and its own target T_i, i.e. it learns to generate rows that D rates as the (i/k)
   quantile of the real data: k shells from the data's fringe inwards.
4. Early generator stop. After ``stop_epochs`` epochs the sub-generators freeze (their loss is still
   recorded); D keeps training for the remaining ``epochs - stop_epochs`` epochs against this fixed
   reference distribution.

Score: OS(x) = 1 - D(x) (Algorithm 1), higher = more anomalous. Computed as sigmoid(-logit) in float64
so very normal rows do not all tie at exactly 0.

Networks, optimiser and schedule are the authors' (their recommendation overrides this project's
"Adam, lr 1e-3, batch 128, 20000 iterations" default for deep baselines):
  G_i : d -> d, ReLU, d -> d, ReLU; weights initialised to the identity, biases 0 (Keras default), so
        at the start G_i(z) = z is the uniform reference distribution on the unit cube (our inputs
        are MinMax-scaled to [0, 1]).
  D   : d -> ceil(sqrt(n)) ReLU -> 1 sigmoid; LeCun-normal weights (Keras VarianceScaling(1, fan_in,
        normal) is a truncated normal), biases 0.
  SGD with momentum 0.9 and Keras's time-based decay 1e-6; lr_d = 0.01, lr_g = 1e-4; batch
  min(500, n), n // batch full batches per epoch; epochs = 3 * stop_epochs. The authors tune
  stop_epochs per dataset (9 to 1500 in PARAMETERS.txt, seemingly by watching the AUC they print each
  epoch, i.e. with labels); we use the default of their script, 25, everywhere.

Deviations from the authors' script, each for determinism or cleanliness, none tuned on test labels:
the rows are reshuffled every epoch from the run's seed (the script shuffles once at load time, so
the same n % B rows are never seen); shares n_i are proportional to k - i by largest remainder (the
script's integer formula gives the last generator the rounding leftover); the generators stop after
exactly ``stop_epochs`` epochs (the script's flag trips after the first batch of the next epoch);
losses use logits (the script's Keras clips probabilities at 1e-7).

What we found about PyOD's MO_GAAL (pyod 3.6.7, pyod/models/mo_gaal.py)
-------------------------------------------------------------------------
On the paper split PyOD's ``MO_GAAL().decision_function`` gives test AUC 0.096 / 0.100 / 0.109 on
cardio and 0.022 / 0.030 / 0.021 on satellite (torch seeds 0 / 1 / 2), 0.43 / 0.42 / 0.44 on letter:
it ranks anomalies as the most normal. The cause is the score sign, not the clean training regime
and not the training itself:
- PyOD labels real rows 1 and generated rows 0, exactly like the authors, so D(x) is the
  probability of being *normal*; then it returns D(x) itself as "higher = more abnormal" (also
  ``decision_scores_``, ``threshold_`` and ``labels_``). The paper's score is 1 - D(x), and the
  authors' AUC code counts pairs with D(outlier) < D(inlier). Reported upstream as
  yzhao062/pyod#119 (2019) and #237 (2020); still unfixed in 3.6.7.
- Negating PyOD's own scores from the very same fits gives AUC 0.904 / 0.900 / 0.891 (cardio) and
  0.979 / 0.970 / 0.979 (satellite), 0.57 / 0.58 / 0.56 (letter); mean D on the cardio test normals
  0.93 vs anomalies 0.54 (seed 0): D learned "normal data vs reference distribution", as designed.
- The same inversion appears in the authors' own contaminated, transductive regime (fit on all rows
  anomalies included, score those rows): AUC of D(x) 0.14 (cardio), 0.05 (satellite), 0.41 (letter);
  the 10% of rows PyOD's ``labels_`` flags as outliers hold 3.8% anomalies on cardio (base rate 9.6%)
  and none on satellite (base 1.5%). Clean training is therefore not the problem.
Smaller differences from the authors (no effect on the sign): PyOD initialises biases uniformly
instead of 0 and D's first layer with He instead of LeCun scaling, trains G_i on its own D-step noise
slice (as few as 14 rows) instead of a fresh full batch, drops the lr decay, keeps the last partial
batch, and has no seed parameter.

What this implementation does on the paper split (test AUC / AP, seeds 0 / 1 / 2, defaults)
------------------------------------------------------------------------------------------
  cardio    AUC 0.885 / 0.887 / 0.854   AP 0.861 / 0.866 / 0.833   (PyOD, sign fixed: 0.898 mean AUC)
  letter    AUC 0.574 / 0.552 / 0.569   AP 0.267 / 0.254 / 0.266   (PyOD, sign fixed: 0.571)
  satellite AUC 0.984 / 0.987 / 0.985   AP 0.839 / 0.860 / 0.853   (PyOD, sign fixed: 0.976)
  optdigits AUC 0.279 / 0.497 / 0.223   AP 0.084 / 0.118 / 0.079   (PyOD, sign fixed: 0.403)
  pendigits AUC 0.959 / 0.917 / 0.943   AP 0.584 / 0.526 / 0.512   (PyOD, sign fixed: 0.876)
With the authors' lr_g = 1e-4 and 25 generator epochs (50 updates on cardio and letter, 200 on
optdigits) the sub-generators barely leave their identity initialisation (mean |w - I| 4e-4 on cardio,
1.4e-4 on letter) and never reach their targets (cardio: D(G_i(z)) 0.05-0.06 for every i against
T_i from 0.36 to 0.97). The reference distribution therefore stays close to the uniform cube, and
D is in effect a "data vs uniform noise" classifier: good where anomalies lie between the data and
the cube's bulk (cardio, satellite, pendigits), weak on letter (global detectors are weak there too:
IForest 0.64, OCSVM 0.48, LOF 0.89 on the same split), and below chance on optdigits, where the
digit-0 anomalies sit farther from the training rows (mean nearest-neighbour distance 1.94 vs 1.02
for test normals) but on the data side of D's boundary (mean score 0.024 vs 0.075 for normals).
Longer generator training is no cure (seed 0, stop_epochs 100 / 400: cardio 0.729 / 0.849, letter
0.564 / 0.717, satellite 0.968 / 0.953, optdigits 0.577 / 0.389, pendigits 0.376 / 0.423), so the
default stays the authors' 25; those numbers use test labels and were not used to pick anything.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from bench.contract.base import Detector
from bench.contract.params import Interval
from bench.contract.registry import register
from bench.execution.telemetry import LossLog
from engine.backbone import TRAINING_CONSTRAINTS, member_generators, pick_device
from engine.discriminator_scores import (ensemble, frozen_copy, reference, score_constraints,
                                          snapshot_iterations, two_sided)

#: Rows per chunk when scoring (D is tiny; this only bounds memory on very large inputs).
_SCORE_CHUNK = 65536


class SubGenerators(nn.Module):
    """k sub-generators stacked: z (k, m, d) -> x (k, m, d), each d -> d ReLU -> d ReLU with identity
    weights and zero biases at initialisation (the authors' Keras Identity initialiser)."""

    def __init__(self, k: int, d: int):
        super().__init__()
        eye = torch.eye(d).expand(k, d, d).clone()
        self.w1 = nn.Parameter(eye.clone())  # (k, d, d), x @ w like Keras Dense
        self.b1 = nn.Parameter(torch.zeros(k, 1, d))
        self.w2 = nn.Parameter(eye)
        self.b2 = nn.Parameter(torch.zeros(k, 1, d))

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (k, m, d) -> (k, m, d)
        h = torch.relu(torch.baddbmm(self.b1, z, self.w1))
        return torch.relu(torch.baddbmm(self.b2, h, self.w2))


class GAALDiscriminator(nn.Module):
    """D: x (..., d) -> logit (...); d -> ceil(sqrt(n)) ReLU -> 1. LeCun (truncated) normal weights
    drawn from the run's generator, zero biases."""

    def __init__(self, d: int, hidden: int, generator: torch.Generator):
        super().__init__()
        self.fc1 = nn.Linear(d, hidden)
        self.fc2 = nn.Linear(hidden, 1)
        with torch.no_grad():
            for layer in (self.fc1, self.fc2):
                std = 1.0 / math.sqrt(layer.in_features)
                nn.init.trunc_normal_(layer.weight, 0.0, std, -2 * std, 2 * std, generator=generator)
                layer.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., d) -> (...) logits
        return self.fc2(torch.relu(self.fc1(x))).squeeze(-1)


def generator_shares(batch: int, k: int) -> list[int]:
    """Dynamic weighting: how many of the ``batch`` potential outliers G_i contributes to D's step,
    proportional to (k - i), rounded by largest remainder so the shares sum to ``batch``."""
    weights = np.arange(k, 0, -1, dtype=float)  # k, k-1, ..., 1
    exact = batch * weights / weights.sum()
    shares = np.floor(exact).astype(int)
    order = np.argsort(-(exact - shares), kind="stable")
    shares[order[:batch - shares.sum()]] += 1
    return shares.tolist()


@register("mo-gaal")
class MOGAAL(Detector):
    """MO-GAAL (Liu et al., TKDE 2019): k sub-generators, early generator stop, score 1 - D(x).

    Parameters (defaults are the authors'; see the module docstring):
    k: number of sub-generators (10). stop_epochs: epochs after which the sub-generators freeze (25).
    epochs: total epochs (None -> 3 * stop_epochs). lr_d, lr_g: SGD learning rates (0.01, 1e-4).
    momentum: SGD momentum (0.9). decay: Keras time-based lr decay, lr / (1 + decay * step) (1e-6).
    batch_size: real rows per batch, capped at n (500). log_every: telemetry period in iterations (1:
    runs are only a few hundred iterations long). device: "auto" = GPU when present.
    random_state: seed of the weight init, noise and batch order.
    score: "paper" (1 - D(x), the default), "two-sided" or "snapshots" (over n_snapshots copies of D,
    20): engine/discriminator_scores.py.
    """

    version = "2"  # 2: inputs scaled by sklearn's MinMaxScaler (ulp-level change)
    quick_params = {"stop_epochs": 3}
    monitored_losses = ["loss_D"]
    parameter_constraints = {
        "k": [Interval(int, 1, None)], "stop_epochs": [Interval(int, 0, None)],
        "epochs": [Interval(int, 1, None), None], "lr_d": TRAINING_CONSTRAINTS["lr"],
        "lr_g": TRAINING_CONSTRAINTS["lr"], "momentum": [Interval(float, 0, 1)],
        "decay": [Interval(float, 0, None)],
        **{k: TRAINING_CONSTRAINTS[k] for k in ("batch_size", "log_every", "device", "random_state")},
        **score_constraints(generative=False)}

    def _check_combinations(self):
        if self.epochs is None and self.stop_epochs < 1:
            raise self._invalid("stop_epochs must be >= 1 when epochs is None (epochs = 3 * stop_epochs)")

    def __init__(self, k: int = 10, stop_epochs: int = 25, epochs: int | None = None,
                 lr_d: float = 0.01, lr_g: float = 1e-4, momentum: float = 0.9, decay: float = 1e-6,
                 batch_size: int = 500, log_every: int = 1, device: str = "auto",
                 random_state: int = 0, score: str = "paper", n_snapshots: int = 20):
        self.k = k
        self.stop_epochs = stop_epochs
        self.epochs = epochs
        self.lr_d = lr_d
        self.lr_g = lr_g
        self.momentum = momentum
        self.decay = decay
        self.batch_size = batch_size
        self.log_every = log_every
        self.device = device
        self.random_state = random_state
        self.score = score
        self.n_snapshots = n_snapshots

    def fit(self, X: np.ndarray) -> "MOGAAL":
        self.validate_params()
        X = np.asarray(X, dtype=np.float32)
        n, d = X.shape
        k = int(self.k)
        epochs = 3 * int(self.stop_epochs) if self.epochs is None else int(self.epochs)
        if n < 2:
            raise ValueError(f"mo-gaal needs at least 2 training rows, got {n}")
        device = pick_device(self.device)
        self.device_ = str(device)
        gen = member_generators([self.random_state])[0]  # CPU generator: init and noise
        rng = np.random.default_rng(self.random_state)  # batch order

        D = GAALDiscriminator(d, math.ceil(math.sqrt(n)), gen).to(device)
        G = SubGenerators(k, d).to(device)
        opt_d = torch.optim.SGD(D.parameters(), lr=self.lr_d, momentum=self.momentum)
        opt_g = torch.optim.SGD(G.parameters(), lr=self.lr_g, momentum=self.momentum)

        X_all = torch.from_numpy(X).to(device)  # (n, d)
        B = min(int(self.batch_size), n)
        n_batches = n // B
        shares = generator_shares(B, k)
        bounds = np.cumsum([0] + shares)  # G_i's slice of the D-step noise: bounds[i]:bounds[i+1]
        probs = torch.arange(k, dtype=torch.float32, device=device) / k  # quantile levels i/k
        labels = torch.cat([torch.ones(B), torch.zeros(B)]).to(device)  # (2B,) real 1, generated 0

        log = LossLog(1, every=self.log_every)
        plan = (snapshot_iterations(epochs * n_batches, self.n_snapshots)
                if self.score == "snapshots" else set())
        snapshots = []
        it = 0
        g_steps = 0
        for epoch in range(epochs):
            train_generators = epoch < self.stop_epochs
            perm = rng.permutation(n)
            for b in range(n_batches):
                real = X_all[torch.from_numpy(perm[b * B:(b + 1) * B]).to(device)]  # (B, d)
                decay = 1.0 / (1.0 + self.decay * it)

                # D step: B real rows vs B potential outliers, G_i contributing shares[i] of them.
                z = torch.rand(B, d, generator=gen).to(device)  # (B, d)
                with torch.no_grad():
                    fake_all = G(z.expand(k, B, d))  # (k, B, d); G_i's rows are bounds[i]:bounds[i+1]
                fake = torch.cat([fake_all[i, bounds[i]:bounds[i + 1]] for i in range(k)])  # (B, d)
                for group in opt_d.param_groups:
                    group["lr"] = self.lr_d * decay
                loss_d = F.binary_cross_entropy_with_logits(D(torch.cat([real, fake])), labels)
                opt_d.zero_grad()
                loss_d.backward()
                opt_d.step()

                # Targets: the (i/k) quantiles of D's output on every training row.
                with torch.no_grad():
                    targets = torch.quantile(torch.sigmoid(D(X_all)), probs)  # (k,)

                # Generator step: G_i pulls D(G_i(z)) towards T_i on fresh noise (frozen after stop).
                z = torch.rand(B, d, generator=gen).to(device)
                with torch.set_grad_enabled(train_generators):
                    logits = D(G(z.expand(k, B, d)))  # (k, B)
                    loss_g = F.binary_cross_entropy_with_logits(
                        logits, targets[:, None].expand(k, B), reduction="none").mean(dim=1)  # (k,)
                if train_generators:
                    for group in opt_g.param_groups:
                        group["lr"] = self.lr_g * decay
                    opt_g.zero_grad()
                    # Each G_i's parameters only reach its own loss: the sum trains all k at once.
                    loss_g.sum().backward(inputs=list(G.parameters()))
                    opt_g.step()
                    g_steps += 1

                terms = {"loss_D": loss_d.detach(), "loss_G": loss_g.detach().mean()}
                terms.update({f"loss_G{i}": loss_g[i].detach() for i in range(k)})
                log.record(it, force=(epoch == epochs - 1 and b == n_batches - 1), **terms)
                log.raise_if_diverged(0)
                if it in plan:
                    snapshots.append(frozen_copy(D).eval())
                it += 1

        self.discriminator_ = D.eval()
        self.generators_ = G.eval()
        self.targets_ = targets.cpu().numpy()
        self.n_iter_ = it
        self.generator_steps_ = g_steps
        self.history_ = log.history[0]
        self.snapshots_ = snapshots
        self._reference(X_all)
        return self

    @torch.no_grad()
    def _reference(self, X: torch.Tensor) -> None:
        """D's output distribution on the training rows, for the two-sided scores."""
        if self.score == "two-sided":
            self.reference_ = [reference(self._logits(self.discriminator_, X))]
        elif self.score == "snapshots":
            self.reference_ = [reference(self._logits(D, X)) for D in self.snapshots_]

    @staticmethod
    def _logits(D, X: torch.Tensor) -> torch.Tensor:
        out = [D(X[i:i + _SCORE_CHUNK]).double().cpu() for i in range(0, len(X), _SCORE_CHUNK)]
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)

    @torch.no_grad()
    def anomaly_score(self, X: np.ndarray) -> np.ndarray:
        """The paper's OS(x) = 1 - D(x) = sigmoid(-logit) in float64, or the ``score`` option; (n,),
        higher = more anomalous."""
        X = np.asarray(X, dtype=np.float32)
        x = torch.from_numpy(X).to(next(self.discriminator_.parameters()).device)  # (n, d)
        if self.score == "two-sided":
            return two_sided(self._logits(self.discriminator_, x), self.reference_[0]).numpy()
        if self.score == "snapshots":
            return ensemble([self._logits(D, x) for D in self.snapshots_], self.reference_).numpy()
        return torch.sigmoid(-self._logits(self.discriminator_, x)).numpy()
