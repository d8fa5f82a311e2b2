"""MO-GAAL (methods/mo_gaal.py): early generator stop, planted outliers, sign, determinism."""
import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.metrics import roc_auc_score

from bench.contract.base import TrainingDiverged
from bench.contract.registry import build
from methods.mo_gaal import MOGAAL, generator_shares

torch.set_num_threads(1)


def _blob(n=400, d=6, seed=0):
    """Correlated Gaussian normals scaled to [0, 1] on themselves; returns (X, scale function)."""
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(d, d)) / np.sqrt(d)
    X = rng.normal(size=(n, d)) @ A
    lo, span = X.min(0), X.max(0) - X.min(0)
    return (X - lo) / span, (lambda Z: (Z @ A - lo) / span), rng


# Small, fast settings: 400 rows / batch 100 = 4 iterations per epoch.
FAST = dict(batch_size=100, k=4, random_state=0, device="cpu")


def _gen_state(m):
    return [p.detach().clone() for p in m.generators_.parameters()]


def _disc_state(m):
    return [p.detach().clone() for p in m.discriminator_.parameters()]


def _max_diff(a, b):
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


def test_sub_generators_stop_at_configured_epoch():
    X, _, _ = _blob()
    # A larger lr_g than the authors' so that a generator step is clearly visible in the weights.
    base = dict(FAST, lr_g=0.05, stop_epochs=2)
    at_stop = MOGAAL(epochs=2, **base).fit(X)  # run ends exactly at the stop
    longer = MOGAAL(epochs=5, **base).fit(X)  # same seed, three more epochs of D alone
    later_stop = MOGAAL(epochs=5, **dict(base, stop_epochs=3)).fit(X)

    eye = torch.eye(X.shape[1])
    assert float((at_stop.generators_.w1.detach() - eye).abs().max()) > 1e-4  # the generators did train
    # After the stop the generators are frozen: 3 more epochs leave them bit-identical ...
    assert _max_diff(_gen_state(at_stop), _gen_state(longer)) == 0.0
    # ... while the discriminator keeps training.
    assert _max_diff(_disc_state(at_stop), _disc_state(longer)) > 1e-4
    # The stop is where it is configured, not earlier: one more generator epoch changes them.
    assert _max_diff(_gen_state(longer), _gen_state(later_stop)) > 1e-6
    assert longer.generator_steps_ == 2 * 4 and later_stop.generator_steps_ == 3 * 4
    assert longer.n_iter_ == 5 * 4
    # Generator losses are still recorded after the stop (evaluated, not trained).
    assert len(longer.history_["loss_G0"]) == longer.n_iter_
    assert set(longer.history_) == {"iteration", "loss_D", "loss_G"} | {f"loss_G{i}" for i in range(4)}


def test_planted_outliers_rank_high_and_sign():
    X, scale, rng = _blob(n=600)
    # Outliers: far from the normals' manifold (radius 4-5 in the latent Gaussian space).
    U = rng.normal(size=(60, 6))
    U = U / np.linalg.norm(U, axis=1, keepdims=True) * rng.uniform(4, 5, size=(60, 1))
    _, _, rng2 = _blob(n=600, seed=1)
    normals_test = scale(rng2.normal(size=(200, 6)))
    X_test = np.vstack([normals_test, scale(U)])
    y = np.r_[np.zeros(200), np.ones(60)]
    # 25 generator epochs = 450 iterations (< 0.5 s); lr_d 0.05 so the small D learns in that budget.
    m = MOGAAL(stop_epochs=25, **dict(FAST, lr_d=0.05)).fit(X)
    s = m.anomaly_score(X_test)
    auc = roc_auc_score(y, s)
    assert auc > 0.85, auc  # a flipped sign (PyOD's D(x) as the score) gives AUC < 0.1 here
    # Score = 1 - D(x), D = probability of real data.
    with torch.no_grad():
        d_real = torch.sigmoid(m.discriminator_(torch.tensor(X_test[:5], dtype=torch.float32)))
    np.testing.assert_allclose(s[:5], 1 - d_real.double().numpy(), atol=1e-6)


def test_scores_shape_finite_and_deterministic():
    X, scale, rng = _blob()
    X_test = np.vstack([X[:50], rng.uniform(-0.5, 1.5, size=(30, 6))])  # incl. rows outside [0, 1]
    a = MOGAAL(stop_epochs=2, **FAST).fit(X)
    s = a.anomaly_score(X_test)
    assert s.shape == (80,) and s.dtype == np.float64
    assert np.isfinite(s).all() and (s >= 0).all() and (s <= 1).all()
    assert np.ptp(s) > 0  # not degenerate
    b = MOGAAL(stop_epochs=2, **FAST).fit(X)
    np.testing.assert_array_equal(s, b.anomaly_score(X_test))
    c = MOGAAL(stop_epochs=2, **dict(FAST, random_state=1)).fit(X)
    assert not np.allclose(s, c.anomaly_score(X_test))
    # Scoring rows one at a time gives the same scores as in one batch.
    np.testing.assert_allclose(np.concatenate([a.anomaly_score(X_test[i:i + 1]) for i in range(5)]),
                               s[:5], rtol=1e-6)
    assert a.device_ == "cpu"


def test_generator_shares_dynamic_weighting():
    shares = generator_shares(500, 10)
    assert sum(shares) == 500
    assert shares == sorted(shares, reverse=True) and shares[0] > 9 * shares[-1]
    assert generator_shares(55, 10) == list(range(10, 0, -1))  # exactly proportional to k - i


def test_registry_params_and_divergence():
    det, name, params = build("mo-gaal[k=3,stop_epochs=1]")
    assert name == "mo-gaal" and isinstance(det, MOGAAL) and params["k"] == 3
    assert clone(det).get_params()["stop_epochs"] == 1
    assert MOGAAL.quick_params and MOGAAL.monitored_losses == ["loss_D"]
    X, _, _ = _blob(n=100)
    X[3, 2] = np.nan
    with pytest.raises(TrainingDiverged):
        MOGAAL(stop_epochs=1, **FAST).fit(X)
