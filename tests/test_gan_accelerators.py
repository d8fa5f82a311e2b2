"""WGAN-GP's and DAGMM's hand-written gradients (methods/*/gradients.py, the "hand" accelerator) against
the models' definitions under autograd (methods/*/model.py): one step's gradients and one short
training run in float64, the registration and the ``gradients`` switch, and short float32 fits of the
two paths giving close scores (equal only up to rounding, which Adam and the GAN game amplify)."""
import copy
import contextlib

import numpy as np
import pytest
import torch

from bench.contract.params import InvalidParameter
from bench.contract.registry import build
from bench.execution.telemetry import LossLog
from engine.backbone import Shape, member_generators
from methods.dagmm import DAGMM
from methods.dagmm.gradients import HandGradients as DagmmHand
from methods.wgan_gp import WGANGP, critic_step, generator_step
from methods.wgan_gp.gradients import HandGradients as WganHand, _layers

torch.set_num_threads(1)

D, K, S, N = 12, 4, 2, 150


def make(name, **params):
    det, _, _ = build(name, {"device": "cpu", **params})
    return det


@contextlib.contextmanager
def float64():
    with torch.random.fork_rng():
        torch.set_default_dtype(torch.float64)
        try:
            yield
        finally:
            torch.set_default_dtype(torch.float32)


def data(seed=0):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(D, D)) / 3
    X = rng.normal(size=(N, D)) @ A
    return (X - X.min(0)) / (X.max(0) - X.min(0))


def stacked(X):
    return torch.from_numpy(np.stack([X] * S)).to(torch.get_default_dtype())  # (S, n, d)


def params_of(nets):
    return {n: p.detach().clone() for n, p in nets.named_parameters()}


def test_the_accelerators_are_registered_and_used_by_default():
    assert WGANGP.accelerators["hand"] is WganHand and DAGMM.accelerators["hand"] is DagmmHand
    for name, cls in (("wgan-gp", WGANGP), ("dagmm", DAGMM)):
        assert make(name).gradients == "auto" and make(name).uses_hand_gradients()
        assert make(name, gradients="hand").uses_hand_gradients()
        assert not make(name, gradients="autograd").uses_hand_gradients()
        with pytest.raises(InvalidParameter):
            cls(gradients="fast").validate_params()

    class Changed(WGANGP):  # a changed definition trains through autograd; "hand" is refused
        def generator_loss(self, G, f, z):
            return super().generator_loss(G, f, z) + 0.0

    assert not Changed().uses_hand_gradients()
    with pytest.raises(InvalidParameter, match="generator_loss"):
        Changed(gradients="hand").validate_params()


# ---- WGAN-GP -----------------------------------------------------------------------------------

def test_wgan_gp_one_step_gradients_hand_equal_the_definitions_autograd():
    """critic_step / generator_step against WGANGP.critic_loss / generator_loss differentiated by
    autograd (the penalty's double backward through create_graph), float64."""
    with float64():
        det = make("wgan-gp")
        nets = det._build(Shape(D, K), member_generators(list(range(S))))
        G, f = nets["G"], nets["D"]
        g = torch.Generator().manual_seed(3)
        real, z, u = torch.rand(S, 64, D, generator=g), torch.randn(S, 64, K, generator=g), \
            torch.rand(S, 64, 1, generator=g)
        with torch.no_grad():
            fake = G(z)
        loss, w, gp = det.critic_loss(f, real, fake, u)
        want = torch.autograd.grad(loss.sum(), list(f.parameters()))
        got = [torch.full_like(p, float("nan")) for p in f.parameters()]
        with torch.no_grad():
            loss_h, w_h, gp_h = critic_step(_layers(f), real, fake, u, float(det.gp_weight), got)
        for a, e in zip((loss_h, w_h, gp_h), (loss, w, gp)):
            torch.testing.assert_close(a, e.detach(), rtol=1e-12, atol=1e-12)
        for a, e in zip(got, want):
            torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12)
        loss_g = det.generator_loss(G, f, z)
        want = torch.autograd.grad(loss_g.sum(), list(G.parameters()))
        got = [torch.full_like(p, float("nan")) for p in G.parameters()]
        with torch.no_grad():
            loss_gh = generator_step(_layers(G), _layers(f), z, got)
        torch.testing.assert_close(loss_gh, loss_g.detach(), rtol=1e-12, atol=1e-12)
        for a, e in zip(got, want):
            torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12)
            assert a.abs().max() > 0


