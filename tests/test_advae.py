"""adVAE (methods/advae/): loss terms against hand values, the two steps of Algorithm 1 (which
networks move, the detach, the hand-written gradients against autograd for every switch setting), the
ablation variants, scoring (error of the mean, chunking, seeds), stacking, telemetry and a planted-outlier
sanity check."""
import copy
import itertools
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from bench.contract import registry
from bench.contract.base import TrainingDiverged
from engine.backbone import SCORE_SALT
from methods.advae import AdVAE, hinge, kl2, kl_divergence, mse
from methods.advae.gradients import HandGradients
from engine.invariant import StackAdam
from engine.backbone import member_generators

torch.set_num_threads(1)

# Every valid (transformer, encoder_hinge, generator_hinge); the generator hinge needs T.
SWITCHES = [c for c in itertools.product([True, False], repeat=3) if not (c[2] and not c[0])]


# ---- loss terms ---------------------------------------------------------------------------------
def test_mse_sums_squares_over_features():
    a = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    b = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    assert mse(a, b).tolist() == [4.0 + 9.0, 3.0]


def test_kl_divergence_hand_value_positive_and_zero_at_prior():
    mu, logvar = torch.tensor([0.5, -1.0]), torch.tensor([0.2, -0.3])
    hand = 0.5 * ((0.25 + math.exp(0.2) - 0.2 - 1) + (1.0 + math.exp(-0.3) + 0.3 - 1))
    assert kl_divergence(mu, logvar).item() == pytest.approx(hand, rel=1e-6)
    assert kl_divergence(mu, logvar).item() > 0  # the positive KL (eq. 5 prints its negative)
    assert kl_divergence(torch.zeros(3), torch.zeros(3)).item() == 0.0
    # a narrower posterior centred at 0 is still away from the prior
    assert kl_divergence(torch.zeros(2), torch.full((2,), -2.0)).item() > 0


def test_kl2_hand_value_and_zero_when_gaussians_coincide():
    # KL(N(0, 1) || N(1, 4)) = log(2 / 1) + (1 + 1) / (2 * 4) - 1/2
    val = kl2(torch.zeros(1), torch.zeros(1), torch.ones(1), torch.full((1,), math.log(4.0)))
    assert val.item() == pytest.approx(math.log(2.0) + 0.25 - 0.5, rel=1e-6)
    mu, logvar = torch.tensor([0.3, -2.0, 1.5]), torch.tensor([0.1, -1.0, 0.7])
    assert kl2(mu, logvar, mu.clone(), logvar.clone()).abs().item() < 1e-6
    assert kl2(mu, logvar, mu + 0.1, logvar).item() > 0
    # KL2 against the standard normal is the KL term
    assert kl2(mu, logvar, torch.zeros(3), torch.zeros(3)).item() == \
        pytest.approx(kl_divergence(mu, logvar).item(), rel=1e-6)


def test_hinge_clips_at_zero():
    assert hinge(torch.tensor([-3.0, 0.0, 0.5, 2.0])).tolist() == [0.0, 0.0, 0.5, 2.0]


# ---- a tiny stack to run the steps on ------------------------------------------------------------
def _tiny(transformer=True, encoder_hinge=True, generator_hinge=True, S=2, b=11, d=6, k=3,
          dtype=torch.float64, **params):
    """Detector, stacked networks, a mini-batch x (S, b, d) and noise eps (S, b, 2k), with margins set
    to the median per-row value so that every hinge is active on some rows and idle on others."""
    assert (S * b) % 2 == 0
    det = AdVAE(latent_dim=k, transformer=transformer, encoder_hinge=encoder_hinge,
                generator_hinge=generator_hinge, lambda_=0.3, gamma=0.2, **params)
    nets = det.build_networks(d, list(range(S))).to(dtype)
    g = torch.Generator().manual_seed(5)
    x = torch.rand(S, b, d, generator=g, dtype=dtype)
    eps = torch.randn(S, b, 2 * k, generator=g, dtype=dtype)
    with torch.no_grad():
        lat = det.sample_latents(nets, x, eps)
        x_r = nets["G"](lat.z)
        kl_r = kl_divergence(*nets["E"](x_r))
        # between the two middle values (S * b is even): no row sits exactly on a hinge's kink
        det.set_params(m_z=float(torch.quantile(kl_r, 0.5)))
        if transformer:
            det.set_params(m_x=float(torch.quantile(mse(x_r, nets["G"](lat.z_T)), 0.5)))
    return det, nets, x, eps


