"""Deep baselines on adVAE's backbone: AE, VAE, GAN, WGAN-GP, DAGMM (methods/ae.py ... methods/dagmm/).

Planted outliers, score sign, determinism, stacked fit == solo fit (bit for bit), divergence handling,
the gradient penalty, and DAGMM's guarded energy."""
import math

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.metrics import roc_auc_score

from bench.contract.base import TrainingDiverged
from bench.contract.registry import build, entry
from engine.backbone import (Discriminator, Generator, Shape, StackedLinear, member_generators, sigmoid,
                              softplus)
from methods.dagmm import (compression_features, energy, guarded_cholesky,
                           mixture_from_memberships)
from methods.vae import kl_to_standard_normal
from methods.wgan_gp import _layers, critic_step, generator_step, gradient_penalty

torch.set_num_threads(1)

DEEP = ["ae", "vae", "gan", "wgan-gp", "dagmm"]
ADVERSARIAL = ["gan", "wgan-gp"]


def make(name, **params):
    det, _, _ = build(name, {"device": "cpu", **params})
    return det


def auc(y, s):
    return roc_auc_score(y, s)


@pytest.fixture(scope="module")
def corner():
    """16 features (h = 8 hidden units): 400 normal rows in a tight cluster at the corner 0.85 of the
    unit cube, test = 150 normals + 30 planted outliers around the cube's centre 0.5."""
    rng = np.random.default_rng(11)
    X = 0.85 + 0.04 * rng.standard_normal((400, 16))
    normal = 0.85 + 0.04 * rng.standard_normal((150, 16))
    out = 0.5 + 0.05 * rng.standard_normal((30, 16))
    return X, np.vstack([normal, out]), np.r_[np.zeros(150, int), np.ones(30, int)]


@pytest.fixture(scope="module")
def ragged():
    """300 rows x 12 features: 128-row batches leave a 44-row tail each epoch (the case where some CPU
    kernels round differently with the stack size)."""
    rng = np.random.default_rng(5)
    A = rng.normal(size=(12, 12)) / 4
    X = rng.normal(size=(340, 12)) @ A
    X = (X - X.min(0)) / (X.max(0) - X.min(0))
    return X[:300], X[300:]


# ---- planted outliers ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["ae", "vae", "dagmm"])
def test_reconstruction_methods_separate_planted_outliers(name, planted):
    X_train, X_test, y = planted
    s = make(name, n_iter=300).fit(X_train).anomaly_score(X_test)
    assert isinstance(s, np.ndarray) and s.shape == (len(X_test),) and s.dtype == np.float64
    assert np.isfinite(s).all()
    assert auc(y, s) > 0.95, f"{name}: planted outliers do not score high (a flipped sign gives ~0)"


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_adversarial_methods_separate_planted_outliers(name, corner):
    """A discriminator/critic only knows what it was shown: real rows against the generator's rows.
    Early in training the generator's rows lie between where it starts (the cube's centre for the
    Sigmoid G, near 0 for WGAN-GP's linear G) and the data, so planted outliers there must score high
    (1.0 on 16 of 16 seeds when this was written). Outliers on the far side of the data are
    extrapolation and are not tested: the sign of a ReLU critic's extrapolation varies by seed."""
    X, X_test, y = corner
    det = make(name, n_iter=100).fit(X)
    s = det.anomaly_score(X_test)
    assert s.shape == (len(X_test),) and np.isfinite(s).all()
    assert auc(y, s) > 0.95, f"{name}: outliers between generator and data do not score high"


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_adversarial_score_sign(name, corner):
    """Higher = "the discriminator calls it fake": generated rows must outscore the training rows
    (a flipped sign gives AUC ~0), and the score is exactly the documented transform of D."""
    X, _, _ = corner
    det = make(name, n_iter=100).fit(X)
    with torch.no_grad():
        z = torch.randn(1, 400, det.shape_.k, generator=torch.Generator().manual_seed(1))
        fake = det.networks_["G"](z)[0].numpy().astype(np.float64)
        logit = det.networks_["D"](torch.from_numpy(X).float().unsqueeze(0))[0].double()
    s_train, s_fake = det.anomaly_score(X), det.anomaly_score(fake)
    assert auc(np.r_[np.zeros(len(X)), np.ones(len(fake))], np.r_[s_train, s_fake]) > 0.9
    expected = torch.nn.functional.softplus(-logit) if name == "gan" else -logit  # -log D(x) / -f(x)
    np.testing.assert_allclose(s_train, expected.numpy(), rtol=1e-6, atol=1e-9)


