"""adVAE: self-adversarial variational autoencoder with a Gaussian anomaly prior.

Wang et al., "adVAE: A self-adversarial variational autoencoder with Gaussian anomaly prior knowledge
for anomaly detection", Knowledge-Based Systems 190 (2020) 105187, arXiv 1903.00904. The reading of
the paper followed here, term by term, is ../shared/docs/advae-spec.md.

Networks (methods/backbone.py; h = min(d // 2, 64), k = latent size):
  encoder E               x (d) -> (mu, logvar) (k each)
  generator G             z (k) -> x_r (d), Sigmoid output (inputs are MinMax-scaled)
  Gaussian transformer T  cat(mu, logvar) (2k) -> 2k, Sigmoid, 2k -> 2k, Sigmoid -> (mu_T, logvar_T)

Losses, per sample, averaged over the mini-batch (sigma = exp(0.5 * logvar)):
  MSE(a, b)      = sum over features of (a - b)^2                                        (paper eq. 4)
  KL(mu, logvar) = 0.5 * sum (mu^2 + sigma^2 - logvar - 1), the POSITIVE KL to N(0, I) (eq. 5 prints
                   its negative; the margins only make sense with the positive one)
  KL2            = sum log(sigma_T / sigma) + (sigma^2 + (mu - mu_T)^2) / (2 sigma_T^2) - 1/2   (eq. 9)
  [v]^+          = max(0, v), per sample
  with (mu, logvar) = E(x), (mu_T, logvar_T) = T(mu, logvar), z ~ N(mu, sigma^2), z_T ~ N(mu_T, sigma_T^2),
  x_r = G(z), x_Tr = G(z_T), (mu_r, logvar_r) = E(x_r), (mu_Tr, logvar_Tr) = E(x_Tr):
  L_T   = KL2(mu, logvar || mu_T, logvar_T)                                                (eq. 9)
  L_Gz  = MSE(x, x_r) + gamma * KL(mu_r, logvar_r)                                         (eq. 7)
  L_GzT = [m_x - MSE(x_r, x_Tr)]^+ + gamma * [m_z - KL(mu_Tr, logvar_Tr)]^+                (eq. 8)
  L_G   = L_Gz + L_GzT                                                                     (eq. 6)
  L_E   = MSE(x, x_r) + lambda * KL(mu, logvar)
          + gamma * [m_z - KL(mu_r, logvar_r)]^+ + gamma * [m_z - KL(mu_Tr, logvar_Tr)]^+     (eq. 10)

One iteration (paper Algorithm 1): draw a mini-batch, encode it, sample z and z_T once; step 1 updates G
and T on L_G + lambda * L_T (E's weights fixed, but gradients flow through E's second application to
reach G); step 2 updates E on L_E with the updated G, the same z and z_T, and E's second application fed
detach(x_r), detach(x_Tr). Two Adam optimizers (G+T, and E). Section 3.1's sentence "L_T + lambda L_G"
contradicts Algorithm 1 and Fig. 2; Algorithm 1 is followed.

How it is computed. ``sample_latents`` / ``step1_losses`` / ``step2_losses`` state Algorithm 1's
latents and two objectives term by term; they are the definition. Two training paths (``gradients``):
  autograd  trains from the definitions through autograd over the same stacked networks and the same
            flat Adam buffers; the reference, and the path of any subclass that overrides a definition
            (a new or changed loss term trains without deriving its gradient);
  hand      the fast path: ``step1`` / ``step2`` apply the SAME gradients written out by hand (the
            derivative of each term is next to its name), used only where the definitions are this
            class's (``gradients="auto"``, the default). These networks are so small that autograd's
            per-operation bookkeeping costs more than the arithmetic: measured at about 1.5 to 2.5x
            faster than autograd per iteration on cardio, letter, pendigits and satellite (5-seed
            stack, one thread, on a loaded shared 2-core machine; README "Ablations"), less on
            optdigits (d = 64, where the arithmetic weighs more): not "several times".
The tests check the hand-written gradients against autograd's for every switch setting, and whole fits
of the two paths against each other (equal to float tolerance; on the machine they were written on,
bit for bit).

Switches (the paper's ablations, Section 4.6, are settings of this one implementation):
  transformer=False      no T: no L_T and no z_T pipeline (every term with x_Tr is gone)
  encoder_hinge=False    E does not discriminate: no gamma terms anywhere (neither E's hinges in L_E nor
                         G's gamma * KL(mu_r, logvar_r) and gamma * [m_z - KL(mu_Tr, logvar_Tr)]^+)
  generator_hinge=False  G does not discriminate: no [m_x - MSE(x_r, x_Tr)]^+
  e-advae = transformer=False, generator_hinge=False: step 1 trains G on MSE(x, x_r) + gamma * KL(E(x_r));
            step 2 trains E on MSE(x, x_r) + lambda * KL(mu, logvar) + gamma * [m_z - KL(E(x_r))]^+
  g-advae = encoder_hinge=False: step 1 trains G and T on MSE(x, x_r) + lambda * L_T
            + [m_x - MSE(x_r, x_Tr)]^+; step 2 trains E on the plain VAE loss MSE(x, x_r) + lambda * KL
  transformer=False with generator_hinge=True is an error (the generator hinge needs z_T from T).

Anomaly score (Section 3.4): the squared error of the MEAN of L = 1000 reconstructions G(mu + sigma eps_l),
summed over features (backbone.mean_reconstruction_error; the eps_l come from the run's seed and are
shared by every row, so a row's score depends only on the row and the seed, whatever the chunking, up to
float32 rounding: a CPU matrix product may round a row differently depending on how many rows it
multiplies at once). Higher = more anomalous.

Stacking: both paths take their arithmetic from methods/invariant.py (the exp-based sigmoid, 1-wide
products, StackAdam), so a member trained in a stack ends up bit for bit as trained alone
(tests/test_invariance.py). Members may differ in ``member_params`` (lambda_, gamma, m_x, m_z and the
two hinge switches: a sweep's settings, advae with g-advae): the definitions and the hand-written steps
read them per member (``PerMember``: (S, 1, ...) vectors rounded as the Python scalars they replace,
switched-off terms zeroed with torch.where), so each member is still its solo fit
(tests/test_sweep_stack.py). ``transformer`` changes the networks and is shared by a stack.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from bench.contract.params import Interval, Options
from bench.contract.registry import register
from bench.execution.telemetry import LossLog
from methods.backbone import (SCORE_SALT, TRAINING_CONSTRAINTS, Encoder, Generator, Shape,  # noqa: F401 (SCORE_SALT)
                              StackedLinear, load_linear_state, member_generators)
from methods.invariant import StackAdam, bmm, linear, one_wide, sigmoid_
from methods.stacked import (Feed, StackedDeepDetector, all_diverged, l_sample_scores, rows,
                             store_params)

#: The definitions whose hand-written gradients the fast path implements; a subclass that overrides
#: one of them trains through autograd.
DEFINITIONS = ("sample_latents", "step1_losses", "step2_losses")
#: Values of the ``gradients`` parameter.
GRADIENTS = ("auto", "hand", "autograd")


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




_relu_backward = torch.ops.aten.threshold_backward.default  # (grad, relu output, 0)
_sigmoid_backward = torch.ops.aten.sigmoid_backward.default  # (grad, sigmoid output)


class _Net:
    """A stacked network (E, G or T) seen as plain tensors, for hand-written gradients: trunk layers each
    followed by ``act``, then linear heads (squashed by a Sigmoid for G). Same arithmetic as the module's
    forward. ``params`` is in the module's ``parameters()`` order."""

    def __init__(self, module: nn.Module, trunk: list[str], heads: list[str], act: str,
                 out_sigmoid: bool = False):
        self.trunk = [(getattr(module, n).weight, getattr(module, n).bias) for n in trunk]
        self.heads = [(getattr(module, n).weight, getattr(module, n).bias) for n in heads]
        self.params = [t for layer in self.trunk + self.heads for t in layer]
        # transposed views, for the input gradients; they follow in-place updates of the weights
        self.trunk_WT = [W.mT for W, _ in self.trunk]
        self.heads_WT = [W.mT for W, _ in self.heads]
        if [id(p) for p in self.params] != [id(p) for p in module.parameters()]:
            raise RuntimeError(f"{type(module).__name__}: unexpected layers")
        self.act_, self.act_backward = ((torch.relu_, lambda g, h: _relu_backward(g, h, 0))
                                        if act == "relu" else (sigmoid_, _sigmoid_backward))
        self.out_sigmoid = out_sigmoid

    def forward(self, x):
        """x (S, B, in) -> (outputs [(S, B, out) per head], activations [x, hidden 1, hidden 2])."""
        acts = [x]
        for W, b in self.trunk:
            acts.append(self.act_(linear(acts[-1], W, b)))
        outs = [linear(acts[-1], W, b) for W, b in self.heads]
        return ([sigmoid_(o) for o in outs] if self.out_sigmoid else outs), acts

    def backward(self, outs, acts, g_outs, input_grad: bool = False, weight_grads: bool = True,
                 out: list[torch.Tensor] | None = None, accumulate: bool = False):
        """Back-propagate the gradients ``g_outs`` of the outputs. Returns (gradient of the input or
        None, gradients of ``params`` or None). With ``out`` (tensors shaped like ``params``) the
        parameter gradients are written into it, or added to it with ``accumulate``."""
        n_trunk = len(self.trunk)
        grads: list = [None] * len(self.params)
        slot = (lambda j: out[j]) if out is not None else (lambda j: None)

        def layer_grads(j: int, a, g):  # parameters 2j (weight) and 2j + 1 (bias), layer input a
            if weight_grads:
                grads[2 * j], grads[2 * j + 1] = _param_grads(a, g, slot(2 * j), slot(2 * j + 1),
                                                              accumulate)

        g_h = None
        for j, (WT, g, o) in enumerate(zip(self.heads_WT, g_outs, outs)):
            if self.out_sigmoid:
                g = _sigmoid_backward(g, o)
            layer_grads(n_trunk + j, acts[-1], g)
            if g_h is None:
                g_h = bmm(g, WT)
            else:
                g_h = g_h + bmm(g, WT) if one_wide(g, WT) else torch.baddbmm(g_h, g, WT)
        for i in reversed(range(n_trunk)):
            g = self.act_backward(g_h, acts[i + 1])
            layer_grads(i, acts[i], g)
            g_h = bmm(g, self.trunk_WT[i]) if (i > 0 or input_grad) else None
        return g_h, (grads if weight_grads else None)


