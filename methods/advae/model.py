"""adVAE: a self-adversarial variational autoencoder with a Gaussian anomaly prior.

Wang et al., "adVAE: A self-adversarial variational autoencoder with Gaussian anomaly prior knowledge
for anomaly detection", Knowledge-Based Systems 190 (2020) 105187. The reading of the paper followed
here, term by term, with the choices where it is ambiguous: docs/advae-spec.md.

Networks (engine/backbone.py; h = min(d // 2, 64), k = latent size): encoder E x (d) -> (mu, logvar);
generator G z (k) -> x_r (d), Sigmoid output; Gaussian transformer T (mu, logvar) -> (mu_T, logvar_T).
With (mu, logvar) = E(x), (mu_T, logvar_T) = T(mu, logvar), z ~ N(mu, sigma^2), z_T ~ N(mu_T, sigma_T^2),
x_r = G(z), x_Tr = G(z_T), KL the POSITIVE KL to N(0, I) (eq. 5 prints its negative), [v]^+ = max(0, v):
  L_T   = KL2(mu, logvar || mu_T, logvar_T)                                                (eq. 9)
  L_G   = MSE(x, x_r) + gamma KL(E(x_r))                                       (L_Gz, eq. 7)
          + [m_x - MSE(x_r, x_Tr)]^+ + gamma [m_z - KL(E(x_Tr))]^+            (L_GzT, eq. 8; eq. 6)
  L_E   = MSE(x, x_r) + lambda KL(mu, logvar)
          + gamma [m_z - KL(E(x_r))]^+ + gamma [m_z - KL(E(x_Tr))]^+                         (eq. 10)
One iteration (Algorithm 1): step 1 updates G and T on L_G + lambda L_T (E frozen, but gradients flow
through its second application to G); step 2 updates E on L_E with the updated G, the same z and z_T,
and E's second application fed detach(x_r), detach(x_Tr). Two Adam optimizers. (Section 3.1's
"L_T + lambda L_G" contradicts Algorithm 1 and Fig. 2; Algorithm 1 is followed.)
Score (Section 3.4): squared error of the mean of L = 1000 reconstructions G(mu + sigma eps_l).

The three definitions below (``sample_latents``, ``step1_losses``, ``step2_losses``) are the model;
training runs them through autograd, or through a registered accelerator that computes the same
gradients faster (``gradients.py``, "hand"). The paper's ablations (Section 4.6) are switches:
transformer=False (no T, no L_T, no x_Tr), encoder_hinge=False (no gamma term anywhere),
generator_hinge=False (no [m_x - ...]^+); e-advae and g-advae below. Stacks of seeds and settings
(``member_params``, training.py) train bit for bit as their members alone (tests/test_invariance.py).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from bench.contract.params import Interval
from bench.contract.registry import register
from engine.accelerators import GRADIENTS, GRADIENTS_CONSTRAINT  # noqa: F401 (GRADIENTS)
from engine.backbone import TRAINING_CONSTRAINTS, Encoder, Generator, Shape, StackedLinear, member_generators
from engine.compiled import COMPILE_CONSTRAINT, check_compile
from engine.stacked import StackedDeepDetector, l_sample_scores, store_params
from methods.advae.training import AdVAETraining

#: The definitions an accelerator computes the gradients of; a subclass that overrides one trains
#: through autograd (engine/accelerators.py).
DEFINITIONS = ("sample_latents", "step1_losses", "step2_losses")


# ---- loss terms (per sample: (..., features or k) -> (...)) ---------------------------------------
def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """L_MSE(a, b) = ||a - b||^2, summed over features (paper eq. 4)."""
    return ((a - b) ** 2).sum(dim=-1)


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """L_KLD(mu, sigma) = KL(N(mu, sigma^2) || N(0, I)) = 0.5 sum (mu^2 + sigma^2 - logvar - 1) >= 0.
    d/dmu = mu, d/dlogvar = 0.5 (sigma^2 - 1)."""
    return 0.5 * (mu ** 2 + logvar.exp() - logvar - 1.0).sum(dim=-1)


def kl2(mu: torch.Tensor, logvar: torch.Tensor, mu_T: torch.Tensor,
        logvar_T: torch.Tensor) -> torch.Tensor:
    """L_T = KL(N(mu, sigma^2) || N(mu_T, sigma_T^2)) = sum log(sigma_T / sigma)
    + (sigma^2 + (mu - mu_T)^2) / (2 sigma_T^2) - 1/2 (paper eq. 9).
    d/dmu_T = (mu_T - mu) / sigma_T^2, d/dlogvar_T = 0.5 - 0.5 (sigma^2 + (mu - mu_T)^2) / sigma_T^2."""
    return (0.5 * (logvar_T - logvar) + 0.5 * (logvar.exp() + (mu - mu_T) ** 2) * (-logvar_T).exp()
            - 0.5).sum(dim=-1)


def hinge(v: torch.Tensor) -> torch.Tensor:
    """[v]^+ = max(0, v), elementwise (applied per sample, before the batch mean); d/dv = 1[v > 0]."""
    return torch.relu(v)


# ---- networks -----------------------------------------------------------------------------------
class GaussianTransformer(nn.Module):
    """T (paper Section 3.1): (mu, logvar) (S, B, k) each -> (mu_T, logvar_T) (S, B, k) each, through
    cat(mu, logvar) (2k) -> 2k, Sigmoid, 2k -> 2k, Sigmoid, and two linear heads. Layer names follow
    the authors' code (fct1, fct2, fctmu, fctlogvar)."""

    def __init__(self, k: int, generators: list[torch.Generator]):
        super().__init__()
        self.fct1 = StackedLinear(2 * k, 2 * k, generators)
        self.fct2 = StackedLinear(2 * k, 2 * k, generators)
        self.fctmu = StackedLinear(2 * k, k, generators)
        self.fctlogvar = StackedLinear(2 * k, k, generators)

    def forward(self, mu, logvar):
        hid = _sigmoid(self.fct2(_sigmoid(self.fct1(torch.cat((mu, logvar), dim=-1)))))
        return self.fctmu(hid), self.fctlogvar(hid)