# ---- determinism, stacking, telemetry ------------------------------------------------------------

@pytest.mark.parametrize("name", DEEP)
def test_same_seed_same_scores_and_group_equals_solo(name, ragged):
    X, X_test = ragged
    params = dict(n_iter=60, log_every=10)
    solo = make(name, random_state=0, **params).fit(X)
    s = solo.anomaly_score(X_test)
    assert s.shape == (len(X_test),) and np.isfinite(s).all()
    np.testing.assert_array_equal(s, solo.anomaly_score(X_test))  # deterministic scoring (no dropout)
    np.testing.assert_array_equal(s, make(name, random_state=0, **params).fit(X).anomaly_score(X_test))
    cls = entry(name).cls
    group = cls.fit_group([make(name, random_state=r, **params) for r in (2, 0, 1)], [X] * 3)
    assert not [g for g in group if isinstance(g, Exception)]
    # Member 0 trained in a stack of 3 is bit-identical to its solo fit, telemetry included.
    np.testing.assert_array_equal(group[1].anomaly_score(X_test), s)
    assert group[1].history_ == solo.history_
    assert not np.allclose(group[0].anomaly_score(X_test), s)  # the seed matters
    # Telemetry: every loss term, every log_every iterations and at the last one; monitored keys exist.
    h = solo.history_
    assert h["iteration"] == list(range(0, 60, 10)) + [59]
    assert set(cls.monitored_losses) <= set(h) and len(h) > 1
    assert all(len(v) == len(h["iteration"]) and np.isfinite(v).all() for v in h.values())
    assert solo.device_ == "cpu"


@pytest.mark.parametrize("name", ["ae", "gan"])
def test_group_with_different_row_counts(name, ragged):
    """The resample protocol gives each member its own training rows: still equal to solo fits."""
    X, X_test = ragged
    cls = entry(name).cls
    Xs = [X, X[:280], X[20:]]
    group = cls.fit_group([make(name, n_iter=40, random_state=r) for r in range(3)], Xs)
    for r, (det, Xr) in enumerate(zip(group, Xs)):
        solo = make(name, n_iter=40, random_state=r).fit(Xr)
        np.testing.assert_array_equal(det.anomaly_score(X_test), solo.anomaly_score(X_test))


def test_diverging_member_fails_alone(ragged):
    X, X_test = ragged
    huge = X * 1e20  # finite input whose squared error overflows float32: a non-finite loss
    group = entry("ae").cls.fit_group([make("ae", n_iter=30, random_state=r) for r in (0, 1)],
                                      [X, huge])
    assert isinstance(group[1], TrainingDiverged) and "mse" in str(group[1])
    np.testing.assert_array_equal(group[0].anomaly_score(X_test),
                                  make("ae", n_iter=30, random_state=0).fit(X).anomaly_score(X_test))
    with pytest.raises(TrainingDiverged):
        make("ae", n_iter=30, random_state=1).fit(huge)
    with pytest.raises(ValueError, match="NaN"):
        make("ae", n_iter=30).fit(np.where(X > 0.9, np.nan, X))


