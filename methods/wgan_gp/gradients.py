"""WGAN-GP's hand-written gradients: an optional accelerator of methods/wgan_gp/model.py.

The model file defines the two losses (``WGANGP.critic_loss`` with the gradient penalty through
``torch.autograd.grad(..., create_graph=True)``, ``WGANGP.generator_loss``) and trains them through
autograd. This file computes the SAME gradients written out by hand and registers itself as the
accelerator ``hand``, which ``gradients="auto"`` (the default) uses wherever those definitions and the
networks are the model's (a subclass that overrides one trains through autograd). About 2x faster than
autograd (issue 11; cardio, 5-seed stack, 16.7 -> 8.7 ms of CPU per iteration; docs/performance.md).
tests/test_deep_baselines.py checks ``critic_step`` and ``generator_step`` against autograd's in float64,
and tests/test_gan_accelerators.py one training iteration and short fits of the two paths.

The critic f and the generator are ReLU MLPs, so the gradient penalty's double backward has a closed
form: with a1, a2 the critic's hidden activations at x^ and m1, m2 their ReLU masks,
    grad_x f = W1 (m1 * (W2 (m2 * w3)))          (layers as x @ W: W1 (d, h), W2 (h, h), w3 (h, 1))
and the masks are piecewise constant in the weights (autograd's threshold_backward has no second
derivative either), so d gp / d weights is three products and the biases get nothing from it.
One iteration then runs: the n_critic steps' fakes in one generator pass (G is fixed while the critic
trains), per critic step one critic pass over [x^; real; fake] and its hand-written backward, and a
generator step whose backward goes through the critic to G's weights. The arithmetic is
engine/invariant.py's, so a member trains as it would alone (tests/test_invariance.py).
"""
from __future__ import annotations

import torch
from torch import nn

from engine.compiled import CompiledStep
from engine.invariant import StackAdam, bmm, linear, one_wide
from engine.stacked import rows
from methods.wgan_gp.model import _NORM_EPS, WGANGP, interpolates

_relu_backward = torch.ops.aten.threshold_backward.default  # (grad, relu output, 0)


def _pairs(params) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(weight (S, i, o), bias (S, 1, o)) of a stacked MLP's layers, from its parameters in order."""
    return list(zip(params[0::2], params[1::2]))


def _layers(module: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return _pairs(list(module.parameters()))


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
    ``WGANGP.critic_loss``). ``critic``: its [(W, b)] layers (d -> h -> h -> 1). The gradients of the
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


@WGANGP.accelerator("hand")
class HandGradients:
    """The ``hand`` accelerator: ``iteration(nets, opt_g, opt_f)`` -> a function of one iteration's
    feed steps that updates both networks as ``WGANGP._autograd_iteration`` does, gradients by hand."""

    def __init__(self, det: WGANGP):
        self.gp_weight = float(det.gp_weight)
        self.n_critic = int(det.n_critic)

    def iteration(self, nets: nn.ModuleDict, opt_g: StackAdam, opt_f: StackAdam):
        # after the optimizers: the layers are views of their flat buffers
        g_layers, f_layers = _layers(nets["G"]), _layers(nets["D"])
        gp_weight = self.gp_weight

        def step(steps):
            with torch.no_grad():
                return _iteration(g_layers, f_layers, *_unpack(steps), gp_weight,
                                  opt_g.grads, opt_f.grads, opt_g.step, opt_f.step)

        return step

    def compiled_iteration(self, nets: nn.ModuleDict, opt_g: StackAdam, opt_f: StackAdam):
        """``iteration`` as one compiled graph (engine/compiled.py): the n_critic critic steps and the
        generator step with their Adam updates, fused. It is compiled for the first iteration's
        batch sizes; an iteration that holds the short last batch of an epoch runs eagerly."""
        eager = self.iteration(nets, opt_g, opt_f)
        g_layers, f_layers = _layers(nets["G"]), _layers(nets["D"])
        gp_weight = self.gp_weight

        def body(params, grads, update, *feed):
            return _iteration(_pairs(params[0]), _pairs(params[1]), *feed, gp_weight, grads[0], grads[1],
                              lambda: update(0), lambda: update(1))

        def reference(*feed):  # the eager iteration on the same feed steps
            return _iteration(g_layers, f_layers, *feed, gp_weight, opt_g.grads, opt_f.grads,
                              opt_g.step, opt_f.step)

        step = CompiledStep([opt_g, opt_f], body, updates=(1, self.n_critic), reference=reference)
        first: list = []

        def iteration(steps):
            sizes = tuple(real.shape for real, _ in steps)
            if not first:
                first.append(sizes)
            return eager(steps) if sizes != first[0] else step(*_unpack(steps))

        return iteration


def _unpack(steps):
    """An iteration's feed steps [(real, {z, u, z_G})] as (reals, zs, us, z_G of the last step)."""
    return (tuple(real for real, _ in steps), tuple(noise["z"] for _, noise in steps),
            tuple(noise["u"] for _, noise in steps), steps[-1][1]["z_G"])


def _iteration(g_layers, f_layers, reals, zs, us, z_G, gp_weight, grads_g, grads_f, step_g, step_f):
    """One WGAN-GP iteration by hand: G is fixed during the critic steps, so all their fakes come
    from one generator pass; then per critic step its gradients (into ``grads_f``) and ``step_f()``,
    then the generator step (``grads_g``, ``step_g()``). Returns ([(loss_critic, w, gp)], loss_G)."""
    sizes = [real.shape[1] for real in reals]
    fakes = _mlp(g_layers, torch.cat([rows(z, b) for z, b in zip(zs, sizes)], dim=1))[0].split(sizes, dim=1)
    terms = []
    for real, fake, u, b in zip(reals, fakes, us, sizes):
        terms.append(critic_step(f_layers, real, fake, rows(u, b), gp_weight, grads_f))
        step_f()
    loss_g = generator_step(g_layers, f_layers, z_G, grads_g)
    step_g()
    return terms, loss_g
