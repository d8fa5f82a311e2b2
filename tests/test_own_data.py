"""A user's own dataset: --datasets path/to/file.{mat,npz,csv}, no catalogue entry needed."""
import numpy as np
import pandas as pd
import pytest
import scipy.io

from bench import BenchError
from bench.execution import config, plan, runner
from bench.evaluation import data
from bench.cli import main
from bench.evaluation.data import REPO_ROOT
from bench.execution.store import Store

CLASSICAL = str(REPO_ROOT / "configs" / "classical.toml")


def _table(n_normal=60, n_anom=8, d=4, seed=0):
    rng = np.random.default_rng(seed)
    X = np.r_[rng.normal(0.5, 0.05, (n_normal, d)), rng.uniform(0, 1, (n_anom, d))]
    y = np.r_[np.zeros(n_normal, int), np.ones(n_anom, int)]
    return X, y


def _csv(path, X, y, label="y", extra=None):
    df = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    for k, v in (extra or {}).items():
        df[k] = v
    if label is not None:
        df[label] = y
    df.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("fmt", ["mat", "npz", "csv-y", "csv-label", "csv-named"])
def test_each_format_loads(tmp_path, fmt):
    X, y = _table()
    label_col = None
    if fmt == "mat":
        path = tmp_path / "mine.mat"
        scipy.io.savemat(path, {"X": X, "y": y[:, None]})  # ODDS: y is a column vector
    elif fmt == "npz":
        path = tmp_path / "mine.npz"
        np.savez(path, X=X, y=y)
    else:
        label = {"csv-y": "y", "csv-label": "label", "csv-named": "is_fraud"}[fmt]
        path = _csv(tmp_path / "mine.csv", X, y, label)
        label_col = "is_fraud" if fmt == "csv-named" else None
    ds = data.load(str(path), label_col=label_col)
    assert ds.name == "mine" and ds.sha256 == data.sha256_of(path)
    np.testing.assert_allclose(ds.X, X)
    np.testing.assert_array_equal(ds.y, y)
    assert ds.X.dtype == np.float64 and ds.y.dtype == np.int64


def test_own_dataset_runs_under_resample_and_stores_its_sha256(tmp_path, capsys):
    X, y = _table()
    path = _csv(tmp_path / "mine.csv", X, y)
    out = tmp_path / "out"
    assert main(["run", "--config", CLASSICAL, "--methods", "iforest", "--datasets", str(path), "--seeds",
                 "0-1", "--out", str(out), "--no-report", "--workers", "1"]) == 0
    assert "note: protocol resample" in capsys.readouterr().err
    df = Store(out).frame()
    assert list(df.dataset) == ["mine", "mine"] and set(df.protocol) == {"resample"}
    assert set(df.dataset_sha256) == {data.sha256_of(path)} and set(df.status) == {"ok"}


