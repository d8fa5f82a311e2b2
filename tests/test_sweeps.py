"""Sweeps as configuration, the contaminated-training protocol, and the sensitivity outputs."""
import json

import numpy as np
import pandas as pd
import pytest

from bench import BenchError
from bench.execution import config, plan, runner
from bench.evaluation import data
from bench.reporting import outputs, sensitivity
from bench.cli import main
from bench.evaluation.data import REPO_ROOT
from bench.evaluation.protocols import PROTOCOLS, make_split, parse_protocol
from bench.execution.store import Store

PAPER = REPO_ROOT / "configs" / "paper.toml"


def _config(tmp_path, text):
    path = tmp_path / "exp.toml"
    path.write_text(f'base = "{PAPER}"\n' + text)
    return config.load(path)


def test_sweep_expands_into_specs_and_keeps_other_overrides(tmp_path):
    exp = _config(tmp_path, 'methods = ["ocsvm"]\n[[sweep]]\nmethods = ["advae"]\nparam = "m_x"\n'
                            'values = [0.5, 1.5]\n')
    assert exp.methods == ("ocsvm", "advae[m_x=0.5]", "advae[m_x=1.5]")
    exp = exp.restrict(datasets=["cardio"])
    runs = [r for r in plan.expand(exp) if r.method == "advae"]
    assert sorted({r.params["m_x"] for r in runs}) == [0.5, 1.5]
    # every other parameter at paper.toml's cardio values (Table 2)
    assert {(r.params["lambda_"], r.params["m_z"], r.params["latent_dim"]) for r in runs} == {(0.1, 20.0, 7)}


def test_swept_value_wins_over_an_override_of_the_same_parameter(tmp_path):
    exp = _config(tmp_path, 'methods = []\n[[sweep]]\nmethods = ["advae"]\nparam = "m_z"\n'
                            'values = [10.0, 100.0]\n').restrict(datasets=["cardio"])
    assert sorted({r.params["m_z"] for r in plan.expand(exp)}) == [10.0, 100.0]


def test_sensitivity_config_is_figure_9():
    exp = config.load(REPO_ROOT / "configs" / "sensitivity.toml")
    assert len(exp.methods) == 24 and exp.seeds == (0, 1, 2, 3, 4) and len(exp.datasets) == 5
    assert {s.param: len(s.values) for s in exp.sweeps} == {"lambda_": 7, "gamma": 5, "m_z": 7, "m_x": 5}


@pytest.mark.parametrize("text", ["advae", "advae:m_x", "advae:m_x=", ":m_x=1", "advae:2x=1"])
def test_malformed_sweep_is_a_clear_error(text):
    with pytest.raises(BenchError, match="malformed sweep"):
        config.parse_sweep(text)


