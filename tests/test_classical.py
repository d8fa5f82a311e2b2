import numpy as np
import pytest
from pyod.models.pca import PCA as PyODPCA
from sklearn.metrics import roc_auc_score

from bench.evaluation import data
from bench.contract import registry
from bench.evaluation.protocols import make_split


@pytest.mark.integration
@pytest.mark.parametrize("name", ["cardio", "optdigits"])
def test_pca_finite_and_meaningful_where_pyod_breaks(name):
    split = make_split(data.load(name), "paper")
    Z = split.X_train - split.X_train.mean(0)
    # the trap: constant (optdigits) or linearly dependent (cardio) features on the training rows
    assert np.linalg.matrix_rank(Z) < Z.shape[1]
    det, _, _ = registry.build("pca")
    s_test = det.fit(split.X_train).anomaly_score(split.X_test)
    s_train = det.anomaly_score(split.X_train)
    assert np.isfinite(s_test).all() and np.isfinite(s_train).all()
    assert roc_auc_score(split.y_test, s_test) > 0.55
    if name == "optdigits":
        with np.errstate(all="ignore"):
            pyod = PyODPCA().fit(split.X_train).decision_function(split.X_test)
        assert not np.isfinite(pyod).all()  # what ours repairs


def test_abod_duplicate_rows_get_the_lowest_training_score():
    rng = np.random.default_rng(0)
    X = np.vstack([rng.uniform(size=(60, 3)), np.tile([[0.5, 0.5, 0.5]], (8, 1))])
    det, _, _ = registry.build("abod")
    s = det.fit(X).anomaly_score(X)
    assert np.isfinite(s).all()
    assert s[-1] == pytest.approx(s.min())


def test_sign_convention_is_higher_more_anomalous(planted):
    X_train, X_test, y = planted
    for name in ("ocsvm", "lof", "kde", "gmm"):
        det, _, _ = registry.build(name)
        s = det.fit(X_train).anomaly_score(X_test)
        assert s[y == 1].mean() > s[y == 0].mean(), name


def test_sod_is_inductive(planted):
    """PyOD's SOD scores a batch against itself; ours scores each row against the training rows, so
    a row's score does not depend on the other rows it is scored with."""
    X_train, X_test, y = planted
    det, _, _ = registry.build("sod")
    det.fit(X_train)
    full = det.anomaly_score(X_test)
    alone = np.array([det.anomaly_score(X_test[i:i + 1])[0] for i in (0, 5, 160, 179)])
    np.testing.assert_allclose(full[[0, 5, 160, 179]], alone)
    assert roc_auc_score(y, full) > 0.95
