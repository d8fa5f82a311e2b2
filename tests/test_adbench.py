"""ADBench's catalogue and protocol (issue 19): committed files, collections, and the split that equals
ADBench's ``DataGenerator(seed=s)`` row for row."""
import random
import shutil

import numpy as np
import pytest
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import MinMaxScaler

from bench import BenchError
from bench.execution import config
from bench.evaluation import data
from bench.evaluation.protocols import make_split

pytestmark = pytest.mark.integration


def adbench_generator(X, y, seed):
    """ADBench's unsupervised data generation (adbench/datasets/data_generator.py, generator() with
    la=0, no synthetic anomalies, no noise), re-stated with its global-state seeding: returns
    (X_train, y_train, X_test, y_test) exactly as ADBench hands them to a detector."""
    def set_seed(s):  # adbench.myutils.Utils.set_seed, without torch
        np.random.seed(s)
        random.seed(s)

    set_seed(seed)
    if len(y) < 1000:
        set_seed(seed)
        idx = np.random.choice(np.arange(len(y)), 1000, replace=True)
        X, y = X[idx], y[idx]
    if len(y) > 10000:
        set_seed(seed)
        idx = np.random.choice(np.arange(len(y)), 10000, replace=False)
        X, y = X[idx], y[idx]
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, shuffle=True, stratify=y)
    scaler = MinMaxScaler().fit(X_train)
    return scaler.transform(X_train), y_train, scaler.transform(X_test), y_test


@pytest.mark.parametrize("name,seed", [("14_glass", 1), ("15_Hepatitis", 3), ("6_cardio", 2),
                                       ("22_magic.gamma", 1), ("10_cover", 3)])
def test_split_equals_adbench_row_for_row(name, seed):
    """Small (resampled up to 1,000), mid-sized (as is) and large (subsampled to 10,000) datasets."""
    ds = data.load(name)
    with np.load(data.locate(name), allow_pickle=False) as raw:  # ADBench reads the file as stored
        X_train, y_train, X_test, y_test = adbench_generator(raw["X"], raw["y"], seed)
    split = make_split(ds, "adbench", seed)
    assert np.array_equal(split.X_train, X_train) and np.array_equal(split.X_test, X_test)
    assert np.array_equal(ds.y[split.train_idx], y_train) and np.array_equal(split.y_test, y_test)
    n = min(max(len(ds.y), 1000), 10000)
    assert len(split.train_idx) + len(split.test_idx) == n
    assert y_train.sum() > 0  # contaminated: the training anomalies stay, unlabelled
    other = make_split(ds, "adbench", seed + 1)
    assert not np.array_equal(other.train_idx, split.train_idx)


def test_small_dataset_copies_cross_the_split():
    """The documented leak of ADBench's protocol under 1,000 rows: resampling before the split puts
    copies of one row on both sides."""
    split = make_split(data.load("14_glass"), "adbench", 1)
    assert len(np.intersect1d(split.train_idx, split.test_idx)) > 0


def test_every_catalogued_file_is_verified_on_load(tmp_path):
    cat = data.catalogue()
    assert len(data.collections()["adbench"]["members"]) == 43 and len(cat) == 48
    for name, meta in cat.items():
        ds = data.load(name)
        assert ds.sha256 == meta["sha256"] and ds.X.shape == (meta["rows"], meta["features"])
    # a tampered copy of an ADBench file is refused, naming the dataset
    (tmp_path / "adbench").mkdir()
    bad = tmp_path / "adbench" / "42_WBC.npz"
    shutil.copy(data.locate("42_WBC"), bad)
    raw = bytearray(bad.read_bytes())
    raw[100] ^= 0xFF
    bad.write_bytes(bytes(raw))
    with pytest.raises(BenchError, match="42_WBC.*sha256"):
        data.load("42_WBC", data_dir=tmp_path)


def test_paper_and_adbench_versions_are_different_files():
    for paper, adb in [("cardio", "6_cardio"), ("satellite", "30_satellite"), ("letter", "20_letter")]:
        assert data.info(paper)["sha256"] != data.info(adb)["sha256"]
    assert data.load("satellite").X.shape[0] == 5100 and data.load("30_satellite").X.shape[0] == 6435