def test_malformed_sweep_on_the_command_line_exits_2(capsys):
    assert main(["run", "--sweep", "advae:m_x", "--datasets", "cardio"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "malformed sweep" in lines[0]


def test_command_line_sweep_short_form():
    sw = config.parse_sweep("advae+vae:lambda_=0.01,0.1")
    assert sw.specs() == ["advae[lambda_=0.01]", "advae[lambda_=0.1]", "vae[lambda_=0.01]",
                          "vae[lambda_=0.1]"]


@pytest.mark.parametrize("name,expected", [("paper", ("paper", None)),
                                           ("resample+adasyn=0.02", ("resample", 0.02))])
def test_parse_protocol(name, expected):
    assert parse_protocol(name) == expected


@pytest.mark.parametrize("name", ["paper+adasyn=x", "paper+smote=0.1", "paper+adasyn=0.7", "papr"])
def test_bad_protocols(name):
    with pytest.raises(BenchError):
        parse_protocol(name)


@pytest.mark.integration
@pytest.mark.parametrize("dataset", ["cardio", "optdigits"])
def test_contaminated_training_set_holds_no_test_row(dataset):
    """Synthetic rows come from held-out donors only: each lies on a segment between two donor rows,
    no training row equals a test row, and every rate shares one test set."""
    from sklearn.preprocessing import MinMaxScaler

    from bench.evaluation.protocols import _contaminate

    ds = data.load(dataset)
    train, test = PROTOCOLS["paper"](ds, 0)
    clean = make_split(ds, "paper+adasyn=0", seed=3)
    split = make_split(ds, "paper+adasyn=0.02", seed=3)
    np.testing.assert_array_equal(clean.test_idx, split.test_idx)
    donors = np.setdiff1d(test, split.test_idx)
    assert len(donors) > 0 and ds.y[donors].all()  # only anomalies were held out
    n_train = len(train)
    assert split.n_synthetic == round(0.02 * n_train / 0.98) > 0
    raw, _, _ = _contaminate(ds, train, test, 0.02, 3)
    np.testing.assert_array_equal(raw[:n_train], ds.X[train])
    np.testing.assert_array_equal(split.X_train, MinMaxScaler().fit(raw).transform(raw))
    D = ds.X[donors]
    diff = D[None, :, :] - D[:, None, :]  # (i, j, d): segment from donor i to donor j
    for s in raw[n_train:]:
        base = s[None, None, :] - D[:, None, :]
        t = np.clip((diff * base).sum(-1) / np.maximum((diff * diff).sum(-1), 1e-300), 0, 1)
        assert np.abs(base - t[..., None] * diff).max(-1).min() < 1e-9
    test_rows = {r.tobytes() for r in ds.X[split.test_idx]}
    assert not any(r.tobytes() in test_rows for r in raw)


def test_sweep_figures_and_tables_equal_the_stored_runs(tmp_path):
    """A small ocsvm sweep over nu: the sensitivity table's means are the stored runs' means."""
    out = tmp_path / "res"
    code = main(["run", "--config", str(REPO_ROOT / "configs" / "classical.toml"), "--datasets",
                 "cardio,letter", "--methods", "lof", "--sweep", "ocsvm:nu=0.05,0.1,0.2",
                 "--protocol", "resample", "--seeds", "0,1", "--out", str(out), "--workers", "1"])
    assert code == 0
    table = pd.read_csv(out / "tables" / "sensitivity-ap.csv")
    store = Store(out)
    try:
        df = store.latest()
    finally:
        store.close()
    for dataset in ("cardio", "letter"):
        for nu in (0.05, 0.1, 0.2):
            runs = df[(df.spec == f"ocsvm[nu={nu}]") & (df.dataset == dataset)]
            assert len(runs) == 2
            got = table[(table.param == "nu") & np.isclose(table.value, nu)][dataset].iloc[0]
            assert got == pytest.approx(runs.ap.mean(), abs=5e-5)
    assert (out / "figures" / "sensitivity-ocsvm-nu-ap.png").stat().st_size > 10_000
    md = (out / "tables" / "sensitivity-ap.md").read_text()
    assert "protocol resample" in md and "seeds 0-1" in md


def test_contamination_outputs_equal_the_stored_runs(tmp_path):
    out = tmp_path / "res"
    code = main(["run", "--config", str(REPO_ROOT / "configs" / "classical.toml"), "--datasets",
                 "cardio,letter", "--methods", "ocsvm,lof", "--contamination", "0,0.02",
                 "--seeds", "0,1", "--out", str(out), "--workers", "1"])
    assert code == 0
    store = Store(out)
    try:
        df = store.latest()
    finally:
        store.close()
    assert set(df.protocol) == {"paper+adasyn=0", "paper+adasyn=0.02"}
    table = pd.read_csv(out / "tables" / "contamination-ap.csv", index_col=0)
    for spec in ("ocsvm", "lof"):
        for rate, col in ((0.0, "0%"), (0.02, "2%")):
            sub = df[(df.spec == spec) & (df.protocol == f"paper+adasyn={rate:g}")]
            expect = sub.groupby("seed").ap.mean().mean()
            assert table.loc[spec, col] == pytest.approx(expect, abs=5e-5)
    assert (out / "figures" / "contamination-ap.png").is_file()


def _sweep_runs(ap_by_value, chosen=None):
    """Stored-run rows of an ``advae`` sweep over m_x on cardio (two seeds), and with ``chosen`` a
    run of plain ``advae`` whose resolved m_x is that value (the experiment's own setting)."""
    rows = []
    for value, ap in ap_by_value.items():
        for seed in (0, 1):
            rows.append({"spec": f"advae[m_x={value}]", "method": "advae", "dataset": "cardio",
                         "protocol": "paper", "seed": seed, "status": "ok", "ap": ap, "auc": ap,
                         "params": json.dumps({"m_x": value})})
    if chosen is not None:
        rows.append({"spec": "advae", "method": "advae", "dataset": "cardio", "protocol": "paper",
                     "seed": 0, "status": "ok", "ap": 0.5, "auc": 0.5,
                     "params": json.dumps({"m_x": chosen})})
    return pd.DataFrame(rows)


@pytest.fixture
def figures(monkeypatch):
    """The matplotlib figures sensitivity draws, kept when it closes them."""
    drawn = []
    monkeypatch.setattr(sensitivity.plt, "close", lambda fig: drawn.append(fig))
    return drawn


@pytest.mark.parametrize("chosen", [None, 1.5])
def test_a_sweep_figure_never_zooms_in_below_its_stated_span_and_stars_only_when_drawn(
        tmp_path, figures, chosen):
    """A --quick sweep's 0.002 of AP was zoomed into a V; the legend showed the Table-2 star with none
    drawn."""
    df = _sweep_runs({1.0: 0.801, 1.5: 0.799, 2.0: 0.800}, chosen)
    sweeps = sensitivity.find_sweeps(df.spec)
    specs = sweeps[("advae", "m_x")]
    sensitivity.write_sweep(df, "advae", "m_x", specs, tmp_path, {}, None, ["cardio"])
    ax = figures[0].axes[0]
    lo, hi = ax.get_ylim()
    assert hi - lo == pytest.approx(sensitivity.MIN_SPAN) and lo < 0.799 and hi > 0.801
    assert "axis spans 0.1" in ax.get_ylabel()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert ("value used elsewhere (Table 2)" in labels) == (chosen is not None)


def test_only_the_table_with_paper_values_says_it_has_them(tmp_path):
    df = _sweep_runs({1.0: 0.8, 2.0: 0.7})
    sensitivity.write_all(df, tmp_path, {}, REPO_ROOT / "published", dataset_order=["cardio"])
    ap = (tmp_path / "tables" / "sensitivity-ap.md").read_text()
    auc = (tmp_path / "tables" / "sensitivity-auc.md").read_text()
    assert "paper values read off its Figure 9" in ap.splitlines()[0] and "(ours / paper)" in ap
    assert "paper values" not in auc and "/ paper" not in auc  # the paper's Figure 9 has AP only
    assert auc.splitlines()[0] == "<!-- AUC per swept value, mean +- std over seeds; protocol paper -->"


def test_index_html_shows_the_sensitivity_figures_and_tables(tmp_path):
    """They were written beside the page but not on it."""
    from _stores import make_store

    make_store(tmp_path, {(f"ocsvm[nu={nu}]", d): 1.0 + nu for nu in (0.05, 0.1, 0.2)
                          for d in ("letter", "cardio")})
    assert main(["report", "--out", str(tmp_path), "--published", "none"]) == 0
    page = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert 'id="sensitivity"' in page and "Sensitivity and contamination" in page
    assert 'src="figures/sensitivity-ocsvm-nu-ap.png"' in page
    assert 'id="table-sensitivity-ap"' in page and "AP per swept value, mean +- std over seeds" in page