def test_stack_invariant_layers_match_torch():
    """The workaround layers compute the same functions as torch's, and do so bit-identically for a
    member alone and in a stack (here a 44-element slice, where torch.sigmoid/softplus are not)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 44, generator=g) * 4
    np.testing.assert_allclose(sigmoid(x), torch.sigmoid(x), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(softplus(x), torch.nn.functional.softplus(x), rtol=1e-6, atol=1e-7)
    assert torch.equal(sigmoid(x)[1], sigmoid(x[1:2])[0]) and torch.equal(softplus(x)[1], softplus(x[1:2])[0])
    xs = torch.tensor([0.0], requires_grad=True)
    (grad,) = torch.autograd.grad(softplus(xs).sum(), xs)
    assert grad.item() == 0.5  # true derivative at 0
    gens = member_generators([0, 1, 2])
    layer = StackedLinear(6, 1, gens)  # 1-wide output: broadcast product, not baddbmm
    inp = torch.randn(3, 44, 6, generator=g)
    np.testing.assert_allclose(layer(inp).detach(), torch.baddbmm(layer.bias, inp, layer.weight).detach(),
                               rtol=1e-5, atol=1e-6)
    solo = StackedLinear(6, 1, gens[1:2])
    solo.load_state_dict({"weight": layer.weight[1:2].detach(), "bias": layer.bias[1:2].detach()})
    assert torch.equal(layer(inp)[1].detach(), solo(inp[1:2])[0].detach())
    D = Discriminator(Shape(12, 4), gens, sigmoid=True)  # backbone's Sigmoid output is the invariant one
    x12 = torch.rand(3, 44, 12, generator=g)
    probs = D(x12).detach()
    assert probs.shape == (3, 44) and torch.equal(probs, sigmoid(D.out(torch.relu(D.fc2(torch.relu(
        D.fc1(x12))))).squeeze(-1)).detach())


# ---- VAE -----------------------------------------------------------------------------------------

def test_vae_kl_is_the_positive_kl():
    assert kl_to_standard_normal(torch.zeros(2, 3), torch.zeros(2, 3)).abs().max() == 0
    mu, logvar = torch.tensor([[1.0, -2.0]]), torch.tensor([[0.5, -1.0]])
    expected = 0.5 * sum(m ** 2 + math.exp(lv) - lv - 1 for m, lv in [(1.0, 0.5), (-2.0, -1.0)])
    assert abs(kl_to_standard_normal(mu, logvar).item() - expected) < 1e-5 and expected > 0


# ---- WGAN-GP's gradient penalty ------------------------------------------------------------------

def test_gradient_penalty_is_taken_at_interpolates():
    """With f(x) = ||x||^2 / 2 the critic's gradient at x is x itself, so the penalty tells exactly
    where it was evaluated: it must be at u * real + (1 - u) * fake, strictly between the two."""
    g = torch.Generator().manual_seed(3)
    real, fake = torch.rand(2, 6, 3, generator=g) + 1.0, torch.rand(2, 6, 3, generator=g) - 1.0
    u = torch.rand(2, 6, 1, generator=g) * 0.8 + 0.1  # in (0.1, 0.9)
    critic = lambda x: 0.5 * (x ** 2).sum(dim=-1)  # noqa: E731 - (S, b, d) -> (S, b)
    gp, x_hat = gradient_penalty(critic, real, fake, u)
    assert gp.shape == (2,)
    torch.testing.assert_close(x_hat, u * real + (1 - u) * fake)
    # strictly between: on the segment, and equal to neither end
    t = ((x_hat - fake) / (real - fake))  # (S, b, d): the same u in every feature
    torch.testing.assert_close(t, u.expand_as(t))
    assert ((t > 0) & (t < 1)).all()
    assert not torch.isclose(x_hat, real).all(-1).any() and not torch.isclose(x_hat, fake).all(-1).any()

    def penalty_at(points):
        return ((points.norm(dim=-1) - 1) ** 2).mean(dim=1)

    torch.testing.assert_close(gp, penalty_at(x_hat), rtol=1e-5, atol=1e-6)
    assert (gp - penalty_at(real)).abs().min() > 1e-3 and (gp - penalty_at(fake)).abs().min() > 1e-3


def test_gradient_penalty_is_nonzero_and_trains_the_critic(corner):
    X, _, _ = corner
    gens = member_generators([0, 1])
    critic = Discriminator(Shape(16, 5), gens, sigmoid=False)
    real = torch.from_numpy(X[:64]).float().expand(2, -1, -1)
    fake = torch.rand(2, 64, 16, generator=torch.Generator().manual_seed(0))
    u = torch.rand(2, 64, 1, generator=torch.Generator().manual_seed(1))
    gp, _ = gradient_penalty(critic, real, fake, u)
    assert (gp > 1e-4).all() and gp.requires_grad
    # create_graph: the penalty reaches the critic's weights (not the output bias: no effect on grad_x f)
    grads = torch.autograd.grad(gp.sum(), [critic.fc1.weight, critic.fc2.weight, critic.out.weight])
    assert all(torch.isfinite(gr).all() and gr.abs().max() > 0 for gr in grads)
    det = make("wgan-gp", n_iter=20, log_every=1).fit(X)
    assert (np.array(det.history_["gp"]) > 0).all()  # computed every critic step during training


@pytest.mark.parametrize("d,k,S,b", [(21, 7, 3, 128), (64, 16, 2, 44), (2, 1, 2, 5), (3, 1, 1, 7)])
def test_wgan_gp_hand_gradients_equal_autograd(d, k, S, b):
    """critic_step and generator_step (the training path) give autograd's losses and gradients, in
    float64: the critic's through the penalty's double backward, the generator's through the critic.
    Shapes of cardio, optdigits with a short batch, and 1-wide layers (h = 1, k = 1)."""
    with torch.random.fork_rng():
        torch.set_default_dtype(torch.float64)
        try:
            gens = member_generators(list(range(S)))
            f = Discriminator(Shape(d, k), gens, sigmoid=False)
            G = Generator(Shape(d, k), gens, sigmoid=False)
            g = torch.Generator().manual_seed(d)
            real = torch.rand(S, b, d, generator=g)
            z = torch.randn(S, b, k, generator=g)
            u = torch.rand(S, b, 1, generator=g)
            with torch.no_grad():
                fake = G(z)
            gp, _ = gradient_penalty(f, real, fake, u)
            loss = -(f(real).mean(1) - f(fake).mean(1)) + 10.0 * gp
            expected = torch.autograd.grad(loss.sum(), list(f.parameters()))
            got = [torch.full_like(p, float("nan")) for p in f.parameters()]  # every slot is written
            with torch.no_grad():
                loss_h, _, gp_h = critic_step(_layers(f), real, fake, u, 10.0, got)
            torch.testing.assert_close(loss_h, loss.detach(), rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(gp_h, gp.detach(), rtol=1e-12, atol=1e-12)
            assert gp_h.min() > 1e-6
            for name, a, e in zip(["W1", "b1", "W2", "b2", "w3", "b3"], got, expected):
                torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12, msg=f"critic {name}")
            loss_g = -f(G(z)).mean(1)
            expected = torch.autograd.grad(loss_g.sum(), list(G.parameters()))
            got = [torch.full_like(p, float("nan")) for p in G.parameters()]
            with torch.no_grad():
                loss_gh = generator_step(_layers(G), _layers(f), z, got)
            torch.testing.assert_close(loss_gh, loss_g.detach(), rtol=1e-12, atol=1e-12)
            for a, e in zip(got, expected):
                torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12)
                assert a.abs().max() > 0 or d < 4  # (one hidden unit can be dead on every row)
        finally:
            torch.set_default_dtype(torch.float32)


# ---- DAGMM ---------------------------------------------------------------------------------------

def test_dagmm_energy_matches_the_mixture_density():
    """The sample energy against scipy: E(z) = -log sum_k phi_k N(z; mu_k, Sigma_k)."""
    rng = np.random.default_rng(0)
    A = [rng.normal(size=(3, 3)) for _ in range(2)]
    sig = np.stack([a @ a.T + 0.5 * np.eye(3) for a in A])
    mu, phi = rng.normal(size=(2, 3)), np.array([0.3, 0.7])
    z = rng.normal(size=(5, 3))
    ref = -np.log(sum(phi[k] * stats.multivariate_normal(mu[k], sig[k]).pdf(z) for k in range(2)))
    t = lambda a: torch.from_numpy(a)  # noqa: E731
    got = energy(t(z), t(phi), t(mu), guarded_cholesky(t(sig), 0.0))
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10)


def test_dagmm_energy_is_finite_with_a_singular_covariance():
    """A constant feature of z (or a component no row belongs to) makes Sigma_k singular or zero."""
    rng = np.random.default_rng(1)
    z = torch.from_numpy(np.c_[rng.normal(size=(50, 2)), np.full(50, 0.3)])  # constant 3rd column
    gamma = torch.from_numpy(np.c_[np.ones(50), np.zeros(50)])  # component 2 is empty
    phi, mu, sigma = mixture_from_memberships(z, gamma)
    assert torch.linalg.matrix_rank(sigma[0]) == 2 and sigma[1].abs().max() == 0
    chol = guarded_cholesky(sigma, 1e-6)
    assert torch.isfinite(chol).all()
    probe = torch.cat([z[:5], z[:5] + torch.tensor([0.0, 0.0, 0.5])])  # on and off the constant
    e = energy(probe, phi, mu, chol)
    assert torch.isfinite(e).all() and (e[5:] > e[:5]).all()
    assert torch.isfinite(guarded_cholesky(torch.zeros(2, 3, 3, dtype=torch.float32), 1e-6)).all()
    # An indefinite matrix (rounding makes batch covariances so): the first attempts fail, and their
    # NaN factors must not reach the gradient.
    bad = torch.tensor([[1.0, 0.0], [0.0, -1e-4]], requires_grad=True)
    chol = guarded_cholesky(bad, 1e-6)
    (grad,) = torch.autograd.grad(torch.log(chol.diagonal()).sum(), bad)
    assert torch.isfinite(chol).all() and torch.isfinite(grad).all()
    zero = torch.zeros(4, 6)
    assert torch.isfinite(compression_features(zero, zero, torch.zeros(4, 2))).all()


def test_dagmm_scores_stay_finite_on_a_dataset_with_a_constant_feature(planted):
    X_train, X_test, y = planted
    X_train, X_test = X_train.copy(), X_test.copy()
    X_train[:, 3] = X_test[:, 3] = 0.0  # a constant (MinMax: zero) feature
    det = make("dagmm", n_iter=200).fit(X_train)
    s = det.anomaly_score(X_test)
    assert np.isfinite(s).all() and np.isfinite(det.anomaly_score(X_train)).all()
    assert auc(y, s) > 0.9
    assert np.isfinite(det.sigma_).all() and abs(det.phi_.sum() - 1) < 1e-6
    zeros = np.zeros((200, 8))  # every row the zero vector: ||x|| = 0 in both z_r features
    det0 = make("dagmm", n_iter=30).fit(zeros)
    assert np.isfinite(det0.anomaly_score(zeros)).all() and np.isfinite(det0.anomaly_score(X_test)).all()


def _composed_mixture_terms(z, gamma, eps):
    phi, mu, sigma = mixture_from_memberships(z, gamma)
    e = energy(z, phi, mu, guarded_cholesky(sigma, eps)).mean(dim=1)
    return e, (1.0 / (sigma.diagonal(dim1=-2, dim2=-1) + eps)).sum(dim=(-2, -1))


@pytest.mark.parametrize("case", ["plain", "constant feature", "near-empty component"])
def test_dagmm_fused_mixture_node_matches_the_composed_helpers(case):
    """MixtureEnergy (one autograd node, hand-written backward) against the composed helpers under
    autograd, float64: values and both gradients, also on the guard's fallback paths."""
    from methods.dagmm import MixtureEnergy

    gen = torch.Generator().manual_seed(0)
    z = torch.randn(3, 40, 5, dtype=torch.float64, generator=gen)
    logits = torch.randn(3, 40, 4, dtype=torch.float64, generator=gen)
    if case == "constant feature":
        z[1, :, 2] = 0.3  # Sigma singular: the jitter path
    if case == "near-empty component":
        logits[2, :, 1] = -30.0
    g_e, g_c = torch.randn(3, dtype=torch.float64, generator=gen), torch.randn(3, dtype=torch.float64, generator=gen)
    results = []
    for fn in (lambda a, b: _composed_mixture_terms(a, b, 1e-6), lambda a, b: MixtureEnergy.apply(a, b, 1e-6, 1e-6)):
        zz, ll = z.clone().requires_grad_(), logits.clone().requires_grad_()
        e, c = fn(zz, torch.softmax(ll, -1))
        (g_e * e + g_c * c).sum().backward()
        results.append((e.detach(), c.detach(), zz.grad, ll.grad))
    for want, got in zip(*results):
        assert torch.isfinite(got).all()
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-9, atol=1e-12 * float(want.abs().max()))


