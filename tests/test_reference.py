"""The check against the adVAE authors' released weights (bench/evaluation/reference.py, tools/commands/reference.py)
and the authors' grid threshold (bench.evaluation.thresholds, policy kde-grid-legacy)."""
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from bench import BenchError
from bench.evaluation import data
from bench.evaluation.protocols import make_split
from bench.evaluation.reference import COLUMNS, checkpoint_paths, run_reference
from bench.evaluation.thresholds import threshold
from tools.commands.reference import load_reference
from tools.commands.reference import load_checkpoints
from engine.stacked import l_sample_scores as score_rows

torch.set_num_threads(1)


# ---- the authors' grid threshold --------------------------------------------------------------------
@pytest.mark.parametrize("scores, expected", [
    # values printed by the authors' code (statsmodels 0.15 KDEUnivariate, bw='silverman',
    # gridsize=1024, read off linspace(min, max, 1024)) on these inputs
    (np.arange(1, 201) ** 1.5 / 100, 20.683660697068916),
    (np.exp(np.linspace(-2, 2, 300)), 4.644979895926161),
])
def test_kde_grid_legacy_reproduces_the_authors_code(scores, expected):
    assert threshold("kde-grid-legacy", scores, 0.1) == pytest.approx(expected, rel=1e-12)
    assert threshold("kde-grid-legacy", scores, 0.1) != pytest.approx(threshold("kde", scores, 0.1))


def test_kde_grid_legacy_is_a_point_of_the_min_max_grid_and_higher_on_a_long_right_tail():
    s = np.random.default_rng(3).lognormal(0.0, 0.8, size=2000)  # long right tail, like errors
    thr = threshold("kde-grid-legacy", s, 0.1)
    grid = np.linspace(s.min(), s.max(), 1024)
    assert np.isclose(grid, thr, rtol=0, atol=1e-12).any()
    assert thr > threshold("kde", s, 0.1)
    assert threshold("kde-grid-legacy", np.full(5, 2.5), 0.1) == 2.5  # constant scores


# ---- loading the authors' weights --------------------------------------------------------------------
def test_load_reference_maps_the_authors_layers(tmp_path):
    torch.manual_seed(0)
    d, h, k = 10, 5, 3
    enc = nn.ModuleDict({"fc1": nn.Linear(d, h), "fc2": nn.Linear(h, h), "fcmu": nn.Linear(h, k),
                         "fclogvar": nn.Linear(h, k)})
    dec = nn.ModuleDict({"fc3": nn.Linear(k, h), "fc4": nn.Linear(h, h), "fcxmu": nn.Linear(h, d)})
    torch.save(enc.state_dict(), tmp_path / "enc.pt")
    torch.save(dec.state_dict(), tmp_path / "dec.pt")
    E, G = load_reference(tmp_path / "enc.pt", tmp_path / "dec.pt")
    x = torch.rand(4, d)
    with torch.no_grad():
        hid = torch.relu(enc["fc2"](torch.relu(enc["fc1"](x))))
        mu, logvar = E(x.unsqueeze(0))
        torch.testing.assert_close(mu[0], enc["fcmu"](hid))
        torch.testing.assert_close(logvar[0], enc["fclogvar"](hid))
        z = torch.randn(4, k)
        out = torch.sigmoid(dec["fcxmu"](torch.relu(dec["fc4"](torch.relu(dec["fc3"](z))))))
        torch.testing.assert_close(G(z.unsqueeze(0))[0], out)
    s = score_rows(E, G, x.numpy(), L=50, seed=1)
    assert s.shape == (4,) and np.isfinite(s).all()
    np.testing.assert_array_equal(s, score_rows(E, G, x.numpy(), L=50, seed=1))


def test_missing_checkpoint_names_the_place_the_flag_and_the_variable(tmp_path, monkeypatch):
    with pytest.raises(BenchError) as err:
        checkpoint_paths("cardio", tmp_path)  # the repository has it, but only tmp_path is looked in
    msg = str(err.value)
    assert f"not found in {tmp_path} (given by --checkpoints" in msg and "WangXuhongCN/adVAE" in msg
    monkeypatch.setenv(data.CHECKPOINTS_ENV, str(tmp_path))
    with pytest.raises(BenchError, match=r"given by \$ADVAE_BENCH_CHECKPOINTS"):
        checkpoint_paths("cardio")


def test_the_repository_holds_the_reference_weights():
    enc, dec = checkpoint_paths("cardio")
    assert enc == data.REPO_ROOT / "checkpoints" / "cardio-encoder.pt" and dec.is_file()


# ---- the real weights on the real data ----------------------------------------------------------------
@pytest.mark.integration
def test_reference_weights_give_finite_scores_that_rank_anomalies_high():
    split = make_split(data.load("cardio"), "paper")
    E, G = load_reference(*checkpoint_paths("cardio"))
    rows = np.r_[np.flatnonzero(split.y_test == 0)[:150], np.flatnonzero(split.y_test == 1)[:50]]
    s = score_rows(E, G, split.X_test[rows], L=200, seed=0)
    assert np.isfinite(s).all() and (s >= 0).all()
    assert roc_auc_score(split.y_test[rows], s) > 0.9  # the authors' trained model works here


@pytest.mark.integration
def test_run_reference_writes_the_table(tmp_path):
    df = run_reference(tmp_path, load_checkpoints, datasets=["pendigits"], L=50)
    assert list(df.columns) == COLUMNS and len(df) == 2
    assert set(df["threshold_policy"]) == {"kde", "kde-grid-legacy"}
    assert df["auc"].iloc[0] == df["auc"].iloc[1] > 0.9  # ranking metrics do not depend on the threshold
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "reference.csv"), df, check_exact=False)
    assert "| pendigits | kde-grid-legacy |" in (tmp_path / "reference.md").read_text()


def test_truncated_or_foreign_checkpoint_is_a_one_line_error(tmp_path):
    torch.manual_seed(0)
    d, h, k = 10, 5, 3
    enc = nn.ModuleDict({"fc1": nn.Linear(d, h), "fc2": nn.Linear(h, h), "fcmu": nn.Linear(h, k),
                         "fclogvar": nn.Linear(h, k)})
    dec = nn.ModuleDict({"fc3": nn.Linear(k, h), "fc4": nn.Linear(h, h), "fcxmu": nn.Linear(h, d)})
    torch.save(enc.state_dict(), tmp_path / "enc.pt")
    torch.save(dec.state_dict(), tmp_path / "dec.pt")
    n_features, score = load_checkpoints(tmp_path / "enc.pt", tmp_path / "dec.pt")
    assert n_features == d and score(np.random.default_rng(0).random((3, d)), 5, 0).shape == (3,)
    raw = (tmp_path / "enc.pt").read_bytes()
    (tmp_path / "trunc.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(BenchError, match="truncated or not a PyTorch file") as err:
        load_checkpoints(tmp_path / "trunc.pt", tmp_path / "dec.pt")
    assert "trunc.pt" in str(err.value) and "\n" not in str(err.value)
    torch.save({"weight": torch.zeros(3, 3)}, tmp_path / "foreign.pt")  # a valid file, other layers
    with pytest.raises(BenchError, match="do not hold the adVAE authors' encoder"):
        load_checkpoints(tmp_path / "foreign.pt", tmp_path / "dec.pt")