def test_paper_protocol_is_refused_for_own_data(tmp_path, capsys):
    X, y = _table()
    path = _csv(tmp_path / "mine.csv", X, y)
    assert main(["run", "--config", CLASSICAL, "--datasets", str(path), "--protocol", "paper",
                 "--out", str(tmp_path / "out")]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("error: ") and "paper protocol is the authors' fixed split" in line
    assert "--protocol resample" in line
    cfg = tmp_path / "own.toml"
    cfg.write_text(f'methods = ["lof"]\ndatasets = ["{path}"]\n')
    assert config.load(cfg).protocol == "resample"  # the default for own data
    cfg.write_text(f'methods = ["lof"]\ndatasets = ["{path}"]\nprotocol = "paper"\n')
    with pytest.raises(BenchError, match="paper protocol"):
        config.load(cfg)


def test_another_label_column_is_other_data(tmp_path):
    X, y = _table()
    path = _csv(tmp_path / "mine.csv", X, y, "y", {"other": np.r_[np.ones(10, int), np.zeros(len(y) - 10, int)]})
    base = config.Experiment(name="t", protocol="resample", seeds=(0,), threshold="kde", alpha=0.1,
                             datasets=(str(path),), methods=("iforest",))
    (a,) = plan.expand(base)
    (b,) = plan.expand(base.restrict(label_col="other"))
    assert a.dataset_sha256 == b.dataset_sha256 and a.key != b.key
    assert a.source == str(path.resolve()) and b.label_col == "other"


def _bad(tmp_path, kind):
    X, y = _table()
    p = tmp_path / "mine.csv"
    if kind == "no label column":
        _csv(p, X, y, label=None)
    elif kind == "both default label columns":
        _csv(p, X, y, "y", {"label": y})
    elif kind == "named label column missing":
        _csv(p, X, y)
        return p, ["--label-col", "target"]
    elif kind == "labels other than 0/1":
        _csv(p, X, np.where(y == 1, 2, 0))
    elif kind == "text labels":
        _csv(p, X, np.where(y == 1, "bad", "good"))
    elif kind == "no anomalies":
        _csv(p, X, np.zeros_like(y))
    elif kind == "no normals":
        _csv(p, X, np.ones_like(y))
    elif kind == "NaN in X":
        X[3, 2] = np.nan
        _csv(p, X, y)
    elif kind == "inf in X":
        p = tmp_path / "mine.npz"
        X[5, 0] = np.inf
        np.savez(p, X=X, y=y)
    elif kind == "non-numeric column":
        _csv(p, X, y, extra={"colour": ["red"] * len(y)})
    elif kind == "fewer than 10 normals":
        X, y = _table(n_normal=9)
        _csv(p, X, y)
    elif kind == "not a .mat file":
        p = tmp_path / "mine.mat"
        p.write_bytes(b"this is not MATLAB")
    elif kind == "not a zip .npz":
        p = tmp_path / "mine.npz"
        p.write_bytes(b"this is not an archive")
    elif kind == ".npz without y":
        p = tmp_path / "mine.npz"
        np.savez(p, X=X)
    elif kind == "unsupported type":
        p = tmp_path / "mine.txt"
        p.write_text("1,2\n")
    elif kind == "missing file":
        p = tmp_path / "nowhere.csv"
    elif kind == "catalogued name":
        p = _csv(tmp_path / "cardio.csv", X, y)
    return p, []


@pytest.mark.parametrize("kind, message", [
    ("no label column", "no column 'y' or 'label'; name the label column (1 = anomaly) with --label-col"),
    ("both default label columns", "both 'y' and 'label'"),
    ("named label column missing", "no label column 'target' (--label-col)"),
    ("labels other than 0/1", "labels must be 0 (normal) or 1 (anomaly); found 2"),
    ("text labels", "labels must be 0 (normal) or 1 (anomaly); found 'good', 'bad'"),
    ("no anomalies", "no anomalies (no label 1)"),
    ("no normals", "no normal rows (no label 0)"),
    ("NaN in X", "X holds 1 NaN or infinite value(s) (first in row 4, column 'f2')"),
    ("inf in X", "X holds 1 NaN or infinite value(s) (first in row 6, feature 0)"),
    ("non-numeric column", "non-numeric column(s) 'colour'"),
    ("fewer than 10 normals", "only 9 normal rows; at least 10 are needed"),
    ("not a .mat file", "cannot read it as .mat"),
    (".npz without y", "no array 'y'"),
    ("not a zip .npz", "cannot read it as .npz: not a zip archive of .npy arrays (write one with "
                       "np.savez(path, X=X, y=y))"),  # was "Cannot load file containing pickled data"
    ("unsupported type", "unsupported type '.txt'; use .mat"),
    ("missing file", "nowhere.csv not found"),
    ("catalogued name", "its name 'cardio' is a catalogued dataset's; rename the file"),
])
def test_a_bad_file_is_one_error_line(tmp_path, capsys, kind, message):
    path, extra = _bad(tmp_path, kind)
    out = tmp_path / "out"
    assert main(["run", "--config", CLASSICAL, "--methods", "iforest", "--datasets", str(path),
                 "--out", str(out), *extra]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith(f"error: dataset file {path}") and message in lines[-1], lines[-1]
    assert not (out / "runs.sqlite").exists()


def _hbos(path, out, seeds):
    return main(["run", "--config", CLASSICAL, "--methods", "hbos", "--datasets", str(path), "--seeds", seeds,
                 "--out", str(out), "--no-report", "--workers", "1"])


def test_another_file_under_a_stored_name_is_refused_naming_both_files(tmp_path, capsys):
    """`report` used to average the two files' runs in one row "mine 0.712 +- 0.407"."""
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    first = _csv(tmp_path / "b" / "mine.csv", *_table(seed=1))
    second = _csv(tmp_path / "a" / "mine.csv", *_table(seed=2))
    out = tmp_path / "out"
    assert _hbos(first, out, "0") == 0
    capsys.readouterr()
    assert _hbos(second, out, "1") == 2
    err = capsys.readouterr().err.strip().splitlines()
    sha1, sha2 = data.sha256_of(first)[:12], data.sha256_of(second)[:12]
    assert err[-1] == (f"error: dataset {second.resolve()} is named 'mine', but the store {out / 'runs.sqlite'} "
                       f"holds runs of another file under that name ({first.resolve()}, sha256 {sha1}; this "
                       f"one's is {sha2}); rename one of the files (results are grouped by dataset name) or "
                       "choose another --out")
    assert list(Store(out).frame().seed) == [0]  # nothing ran


def test_a_file_with_the_content_of_a_stored_one_is_said_to_be_that_dataset(tmp_path, capsys):
    X, y = _table()
    first = _csv(tmp_path / "mine.csv", X, y)
    copy = tmp_path / "copy.csv"
    copy.write_bytes(first.read_bytes())
    out = tmp_path / "out"
    assert _hbos(first, out, "0") == 0
    capsys.readouterr()
    assert _hbos(copy, out, "0") == 0
    captured = capsys.readouterr()
    err = captured.err
    assert (f"note: dataset {copy.resolve()} holds the same data as 'mine' in {out / 'runs.sqlite'} "
            f"({first.resolve()}): it is the same dataset, so its runs are 'mine''s and are shown under that "
            "name") in err
    assert "1 run: 1 already stored" in captured.out
    assert _hbos(f"{first},{copy}", tmp_path / "both", "0") == 2
    assert capsys.readouterr().err.strip().endswith(
        f"error: datasets {first.resolve()} and {copy.resolve()} are the same data (sha256 "
        f"{data.sha256_of(first)[:12]}); list one of them")


def test_report_groups_runs_by_dataset_checksum(tmp_path):
    """A store written before the refusal above holds two files under one name: every table keeps
    them apart."""
    import sys
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from _stores import record

    out = tmp_path / "out"
    store = Store(out)
    for seed, sha, sep in [(0, "aaaaaaaa11", 0.0), (1, "bbbbbbbb22", 9.0)]:
        store.put(record("hbos", "mine", seed, sep, protocol="resample", sha=sha))
    store.close()
    assert main(["report", "--out", str(out), "--published", "none"]) == 0
    auc = pd.read_csv(out / "tables" / "auc.csv")
    assert [c for c in auc.columns if c.endswith("_mean")] == ["mine (sha256 aaaaaaaa)_mean",
                                                               "mine (sha256 bbbbbbbb)_mean"]
    assert auc["mine (sha256 aaaaaaaa)_n_ok"].tolist() == [1] and auc["mine (sha256 bbbbbbbb)_n_ok"].tolist() == [1]
    runs = pd.read_csv(out / "runs.csv")
    assert sorted(runs.dataset) == ["mine (sha256 aaaaaaaa)", "mine (sha256 bbbbbbbb)"]


def test_a_store_from_before_the_dataset_file_column_is_read_and_extended(tmp_path):
    import sqlite3

    from bench.execution.store import COLUMNS

    out = tmp_path / "out"
    out.mkdir()
    con = sqlite3.connect(out / "runs.sqlite")
    con.execute(f"CREATE TABLE runs ({', '.join(f'{k} {v}' for k, v in COLUMNS.items())})")
    con.execute("INSERT INTO runs (key, dataset, dataset_sha256) VALUES ('k', 'mine', 'abc')")
    con.commit()
    con.close()
    reader = Store(out)
    assert reader.frame().dataset_file.tolist() == [None] and reader.datasets() == {"mine": {"abc": ""}}
    reader.close()
    writer = Store(out, writing=True)
    writer.put({"key": "k2", "dataset": "mine", "dataset_sha256": "abc", "dataset_file": "/x/mine.csv"})
    assert writer.datasets() == {"mine": {"abc": "/x/mine.csv"}}
    writer.close()
