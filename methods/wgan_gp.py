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

Gradients are written out by hand (``critic_step``, ``generator_step``; closed form of the penalty's
double backward for the ReLU critic, below), checked against autograd's ``gradient_penalty`` in
float64: 2x faster than autograd (issue 11; cardio, 5-seed stack, 16.7 -> 8.7 ms of CPU per iteration).

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

from bench.contract.registry import register
from bench.execution.telemetry import LossLog
from bench.contract.params import Interval
from engine.backbone import TRAINING_CONSTRAINTS, Discriminator, Generator
from engine.discriminator_scores import StackedDiscriminatorScores, score_constraints
from engine.invariant import StackAdam, bmm, linear, one_wide
from engine.stacked import Feed, StackedDeepDetector, all_diverged, rows, store_params

#: Inside the square root of the gradient norm, so that its derivative stays finite at a zero gradient.
_NORM_EPS = 1e-12


def interpolates(real: torch.Tensor, fake: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """x^ = u * real + (1 - u) * fake: (S, b, d), (S, b, d), (S, b, 1) -> (S, b, d)."""
    return u * real + (1.0 - u) * fake


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor, u: torch.Tensor):
    """Gulrajani et al. eq. (3): mean over the b interpolates of (||grad_x f(x^)||_2 - 1)^2, per member.
    Returns (gp (S,), x^ (S, b, d)). ``create_graph`` so the penalty trains the critic. The autograd
    reference (any critic) that ``critic_step``'s hand-written gradients are tested against."""
    x_hat = interpolates(real, fake.detach(), u).detach().requires_grad_(True)  # (S, b, d)
    # Rows and members are independent, so the gradient of the sum is each row's own gradient.
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)  # (S, b, d)
    norm = torch.sqrt((grad ** 2).sum(dim=-1) + _NORM_EPS)  # (S, b)
    return ((norm - 1.0) ** 2).mean(dim=1), x_hat


# ---- hand-written gradients (the training path since version 4) -----------------------------------
# The critic f and the generator are ReLU MLPs, so the gradient penalty's double backward has a closed
# form: with a1, a2 the critic's hidden activations at x^ and m1, m2 their ReLU masks,
#     grad_x f = W1 (m1 * (W2 (m2 * w3)))          (layers as x @ W: W1 (d, h), W2 (h, h), w3 (h, 1))
# and the masks are piecewise constant in the weights (autograd's threshold_backward has no second
# derivative either), so d gp / d weights is three products and the biases get nothing from it.
# One iteration then runs: the n_critic steps' fakes in one generator pass (G is fixed while the critic
# trains), per critic step one critic pass over [x^; real; fake] and its hand-written backward, and a
# generator step whose backward goes through the critic to G's weights. Checked against autograd in
# float64 (tests/test_deep_baselines.py); the arithmetic is engine/invariant.py's, so a member trains
# as it would alone (tests/test_invariance.py).

_relu_backward = torch.ops.aten.threshold_backward.default  # (grad, relu output, 0)


