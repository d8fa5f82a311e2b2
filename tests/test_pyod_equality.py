"""The classical baselines through the harness equal PyOD called directly on the authors' path: the
paper split, scaled by scikit-learn's ``MinMaxScaler`` fitted on the training rows (their notebook).
Bit for bit: the only thing between the two is the harness, so any difference is the harness's."""
import numpy as np
import pytest
import scipy.io
from pyod.models.abod import ABOD
from pyod.models.gmm import GMM
from pyod.models.hbos import HBOS
from pyod.models.iforest import IForest
from pyod.models.kde import KDE
from pyod.models.lof import LOF
from pyod.models.ocsvm import OCSVM
from sklearn.preprocessing import MinMaxScaler

from bench.evaluation import data
from bench.contract import registry
from bench.execution.runner import environment, execute_group
from bench.execution.plan import expand
from bench.execution.config import Experiment

DATASETS = ["letter", "cardio", "satellite", "optdigits", "pendigits"]
# The defaults each adapter states (methods/classical.py), written out again as PyOD arguments.
DIRECT = {
    "gmm": lambda: GMM(n_components=1, covariance_type="full", reg_covar=1e-6, random_state=0),
    "kde": lambda: KDE(bandwidth="scott", algorithm="auto"),
    "lof": lambda: LOF(n_neighbors=20, novelty=True),
    "ocsvm": lambda: OCSVM(kernel="rbf", nu=0.1, gamma="auto"),
    "iforest": lambda: IForest(n_estimators=100, max_samples="auto", random_state=0),
    "abod": lambda: ABOD(n_neighbors=5, method="fast"),
    "hbos": lambda: HBOS(n_bins=10, alpha=0.1, tol=0.5),
}


@pytest.mark.integration
@pytest.mark.parametrize("dataset", DATASETS)
def test_harness_equals_pyod_on_the_authors_path(dataset):
    ds = data.load(dataset)
    exp = Experiment(name="eq", protocol="paper", seeds=(0,), threshold="percentile", alpha=0.1,
                     datasets=(dataset,), methods=tuple(DIRECT))
    env = environment()
    for run in expand(exp):
        (rec,) = execute_group([run], "percentile", 0.1, None, env)
        assert rec["status"] == "ok", rec["error"]
        mat = scipy.io.loadmat(data.locate(ds.name))
        X = np.asarray(mat["X"], dtype=np.float64)
        from bench.evaluation.protocols import PROTOCOLS
        train, test = PROTOCOLS["paper"](ds, 0)
        scaler = MinMaxScaler().fit(X[train])
        with np.errstate(all="ignore"):
            model = DIRECT[run.method]().fit(scaler.transform(X[train]))
            direct = np.asarray(model.decision_function(scaler.transform(X[test])), dtype=float)
        ours = rec["test_scores"]
        if run.method == "abod":  # ours floors PyOD's NaN (no angle defined) at the training minimum
            nan = np.isnan(direct)
            direct[nan] = ours[nan]
        np.testing.assert_array_equal(ours, direct, err_msg=f"{run.method} on {dataset}")