def _spec_objectives(det, nets, x, lat):
    """The two objectives written straight from docs/advae-spec.md for each variant."""
    E, G, T = nets["E"], nets["G"], lat.z_T is not None
    gam, lam, m_x, m_z = det.gamma, det.lambda_, det.m_x, det.m_z
    x_r = G(lat.z.detach())
    if det.transformer and det.encoder_hinge and det.generator_hinge:  # adVAE, eqs. 6-9
        x_Tr = G(lat.z_T)
        L_Gz = mse(x, x_r) + gam * kl_divergence(*E(x_r))
        L_GzT = hinge(m_x - mse(x_r, x_Tr)) + gam * hinge(m_z - kl_divergence(*E(x_Tr)))
        step1 = L_Gz + L_GzT + lam * kl2(lat.mu.detach(), lat.logvar.detach(), lat.mu_T, lat.logvar_T)
    elif not det.transformer and det.encoder_hinge and not det.generator_hinge:  # E-adVAE
        step1 = mse(x, x_r) + gam * kl_divergence(*E(x_r))
    elif det.transformer and not det.encoder_hinge and det.generator_hinge:  # G-adVAE
        step1 = (mse(x, x_r) + lam * kl2(lat.mu.detach(), lat.logvar.detach(), lat.mu_T, lat.logvar_T)
                 + hinge(m_x - mse(x_r, G(lat.z_T))))
    else:
        raise AssertionError("not a paper variant")
    x_r2 = G(lat.z)
    step2 = mse(x, x_r2) + lam * kl_divergence(lat.mu, lat.logvar)  # plain VAE (G-adVAE's step 2)
    if det.encoder_hinge:
        step2 = step2 + gam * hinge(m_z - kl_divergence(*E(x_r2.detach())))
        if T:
            step2 = step2 + gam * hinge(m_z - kl_divergence(*E(G(lat.z_T.detach()).detach())))
    return step1.mean(dim=1), step2.mean(dim=1)


