"""End to end, as the README's "Add a method (one file)" and docs/leaderboard.md's "Putting your method
on the leaderboard": a detector in one file outside the repository, run with --plugin on an existing
results directory (only its runs are computed), then ranked among the stored methods."""
import sqlite3
import textwrap

import numpy as np
import pandas as pd
import pytest

from bench.contract import registry
from bench.cli import main
from bench.evaluation.data import REPO_ROOT

pytestmark = pytest.mark.integration

PLUGIN = textwrap.dedent('''
    """Mean Euclidean distance to the k nearest training rows."""
    import numpy as np
    from sklearn.neighbors import NearestNeighbors

    from bench.contract.base import Detector
    from bench.contract.registry import register


    @register("knn-mean")
    class KNNMean(Detector):
        """Mean distance to the k nearest training rows (Angiulli and Pizzuti 2002)."""

        def __init__(self, k=5):
            self.k = k

        def fit(self, X):
            self.nn_ = NearestNeighbors(n_neighbors=self.k).fit(X)
            return self

        def anomaly_score(self, X):
            dist, _ = self.nn_.kneighbors(X)
            return dist.mean(axis=1)
''')


@pytest.fixture
def plugin_file(tmp_path, monkeypatch):
    monkeypatch.delenv(registry.PLUGIN_ENV, raising=False)
    path = tmp_path / "elsewhere" / "my_method.py"
    path.parent.mkdir()
    path.write_text(PLUGIN)
    yield path
    registry._REGISTRY.pop("knn-mean", None)
    registry._PLUGINS.clear()


def _stored(out):
    with sqlite3.connect(out / "runs.sqlite") as con:
        return dict(con.execute("SELECT key, created_at FROM runs").fetchall())


def test_a_plugin_method_joins_the_leaderboard_without_recomputing(tmp_path, plugin_file, capsys):
    out = tmp_path / "results"
    common = ["--config", str(REPO_ROOT / "configs" / "classical.toml"), "--datasets",
              "letter,cardio,pendigits", "--seeds", "0", "--out", str(out), "--no-report"]
    assert main(["run", "--methods", "hbos,pca,lof", "--workers", "1", *common]) == 0
    before = _stored(out)
    assert len(before) == 9
    capsys.readouterr()

    # two worker processes: the plugin must reach them too (ADVAE_BENCH_PLUGINS)
    assert main(["run", "--plugin", str(plugin_file), "--methods", "hbos,pca,lof,knn-mean",
                 "--workers", "2", *common]) == 0
    assert "12 runs: 9 already stored, 3 ok, 0 failed" in capsys.readouterr().out
    after = _stored(out)
    assert len(after) == 12 and {k: after[k] for k in before} == before  # nothing recomputed

    assert main(["leaderboard", "--results", str(out), "--baseline", "pca",
                 "--out", str(tmp_path / "lb")]) == 0
    printed = capsys.readouterr().out
    board = pd.read_csv(tmp_path / "lb" / "leaderboard-auc.csv")
    assert set(board.method) == {"hbos", "pca", "lof", "knn-mean"}

    # the expected rank, computed here by hand from the stored AUCs
    with sqlite3.connect(out / "runs.sqlite") as con:
        auc = pd.read_sql_query("SELECT spec, dataset, auc FROM runs WHERE status = 'ok'", con)
    means = auc.groupby(["dataset", "spec"]).auc.mean()
    avg_rank = {}
    for d in ("letter", "cardio", "pendigits"):
        col = means[d].sort_values(ascending=False)
        for pos, (spec, v) in enumerate(col.items(), start=1):
            ties = [p for p, w in enumerate(col.values, start=1) if w == v]
            avg_rank[spec] = avg_rank.get(spec, 0) + np.mean(ties) / 3
    got = board.set_index("method").avg_rank
    for spec, r in avg_rank.items():
        assert got[spec] == pytest.approx(r)
    position = sorted(avg_rank, key=lambda s: (avg_rank[s], -means.xs(s, level="spec").mean()))
    assert list(board.method) == position
    assert got["knn-mean"] < got["pca"]  # kNN distance beats PCA's reconstruction on letter
    assert f"knn-mean" in printed and "Friedman test over 3 datasets and 4 methods" in printed
    for name in ("cd-auc.png", "cd-auc.svg", "wilcoxon-auc.csv"):
        assert (tmp_path / "lb" / name).is_file()


def test_plugin_errors_are_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(registry.PLUGIN_ENV, raising=False)
    assert main(["list", "--plugin", str(tmp_path / "missing.py")]) == 2
    assert capsys.readouterr().err.strip() == f"error: --plugin {tmp_path / 'missing.py'}: no such file"
    bad = tmp_path / "bad.py"
    bad.write_text("import numpy as np\nraise RuntimeError('half-written')\n")
    assert main(["list", "--plugin", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: --plugin {bad} failed to import: RuntimeError: half-written"]
    empty = tmp_path / "empty.py"
    empty.write_text("X = 1\n")
    assert main(["list", "--plugin", str(empty)]) == 2
    assert "registered no method" in capsys.readouterr().err