def _param_grads(a: torch.Tensor, g: torch.Tensor, out_w, out_b, accumulate: bool):
    """Gradients of a linear layer's weight, a^T g (S, i, o), and bias, g summed over rows (S, 1, o),
    given its input a (S, B, i) and output gradient g (S, B, o); written into / added to out_w, out_b."""
    if out_w is None:
        return bmm(a.mT, g), g.sum(dim=1, keepdim=True)
    if one_wide(a.mT, g):
        w, b = bmm(a.mT, g), g.sum(dim=1, keepdim=True)
        return (out_w.add_(w), out_b.add_(b)) if accumulate else (out_w.copy_(w), out_b.copy_(b))
    if accumulate:
        return out_w.baddbmm_(a.mT, g), out_b.add_(g.sum(dim=1, keepdim=True))
    return torch.bmm(a.mT, g, out=out_w), torch.sum(g, dim=1, keepdim=True, out=out_b)


class _Views(NamedTuple):
    E: _Net
    G: _Net
    T: _Net | None


def _views(nets: nn.ModuleDict) -> _Views:
    """The stacked modules as ``_Net`` views, sharing the modules' tensors (build them after the
    optimizers, which move the parameters into flat buffers)."""
    return _Views(_Net(nets["E"], ["fc1", "fc2"], ["fcmu", "fclogvar"], "relu"),
                  _Net(nets["G"], ["fc3", "fc4"], ["fcxmu"], "relu", out_sigmoid=True),
                  _Net(nets["T"], ["fct1", "fct2"], ["fctmu", "fctlogvar"], "sigmoid")
                  if "T" in nets else None)


