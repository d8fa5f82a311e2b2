"""Reproduction report: published data format, the three places of a published value, the
threshold footnotes, summary lines, the command and its figure."""
import numpy as np
import pandas as pd
import pytest

from bench import BenchError
from bench.reporting import compare
from bench.cli import main
from _stores import make_store

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_the_repository_holds_the_papers_tables():
    pub = compare.load_published("wang2020-kbs")
    assert pub.metrics == ["ap", "auc", "recall", "f1"]
    assert len(pub.values) == 70 and pub.values.method.nunique() == 14
    assert set(pub.values.dataset) == {"letter", "cardio", "satellite", "optdigits", "pendigits"}
    row = pub.values[(pub.values.method == "advae") & (pub.values.dataset == "cardio")].iloc[0]
    assert (row.ap, row.auc, row.recall, row.f1) == (0.951, 0.966, 0.938, 0.805)  # as printed
    text = (compare.PUBLISHED_DIR / "wang2020-kbs.csv").read_text().splitlines()
    assert all(len(v.split(".")[1]) == 3 for line in text[1:] for v in line.split(",")[2:])
    assert pub.stated_threshold("advae") == "kde" and pub.stated_threshold("ocsvm") is None
    assert "Knowledge-Based Systems 190 (2020)" in pub.meta["citation"]
    assert "wang2020-kbs" in compare.available()
    for name in ("wang2020-kbs-fig9.csv", "wang2020-kbs-fig9f.csv", "README.md"):
        assert (compare.PUBLISHED_DIR / name).stat().st_size > 200


def _pub(tmp_path, rows, meta_extra=""):
    pd.DataFrame(rows, columns=["method", "dataset", "auc", "f1"]).to_csv(tmp_path / "p.csv",
                                                                         index=False)
    (tmp_path / "p.toml").write_text('citation = "A. Author (2020)"\nprotocol = "paper"\n'
                                     'decimals = 3\nmetrics = ["auc", "f1"]\n'
                                     '[threshold]\nkde = ["rec"]\n' + meta_extra)
    return compare.load_published("p", tmp_path)


def _runs(values):
    rows = []
    for (spec, d), vals in values.items():
        for seed, (auc, f1) in enumerate(vals):
            rows.append({"spec": spec, "dataset": d, "seed": seed, "status": "ok", "auc": auc,
                         "f1": f1, "protocol": "paper"})
    return pd.DataFrame(rows)


def test_three_places_of_a_published_value(tmp_path):
    pub = _pub(tmp_path, [["rec", "d1", 0.700, 0.5], ["rec", "d2", 0.812, 0.5],
                          ["rec", "d3", 0.950, 0.5], ["rec", "d4", 0.810, 0.5],
                          ["other", "d1", 0.5, 0.3]])
    runs = _runs({("rec", "d1"): [(0.80, 0.5), (0.82, 0.5), (0.90, 0.5)],   # 0.700 below all seeds
                  ("rec", "d2"): [(0.80, 0.5), (0.82, 0.5), (0.90, 0.5)],   # within 0.80..0.90
                  ("rec", "d3"): [(0.80, 0.5), (0.82, 0.5), (0.90, 0.5)],   # above all seeds
                  # our min 0.8104 prints as 0.810, the published value: within, not below
                  ("rec", "d4"): [(0.8104, 0.5), (0.85, 0.5), (0.90, 0.5)],
                  ("other", "d1"): [(0.4999, 0.2), (0.4996, 0.2)]})
    cmp = compare.compare(runs, pub).set_index(["method", "dataset", "metric"])
    assert cmp.loc[("rec", "d1", "auc"), "place"] == "below"
    assert cmp.loc[("rec", "d2", "auc"), "place"] == "within"
    assert cmp.loc[("rec", "d3", "auc"), "place"] == "above"
    assert cmp.loc[("rec", "d4", "auc"), "place"] == "within"
    # 0.4999 and 0.4996 print as 0.500: the published 0.500 is within them, not above
    assert cmp.loc[("other", "d1", "auc"), "place"] == "within"
    r = cmp.loc[("rec", "d1", "auc")]
    assert r["mean"] == pytest.approx((0.80 + 0.82 + 0.90) / 3)
    assert r["std"] == pytest.approx(np.std([0.80, 0.82, 0.90], ddof=1))
    assert (r["min"], r["max"], r["n"]) == (0.80, 0.90, 3)
    assert r["diff"] == pytest.approx(r["mean"] - 0.700)
    # published values never enter our numbers: the mean is over our seeds only
    assert cmp.loc[("rec", "d3", "auc"), "mean"] == pytest.approx(r["mean"])
    # recall/F1 of a method whose threshold the paper does not state carry a footnote
    assert "does not state" in cmp.loc[("other", "d1", "f1"), "note"]
    assert not cmp.loc[("other", "d1", "f1"), "threshold_stated"]
    assert cmp.loc[("other", "d1", "auc"), "note"] == ""
    assert cmp.loc[("rec", "d1", "f1"), "note"] == ""
    lines = compare.summary_lines(cmp.reset_index())
    assert lines[0].startswith("AUC: 5 cells, published value 1 below our seeds, 3 within their "
                               "range, 1 above")