@pytest.mark.parametrize("name", ["advae", "e-advae", "g-advae"])
def test_each_variant_has_exactly_its_terms(name):
    det, _, _ = registry.build(name)
    det0, nets, x, eps = _tiny(det.transformer, det.encoder_hinge, det.generator_hinge)
    lat = det0.sample_latents(nets, x, eps)
    obj1, terms1 = det0.step1_losses(nets, x, lat)
    obj2, terms2 = det0.step2_losses(nets, x, lat)
    spec1, spec2 = _spec_objectives(det0, nets, x, lat)
    torch.testing.assert_close(obj1, spec1, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(obj2, spec2, rtol=1e-12, atol=1e-12)
    expected = {"advae": {"mse", "kl_r", "kl_Tr", "mse_r_Tr", "L_Gz", "L_GzT", "L_G", "L_T"},
                "e-advae": {"mse", "kl_r", "L_Gz", "L_G"},
                "g-advae": {"mse", "mse_r_Tr", "L_Gz", "L_GzT", "L_G", "L_T"}}[name]
    assert set(terms1) == expected
    assert set(terms2) == {"kl", "L_E"}


def test_variant_defaults_and_the_undefined_combination():
    e, _, _ = registry.build("e-advae")
    g, _, _ = registry.build("g-advae")
    a, _, _ = registry.build("advae")
    assert (e.transformer, e.encoder_hinge, e.generator_hinge) == (False, True, False)
    assert (g.transformer, g.encoder_hinge, g.generator_hinge) == (True, False, True)
    assert (a.transformer, a.encoder_hinge, a.generator_hinge) == (True, True, True)
    with pytest.raises(ValueError, match="generator_hinge=True needs transformer=True"):
        AdVAE(transformer=False, n_iter=2).fit(np.random.default_rng(0).uniform(size=(20, 4)))


def test_hinges_are_active_on_some_rows_only():
    det, nets, x, eps = _tiny()
    lat = det.sample_latents(nets, x, eps)
    with torch.no_grad():
        x_r, x_Tr = nets["G"](lat.z), nets["G"](lat.z_T)
        h_z = hinge(det.m_z - kl_divergence(*nets["E"](x_r)))
        h_x = hinge(det.m_x - mse(x_r, x_Tr))
    for h in (h_z, h_x):  # the fixture's margins make both branches of every hinge count
        assert (h > 0).any() and (h == 0).any()


@pytest.mark.parametrize("switches", SWITCHES)
def test_hand_written_steps_match_autograd_and_move_only_their_networks(switches):
    det, nets, x, eps = _tiny(*switches)
    opt_GT, opt_E = det.build_optimizers(nets)
    E_params = list(nets["E"].parameters())
    GT_params = [*nets["G"].parameters(), *(nets["T"].parameters() if "T" in nets else [])]
    lat = det.sample_latents(nets, x, eps)
    hand = HandGradients(det)
    it = hand.begin(nets, x, eps)
    for a, b in zip(lat, it.lat):
        assert (a is None and b is None) or torch.allclose(a, b, rtol=0, atol=1e-14)

    # step 1: G and T on L_G + lambda L_T; E's weights unchanged
    ref1 = torch.autograd.grad(det.step1_losses(nets, x, lat)[0].sum(), GT_params)
    E_before = [p.detach().clone() for p in E_params]
    GT_before = [p.detach().clone() for p in GT_params]
    got1 = hand.step1(nets, opt_GT, it)
    for r, g in zip(ref1, got1):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-12)
    assert all(torch.equal(p, q) for p, q in zip(E_params, E_before))
    assert all(not torch.equal(p, q) for p, q in zip(GT_params, GT_before))

    # step 2: E on L_E with the updated G and the same z, z_T; G and T unchanged
    ref2 = torch.autograd.grad(det.step2_losses(nets, x, lat)[0].sum(), E_params)
    GT_after1 = [p.detach().clone() for p in GT_params]
    got2 = hand.step2(nets, opt_E, it)
    for r, g in zip(ref2, got2):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-12)
    assert all(torch.equal(p, q) for p, q in zip(GT_params, GT_after1))
    assert all(not torch.equal(p, q) for p, q in zip(E_params, E_before))


def test_step2_hinge_gradient_does_not_reach_G_but_reaches_E():
    det, nets, x, eps = _tiny()
    lat = det.sample_latents(nets, x, eps)
    L_E, terms = det.step2_losses(nets, x, lat)
    # L_E minus its VAE part = the two encoder hinges on detach(x_r), detach(x_Tr)
    vae = (mse(x, nets["G"](lat.z)) + det.lambda_ * kl_divergence(lat.mu, lat.logvar)).mean(dim=1)
    hinges = (L_E - vae).sum()
    assert hinges.item() > 0.01
    g_G = torch.autograd.grad(hinges, list(nets["G"].parameters()), retain_graph=True, allow_unused=True)
    assert all(g is None or g.abs().max() < 1e-12 for g in g_G)
    g_E = torch.autograd.grad(hinges, list(nets["E"].parameters()), retain_graph=True)
    assert max(float(g.abs().max()) for g in g_E) > 1e-4
    # ...while the reconstruction term does pass through G (G is frozen, not cut off)
    g_vae = torch.autograd.grad(vae.sum(), list(nets["G"].parameters()), allow_unused=True)
    assert all(g is not None and g.abs().max() > 0 for g in g_vae)


def test_adam_matches_torch_optim_bitwise():
    g = torch.Generator().manual_seed(0)
    shapes = [(3, 7, 10), (3, 1, 10), (3, 10, 5)]
    ours = [torch.randn(*s, generator=g) for s in shapes]
    ref = [torch.nn.Parameter(p.clone()) for p in ours]
    opt, ref_opt = StackAdam(ours, lr=1e-3), torch.optim.Adam(ref, lr=1e-3)  # CPU default: per tensor
    for _ in range(7):
        grads = [torch.randn(*s, generator=g) for s in shapes]
        for view, gr in zip(opt.grads, grads):
            view.copy_(gr)
        opt.step()
        for p, gr in zip(ref, grads):
            p.grad = gr.clone()
        ref_opt.step()
    assert all(torch.equal(a, b.detach()) for a, b in zip(ours, ref))