class Latents(NamedTuple):
    """Algorithm 1, line 2, for one mini-batch; every tensor (S, B, k)."""

    mu: torch.Tensor  # E(x)
    logvar: torch.Tensor
    z: torch.Tensor  # mu + sigma * eps
    mu_T: torch.Tensor | None  # T(mu, logvar); None without a transformer
    logvar_T: torch.Tensor | None
    z_T: torch.Tensor | None  # mu_T + sigma_T * eps_T


class Iteration(NamedTuple):
    """One mini-batch as the hand-written steps see it: x (S, b, d), its Latents, and the activations
    of the passes through E and T that step 2 and step 1 back-propagate through."""

    x: torch.Tensor
    lat: Latents
    E_pass: tuple
    T_pass: tuple | None


class PerMember:
    """The per-member parameters (``AdVAE.member_params``) of the stack being trained, as tensors that
    broadcast over it: ``num(key, like)`` is (S, 1, ...) with one number per member (rounded to
    ``like``'s dtype once, as a Python scalar is when it multiplies a tensor, so ``w * t`` is
    ``value * t`` bit for bit), ``mask(switch, like)`` the same as booleans, ``only(switch, t)`` zeroes
    t for the members whose switch is off (``torch.where``: a value there never leaks, even a
    non-finite one). Outside a stack fit, the detector's own values (S = 1, broadcast)."""

    def __init__(self, det: "AdVAE"):
        names = AdVAE.member_params
        self.params = [dict(zip(names, vals)) for vals in zip(*(det.member_values(n) for n in names))]
        self._cache: dict = {}

    def all(self, switch: str) -> bool:
        return all(p[switch] for p in self.params)

    def any(self, switch: str) -> bool:
        return any(p[switch] for p in self.params)

    def members(self, switch: str) -> list[bool]:
        return [bool(p[switch]) for p in self.params]

    def num(self, key, like: torch.Tensor, fn=None, dims: int | None = None) -> torch.Tensor:
        """Per-member numbers ``fn(params of member s)`` (default: the parameter named ``key``)."""
        dims = like.dim() if dims is None else dims
        k = (key, dims, like.dtype, like.device)
        t = self._cache.get(k)
        if t is None:
            fn = fn or (lambda p: p[key])
            t = self._cache[k] = torch.tensor([float(fn(p)) for p in self.params], dtype=like.dtype,
                                              device=like.device).view(-1, *([1] * (dims - 1)))
        return t

    def mask(self, switch: str, like: torch.Tensor, dims: int | None = None) -> torch.Tensor:
        dims = like.dim() if dims is None else dims
        k = (switch, dims, torch.bool, like.device)
        t = self._cache.get(k)
        if t is None:
            t = self._cache[k] = torch.tensor(self.members(switch), device=like.device).view(
                -1, *([1] * (dims - 1)))
        return t

    def only(self, switch: str, t: torch.Tensor) -> torch.Tensor:
        return t if self.all(switch) else torch.where(self.mask(switch, t), t, 0.0)


