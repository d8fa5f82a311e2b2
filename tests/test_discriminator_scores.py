"""Label-free discriminator scores (engine/discriminator_scores.py, issue 12): the ``score`` options of
GAN, WGAN-GP and MO-GAAL.

The inversion case: training rows and normal test rows in a box around 0.5, anomalies at 0.9 on
feature 0, and a discriminator whose value keeps rising past the data on that feature (extrapolation
pointing "more real" off the manifold, the diagnosed mechanism). The paper's one-sided score then
ranks every anomaly as the most normal row (AUC 0); the two-sided, snapshot and AnoGAN scores do not."""
import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from bench.contract.params import InvalidParameter
from bench.contract.registry import build
from engine.discriminator_scores import reference, snapshot_iterations, two_sided

torch.set_num_threads(1)

D_FEATURES = 8  # h = 4 hidden units


@pytest.fixture(scope="module")
def boxed():
    rng = np.random.default_rng(3)
    X = rng.uniform(0.4, 0.6, size=(300, D_FEATURES))
    normal = rng.uniform(0.4, 0.6, size=(60, D_FEATURES))
    anomalies = rng.uniform(0.4, 0.6, size=(20, D_FEATURES))
    anomalies[:, 0] = 0.9
    return X, np.vstack([normal, anomalies]), np.r_[np.zeros(60, int), np.ones(20, int)]


def make(spec, **params):
    return build(spec, {"device": "cpu", **params})[0]


def set_backbone_ramp(D, slope: float) -> None:
    """S = 1 backbone discriminator with output slope * x_0 (+ const): hidden unit 0 of each layer
    carries a ramp on feature 0, kept positive by a bias of 10, every other weight 0."""
    with torch.no_grad():
        for layer in (D.fc1, D.fc2, D.out):
            layer.weight.zero_()
            layer.bias.zero_()
        D.fc1.weight[0, 0, 0] = slope
        D.fc1.bias[0, 0, 0] = 10.0
        D.fc2.weight[0, 0, 0] = 1.0
        D.out.weight[0, 0, 0] = 1.0
        D.out.bias[0, 0, 0] = -10.0


def set_gaal_ramp(D, slope: float) -> None:
    with torch.no_grad():
        for layer in (D.fc1, D.fc2):
            layer.weight.zero_()
            layer.bias.zero_()
        D.fc1.weight[0, 0] = slope
        D.fc1.bias[0] = 10.0
        D.fc2.weight[0, 0] = 1.0
        D.fc2.bias[0] = -10.0


def auc(y, s):
    return roc_auc_score(y, s)


@pytest.mark.parametrize("name", ["gan", "wgan-gp"])
def test_paper_score_inverts_and_the_options_do_not(boxed, name):
    X, X_test, y = boxed
    xt = torch.from_numpy(X.astype(np.float32))
    det = make(name, n_iter=4, score="snapshots", n_snapshots=2, latent_steps=200).fit(X)
    nets = det.networks_
    assert len(nets["snapshots"]) == 2
    set_backbone_ramp(nets["D"], 5.0)  # final D: rises past the data on feature 0
    set_backbone_ramp(nets["snapshots"][0], -5.0)  # an earlier snapshot: falls there
    set_backbone_ramp(nets["snapshots"][1], 5.0)
    # G: a constant at the centre of the box (zero weights, output 0.5 = sigmoid(0) or the bias).
    with torch.no_grad():
        for layer in (nets["G"].fc3, nets["G"].fc4, nets["G"].fcxmu):
            layer.weight.zero_()
            layer.bias.zero_()
        if name == "wgan-gp":
            nets["G"].fcxmu.bias.fill_(0.5)
    got = {}
    for score in ("paper", "two-sided", "snapshots", "anogan"):
        det.score = score
        det._after_fit(xt)
        got[score] = auc(y, det.anomaly_score(X_test))
    assert got["paper"] == 0.0  # every anomaly ranked as more normal than every normal row
    assert got["two-sided"] == 1.0
    assert got["snapshots"] == 1.0
    assert got["anogan"] == 1.0


def test_mo_gaal_paper_score_inverts_and_the_options_do_not(boxed):
    X, X_test, y = boxed
    det = make("mo-gaal", stop_epochs=1, epochs=2, score="snapshots", n_snapshots=2).fit(X)
    assert len(det.snapshots_) == 2
    set_gaal_ramp(det.discriminator_, 5.0)
    set_gaal_ramp(det.snapshots_[0], -5.0)
    set_gaal_ramp(det.snapshots_[1], 5.0)
    got = {}
    for score in ("paper", "two-sided", "snapshots"):
        det.score = score
        det._reference(torch.from_numpy(X.astype(np.float32)))
        got[score] = auc(y, det.anomaly_score(X_test))
    assert got == {"paper": 0.0, "two-sided": 1.0, "snapshots": 1.0}


@pytest.mark.parametrize("spec", ["gan", "wgan-gp", "mo-gaal"])
def test_options_train_and_separate_planted_outliers(planted, spec):
    """Trained end to end (tiny budget, one fit: training does not depend on ``score``): every option
    gives finite scores of the right shape, and separates outliers far from the training rows."""
    X, X_test, y = planted
    budget = {"stop_epochs": 5} if spec == "mo-gaal" else {"n_iter": 300, "latent_steps": 100}
    det = make(spec, score="snapshots", n_snapshots=5, **budget).fit(X)
    xt = torch.from_numpy(X.astype(np.float32))
    for score in ["two-sided", "snapshots"] + ([] if spec == "mo-gaal" else ["anogan"]):
        det.score = score
        det._reference(xt) if spec == "mo-gaal" else det._after_fit(xt)
        s = det.anomaly_score(X_test)
        assert s.shape == (len(X_test),) and np.isfinite(s).all()
        np.testing.assert_allclose(det.anomaly_score(X_test[:7]), s[:7], atol=1e-4)  # float32 D: ulps
        assert auc(y, s) > 0.9, (spec, score, auc(y, s))


def test_snapshots_are_taken_at_evenly_spaced_iterations():
    assert snapshot_iterations(20000, 20) == {1000 * j - 1 for j in range(1, 21)}
    assert snapshot_iterations(20000, 20) <= snapshot_iterations(20000, 40)
    assert snapshot_iterations(150, 20) == {-(-(j * 150) // 20) - 1 for j in range(1, 21)}
    assert max(snapshot_iterations(7, 20)) == 6 and len(snapshot_iterations(7, 20)) == 7


def test_two_sided_reference_is_median_and_mad():
    out = torch.tensor([0.0, 1.0, 2.0, 3.0, 100.0])
    med, scale = reference(out)
    assert med == 2.0 and scale == pytest.approx(1.4826)
    np.testing.assert_allclose(two_sided(torch.tensor([2.0, 0.5174, 3.4826]), (med, scale)).numpy(),
                               [0.0, 1.0, 1.0], atol=1e-4)
    assert reference(torch.ones(6)) == (1.0, 1.0)  # constant output: no division by 0


def test_direct_use_validates_the_score(planted):
    from methods.gan import GAN

    with pytest.raises(InvalidParameter, match="score"):
        GAN(score="two_sided", n_iter=2, device="cpu").fit(planted[0])
