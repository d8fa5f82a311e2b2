import shutil

import numpy as np
import pytest

from bench import BenchError
from bench.evaluation import data
from bench.evaluation.protocols import make_split, minmax

pytestmark = pytest.mark.integration

PAPER = {  # issue 2: train rows / test rows / test anomalies of the paper split
    "letter": (1200, 400, 100), "cardio": (1324, 507, 176), "satellite": (3945, 1155, 75),
    "optdigits": (4053, 1163, 150), "pendigits": (5371, 1499, 156),
}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_checksum_shape_and_paper_split(name):
    ds = data.load(name)
    meta = data.info(name)
    assert data.locate(name) == data.REPO_ROOT / "datasets" / "data" / meta["file"]  # committed copy
    assert data.sha256_of(data.locate(name)) == meta["sha256"]
    assert ds.X.shape == (meta["rows"], meta["features"]) and ds.X.dtype == np.float64
    assert ds.y.shape == (meta["rows"],) and int(ds.y.sum()) == meta["anomalies"]
    split = make_split(ds, "paper", seed=0)
    n_train, n_test, n_anom = PAPER[name]
    assert split.X_train.shape == (n_train, meta["features"])
    assert split.X_test.shape == (n_test, meta["features"])
    assert int(split.y_test.sum()) == n_anom
    assert ds.y[split.train_idx].sum() == 0  # clean training
    # MinMaxScaler's X * scale_ + min_ may overshoot 1 by an ulp (the authors' arithmetic, kept)
    assert np.allclose(split.X_train.min(0), 0) and split.X_train.max() <= 1.0 + 1e-12


def test_satellite_is_not_the_odds_satellite():
    ds = data.load("satellite")
    assert ds.X.shape == (5100, 36) and ds.y.sum() == 75  # ODDS satellite: 6435 rows, 2036 anomalies
    assert ds.y[:75].all()  # anomalies come first in this file


def test_paper_split_ignores_seed_and_resample_uses_it():
    ds = data.load("cardio")
    a, b = make_split(ds, "paper", 0), make_split(ds, "paper", 3)
    assert np.array_equal(a.train_idx, b.train_idx)
    r0, r1 = make_split(ds, "resample", 0), make_split(ds, "resample", 1)
    assert not np.array_equal(r0.train_idx, r1.train_idx)
    n_normal = int((ds.y == 0).sum())
    assert len(r0.train_idx) == round(0.8 * n_normal)
    assert int(r0.y_test.sum()) == 176 and ds.y[r0.train_idx].sum() == 0
    assert np.array_equal(r0.train_idx, make_split(ds, "resample", 0).train_idx)


def test_corrupt_file_is_an_error(tmp_path):
    src = data.locate("letter")
    bad = tmp_path / "letter.mat"
    shutil.copy(src, bad)
    raw = bytearray(bad.read_bytes())
    raw[-10] ^= 0xFF
    bad.write_bytes(bytes(raw))
    data._load_verified.cache_clear()
    with pytest.raises(BenchError, match="sha256"):
        data.load("letter", data_dir=tmp_path)


def test_missing_file_names_the_place_and_its_source(tmp_path):
    dirs = [("given by --data-dir", tmp_path / "a")]
    with pytest.raises(BenchError) as err:
        data.find_file("cardio.mat", dirs, "dataset 'cardio'", "ODDS")
    msg = str(err.value)
    assert str(tmp_path / "a") in msg and "no such directory" in msg and "ODDS" in msg


def test_without_a_given_place_the_repository_copy_is_used(monkeypatch):
    monkeypatch.delenv(data.DATA_ENV, raising=False)
    ((label, where),) = data.candidate_dirs(None, data.DATA_ENV, "datasets/data")
    assert where == data.REPO_ROOT / "datasets" / "data" and "repository" in label
    assert data.load("letter").sha256 == data.info("letter")["sha256"]


@pytest.mark.parametrize("how", ["flag", "env"])
def test_a_given_directory_is_the_only_place_looked_in(tmp_path, monkeypatch, how):
    """A directory given by --data-dir or $ADVAE_BENCH_DATA that lacks the file is an error naming that
    directory and the flag or variable, even though the repository holds the file."""
    monkeypatch.delenv(data.DATA_ENV, raising=False)
    if how == "env":
        monkeypatch.setenv(data.DATA_ENV, str(tmp_path))
    with pytest.raises(BenchError) as err:
        data.load("cardio", tmp_path if how == "flag" else None)
    msg = str(err.value)
    assert f"not found in {tmp_path}" in msg
    assert ("given by --data-dir" if how == "flag" else f"given by ${data.DATA_ENV}") in msg
    assert "--data-dir or $ADVAE_BENCH_DATA" in msg
    assert str(data.REPO_ROOT) not in msg  # the repository's copy was not looked in


def test_the_flag_wins_over_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv(data.DATA_ENV, str(tmp_path / "env"))
    ((label, where),) = data.candidate_dirs(tmp_path / "cli", data.DATA_ENV, "datasets/data")
    assert where == tmp_path / "cli" and label.startswith("given by --data-dir")
    ((label, where),) = data.candidate_dirs(None, data.DATA_ENV, "datasets/data")
    assert where == tmp_path / "env" and label.startswith(f"given by ${data.DATA_ENV}")
    ((label, _),) = data.candidate_dirs(None, data.CHECKPOINTS_ENV, "checkpoints")
    assert "--checkpoints or $ADVAE_BENCH_CHECKPOINTS" in label


def test_unknown_dataset_suggests():
    with pytest.raises(BenchError, match="cardio"):
        data.info("cardoi")


def test_minmax_constant_feature_and_no_clipping():
    tr = np.array([[0.0, 5.0], [2.0, 5.0]])
    te = np.array([[4.0, 6.0]])
    a, b = minmax(tr, te)
    assert np.array_equal(a, [[0.0, 0.0], [1.0, 0.0]])
    assert np.array_equal(b, [[2.0, 1.0]])  # leaves [0, 1]: not clipped