def _train_both(name, n_iter, **params):
    """Train the same initial stack (S members, float64) through "hand" and "autograd": returns the
    parameters and loss histories of each."""
    out = []
    with float64():
        X = stacked(data())
        init = None
        for gradients in ("hand", "autograd"):
            det = make(name, n_iter=n_iter, log_every=1, gradients=gradients, **params)
            det._stack_members = [det] * S
            if init is None:
                init = det._build(Shape(D, K), member_generators(list(range(S))))
            nets = copy.deepcopy(init)
            log = LossLog(S, every=1)
            det._train(nets, X, list(range(S)), log)
            out.append((params_of(nets), log.history))
    return out


@pytest.mark.parametrize("batch_size", [64, 128])  # 128: a short last batch each epoch (150 rows)
def test_wgan_gp_hand_and_autograd_train_the_same_model(batch_size):
    """Three iterations (15 critic steps, 3 generator steps) from the same networks and the same feed:
    the same parameters and losses up to float64 rounding."""
    (p_hand, h_hand), (p_auto, h_auto) = _train_both("wgan-gp", 3, batch_size=batch_size)
    for n in p_hand:
        torch.testing.assert_close(p_hand[n], p_auto[n], rtol=1e-9, atol=1e-11, msg=n)
    for s in range(S):
        for key in ("loss_critic", "wasserstein", "gp", "loss_G"):
            np.testing.assert_allclose(h_hand[s][key], h_auto[s][key], rtol=1e-9, atol=1e-11)


# ---- DAGMM -------------------------------------------------------------------------------------

def test_dagmm_one_step_gradients_hand_equal_the_definitions_autograd():
    """The objective J on one mini-batch through the fused nodes against the plain-torch definitions
    under autograd: values and the gradients of every parameter, float64."""
    with float64():
        det = make("dagmm")
        nets = det._build(Shape(D, K), member_generators(list(range(S))))
        x = stacked(data())[:, :100]
        keep = (torch.rand(S, 100, int(det.est_hidden), generator=torch.Generator().manual_seed(2))
                >= 0.5).to(x.dtype) / 0.5
        results = []
        for defs in (det, DagmmHand(det)):
            loss, terms = det.objective(nets, x, keep, defs)
            grads = torch.autograd.grad(loss.sum(), list(nets.parameters()), allow_unused=True)
            results.append(({k: v.detach() for k, v in terms.items()}, grads))
        (t_auto, g_auto), (t_hand, g_hand) = results
        for key in t_auto:
            torch.testing.assert_close(t_hand[key], t_auto[key], rtol=1e-12, atol=1e-12)
        for (name, _), a, e in zip(nets.named_parameters(), g_hand, g_auto):
            if e is None:  # the encoder's logvar head is built but unused
                assert a is None and "logvar" in name
                continue
            torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-12, msg=name)


def test_dagmm_hand_and_autograd_train_the_same_model():
    (p_hand, h_hand), (p_auto, h_auto) = _train_both("dagmm", 5, batch_size=64)
    for n in p_hand:
        torch.testing.assert_close(p_hand[n], p_auto[n], rtol=1e-9, atol=1e-11, msg=n)
    for s in range(S):
        for key in ("loss", "recon", "energy", "cov_diag"):
            np.testing.assert_allclose(h_hand[s][key], h_auto[s][key], rtol=1e-9, atol=1e-11)


# ---- short fits, float32 -------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["wgan-gp", "dagmm"])
def test_short_fits_of_the_two_paths_give_close_scores(name):
    """A 2-seed stack trained 40 iterations through each path, float32: scores within a few percent of
    their range, correlated > 0.999. Not equal: Adam divides each gradient by its own running scale, so
    an entry whose gradient is zero but for rounding (WGAN-GP's critic output bias: d(-w)/db3 = -1 + 1)
    takes lr-sized steps of either sign, and the game amplifies that (measured on these data: WGAN-GP up
    to ~1 % of the range, DAGMM ~1e-5)."""
    X = data(1).astype(np.float32)
    scores = {}
    for gradients in ("auto", "autograd"):
        dets = [make(name, n_iter=40, gradients=gradients, random_state=s) for s in (0, 1)]
        fitted = type(dets[0]).fit_group(dets, [X, X])
        scores[gradients] = [det.anomaly_score(X) for det in fitted]
    for a, b in zip(scores["auto"], scores["autograd"]):
        d = a - b
        assert np.abs(d - np.median(d)).max() < 0.02 * np.ptp(a)
        assert np.abs(d).max() < 0.05 * np.ptp(a)
        assert np.corrcoef(a, b)[0, 1] > 0.999