def _sigmoid(x: torch.Tensor) -> torch.Tensor:
    """1 / (1 + exp(-x)): the hand-written steps' sigmoid (``invariant.sigmoid_``), differentiable."""
    return torch.reciprocal(torch.exp(-x) + 1.0)


class Latents(NamedTuple):
    """Algorithm 1, line 2, for one mini-batch; every tensor (S, B, k)."""

    mu: torch.Tensor  # E(x)
    logvar: torch.Tensor
    z: torch.Tensor  # mu + sigma * eps
    mu_T: torch.Tensor | None  # T(mu, logvar); None without a transformer
    logvar_T: torch.Tensor | None
    z_T: torch.Tensor | None  # mu_T + sigma_T * eps_T


# ---- the detector -------------------------------------------------------------------------------
@register("advae", description="adVAE (Wang et al. 2020): self-adversarial VAE with a Gaussian "
                               "transformer; score = error of the mean of L reconstructions")
@register("e-advae", defaults={"transformer": False, "generator_hinge": False},
          description="E-adVAE (adVAE ablation, paper 4.6): only the encoder discriminates, no T")
@register("g-advae", defaults={"encoder_hinge": False},
          description="G-adVAE (adVAE ablation, paper 4.6): only the generator discriminates; "
                      "E trains as a plain VAE")