def test_collections_expand_in_configs_and_command_line(tmp_path):
    assert data.expand(["paper"]) == ["cardio", "letter", "optdigits", "pendigits", "satellite"]
    assert data.expand(["adbench", "6_cardio", "cardio"])[:2] == ["1_ALOI", "2_annthyroid"]
    assert len(data.expand(["adbench", "6_cardio"])) == 43  # named twice, kept once
    cfg = tmp_path / "c.toml"
    cfg.write_text('protocol = "adbench"\ndatasets = ["adbench"]\nmethods = ["hbos"]\nseeds = [1]\n')
    exp = config.load(cfg)
    assert len(exp.datasets) == 43
    assert exp.restrict(datasets=["paper"]).datasets[0] == "cardio"


@pytest.mark.parametrize("name", ["36_speech", "speech", "9_census"])
def test_absent_dataset_says_why(name):
    with pytest.raises(BenchError, match="does not hold.*your own dataset"):
        data.info(name)


def test_paper_protocol_needs_the_authors_split():
    with pytest.raises(BenchError, match="paper protocol"):
        make_split(data.load("6_cardio"), "paper", 0)
    with pytest.raises(BenchError, match="already hold"):
        make_split(data.load("6_cardio"), "adbench+adasyn=0.02", 1)


def test_paper_protocol_on_adbench_datasets_is_bad_input(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('protocol = "paper"\ndatasets = ["cardio", "6_cardio"]\nmethods = ["hbos"]\n')
    with pytest.raises(BenchError, match="6_cardio has none.*--protocol adbench"):
        config.load(cfg)


def test_a_run_over_its_time_limit_is_stored_as_timeout(tmp_path):
    """A detector that sleeps past the limit is stopped and comes back with status timeout (never
    dropped); the store remembers the limit, so a resume under the same limit does not retry it."""
    import time as _time

    from bench.contract.base import Detector
    from bench.execution.config import Experiment
    from bench.execution.runner import RunTimeout, environment, execute_group, time_limit
    from bench.execution.plan import expand
    from bench.execution.store import Store

    with pytest.raises(RunTimeout):
        with time_limit(0.2):
            _time.sleep(2)

    class Sleeper(Detector):  # takes hbos's parameters, sleeps in fit
        def __init__(self, **params):
            self.params = params

        def fit(self, X):
            _time.sleep(5)
            return self

        def anomaly_score(self, X):
            return X.sum(1)

    exp = Experiment(name="t", protocol="adbench", seeds=(1, 2), threshold="percentile", alpha=0.1,
                     datasets=("14_glass",), methods=("hbos",), time_limit=0.3)
    runs = expand(exp)
    t0 = _time.perf_counter()
    recs = execute_group(runs, "percentile", 0.1, None, environment(), cls=Sleeper, limit=0.3)
    assert _time.perf_counter() - t0 < 3
    assert [r["status"] for r in recs] == ["timeout", "timeout"]
    assert recs[0]["error"] == "time limit of 0.3 s per run exceeded"
    fast = execute_group(runs, "percentile", 0.1, None, environment(), limit=30)
    assert [r["status"] for r in fast] == ["ok", "ok"]
    store = Store(tmp_path)
    for rec in recs:
        store.put(rec)
    assert store.timeouts() == {runs[0].key: 0.3, runs[1].key: 0.3}
    store.close()


@pytest.mark.parametrize("spec,name,published", [
    ("pca-pyod1", "6_cardio", 0.9555), ("pca-pyod1", "14_glass", 0.6629),
    ("ecod-pyod098", "7_Cardiotocography", 0.6892), ("ecod-pyod098", "14_glass", 0.757)])
def test_legacy_pyod_detectors_reproduce_adbench(spec, name, published):
    """ADBench's Table D4 PCA and ECOD, to their four printed decimals, from the arithmetic of the
    PyOD ADBench ran, written out (methods/legacy_pyod.py); the mean of seeds 1-3 as ADBench
    averages them."""
    from sklearn.metrics import roc_auc_score

    from bench.contract import registry

    aucs = []
    for seed in (1, 2, 3):
        split = make_split(data.load(name), "adbench", seed)
        det, _, _ = registry.build(spec)
        aucs.append(roc_auc_score(split.y_test, det.fit(split.X_train).anomaly_score(split.X_test)))
    assert round(float(np.mean(aucs)), 4) == published