def test_a_method_spelt_with_parameters_is_matched_when_unique(tmp_path):
    pub = _pub(tmp_path, [["rec", "d1", 0.7, 0.5], ["absent", "d1", 0.7, 0.5]])
    runs = _runs({("rec[k=3]", "d1"): [(0.8, 0.5)]})
    cmp = compare.compare(runs, pub)
    assert set(cmp.spec) == {"rec[k=3]"} and "compared with our rec[k=3]" in cmp.note.iloc[0]


def test_bad_published_name_and_protocol(tmp_path):
    with pytest.raises(BenchError, match="no published table 'nope'.*available: .*wang2020-kbs"):
        compare.load_published("nope")
    pub = _pub(tmp_path, [["rec", "d1", 0.7, 0.5]])
    runs = _runs({("rec", "d1"): [(0.8, 0.5)]}).assign(protocol="resample")
    with pytest.raises(BenchError, match="published under protocol 'paper'.*--protocol paper"):
        compare.run(runs, pub, tmp_path / "out")


def test_compare_command_writes_report_and_figures(tmp_path, capsys):
    make_store(tmp_path / "s", {("advae", "letter"): 2.0, ("advae", "cardio"): 3.0,
                                ("ocsvm", "letter"): 0.1, ("lof", "letter"): 1.0})
    assert main(["compare", "--results", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "Protocol paper; seeds 0-1; threshold paper" in out
    lines = [line for line in out.splitlines() if line.startswith(("AP:", "AUC:", "Recall:", "F1:"))]
    # advae on letter and cardio, ocsvm on letter: 3 cells per metric; lof is not in the paper
    assert len(lines) == 4 and all(line.split(":")[1].startswith(" 3 cells") for line in lines)
    d = tmp_path / "s" / "compare"
    csv = pd.read_csv(d / "compare-wang2020-kbs.csv")
    assert set(csv.method) == {"advae", "ocsvm"} and len(csv) == 12
    md = (d / "compare-wang2020-kbs.md").read_text()
    assert "Published methods without runs in this store: iforest" in md
    assert "does not state this method's threshold" in md
    for metric in ("ap", "auc", "recall", "f1"):
        assert (d / f"compare-wang2020-kbs-{metric}.png").read_bytes()[:8] == PNG_MAGIC
    assert main(["compare", "--results", str(tmp_path / "s"), "--published", "nope"]) == 2
    assert capsys.readouterr().err.startswith("error: no published table 'nope'")


@pytest.mark.parametrize("methods", [("hbos",), ("hbos", "iforest")])
def test_compare_of_a_few_methods_draws_without_a_matplotlib_warning(tmp_path, capsys, methods):
    """One or two methods made a figure too short for its title and legend: "Tight layout not applied"."""
    import warnings

    make_store(tmp_path, {(m, "letter"): 1.0 for m in methods})
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        assert main(["compare", "--results", str(tmp_path)]) == 0
    assert (tmp_path / "compare" / "compare-wang2020-kbs-auc.png").read_bytes()[:8] == PNG_MAGIC


def test_the_page_says_which_threshold_policy_made_each_recall(tmp_path):
    """The page showed two recall values for one cell (tables: the stored policy, reproduction: the
    paper's) without saying so."""
    make_store(tmp_path, {(m, d): 1.0 for m in ("hbos", "iforest") for d in ("letter", "cardio")},
               policy="percentile")
    assert main(["report", "--out", str(tmp_path)]) == 0
    page = (tmp_path / "index.html").read_text(encoding="utf-8")
    tables = page.split('<section id="tables">')[1].split("</section>")[0]
    repro = page.split('<section id="reproduction">')[1].split("</section>")[0]
    assert "Protocol paper; seeds 0-1; threshold percentile, alpha 0.1" in tables
    from html import escape

    assert escape("Protocol paper; seeds 0-1; threshold paper (kde for the reconstruction-based methods, PyOD's "
                  "percentile for the others), alpha 0.1") in repro
    assert escape("recall and F1 of this section are under the paper's own threshold policy") in repro


def test_the_figure_draws_ours_minus_published_on_a_scale_that_shows_the_difference(tmp_path, monkeypatch):
    """AP was drawn on a 0-1 axis where differences of 0.01-0.06 could not be seen."""
    import matplotlib.pyplot as plt

    drawn = []
    monkeypatch.setattr(plt, "close", lambda fig: drawn.append(fig))
    runs = make_store(tmp_path, {("hbos", "letter"): 1.0}, seeds=(0, 1, 2))
    pub = compare.load_published("wang2020-kbs")
    compare.run(runs.assign(threshold_extreme=""), pub, tmp_path / "cmp")
    published = pub.values[(pub.values.method == "hbos") & (pub.values.dataset == "letter")].ap.iloc[0]
    ap = next(f for f in drawn if f._suptitle.get_text().startswith("AP: ours minus published"))
    ax = ap.axes[0]
    dots = np.sort(ax.collections[0].get_offsets()[:, 0])
    np.testing.assert_allclose(dots, np.sort(runs.ap.to_numpy() - published))
    lo, hi = ax.get_xlim()
    assert lo == pytest.approx(-hi) and hi == pytest.approx(1.1 * np.abs(dots).max())
    assert [line.get_xdata()[0] for line in ax.lines if line.get_color() == "#d62728"] == [0.0]