class AdVAE(AdVAETraining, StackedDeepDetector):
    """adVAE (Wang et al., KBS 2020): self-adversarial VAE with a Gaussian anomaly prior.

    Parameters (paper values as defaults; configs/paper.toml sets the per-dataset ones of Table 2):
    latent_dim (k; None -> min(max(1, round(d / 3)), 32)), lambda_ (weight of KL(mu, logvar) in L_E and of L_T in
    step 1; 0.01), gamma (weight of the encoder-discrimination terms; 0.001), m_x (margin of the
    generator hinge; 2), m_z (margin of the KL hinges; 40), n_iter (Algorithm 1 iterations; 20000),
    batch_size (128), lr (both Adam optimizers; 1e-3), L (latent samples per scored row; 1000),
    transformer / encoder_hinge / generator_hinge (ablation switches, see the module docstring),
    log_every (telemetry period, iterations), score_budget_mb (memory bound of L-sample scoring, MiB),
    device ("auto" = GPU when present), gradients ("auto": the hand-written fast path where the loss
    definitions are the paper's, autograd where a subclass overrides one; "hand"; "autograd"),
    compile (False; True runs the hand-written path's iterations as one compiled graph each,
    engine/compiled.py: faster, rounds differently from eager by a few ulp per step; the autograd
    path is always eager; opt-in, `run --compile`), random_state (weight init, batch order, z / z_T
    noise, scoring samples).
    """

    threshold_family = "reconstruction"  # paper policy: kde at alpha (paper Table 4 caption)
    version = "3"  # 2: inputs scaled by sklearn's MinMaxScaler (ulp-level change)
    # 3: L-sample scoring in 16 MiB chunks (engine/backbone.py): some training rows' scores move by
    #    1-2 ulp (cardio); test scores, thresholds and metrics unchanged
    cost = 2.25  # per iteration, relative to AE (measured): orders the groups, never a result
    # The adversarial totals need not fall; a reconstruction that never improves means a broken run.
    monitored_losses = ["mse"]
    parameter_constraints = {
        **TRAINING_CONSTRAINTS, "lambda_": [Interval(float, 0, None)], "gamma": [Interval(float, 0, None)],
        "m_x": [Interval(float, 0, None)], "m_z": [Interval(float, 0, None)], "L": [Interval(int, 1, None)],
        "transformer": [bool], "encoder_hinge": [bool], "generator_hinge": [bool],
        "score_budget_mb": [Interval(float, 0, None, closed="neither")],
        "gradients": GRADIENTS_CONSTRAINT, "compile": COMPILE_CONSTRAINT}
    definitions = DEFINITIONS

    def __init__(self, latent_dim: int | None = None, lambda_: float = 0.01, gamma: float = 0.001,
                 m_x: float = 2.0, m_z: float = 40.0, n_iter: int = 20000, batch_size: int = 128,
                 lr: float = 1e-3, L: int = 1000, transformer: bool = True,
                 encoder_hinge: bool = True, generator_hinge: bool = True, log_every: int = 100,
                 score_budget_mb: float = 16, device: str = "auto", gradients: str = "auto",
                 compile: bool = False, random_state: int = 0):
        store_params(self, locals())

    def _check_combinations(self) -> None:
        super()._check_combinations()  # gradients="hand" needs these definitions and the accelerator
        check_compile(self)  # compile=True needs a C++ compiler
        if self.generator_hinge and not self.transformer:
            raise self._invalid(
                "generator_hinge=True needs transformer=True (the generator hinge [m_x - MSE(x_r, x_Tr)]^+ "
                "compares G(z) with G(z_T), and z_T comes from T); with transformer=false set "
                "generator_hinge=false too (that is e-advae)")

    def _build(self, shape: Shape, gens: list[torch.Generator]) -> nn.ModuleDict:
        nets = {"E": Encoder(shape, gens), "G": Generator(shape, gens)}
        if self.transformer:
            nets["T"] = GaussianTransformer(shape.k, gens)
        return nn.ModuleDict(nets)

    def build_networks(self, d: int, seeds: list[int]) -> nn.ModuleDict:
        """Stacked E, G (and T), one member per seed, each initialised from its own generator."""
        return self._build(Shape(d, self.latent_size(d)), member_generators(seeds))

    # ---- the objectives, with autograd (the definition; also the logged values) -----------------
    def sample_latents(self, nets: nn.ModuleDict, x: torch.Tensor, eps: torch.Tensor) -> Latents:
        """Algorithm 1, line 2: (mu, logvar) = E(x), (mu_T, logvar_T) = T(mu, logvar); z and z_T
        reparameterised with eps (S, B, k), or (S, B, 2k) with a transformer (second half for z_T)."""
        k = nets["E"].fcmu.weight.shape[2]
        mu, logvar = nets["E"](x)  # (S, B, k)
        z = mu + torch.exp(0.5 * logvar) * eps[..., :k]
        if "T" not in nets:
            return Latents(mu, logvar, z, None, None, None)
        # T trains only in step 1, where E is frozen: its input is a constant there.
        mu_T, logvar_T = nets["T"](mu.detach(), logvar.detach())
        z_T = mu_T + torch.exp(0.5 * logvar_T) * eps[..., k:2 * k]
        return Latents(mu, logvar, z, mu_T, logvar_T, z_T)

    def step1_losses(self, nets: nn.ModuleDict, x: torch.Tensor, lat: Latents):
        """Step 1 (paper eqs. 6-9): objective L_G + lambda * L_T per member (S,), and the batch mean of
        every term {name: (S,)}. Differentiable w.r.t. G and T; E's first application (mu, logvar, z)
        enters as a constant, its second application (on x_r, x_Tr) passes gradients to G."""
        G, E = nets["G"], nets["E"]
        pm = self._per_member()  # lambda_, gamma, m_x, m_z per member, (S, 1); switches as masks
        z = lat.z.detach()
        x_r = G(z)  # (S, B, d)
        terms = {"mse": mse(x, x_r)}  # (S, B) each
        L_Gz, L_GzT = terms["mse"], None
        if pm.any("encoder_hinge"):
            gamma = pm.num("gamma", terms["mse"])
            terms["kl_r"] = kl_divergence(*E(x_r))  # KL(mu_r, logvar_r)
            L_Gz = L_Gz + pm.only("encoder_hinge", gamma * terms["kl_r"])
        if lat.z_T is not None:
            x_Tr = G(lat.z_T)
            if pm.any("encoder_hinge"):
                terms["kl_Tr"] = kl_divergence(*E(x_Tr))  # KL(mu_Tr, logvar_Tr)
                L_GzT = pm.only("encoder_hinge",
                                gamma * hinge(pm.num("m_z", terms["mse"]) - terms["kl_Tr"]))
            if pm.any("generator_hinge"):
                terms["mse_r_Tr"] = mse(x_r, x_Tr)
                h = pm.only("generator_hinge", hinge(pm.num("m_x", terms["mse"]) - terms["mse_r_Tr"]))
                L_GzT = h if L_GzT is None else L_GzT + h
        terms["L_Gz"] = L_Gz
        if L_GzT is None:  # no discrimination on z_T (no transformer, or both hinges off)
            L_G = L_Gz
        else:
            terms["L_GzT"] = L_GzT
            L_G = L_Gz + L_GzT
        terms["L_G"] = L_G
        objective = L_G
        if lat.z_T is not None:
            terms["L_T"] = kl2(lat.mu.detach(), lat.logvar.detach(), lat.mu_T, lat.logvar_T)
            objective = L_G + pm.num("lambda_", terms["L_T"]) * terms["L_T"]
        return objective.mean(dim=1), {k: v.mean(dim=1) for k, v in terms.items()}

    def step2_losses(self, nets: nn.ModuleDict, x: torch.Tensor, lat: Latents):
        """Step 2 (paper eq. 10): objective L_E per member (S,), and the batch mean of every term. With
        the current G and the same z, z_T. MSE(x, x_r) and lambda * KL(mu, logvar) reach E through z and
        (mu, logvar); the hinges reach E only through its second application, on detach(x_r) and
        detach(x_Tr)."""
        G, E = nets["G"], nets["E"]
        pm = self._per_member()
        x_r = G(lat.z)
        terms = {"kl": kl_divergence(lat.mu, lat.logvar)}
        L_E = mse(x, x_r) + pm.num("lambda_", terms["kl"]) * terms["kl"]
        if pm.any("encoder_hinge"):
            gamma, m_z = pm.num("gamma", terms["kl"]), pm.num("m_z", terms["kl"])
            L_E = L_E + pm.only("encoder_hinge",
                                gamma * hinge(m_z - kl_divergence(*E(x_r.detach()))))
            if lat.z_T is not None:
                x_Tr = G(lat.z_T.detach())
                L_E = L_E + pm.only("encoder_hinge",
                                    gamma * hinge(m_z - kl_divergence(*E(x_Tr.detach()))))
        terms["L_E"] = L_E
        return L_E.mean(dim=1), {k: v.mean(dim=1) for k, v in terms.items()}

    # ---- scoring --------------------------------------------------------------------------------
    def _score(self, X: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(l_sample_scores(self.networks_["E"], self.networks_["G"],
                                                X.cpu().numpy(), int(self.L), int(self.random_state),
                                                self.score_budget_mb))

    @property
    def encoder_(self) -> Encoder:
        return self.networks_["E"]

    @property
    def generator_(self) -> Generator:
        return self.networks_["G"]

    @property
    def transformer_(self) -> GaussianTransformer | None:
        return self.networks_["T"] if "T" in self.networks_ else None