# ---- scoring and the authors' weights -------------------------------------------------------------
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


# ---- the detector -------------------------------------------------------------------------------
@register("advae", description="adVAE (Wang et al. 2020): self-adversarial VAE with a Gaussian "
                               "transformer; score = error of the mean of L reconstructions")
@register("e-advae", defaults={"transformer": False, "generator_hinge": False},
          description="E-adVAE (adVAE ablation, paper 4.6): only the encoder discriminates, no T")
@register("g-advae", defaults={"encoder_hinge": False},
          description="G-adVAE (adVAE ablation, paper 4.6): only the generator discriminates; "
                      "E trains as a plain VAE")
class AdVAE(StackedDeepDetector):
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
    random_state (weight init, batch order, z / z_T noise, scoring samples).
    """

    threshold_family = "reconstruction"  # paper policy: kde at alpha (paper Table 4 caption)

    version = "3"  # 2: inputs scaled by sklearn's MinMaxScaler (ulp-level change)
    # 3: L-sample scoring in 16 MiB chunks (methods/backbone.py): some training rows' scores move by
    #    1-2 ulp (cardio); test scores, thresholds and metrics unchanged
    cost = 2.25  # per iteration, relative to AE (measured, issue 11): orders the groups, never a result
    #: Settings that train together in one stack (a sweep, the adVAE family of one dataset): the
    #: weights and margins as per-member vectors, the two hinge switches as per-member masks (they only
    #: zero terms). ``transformer`` changes the networks and the noise, so it is shared by a stack.
    member_params = ("lambda_", "gamma", "m_x", "m_z", "encoder_hinge", "generator_hinge")
    max_group_size = 25  # 5 settings x 5 seeds
    # The adversarial totals need not fall; a reconstruction that never improves means a broken run.
    monitored_losses = ["mse"]
    parameter_constraints = {
        **TRAINING_CONSTRAINTS, "lambda_": [Interval(float, 0, None)], "gamma": [Interval(float, 0, None)],
        "m_x": [Interval(float, 0, None)], "m_z": [Interval(float, 0, None)], "L": [Interval(int, 1, None)],
        "transformer": [bool], "encoder_hinge": [bool], "generator_hinge": [bool],
        "score_budget_mb": [Interval(float, 0, None, closed="neither")],
        "gradients": [Options(*GRADIENTS)]}

    def __init__(self, latent_dim: int | None = None, lambda_: float = 0.01, gamma: float = 0.001,
                 m_x: float = 2.0, m_z: float = 40.0, n_iter: int = 20000, batch_size: int = 128,
                 lr: float = 1e-3, L: int = 1000, transformer: bool = True,
                 encoder_hinge: bool = True, generator_hinge: bool = True, log_every: int = 100,
                 score_budget_mb: float = 16, device: str = "auto", gradients: str = "auto",
                 random_state: int = 0):
        store_params(self, locals())

    # ---- setup ----------------------------------------------------------------------------------
    def _check_combinations(self) -> None:
        if self.generator_hinge and not self.transformer:
            raise self._invalid(
                "generator_hinge=True needs transformer=True (the generator hinge [m_x - MSE(x_r, x_Tr)]^+ "
                "compares G(z) with G(z_T), and z_T comes from T); with transformer=false set "
                "generator_hinge=false too (that is e-advae)")
        if self.gradients == "hand" and not self.paper_definitions():
            raise self._invalid(
                f"gradients='hand' needs the paper's loss definitions, but "
                f"{', '.join(self._overridden())} is overridden; use gradients='auto' or 'autograd'")

    def _overridden(self) -> list[str]:
        return [n for n in DEFINITIONS if getattr(type(self), n) is not getattr(AdVAE, n)]

    def paper_definitions(self) -> bool:
        """Whether ``sample_latents``, ``step1_losses`` and ``step2_losses`` are the paper's (this
        class's), i.e. whether the hand-written gradients compute the gradient of this objective."""
        return not self._overridden()

    def stack_member_params(self) -> tuple[str, ...]:
        """Per-member values need the paper's definitions: an overridden definition may read a
        parameter as a scalar, so its settings train in separate stacks."""
        return self.member_params if self.paper_definitions() else ()

    def stack_signature(self) -> tuple:
        """Step 1 passes z and z_T through G as one product of 2b rows when the transformer is on and
        a hinge compares G(z_T) (else G(z) alone, b rows), and a product's rows round with the row
        count: members with and without that pass train in separate stacks."""
        return (*super().stack_signature(),
                bool(self.transformer and (self.encoder_hinge or self.generator_hinge)))

    def _per_member(self) -> PerMember:
        pm = getattr(self, "_pm", None)
        return pm if pm is not None else PerMember(self)

    def term_members(self) -> dict[str, list[bool]]:
        """The logged terms only some members of the stack have (LossLog ``members``)."""
        pm = self._per_member()
        out = {}
        for switch, names in (("encoder_hinge", ("kl_r", "kl_Tr")), ("generator_hinge", ("mse_r_Tr",))):
            if not pm.all(switch):
                out.update({n: pm.members(switch) for n in names})
        return out

    def uses_hand_gradients(self) -> bool:
        return self.gradients == "hand" or (self.gradients == "auto" and self.paper_definitions())

    def _build(self, shape: Shape, gens: list[torch.Generator]) -> nn.ModuleDict:
        nets = {"E": Encoder(shape, gens), "G": Generator(shape, gens)}
        if self.transformer:
            nets["T"] = GaussianTransformer(shape.k, gens)
        return nn.ModuleDict(nets)

    def build_networks(self, d: int, seeds: list[int]) -> nn.ModuleDict:
        """Stacked E, G (and T), one member per seed, each initialised from its own generator."""
        return self._build(Shape(d, self.latent_size(d)), member_generators(seeds))

    def build_optimizers(self, nets: nn.ModuleDict) -> tuple[StackAdam, StackAdam]:
        """Algorithm 1's two Adam optimizers: G and T (step 1), E (step 2). Parameter order: G's then
        T's, E's (each in ``parameters()`` order), as the hand-written gradients come. The networks'
        parameters become views of the optimizers' flat buffers (build after ``.to(device)``)."""
        gt = [*nets["G"].parameters(), *(nets["T"].parameters() if "T" in nets else [])]
        return StackAdam(gt, self.lr), StackAdam(list(nets["E"].parameters()), self.lr)

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

    # ---- the training steps, gradients by hand --------------------------------------------------
    def begin(self, nets: nn.ModuleDict, x: torch.Tensor, eps: torch.Tensor) -> Iteration:
        """Algorithm 1, line 2 (as ``sample_latents``), keeping the activations for back-propagation."""
        with torch.no_grad():
            return self._begin(_views(nets), x, eps)

    def step1(self, nets: nn.ModuleDict, opt_GT: StackAdam, it: Iteration) -> list[torch.Tensor]:
        """Algorithm 1, step 1: one Adam step of G and T on L_G + lambda * L_T (E is not updated).
        Returns the gradients applied (G's then T's parameters)."""
        with torch.no_grad():
            grads = self._step1_gradients(_views(nets), it, opt_GT.grads)
            opt_GT.step()
        return grads

    def step2(self, nets: nn.ModuleDict, opt_E: StackAdam, it: Iteration) -> list[torch.Tensor]:
        """Algorithm 1, step 2: one Adam step of E on L_E (G and T are not updated). Returns E's
        gradients."""
        with torch.no_grad():
            grads = self._step2_gradients(_views(nets), it, opt_E.grads)
            opt_E.step()
        return grads

    @staticmethod
    def _begin(v: _Views, x: torch.Tensor, eps: torch.Tensor) -> Iteration:
        k = v.E.heads[0][0].shape[2]
        (mu, logvar), E_acts = v.E.forward(x)
        z = torch.addcmul(mu, torch.exp(0.5 * logvar), eps[..., :k])
        if v.T is None:
            return Iteration(x, Latents(mu, logvar, z, None, None, None), (mu, logvar, E_acts), None)
        (mu_T, logvar_T), T_acts = v.T.forward(torch.cat((mu, logvar), dim=-1))
        z_T = torch.addcmul(mu_T, torch.exp(0.5 * logvar_T), eps[..., k:2 * k])
        return Iteration(x, Latents(mu, logvar, z, mu_T, logvar_T, z_T), (mu, logvar, E_acts),
                         (mu_T, logvar_T, T_acts))

    def _kl_hinge_coef(self, pm: PerMember, mu, logvar, weight: torch.Tensor):
        """For rows (S, R, k) of E's output: weight * 1[m_z - KL(mu, logvar) > 0] (S, R, 1), the
        derivative of weight * [m_z - KL]^+ w.r.t. -KL (weight and m_z per member, (S, 1, 1)); and
        sigma^2 = exp(logvar)."""
        var = logvar.exp()
        two_kl_plus_k = (mu * mu + var - logvar).sum(dim=-1, keepdim=True)  # 2 KL + k
        k = mu.shape[-1]
        active = two_kl_plus_k < pm.num(("2 m_z + k", k), mu, lambda p: 2.0 * p["m_z"] + k)
        return active.to(mu.dtype).mul_(weight), var

    def _step1_gradients(self, v: _Views, it: Iteration, out=None) -> list[torch.Tensor]:
        """d(L_G + lambda * L_T)/d(G, T), batch mean, written out term by term (into ``out`` if given:
        G's then T's parameters)."""
        G, E = v.G, v.E
        x, lat = it.x, it.lat
        b = x.shape[1]
        c = 1.0 / b  # batch mean
        pm = self._per_member()  # per-member weights (S, 1, 1), rounded as Python scalars would be
        with_zT = lat.z_T is not None and (pm.any("encoder_hinge") or pm.any("generator_hinge"))
        (x_all,), G_acts = G.forward(torch.cat((lat.z, lat.z_T), dim=1) if with_zT else lat.z)
        x_r = x_all[:, :b]  # (S, b, d); x_Tr = x_all[:, b:]
        g_r = (x_r - x) * (2.0 * c)  # MSE(x, x_r) in L_Gz: d/dx_r = 2 (x_r - x)
        g_all = g_r
        if with_zT:
            g_T = torch.zeros_like(g_r)
            if pm.any("generator_hinge"):  # [m_x - MSE(x_r, x_Tr)]^+ in L_GzT
                diff = x_r - x_all[:, b:]
                active = (diff * diff).sum(dim=-1, keepdim=True) < pm.num("m_x", x)  # (S, b, 1)
                if not pm.all("generator_hinge"):
                    active.logical_and_(pm.mask("generator_hinge", x))
                g_T = diff * active.to(diff.dtype).mul_(2.0 * c)  # d/dx_Tr = 2 (x_r - x_Tr) when active
                g_r = g_r - g_T  # d/dx_r = -2 (x_r - x_Tr) when active
            g_all = torch.cat((g_r, g_T), dim=1)
        if pm.any("encoder_hinge"):
            # gamma * KL(mu_r, logvar_r) in L_Gz: d/dmu_r = gamma mu_r, d/dlogvar_r = gamma 0.5 (var - 1);
            # gamma * [m_z - KL(mu_Tr, logvar_Tr)]^+ in L_GzT: the same with -gamma, where active.
            # Through E (frozen: no gradient for its weights) to x_r and x_Tr.
            (mu_e, lv_e), E_acts = E.forward(x_all)  # (S, b or 2b, k)
            coef, var = self._kl_hinge_coef(pm, mu_e, lv_e,
                                            pm.num(("-gamma c", b), x, lambda p: -p["gamma"] * c))
            gamma_c = pm.num(("gamma c", b), x, lambda p: p["gamma"] * c)
            if with_zT:
                coef = torch.cat((gamma_c.expand(coef.shape[0], b, 1), coef[:, b:]), dim=1)
            else:
                coef = gamma_c.expand_as(coef)
            g_e, _ = E.backward([mu_e, lv_e], E_acts, [coef * mu_e, 0.5 * coef * (var - 1.0)],
                                input_grad=True, weight_grads=False)
            g_all = g_all + pm.only("encoder_hinge", g_e)
        n_G = len(G.params)
        g_z, grads = G.backward([x_all], G_acts, [g_all], input_grad=with_zT,
                                out=None if out is None else out[:n_G])
        if lat.z_T is None:
            return grads
        # lambda * L_T = lambda * KL2(mu, logvar || mu_T, logvar_T), plus what reaches z_T from G.
        mu, logvar, mu_T, logvar_T = lat.mu, lat.logvar, lat.mu_T, lat.logvar_T
        inv_var_T = torch.exp(-logvar_T)
        d_mu = mu_T - mu
        g_mu_T = d_mu * inv_var_T * pm.num(("lambda c", b), x, lambda p: p["lambda_"] * c)
        g_lv_T = (1.0 - (logvar.exp() + d_mu * d_mu) * inv_var_T) * pm.num(
            ("0.5 lambda c", b), x, lambda p: 0.5 * p["lambda_"] * c)
        if with_zT:  # z_T = mu_T + sigma_T eps_T: dz_T/dmu_T = 1, dz_T/dlogvar_T = 0.5 (z_T - mu_T)
            g_zT = g_z[:, b:]
            g_mu_T = g_mu_T + g_zT
            g_lv_T = torch.addcmul(g_lv_T, g_zT, lat.z_T - mu_T, value=0.5)
        _, grads_T = v.T.backward(it.T_pass[:2], it.T_pass[2], [g_mu_T, g_lv_T],
                                  out=None if out is None else out[n_G:])
        return grads + grads_T

    def _step2_gradients(self, v: _Views, it: Iteration, out=None) -> list[torch.Tensor]:
        """dL_E/dE, batch mean, written out term by term (into ``out`` if given); G is the updated one
        and is not trained."""
        G, E = v.G, v.E
        x, lat = it.x, it.lat
        b = x.shape[1]
        c = 1.0 / b
        pm = self._per_member()
        with_zT = lat.z_T is not None and pm.any("encoder_hinge")
        mixed = with_zT and not pm.all("encoder_hinge")
        (x_all,), G_acts = G.forward(torch.cat((lat.z, lat.z_T), dim=1) if with_zT else lat.z)
        x_r = x_all[:, :b]
        G_acts_r = [a[:, :b] for a in G_acts]
        if mixed:  # members without the hinge take x_r from G(z) alone, as alone (rows round with
            # the row count of a product): one more pass of G, selected per member
            on = pm.mask("encoder_hinge", x)
            (x_z,), G_acts_z = G.forward(lat.z)
            x_r = torch.where(on, x_r, x_z)
            G_acts_r = [G_acts_r[0]] + [torch.where(on, a, a_z)
                                        for a, a_z in zip(G_acts_r[1:], G_acts_z[1:])]
        grads = None
        if pm.any("encoder_hinge"):
            # gamma * [m_z - KL(E(detach(x_r)))]^+ (and the same on x_Tr): d/dmu = -gamma mu,
            # d/dlogvar = -gamma 0.5 (var - 1), where active; only E's weights get a gradient.
            (mu_f, lv_f), F_acts = E.forward(x_all)
            coef, var = self._kl_hinge_coef(pm, mu_f, lv_f,
                                            pm.num(("-gamma c", b), x, lambda p: -p["gamma"] * c))
            g_mu_f, g_lv_f = coef * mu_f, 0.5 * coef * (var - 1.0)
            if not pm.all("encoder_hinge"):  # exact zeros for the members without the hinge
                g_mu_f, g_lv_f = pm.only("encoder_hinge", g_mu_f), pm.only("encoder_hinge", g_lv_f)
            _, grads = E.backward([mu_f, lv_f], F_acts, [g_mu_f, g_lv_f], out=out)
        # MSE(x, x_r), x_r = G(z), back through G (frozen) to z = mu + sigma eps:
        # dz/dmu = 1, dz/dlogvar = 0.5 (z - mu); lambda * KL(mu, logvar): lambda mu, lambda 0.5 (var - 1).
        g_z, _ = G.backward([x_r], G_acts_r, [(x_r - x) * (2.0 * c)], input_grad=True,
                            weight_grads=False)
        mu, logvar, E_acts = it.E_pass
        # g_z + lambda c mu, one rounding: addcmul with a per-member (S, 1, 1) factor is the fused
        # multiply-add that torch.add(g_z, mu, alpha=lambda c) is (tests/test_sweep_stack.py checks)
        g_mu = torch.addcmul(g_z, mu, pm.num(("lambda c", b), x, lambda p: p["lambda_"] * c))
        g_lv = torch.addcmul((logvar.exp() - 1.0) * pm.num(("0.5 lambda c", b), x,
                                                           lambda p: 0.5 * p["lambda_"] * c),
                             g_z, lat.z - mu, value=0.5)
        if grads is None:  # no hinge: this pass is the whole gradient
            return E.backward([mu, logvar], E_acts, [g_mu, g_lv], out=out)[1]
        if out is not None:  # add this pass's gradient to the hinge pass's
            return E.backward([mu, logvar], E_acts, [g_mu, g_lv], out=out, accumulate=True)[1]
        return [a + b for a, b in zip(grads, E.backward([mu, logvar], E_acts, [g_mu, g_lv])[1])]

    # ---- fitting --------------------------------------------------------------------------------
    def _train(self, nets: nn.ModuleDict, X: torch.Tensor, seeds: list[int], log: LossLog) -> None:
        self.train_stack(nets, X, seeds, log)

    def train_stack(self, nets: nn.ModuleDict, X: torch.Tensor, seeds: list[int], log: LossLog) -> None:
        """Algorithm 1 for a stack of S members, X (S, n, d): with the hand-written gradients when
        ``uses_hand_gradients()``, else through autograd from the definitions. Every ``log_every``
        iterations (and at the last) the value of every loss term is recorded per member; a non-finite
        value marks that member diverged (LossLog), and training stops once every member has."""
        opt_GT, opt_E = self.build_optimizers(nets)  # before the views: parameters move to flat buffers
        n_iter = int(self.n_iter)
        k = nets["E"].fcmu.weight.shape[2]
        feed = Feed(X, int(self.batch_size), n_iter, seeds,
                    noise={"eps": ("normal", (2 if "T" in nets else 1) * k)})
        step = self._hand_iteration if self.uses_hand_gradients() else self._autograd_iteration
        step = step(nets, opt_GT, opt_E)
        self._pm = PerMember(self)  # this stack's per-member parameters, built once
        try:
            members = self.term_members()
            for i, (x, noise) in enumerate(feed):
                record = i % int(self.log_every) == 0 or i == n_iter - 1
                terms = step(x, rows(noise["eps"], x.shape[1]), record)
                if record:
                    log.record(i, force=True, members=members, **terms)
                    if all_diverged(log):
                        break
        finally:
            del self._pm

    def _hand_iteration(self, nets, opt_GT: StackAdam, opt_E: StackAdam):
        """One iteration with the hand-written gradients (the fast path)."""
        v = _views(nets)

        @torch.no_grad()
        def iteration(x, eps, record: bool) -> dict:
            it = self._begin(v, x, eps)
            terms = {}
            if record:  # the loss values at this iteration, from the definitions
                terms.update(self.step1_losses(nets, x, it.lat)[1])
            self._step1_gradients(v, it, opt_GT.grads)
            opt_GT.step()
            if record:
                terms.update(self.step2_losses(nets, x, it.lat)[1])
            self._step2_gradients(v, it, opt_E.grads)
            opt_E.step()
            return terms

        return iteration

    def _autograd_iteration(self, nets, opt_GT: StackAdam, opt_E: StackAdam):
        """One iteration through autograd from ``sample_latents`` / ``step1_losses`` /
        ``step2_losses`` (the reference the hand path is tested against, and the path of a subclass
        that changes a definition)."""
        opt_GT.attach()
        opt_E.attach()

        def iteration(x, eps, record: bool) -> dict:
            lat = self.sample_latents(nets, x, eps)
            objective, terms1 = self.step1_losses(nets, x, lat)  # step 1: G and T
            opt_GT.zero_grad()
            objective.sum().backward(inputs=opt_GT.params)  # members are independent: sum = each
            opt_GT.step()
            objective, terms2 = self.step2_losses(nets, x, lat)  # step 2: E, with the updated G
            opt_E.zero_grad()
            objective.sum().backward(inputs=opt_E.params)
            opt_E.step()
            return {k: v.detach() for k, v in {**terms1, **terms2}.items()} if record else {}

        return iteration

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
