"""The paper threshold policy through the runner and the report: each method's family decides its
threshold; captions name policy, alpha, protocol and budgets."""
import numpy as np
import pandas as pd
import pytest

from bench.reporting import outputs, runtable
from bench.contract import registry
from bench.execution import runner
from bench.contract.base import Detector
from bench.cli import main
from bench.execution.config import Experiment
from bench.execution.store import Store
from bench.evaluation.thresholds import threshold

pytestmark = pytest.mark.integration


class _Centre(Detector):
    def __init__(self, random_state=0):
        self.random_state = random_state

    def fit(self, X):
        self.c_ = X.mean(0)
        return self

    def anomaly_score(self, X):
        return ((X - self.c_) ** 2).sum(1)


@pytest.fixture
def families():
    registry.register("test-recon")(type("Recon", (_Centre,), {"threshold_family": "reconstruction"}))
    registry.register("test-plain")(type("Plain", (_Centre,), {}))  # declares nothing: PyOD's rule
    yield
    for name in ("test-recon", "test-plain"):
        registry._REGISTRY.pop(name, None)


def test_runner_and_report_apply_each_family_its_threshold(tmp_path, families, capsys):
    exp = Experiment(name="t", protocol="paper", seeds=(0,), threshold="paper", alpha=0.1,
                     datasets=("letter",), methods=("test-recon", "test-plain"))
    runner.run_experiment(exp, tmp_path, workers=1, progress=False)
    store = Store(tmp_path)
    df = store.latest(with_blobs=True).set_index("spec")
    store.close()
    for spec, policy in (("test-recon", "kde"), ("test-plain", "percentile")):
        r = df.loc[spec]
        assert r.threshold_policy == "paper"
        assert r.threshold == pytest.approx(threshold(policy, r.train_scores, 0.1), rel=1e-12)
    assert df.loc["test-plain"].threshold == pytest.approx(np.quantile(df.loc["test-plain"].train_scores,
                                                                       0.9), rel=1e-12)
    # the report names the context; --quick is remembered beside the store
    runtable.remember_order(tmp_path, exp.methods, exp.datasets, quick=True, config="t")
    outputs.build_report(tmp_path, published=None)
    first = (tmp_path / "tables" / "f1.md").read_text().splitlines()[0]
    assert ("Protocol paper; seeds 0; threshold paper (kde for the reconstruction-based methods, PyOD's "
            "percentile for the others), alpha 0.1; --quick budgets.") in first
    # --threshold kde recomputes beside the default tables
    assert main(["report", "--out", str(tmp_path), "--threshold", "kde", "--published", "none"]) == 0
    kde = pd.read_csv(tmp_path / "tables" / "kde" / "runs.csv").set_index("spec")
    assert kde.loc["test-plain", "threshold"] == pytest.approx(
        threshold("kde", df.loc["test-plain"].train_scores, 0.1), rel=1e-6)
    assert pd.read_csv(tmp_path / "runs.csv").set_index("spec").loc["test-plain",
                                                                    "threshold_policy"] == "paper"
    # an unknown --methods for the figures is one error line
    capsys.readouterr()
    assert main(["report", "--out", str(tmp_path), "--methods", "nope"]) == 2
    assert capsys.readouterr().err.startswith("error: --methods: nope not in the store")