def test_dagmm_fused_compression_node_matches_compression_features():
    from methods.dagmm import CompressionFeatures

    gen = torch.Generator().manual_seed(1)
    x = torch.rand(3, 20, 6, dtype=torch.float64, generator=gen)
    x_r = torch.rand(3, 20, 6, dtype=torch.float64, generator=gen)
    x_r[0, 0] = 0.0  # zero reconstruction (norm floor)
    x_r[1, 1] = x[1, 1]  # perfect reconstruction (distance floor)
    z_c = torch.randn(3, 20, 2, dtype=torch.float64, generator=gen)
    g = torch.randn(3, 20, 4, dtype=torch.float64, generator=gen)
    grads = []
    for fn in (compression_features, CompressionFeatures.apply):
        a, b = x_r.clone().requires_grad_(), z_c.clone().requires_grad_()
        out = fn(x, a, b)
        assert torch.equal(out.detach(), compression_features(x, x_r, z_c))  # the same forward, bit for bit
        (out * g).sum().backward()
        grads.append((a.grad, b.grad))
    (ref_r, ref_c), (got_r, got_c) = grads
    assert torch.equal(got_c, ref_c)
    np.testing.assert_allclose(got_r.numpy(), ref_r.numpy(), rtol=1e-9, atol=1e-12 * float(ref_r.abs().max()))