# ---- fitting, stacking, telemetry -----------------------------------------------------------------
@pytest.fixture(scope="module")
def small_data():
    rng = np.random.default_rng(7)
    X = np.clip(0.5 + 0.15 * rng.standard_normal((300, 7)), 0, 1)  # 300 rows: batches of 128, 128, 44
    return X, rng.uniform(size=(40, 7))


def test_stacked_group_equals_solo_exactly(small_data):
    X, Xt = small_data
    params = dict(n_iter=120, L=64, log_every=40)
    solo = AdVAE(random_state=2, **params).fit(X)
    group = AdVAE.fit_group([AdVAE(random_state=s, **params) for s in (1, 2, 3)], [X, X, X])
    assert all(isinstance(d, AdVAE) for d in group)
    np.testing.assert_array_equal(group[1].anomaly_score(Xt), solo.anomaly_score(Xt))
    assert group[1].history_ == solo.history_
    assert not np.array_equal(group[0].anomaly_score(Xt), solo.anomaly_score(Xt))


def test_fit_group_rejects_members_with_different_parameters(small_data):
    X, _ = small_data
    with pytest.raises(ValueError, match="differ"):
        AdVAE.fit_group([AdVAE(n_iter=2), AdVAE(n_iter=3, random_state=1)], [X, X])


def test_telemetry_records_every_term_every_log_every(small_data):
    X, _ = small_data
    det = AdVAE(n_iter=25, log_every=10, L=8).fit(X)
    h = det.history_
    assert h["iteration"] == [0, 10, 20, 24]
    for key in ("L_T", "L_G", "L_Gz", "L_GzT", "L_E", "mse", "kl", "kl_r", "kl_Tr", "mse_r_Tr"):
        assert len(h[key]) == 4 and all(math.isfinite(v) for v in h[key]), key
    assert all(v >= 0 for v in h["L_T"] + h["kl"] + h["kl_r"])
    e = AdVAE(n_iter=5, log_every=10, L=8, transformer=False, generator_hinge=False).fit(X)
    assert "L_T" not in e.history_ and "kl_Tr" not in e.history_ and "kl_r" in e.history_
    assert det.device_ == "cpu" and det.monitored_losses == ["mse"]


def test_non_finite_loss_fails_that_member_only(small_data, monkeypatch):
    X, _ = small_data
    train = AdVAE.train_stack

    def poisoned(self, nets, X, seeds, log):  # the member of seed 1 starts with a NaN weight
        with torch.no_grad():
            nets["G"].fc3.weight[seeds.index(1), 0, 0] = float("nan")
        return train(self, nets, X, seeds, log)

    monkeypatch.setattr(AdVAE, "train_stack", poisoned)
    out = AdVAE.fit_group([AdVAE(n_iter=30, log_every=10, L=8, random_state=s) for s in (0, 1)], [X, X])
    assert isinstance(out[0], AdVAE) and np.isfinite(out[0].anomaly_score(X[:5])).all()
    assert isinstance(out[1], TrainingDiverged) and out[1].iteration == 0
    with pytest.raises(TrainingDiverged):
        AdVAE(n_iter=30, log_every=10, L=8, random_state=1).fit(X)


# ---- scoring --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fitted(small_data):
    X, _ = small_data
    return AdVAE(n_iter=60, L=200, random_state=4).fit(X)


def test_score_is_the_error_of_the_mean_reconstruction(fitted, small_data):
    _, Xt = small_data
    s = fitted.anomaly_score(Xt)
    k = fitted.shape_.k
    eps = torch.randn(1, 200, k, generator=member_generators([4], SCORE_SALT)[0])  # (1, L, k)
    with torch.no_grad():
        x = torch.from_numpy(Xt.astype(np.float32)).unsqueeze(0)  # (1, n, d)
        mu, logvar = fitted.encoder_(x)
        z = mu.unsqueeze(2) + torch.exp(0.5 * logvar).unsqueeze(2) * eps.unsqueeze(1)  # (1, n, L, k)
        x_rec = fitted.generator_(z.reshape(1, -1, k)).reshape(1, len(Xt), 200, -1)  # (1, n, L, d)
    error_of_mean = ((x - x_rec.mean(dim=2)) ** 2).sum(-1)[0].double().numpy()
    mean_of_errors = ((x.unsqueeze(2) - x_rec) ** 2).sum(-1).mean(dim=2)[0].double().numpy()
    np.testing.assert_allclose(s, error_of_mean, rtol=1e-5)
    assert (mean_of_errors > s * 1.001).all()  # the two readings differ by the reconstructions' spread


