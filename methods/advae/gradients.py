"""adVAE's hand-written gradients: an optional accelerator of methods/advae/model.py.

The model file states Algorithm 1's latents and two objectives term by term (``sample_latents``,
``step1_losses``, ``step2_losses``) and trains them through autograd. This file computes the SAME
gradients written out by hand (the derivative of each term is next to its name) and registers itself as
the accelerator ``hand``, which ``gradients="auto"`` (the default) uses wherever the definitions are the
paper's (a subclass that overrides one trains through autograd). These networks are so small that
autograd's per-operation bookkeeping costs more than the arithmetic: about 1.5 to 2.5x faster per
iteration on cardio, letter, pendigits and satellite (5-seed stack, one thread; docs/performance.md),
less on optdigits (d = 64). tests/test_advae.py checks these gradients against autograd's for every
switch setting, and whole fits of the two paths against each other.

Stacking: the arithmetic comes from engine/invariant.py (the exp-based sigmoid, 1-wide products,
StackAdam), so a member trained in a stack ends up bit for bit as trained alone; per-member weights,
margins and switches come from ``det._per_member()`` (engine/members.py), switched-off terms zeroed
with torch.where.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from engine.compiled import CompiledStep
from engine.invariant import StackAdam, bmm, linear, one_wide, sigmoid_
from engine.members import PerMember
from methods.advae.model import AdVAE, Latents


_relu_backward = torch.ops.aten.threshold_backward.default  # (grad, relu output, 0)
_sigmoid_backward = torch.ops.aten.sigmoid_backward.default  # (grad, sigmoid output)


class _Net:
    """A stacked network (E, G or T) seen as plain tensors, for hand-written gradients: trunk layers each
    followed by ``act``, then linear heads (squashed by a Sigmoid for G). Same arithmetic as the module's
    forward. ``params`` is in the module's ``parameters()`` order."""

    def __init__(self, params: list[torch.Tensor], n_trunk: int, act: str, out_sigmoid: bool = False):
        layers = list(zip(params[0::2], params[1::2]))
        self.trunk, self.heads = layers[:n_trunk], layers[n_trunk:]
        self.params = list(params)
        # transposed views, for the input gradients; they follow in-place updates of the weights
        self.trunk_WT = [W.mT for W, _ in self.trunk]
        self.heads_WT = [W.mT for W, _ in self.heads]
        self.act_, self.act_backward = ((torch.relu_, lambda g, h: _relu_backward(g, h, 0))
                                        if act == "relu" else (sigmoid_, _sigmoid_backward))
        self.out_sigmoid = out_sigmoid

    @classmethod
    def of(cls, module: nn.Module, trunk: list[str], heads: list[str], act: str,
           out_sigmoid: bool = False) -> "_Net":
        """The view of a module's layers ``trunk`` then ``heads`` (weight, bias each)."""
        params = [t for n in trunk + heads for t in (getattr(module, n).weight, getattr(module, n).bias)]
        if [id(p) for p in params] != [id(p) for p in module.parameters()]:
            raise RuntimeError(f"{type(module).__name__}: unexpected layers")
        return cls(params, len(trunk), act, out_sigmoid)

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
    return _Views(_Net.of(nets["E"], ["fc1", "fc2"], ["fcmu", "fclogvar"], "relu"),
                  _Net.of(nets["G"], ["fc3", "fc4"], ["fcxmu"], "relu", out_sigmoid=True),
                  _Net.of(nets["T"], ["fct1", "fct2"], ["fctmu", "fctlogvar"], "sigmoid")
                  if "T" in nets else None)


def _views_of(GT: list[torch.Tensor], E: list[torch.Tensor], n_G: int) -> _Views:
    """The same views over parameter tensors given in the optimizers' order (G's then T's, E's)."""
    return _Views(_Net(E, 2, "relu"), _Net(GT[:n_G], 2, "relu", out_sigmoid=True),
                  _Net(GT[n_G:], 2, "sigmoid") if len(GT) > n_G else None)


class Iteration(NamedTuple):
    """One mini-batch as the hand-written steps see it: x (S, b, d), its Latents, and the activations
    of the passes through E and T that step 2 and step 1 back-propagate through."""

    x: torch.Tensor
    lat: Latents
    E_pass: tuple
    T_pass: tuple | None


@AdVAE.accelerator("hand")
class HandGradients:
    """Algorithm 1 for one adVAE detector ``det`` (and the stack it trains), gradients by hand."""

    def __init__(self, det: AdVAE):
        self.det = det

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
        pm = self.det._per_member()  # per-member weights (S, 1, 1), rounded as Python scalars would be
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
        pm = self.det._per_member()
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

    def iteration(self, nets, opt_GT: StackAdam, opt_E: StackAdam):
        """One iteration of Algorithm 1 with the hand-written gradients: ``iteration(x, eps, record)``
        -> the logged terms (from the definitions) when ``record``."""
        v = _views(nets)

        @torch.no_grad()
        def iteration(x, eps, record: bool) -> dict:
            it = self._begin(v, x, eps)
            terms = {}
            if record:  # the loss values at this iteration, from the definitions
                terms.update(self.det.step1_losses(nets, x, it.lat)[1])
            self._step1_gradients(v, it, opt_GT.grads)
            opt_GT.step()
            if record:
                terms.update(self.det.step2_losses(nets, x, it.lat)[1])
            self._step2_gradients(v, it, opt_E.grads)
            opt_E.step()
            return terms

        return iteration

    def compiled_iteration(self, nets, opt_GT: StackAdam, opt_E: StackAdam):
        """``iteration`` with the iterations that log nothing run as one compiled graph
        (engine/compiled.py): the same gradients and Adam steps, fused. It is compiled for the first
        mini-batch's shape; the logged iterations and a shorter last batch of an epoch run eagerly."""
        eager = self.iteration(nets, opt_GT, opt_E)
        n_G = len(list(nets["G"].parameters()))

        def body(params, grads, update, x, eps):
            v = _views_of(params[0], params[1], n_G)
            it = self._begin(v, x, eps)
            self._step1_gradients(v, it, grads[0])  # Algorithm 1, step 1: G and T
            update(0)
            self._step2_gradients(v, it, grads[1])  # step 2: E, with the updated G
            update(1)

        step = CompiledStep([opt_GT, opt_E], body, reference=lambda x, eps: eager(x, eps, False))
        shape: list = []

        def iteration(x, eps, record: bool) -> dict:
            if not shape:
                shape.append(x.shape)
            if record or x.shape != shape[0]:
                return eager(x, eps, record)
            step(x, eps)
            return {}

        return iteration
