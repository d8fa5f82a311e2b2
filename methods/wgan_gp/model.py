"""WGAN-GP baseline on adVAE's backbone (Wang et al., KBS 2020, Section 4.4; Gulrajani et al.,
"Improved Training of Wasserstein GANs", NIPS 2017, Algorithm 1).

Networks (engine/backbone.py): generator = adVAE's G without the output Sigmoid (k -> h -> h -> d),
z ~ N(0, I) of size k; critic f = d -> h -> h -> 1 without output activation.

Critic loss per critic step, on b real rows x, b generated rows x~ = G(z) and b interpolates
x^ = u x + (1 - u) x~ with u ~ U[0, 1) per row (a point on the segment between a real and a generated row):
    loss_critic = mean f(x~) - mean f(x) + 10 * mean (||grad_x^ f(x^)||_2 - 1)^2
Generator loss: loss_G = -mean f(G(z)).
One iteration = one generator update, preceded by n_critic = 5 critic updates, each on a fresh real
mini-batch and fresh noise (Algorithm 1). So n_iter = 20000 (adVAE's budget counted in generator
updates) means 100000 critic updates and five times the real rows of the other baselines.

Optimiser: Adam with lr 1e-3, adVAE's learning rate (the paper's deep baselines share adVAE's optimiser
settings), and betas (0.5, 0.9), the WGAN-GP authors' choice for their low-dimensional experiments
(gan_toy.py of github.com/igul222/improved_wgan_training: Adam(1e-4, beta1=0.5, beta2=0.9); the paper's
Algorithm 1 lists lr 1e-4, beta1 = 0, beta2 = 0.9). Their lr 1e-4 is not used: the comparison keeps
adVAE's. Batch 128. lr, beta1 and beta2 are parameters.

The two losses are defined below through autograd (``WGANGP.critic_loss``, whose penalty differentiates
f at x^ with ``create_graph=True``, and ``WGANGP.generator_loss``), and so is the training loop
(``WGANGP._autograd_iteration``). Their gradients written out by hand (closed form of the penalty's
double backward for the ReLU critic) are an optional accelerator registered beside this file
(``gradients.py``, "hand"), checked against autograd: ``gradients="auto"`` (the default) uses it while
the definitions are these, ``"autograd"`` trains through autograd (the same model, other rounding).

Score: -f(x) (the critic rates real rows high), in float64; higher = more anomalous.

Telemetry (means over the n_critic critic steps of an iteration, then the generator step):
loss_critic, wasserstein = mean f(x) - mean f(x~) (the critic's estimate of the distance between the
data and the generator, which Gulrajani et al. show tracks sample quality), gp (the penalty
before the factor 10) and loss_G. Health check (``monitored_losses``): the critic loss legitimately
rises back towards 0 as the generator improves, and loss_G moves with the critic's offset; the flag
watches ``wasserstein``, which rises from ~0 while the critic learns and must fall as G approaches
the data. If it never falls below its early level, the generator never got closer to the data by the
critic's own measure: a broken run.
"""
from __future__ import annotations

import torch
from torch import nn

from bench.contract.params import Interval
from bench.contract.registry import register
from bench.execution.telemetry import LossLog
from engine.accelerators import GRADIENTS, GRADIENTS_CONSTRAINT, Accelerated  # noqa: F401 (GRADIENTS)
from engine.backbone import TRAINING_CONSTRAINTS, Discriminator, Generator
from engine.compiled import COMPILE_CONSTRAINT, check_compile
from engine.discriminator_scores import StackedDiscriminatorScores, score_constraints
from engine.invariant import StackAdam
from engine.stacked import Feed, StackedDeepDetector, all_diverged, rows, store_params

#: What an accelerator computes the gradients of (the losses, and the ReLU networks whose closed-form
#: penalty gradient it writes out); a subclass that overrides one trains through autograd.
DEFINITIONS = ("critic_loss", "generator_loss", "_build")

#: Inside the square root of the gradient norm, so that its derivative stays finite at a zero gradient.
_NORM_EPS = 1e-12