def test_score_chunk_size_and_seed(fitted, small_data):
    _, Xt = small_data
    whole = fitted.anomaly_score(Xt)
    for mb in (1e-6, 0.01, 0.1):  # 1 row per chunk, a few rows, all rows
        det = copy.deepcopy(fitted).set_params(score_budget_mb=mb)
        # same eps for every chunk: equal up to float32 rounding of the matrix products
        np.testing.assert_allclose(det.anomaly_score(Xt), whole, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(fitted.anomaly_score(Xt), whole)  # same seed -> same scores
    other = copy.deepcopy(fitted).set_params(random_state=5)  # other scoring samples
    assert not np.allclose(other.anomaly_score(Xt), whole, rtol=1e-3)
    assert whole.shape == (len(Xt),) and whole.dtype == np.float64 and (whole >= 0).all()


def test_short_training_separates_planted_outliers(planted):
    X_train, X_test, y = planted
    s = AdVAE(n_iter=400, L=100).fit(X_train).anomaly_score(X_test)
    assert roc_auc_score(y, s) > 0.95


# ---- the autograd path: a changed loss definition trains without hand-written gradients ---------
class _AdVAEWithExtraTerm(AdVAE):
    """A researcher's variant: step 2 adds weight * mean ||mu||^2 to L_E. Only the definition is
    written; it trains through autograd."""

    extra_weight = 0.0

    def step2_losses(self, nets, x, lat):
        objective, terms = super().step2_losses(nets, x, lat)
        terms["mu_sq"] = (lat.mu ** 2).sum(dim=-1).mean(dim=1)  # (S,)
        return objective + self.extra_weight * terms["mu_sq"], terms


def test_changed_definition_trains_through_autograd_and_matches_the_fast_path_at_weight_zero(small_data):
    X, Xt = small_data
    params = dict(n_iter=40, L=64, log_every=10, random_state=3)
    assert AdVAE().uses_hand_gradients() and not _AdVAEWithExtraTerm().uses_hand_gradients()
    fast = AdVAE(**params).fit(X)
    zero = _AdVAEWithExtraTerm(**params).fit(X)
    assert "mu_sq" in zero.history_ and "mu_sq" not in fast.history_  # the subclass's loss trained
    # float tolerance is the promise (on the machine this was written on they even agree bit for bit)
    np.testing.assert_allclose(zero.anomaly_score(Xt), fast.anomaly_score(Xt), rtol=1e-4)
    on = type("On", (_AdVAEWithExtraTerm,), {"extra_weight": 1.0})(**params).fit(X)
    assert np.isfinite(on.anomaly_score(Xt)).all()
    assert on.history_["mu_sq"][-1] < zero.history_["mu_sq"][-1]  # the extra term pulls mu to 0
    with pytest.raises(ValueError, match="gradients='hand' needs the paper's loss definitions"):
        _AdVAEWithExtraTerm(gradients="hand", **params).fit(X)


@pytest.mark.parametrize("switches", SWITCHES)
def test_fast_path_equals_autograd_path_to_float_tolerance(switches, small_data):
    X, Xt = small_data
    t, e, g = switches
    params = dict(n_iter=40, L=64, log_every=10, random_state=1, transformer=t, encoder_hinge=e,
                  generator_hinge=g)
    hand, auto = AdVAE(**params).fit(X), AdVAE(gradients="autograd", **params).fit(X)
    np.testing.assert_allclose(auto.anomaly_score(Xt), hand.anomaly_score(Xt), rtol=1e-4)
    assert hand.history_.keys() == auto.history_.keys()
    for key in hand.history_:
        np.testing.assert_allclose(auto.history_[key], hand.history_[key], rtol=1e-4, atol=1e-6)