def _layers(module: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(weight (S, i, o), bias (S, 1, o)) of a stacked MLP's layers, in ``parameters()`` order."""
    params = list(module.parameters())
    return [(params[j], params[j + 1]) for j in range(0, len(params), 2)]


def _mlp(layers, x):
    """ReLU between layers, none after the last: returns (output, [input, hidden activations...])."""
    acts = [x]
    for W, b in layers[:-1]:
        acts.append(torch.relu(linear(acts[-1], W, b)))
    W, b = layers[-1]
    return linear(acts[-1], W, b), acts


def _add_product(out, a, g) -> None:
    """out += a @ g, for (S, i, m) @ (S, m, o)."""
    if one_wide(a, g):
        out.add_(bmm(a, g))
    else:
        out.baddbmm_(a, g)


def _param_grads(a, g, out_w, out_b, accumulate: bool) -> None:
    """A linear layer's weight gradient a^T g and bias gradient (g summed over rows), given its input
    a (S, B, i) and output gradient g (S, B, o): written into, or with ``accumulate`` added to, out_w
    (S, i, o) and out_b (S, 1, o)."""
    if accumulate:
        _add_product(out_w, a.mT, g)
        out_b.add_(g.sum(dim=1, keepdim=True))
    elif one_wide(a.mT, g):
        out_w.copy_(bmm(a.mT, g))
        torch.sum(g, dim=1, keepdim=True, out=out_b)
    else:
        torch.bmm(a.mT, g, out=out_w)
        torch.sum(g, dim=1, keepdim=True, out=out_b)


def _mlp_backward(layers, acts, g_out, grads, input_grad: bool, accumulate: bool = False):
    """Back-propagate ``g_out`` (S, B, o) through an MLP forwarded by ``_mlp``; the weight and bias
    gradients go into ``grads`` (tensors in ``parameters()`` order, or None to skip them); returns the
    input's gradient when ``input_grad``."""
    g = g_out
    for j in reversed(range(len(layers))):
        if grads is not None:
            _param_grads(acts[j], g, grads[2 * j], grads[2 * j + 1], accumulate)
        if j == 0 and not input_grad:
            return None
        g = bmm(g, layers[j][0].mT)
        if j > 0:
            g = _relu_backward(g, acts[j], 0)
    return g


def critic_step(critic, real, fake, u, gp_weight: float, grads):
    """One critic step's loss and its gradients, by hand: loss_critic = -w + gp_weight * gp with
    w = mean f(real) - mean f(fake) and gp the penalty at x^ = u real + (1 - u) fake (as
    ``gradient_penalty``). ``critic``: its [(W, b)] layers (d -> h -> h -> 1). The gradients of the
    critic's parameters are written into ``grads``. Returns (loss_critic, w, gp), each (S,)."""
    (W1, _), (W2, _), (w3, _) = critic
    b = real.shape[1]
    X = torch.cat([interpolates(real, fake, u), real, fake], dim=1)  # (S, 3b, d)
    out, (_, a1, a2) = _mlp(critic, X)  # (S, 3b, 1)
    w = out[:, b:2 * b, 0].mean(dim=1) - out[:, 2 * b:, 0].mean(dim=1)
    # the penalty, at the first b rows: grad_x f = delta1 W1^T
    a1h, a2h = a1[:, :b], a2[:, :b]
    delta2 = _relu_backward(w3.mT.expand(-1, b, -1), a2h, 0)  # d f / d z2, (S, b, h)
    delta1 = _relu_backward(bmm(delta2, W2.mT), a1h, 0)  # d f / d z1, (S, b, h)
    g = bmm(delta1, W1.mT)  # grad_x f at x^, (S, b, d)
    norm = torch.sqrt((g * g).sum(dim=-1) + _NORM_EPS)  # (S, b)
    gp = ((norm - 1.0) ** 2).mean(dim=1)
    r = ((gp_weight * 2.0 / b) * (norm - 1.0) / norm).unsqueeze(-1) * g  # d (gp_weight gp) / d g
    sigma1 = _relu_backward(bmm(r, W1), a1h, 0)  # d / d (delta2 W2^T), (S, b, h)
    t = bmm(sigma1, W2)  # d / d delta2, (S, b, h)
    # -w's part: d(-w)/d f = -1/b on the real rows, +1/b on the fake rows; its backward writes every
    # gradient, then the penalty's three products are added
    e = torch.cat([torch.full_like(out[:, :b], -1.0 / b), torch.full_like(out[:, :b], 1.0 / b)], dim=1)
    _mlp_backward(critic, [X[:, b:], a1[:, b:], a2[:, b:]], e, grads, input_grad=False)
    _add_product(grads[0], r.mT, delta1)  # d / d W1 = r^T delta1
    _add_product(grads[2], sigma1.mT, delta2)  # d / d W2 = sigma1^T delta2
    grads[4].add_(_relu_backward(t, a2h, 0).sum(dim=1).unsqueeze(-1))  # d / d w3
    return -w + gp_weight * gp, w, gp


def generator_step(generator, critic, z, grads):
    """The generator step's loss -mean f(G(z)) (S,) and its gradients (into ``grads``), by hand:
    back-propagated through the critic (its weights get nothing) to the generator's weights."""
    x, g_acts = _mlp(generator, z)
    out, f_acts = _mlp(critic, x)  # (S, b, 1)
    b = z.shape[1]
    g_x = _mlp_backward(critic, f_acts, torch.full_like(out, -1.0 / b), None, input_grad=True)
    _mlp_backward(generator, g_acts, g_x, grads, input_grad=False)
    return -out[..., 0].mean(dim=1)


@register("wgan-gp")
class WGANGP(StackedDiscriminatorScores, StackedDeepDetector):
    """WGAN-GP on adVAE's backbone (critic d -> h -> h -> 1, no output activations, gradient penalty 10,
    5 critic steps per generator step); score = -f(x).

    Parameters: n_iter (20000 generator updates), n_critic (5 critic updates per generator update),
    gp_weight (10), batch_size (128), lr (1e-3), beta1 (0.5), beta2 (0.9) (Adam, both networks),
    latent_dim (None -> about d / 3, at most 32: backbone.MAX_LATENT), log_every, device ("auto" = GPU when present), random_state.
    score: "paper" (-f(x), the default), "two-sided", "snapshots" (over n_snapshots copies of the
    critic, 20) or "anogan" (latent_steps 500, fm_weight 0.1, latent_lr 0.01):
    engine/discriminator_scores.py.
    """

    # 3: training noise from the shared feeder engine/stacked.Feed (new random streams; issue 14)
    # 4: hand-written gradients (critic_step, generator_step) and all fakes of an iteration in one
    #    generator pass: the same method, other rounding (issue 11)
    version = "4"

    monitored_losses = ["wasserstein"]
    cost = 5.5  # per iteration, relative to AE (measured, issue 11): orders the groups, never a result
    gradient_path = "hand"  # shown by ``perf``
    parameter_constraints = {**TRAINING_CONSTRAINTS, "n_critic": [Interval(int, 1, None)],
                             "gp_weight": [Interval(float, 0, None)],
                             "beta1": [Interval(float, 0, 1, closed="left")],
                             "beta2": [Interval(float, 0, 1, closed="left")],
                             **score_constraints(generative=True)}

    def __init__(self, n_iter: int = 20000, n_critic: int = 5, gp_weight: float = 10.0,
                 batch_size: int = 128, lr: float = 1e-3, beta1: float = 0.5, beta2: float = 0.9,
                 latent_dim: int | None = None, log_every: int = 100, device: str = "auto",
                 random_state: int = 0, score: str = "paper", n_snapshots: int = 20,
                 latent_steps: int = 500, fm_weight: float = 0.1, latent_lr: float = 0.01):
        store_params(self, locals())

    def _build(self, shape, gens):
        return nn.ModuleDict({"G": Generator(shape, gens, sigmoid=False),
                              "D": Discriminator(shape, gens, sigmoid=False)})  # D is the critic f

    def _train(self, nets, X, seeds, log: LossLog):
        G, f = nets["G"], nets["D"]
        k = G.fc3.weight.shape[1]
        n_critic = int(self.n_critic)
        betas = (float(self.beta1), float(self.beta2))
        opt_g = StackAdam(G.parameters(), lr=self.lr, betas=betas)
        opt_f = StackAdam(f.parameters(), lr=self.lr, betas=betas)
        n_iter = int(self.n_iter)
        plan = self._snapshot_plan(n_iter)
        # One feed step per critic update: its real batch, the generator's latents z and the
        # interpolation weights u; the last critic step of an iteration also gives the generator
        # update its own latents z_G (batch_size rows).
        feed = iter(Feed(X, int(self.batch_size), n_iter * n_critic, seeds,
                         noise={"z": ("normal", k), "u": ("uniform", 1), "z_G": ("normal", k)}))
        g_layers, f_layers = _layers(G), _layers(f)
        gp_weight = float(self.gp_weight)
        for it in range(n_iter):
            steps = [next(feed) for _ in range(n_critic)]  # [(real (S, b, d), noise)]
            sizes = [real.shape[1] for real, _ in steps]
            with torch.no_grad():  # G is fixed during the critic steps: all their fakes in one pass
                fakes = _mlp(g_layers, torch.cat([rows(noise["z"], b) for (_, noise), b
                                                  in zip(steps, sizes)], dim=1))[0].split(sizes, dim=1)
                terms = []
                for (real, noise), fake, b in zip(steps, fakes, sizes):
                    terms.append(critic_step(f_layers, real, fake, rows(noise["u"], b), gp_weight,
                                             opt_f.grads))
                    opt_f.step()
                loss_g = generator_step(g_layers, f_layers, steps[-1][1]["z_G"], opt_g.grads)
                opt_g.step()
            sums = {key: sum(t[j] / n_critic for t in terms)
                    for j, key in enumerate(("loss_critic", "wasserstein", "gp"))}
            log.record(it, force=it == n_iter - 1, loss_G=loss_g, **sums)
            self._snapshot(nets, it, plan)
            if all_diverged(log):
                break

    @staticmethod
    def _paper_score(out):
        return -out.double()  # -f(x), (n,)