def interpolates(real: torch.Tensor, fake: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """x^ = u * real + (1 - u) * fake: (S, b, d), (S, b, d), (S, b, 1) -> (S, b, d)."""
    return u * real + (1.0 - u) * fake


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor, u: torch.Tensor):
    """Gulrajani et al. eq. (3): mean over the b interpolates of (||grad_x f(x^)||_2 - 1)^2, per member.
    Returns (gp (S,), x^ (S, b, d)). ``create_graph`` so the penalty trains the critic. The autograd
    reference (any critic) that the hand-written ``critic_step`` (gradients.py) is tested against."""
    x_hat = interpolates(real, fake.detach(), u).detach().requires_grad_(True)  # (S, b, d)
    # Rows and members are independent, so the gradient of the sum is each row's own gradient.
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)  # (S, b, d)
    norm = torch.sqrt((grad ** 2).sum(dim=-1) + _NORM_EPS)  # (S, b)
    return ((norm - 1.0) ** 2).mean(dim=1), x_hat


@register("wgan-gp")
class WGANGP(Accelerated, StackedDiscriminatorScores, StackedDeepDetector):
    """WGAN-GP on adVAE's backbone (critic d -> h -> h -> 1, no output activations, gradient penalty 10,
    5 critic steps per generator step); score = -f(x).

    Parameters: n_iter (20000 generator updates), n_critic (5 critic updates per generator update),
    gp_weight (10), batch_size (128), lr (1e-3), beta1 (0.5), beta2 (0.9) (Adam, both networks),
    latent_dim (None -> about d / 3, at most 32: backbone.MAX_LATENT), log_every, device ("auto" = GPU when present), random_state.
    score: "paper" (-f(x), the default), "two-sided", "snapshots" (over n_snapshots copies of the
    critic, 20) or "anogan" (latent_steps 500, fm_weight 0.1, latent_lr 0.01):
    engine/discriminator_scores.py. gradients: "auto" (the hand-written accelerator, gradients.py,
    where the definitions are this class's; autograd where a subclass overrides one), "hand",
    "autograd". compile (False; True runs the hand-written path's iterations as one compiled graph
    each, engine/compiled.py; the autograd path is always eager).
    """

    # 3: training noise from the shared feeder engine/stacked.Feed (new random streams; issue 14)
    # 4: hand-written gradients (critic_step, generator_step) and all fakes of an iteration in one
    #    generator pass: the same method, other rounding (issue 11)
    version = "4"

    monitored_losses = ["wasserstein"]
    cost = 5.5  # per iteration, relative to AE (measured, issue 11): orders the groups, never a result
    gradient_path = "hand"  # the default's (gradients="auto"), shown by ``perf``
    parameter_constraints = {**TRAINING_CONSTRAINTS, "n_critic": [Interval(int, 1, None)],
                             "gp_weight": [Interval(float, 0, None)],
                             "beta1": [Interval(float, 0, 1, closed="left")],
                             "beta2": [Interval(float, 0, 1, closed="left")],
                             **score_constraints(generative=True),
                             "gradients": GRADIENTS_CONSTRAINT, "compile": COMPILE_CONSTRAINT}
    #: What an accelerator (``gradients.py``: "hand", ``iteration(nets, opt_g, opt_f)``) computes.
    definitions = DEFINITIONS

    def __init__(self, n_iter: int = 20000, n_critic: int = 5, gp_weight: float = 10.0,
                 batch_size: int = 128, lr: float = 1e-3, beta1: float = 0.5, beta2: float = 0.9,
                 latent_dim: int | None = None, log_every: int = 100, device: str = "auto",
                 random_state: int = 0, score: str = "paper", n_snapshots: int = 20,
                 latent_steps: int = 500, fm_weight: float = 0.1, latent_lr: float = 0.01,
                 gradients: str = "auto", compile: bool = False):
        store_params(self, locals())

    def _check_combinations(self) -> None:
        super()._check_combinations()  # gradients="hand" needs these definitions and the accelerator
        check_compile(self)  # compile=True needs a C++ compiler

    def _build(self, shape, gens):
        return nn.ModuleDict({"G": Generator(shape, gens, sigmoid=False),
                              "D": Discriminator(shape, gens, sigmoid=False)})  # D is the critic f

    # ---- the definitions, through autograd ------------------------------------------------------
    def critic_loss(self, f: nn.Module, real: torch.Tensor, fake: torch.Tensor, u: torch.Tensor):
        """One critic step's loss, per member: loss_critic = mean f(x~) - mean f(x) + gp_weight * gp
        = -w + gp_weight * gp, on real rows x (S, b, d), generated rows x~ (S, b, d) and interpolation
        weights u (S, b, 1). Returns (loss_critic, w, gp), each (S,); differentiable w.r.t. f."""
        w = f(real).mean(dim=1) - f(fake).mean(dim=1)  # the critic's Wasserstein estimate
        gp, _ = gradient_penalty(f, real, fake, u)
        return -w + float(self.gp_weight) * gp, w, gp

    def generator_loss(self, G: nn.Module, f: nn.Module, z: torch.Tensor) -> torch.Tensor:
        """loss_G = -mean f(G(z)) per member (S,), z (S, b, k); differentiable w.r.t. G (and f, whose
        gradient the generator step does not use)."""
        return -f(G(z)).mean(dim=1)

    # ---- training (Algorithm 1) -----------------------------------------------------------------
    def _train(self, nets, X, seeds, log: LossLog):
        """Algorithm 1 for a stack: per iteration n_critic critic steps, then one generator step,
        through the "hand" accelerator when ``uses_hand_gradients()``, else through autograd. Both
        paths consume the same feed: one step per critic update with its real batch, the generator's
        latents z and the interpolation weights u; the last critic step of an iteration also gives
        the generator update its own latents z_G (batch_size rows)."""
        G, f = nets["G"], nets["D"]
        k = G.fc3.weight.shape[1]
        n_critic = int(self.n_critic)
        betas = (float(self.beta1), float(self.beta2))
        opt_g = StackAdam(G.parameters(), lr=self.lr, betas=betas)
        opt_f = StackAdam(f.parameters(), lr=self.lr, betas=betas)
        n_iter = int(self.n_iter)
        plan = self._snapshot_plan(n_iter)
        feed = iter(Feed(X, int(self.batch_size), n_iter * n_critic, seeds,
                         noise={"z": ("normal", k), "u": ("uniform", 1), "z_G": ("normal", k)}))
        if self.uses_hand_gradients():
            hand = self.accelerators["hand"](self)
            step = hand.compiled_iteration if self.compile else hand.iteration
        else:  # autograd: eager, whatever ``compile`` says
            step = self._autograd_iteration
        step = step(nets, opt_g, opt_f)
        for it in range(n_iter):
            terms, loss_g = step([next(feed) for _ in range(n_critic)])  # [(real (S, b, d), noise)]
            sums = {key: sum(t[j] / n_critic for t in terms)
                    for j, key in enumerate(("loss_critic", "wasserstein", "gp"))}
            log.record(it, force=it == n_iter - 1, loss_G=loss_g, **sums)
            self._snapshot(nets, it, plan)
            if all_diverged(log):
                break

    def _autograd_iteration(self, nets, opt_g: StackAdam, opt_f: StackAdam):
        """One iteration through autograd from ``critic_loss`` and ``generator_loss`` (the reference
        the hand path is tested against, and the path of a subclass that changes a definition):
        returns a function of the iteration's n_critic feed steps -> ([(loss_critic, w, gp)], loss_G)."""
        G, f = nets["G"], nets["D"]
        opt_g.attach()
        opt_f.attach()

        def iteration(steps):
            with torch.no_grad():  # G is fixed during the critic steps
                fakes = [G(rows(noise["z"], real.shape[1])) for real, noise in steps]
            terms = []
            for (real, noise), fake in zip(steps, fakes):
                loss, w, gp = self.critic_loss(f, real, fake, rows(noise["u"], real.shape[1]))
                opt_f.zero_grad()
                loss.sum().backward(inputs=opt_f.params)  # members are independent: sum = each
                opt_f.step()
                terms.append((loss.detach(), w.detach(), gp.detach()))
            loss_g = self.generator_loss(G, f, steps[-1][1]["z_G"])
            opt_g.zero_grad()
            loss_g.sum().backward(inputs=opt_g.params)  # the critic's gradients are not used
            opt_g.step()
            return terms, loss_g.detach()

        return iteration

    @staticmethod
    def _paper_score(out):
        return -out.double()  # -f(x), (n,)
