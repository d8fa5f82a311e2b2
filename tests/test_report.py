"""Report: tables (values, bold/italic, average, marks for failed/flagged runs, LaTeX escaping),
PR/ROC figures and their mean-curve interpolation, training curves."""
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from bench.reporting import figures, tables

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _runs(values: dict, status: dict | None = None, flags: dict | None = None) -> pd.DataFrame:
    """values: {(method, dataset): [auc per seed]}; status/flags: {(method, dataset, seed): ...}."""
    status, flags = status or {}, flags or {}
    rows = []
    for (m, d), vals in values.items():
        for s, v in enumerate(vals):
            st = status.get((m, d, s), "ok")
            rows.append({"method": m, "dataset": d, "seed": s, "status": st,
                         "flags": flags.get((m, d, s), ""),
                         "auc": v if st == "ok" else np.nan})
    return pd.DataFrame(rows)


def _md_rows(text: str) -> dict[str, list[str]]:
    """method -> cells of a Markdown table written by write_tables."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| :"):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            rows[cells[0]] = cells[1:]
    return rows


def test_values_are_mean_and_sample_std_over_seeds(tmp_path):
    a, b = [0.5, 0.6, 0.7], [0.9, 0.8, 0.95]
    runs = _runs({("m1", "letter"): a, ("m1", "cardio"): b,
                  ("m2", "letter"): [0.1, 0.2, 0.3], ("m2", "cardio"): [0.4, 0.4, 0.4]})
    paths = tables.write_tables(runs, tmp_path, metrics=("auc",))
    assert [p.name for p in paths] == ["auc.csv", "auc.md", "auc.tex"]
    csv = pd.read_csv(tmp_path / "auc.csv").set_index("method")
    # hand computation: mean 0.6, sample std sqrt(((-.1)^2 + 0 + .1^2) / 2) = 0.1
    assert csv.loc["m1", "letter_mean"] == pytest.approx(0.6, abs=1e-6)
    assert csv.loc["m1", "letter_std"] == pytest.approx(0.1, abs=1e-6)
    assert csv.loc["m1", "cardio_mean"] == pytest.approx(np.mean(b), abs=1e-6)
    assert csv.loc["m1", "cardio_std"] == pytest.approx(np.std(b, ddof=1), abs=1e-6)
    assert csv.loc["m2", "cardio_std"] == pytest.approx(0.0, abs=1e-6)
    assert csv.loc["m1", "letter_n_ok"] == 3
    md = _md_rows((tmp_path / "auc.md").read_text())
    assert md["m1"][0] == "**0.600 ± 0.100**"
    assert md["m2"][1] == "*0.400 ± 0.000*"
    # rows and columns in order of first appearance, not sorted
    assert list(csv.index) == ["m1", "m2"]
    assert list(md) == ["method", "m1", "m2"]
    assert md["method"] == ["letter", "cardio", "average"]


def test_best_bold_second_italic_per_column(tmp_path):
    runs = _runs({("low", "d1"): [0.2, 0.2], ("low", "d2"): [0.9, 0.9],
                  ("mid", "d1"): [0.5, 0.5], ("mid", "d2"): [0.1, 0.1],
                  ("top", "d1"): [0.8, 0.8], ("top", "d2"): [0.6, 0.6]})
    tables.write_tables(runs, tmp_path, metrics=("auc",))
    md = _md_rows((tmp_path / "auc.md").read_text())
    assert md["top"][0].startswith("**0.800") and md["mid"][0].startswith("*0.500")
    assert not md["low"][0].startswith("*")
    assert md["low"][1].startswith("**0.900") and md["top"][1].startswith("*0.600")
    assert not md["mid"][1].startswith("*")
    # average: low 0.55, mid 0.3, top 0.7
    assert md["top"][2] == "**0.700**" and md["low"][2] == "*0.550*" and md["mid"][2] == "0.300"
    tex = (tmp_path / "auc.tex").read_text()
    assert r"\textbf{0.800 $\pm$ 0.000}" in tex and r"\textit{0.500 $\pm$ 0.000}" in tex


def test_ties_at_shown_precision_share_the_mark():
    marks = tables.rank_marks(pd.Series([0.9001, 0.9004, 0.5, np.nan, 0.7]))
    assert list(marks) == ["best", "best", "", "", "second"]


def test_average_column_only_with_a_value_on_every_dataset(tmp_path):
    runs = _runs({("full", "d1"): [0.2, 0.4], ("full", "d2"): [0.9, 0.7], ("full", "d3"): [0.5, 0.5],
                  ("gap", "d1"): [0.9, 0.9], ("gap", "d2"): [0.9, 0.9], ("gap", "d3"): [0.9, 0.9]},
                 status={("gap", "d3", 0): "failed", ("gap", "d3", 1): "failed"})
    tables.write_tables(runs, tmp_path, metrics=("auc",))
    csv = pd.read_csv(tmp_path / "auc.csv").set_index("method")
    assert csv.loc["full", "average"] == pytest.approx((0.3 + 0.8 + 0.5) / 3, abs=1e-6)
    assert np.isnan(csv.loc["gap", "average"])
    md = _md_rows((tmp_path / "auc.md").read_text())
    assert md["full"][3] == "**0.533**" and md["gap"][3] == ""


def test_failed_and_flagged_cells_are_marked_and_explained(tmp_path):
    runs = _runs({("good", "d1"): [0.7] * 3, ("good", "d2"): [0.7] * 3,
                  ("broken", "d1"): [0.9] * 3, ("broken", "d2"): [0.9] * 3,
                  ("flaky", "d1"): [0.8] * 3, ("flaky", "d2"): [0.6] * 3},
                 status={("broken", "d1", 0): "failed", ("broken", "d1", 1): "failed",
                         ("broken", "d1", 2): "failed", ("broken", "d2", 1): "degenerate",
                         ("good", "d2", 2): "degenerate"},
                 flags={("flaky", "d1", 0): "loss-never-decreased",
                        ("flaky", "d1", 2): "loss-never-decreased"})
    tables.write_tables(runs, tmp_path, metrics=("auc",))
    text = (tmp_path / "auc.md").read_text()
    md = _md_rows(text)
    assert md["broken"][0] == "failed"
    assert md["broken"][1].endswith(tables.PARTIAL)        # 2 of 3 runs ok
    assert md["good"][1].endswith(tables.PARTIAL)
    assert md["good"][0] == "*0.700 ± 0.000*"              # clean cell, second best: no mark
    assert md["flaky"][0].endswith(tables.FLAGGED) and not md["flaky"][1].endswith(tables.FLAGGED)
    assert md["flaky"][2].endswith(tables.FLAGGED)         # the average carries the mark
    assert md["broken"][2] == ""
    assert f"{tables.PARTIAL} some runs" in text and f"{tables.FLAGGED} some runs" in text
    assert "- broken: 3 failed (d1 3); 1 degenerate (d2 1) of 6 runs" in text
    assert "- flaky: 2 flagged loss-never-decreased (d1 2) of 6 runs" in text
    assert "- good: 1 degenerate (d2 1) of 6 runs" in text
    tex = (tmp_path / "auc.tex").read_text()
    assert r"$^{\dagger}$" in tex and r"$^{\ddagger}$" in tex and "3 failed (d1 3)" in tex
    csv = pd.read_csv(tmp_path / "auc.csv").set_index("method")
    assert csv.loc["broken", "d1_n_ok"] == 0 and np.isnan(csv.loc["broken", "d1_mean"])
    assert csv.loc["flaky", "marks"] == "d1:flagged"
    assert csv.loc["broken", "marks"] == "d2:partial"


def test_no_mark_and_no_footnote_when_everything_is_ok(tmp_path):
    runs = _runs({("a", "d1"): [0.5, 0.6], ("b", "d1"): [0.7, 0.8]})
    tables.write_tables(runs, tmp_path, metrics=("auc",))
    text = (tmp_path / "auc.md").read_text() + (tmp_path / "auc.tex").read_text()
    for mark in (tables.PARTIAL, tables.FLAGGED, "dagger", "not ok"):
        assert mark not in text


def test_latex_is_an_escaped_tabular(tmp_path):
    names = ["ocsvm[nu=0.1]", "my_method", "pyod:HBOS[n_bins=5]"]
    runs = _runs({(n, d): [0.1 * (i + 1), 0.1 * (i + 1) + 0.05]
                  for i, n in enumerate(names) for d in ("d_1", "d2")},
                 flags={("my_method", "d2", 0): "loss-never-decreased"})
    tables.write_tables(runs, tmp_path, metrics=("auc",))
    tex = (tmp_path / "auc.tex").read_text()
    assert r"ocsvm{[}nu=0.1{]}" in tex and r"my\_method" in tex
    assert r"pyod:HBOS{[}n\_bins=5{]}" in tex and r"d\_1" in tex
    assert "\\textbf{" in tex and "\\textit{" in tex
    body = tex[tex.index(r"\begin{tabular}"):]
    assert body.rstrip().endswith(r"\end{tabular}") and r"\toprule" in body and r"\bottomrule" in body
    assert tex.count("{") == tex.count("}")
    for line in body.splitlines():          # every table row has one cell per column
        if line.endswith(r"\\") and "multicolumn" not in line:
            assert line.count("&") == 3, line
    bare = tex.replace("\\_", "").replace("{[}", "").replace("{]}", "")
    assert "_" not in bare.split(r"\begin{tabular}")[1] and "[" not in bare.split(r"\begin{tabular}")[1]


def test_markdown_table_escapes_pipes():
    text = tables.markdown_table(pd.DataFrame({"a|b": ["x|y", "z"], "n": ["1", None]}))
    lines = text.splitlines()
    assert lines[0] == r"| a\|b | n |" and lines[1] == "| :--- | ---: |"
    assert lines[2] == r"| x\|y | 1 |" and lines[3] == "| z |  |"


def test_recall_grid_step_interpolation_by_hand():
    # y = [1, 0, 1, 0], scores [.9, .8, .7, .1]: operating points (R, P) = (.5, 1), (.5, .5),
    # (1, 2/3), (1, .5). AP's step function: P = 1 for r in (0, .5], 2/3 for r in (.5, 1].
    y, s = np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.7, 0.1])
    p, r, _ = precision_recall_curve(y, s)
    got = figures.precision_on_recall_grid(r, p, np.array([0.0, 0.25, 0.5, 0.75, 1.0]))
    np.testing.assert_allclose(got, [1, 1, 1, 2 / 3, 2 / 3])
    # top-scored row is normal: (R, P) = (0, 0), (.5, .5), (1, 2/3), (1, .5); at recall 0 the
    # curve starts from the first positive recall (.5), not from sklearn's (0, 1) end point
    p, r, _ = precision_recall_curve(np.array([0, 1, 1, 0]), s)
    got = figures.precision_on_recall_grid(r, p, np.array([0.0, 0.5, 0.75]))
    np.testing.assert_allclose(got, [0.5, 0.5, 2 / 3])


def test_fpr_grid_interpolation_and_mean_band_by_hand():
    grid = np.array([0.0, 0.25, 0.5, 1.0])
    perfect = figures.tpr_on_fpr_grid([0, 0, 1], [0, 1, 1], grid)   # vertical jump at FPR 0
    chance = figures.tpr_on_fpr_grid([0, 1], [0, 1], grid)
    np.testing.assert_allclose(perfect, [1, 1, 1, 1])
    np.testing.assert_allclose(chance, [0, 0.25, 0.5, 1])
    kinked = figures.tpr_on_fpr_grid([0, 0.5, 0.5, 1], [0, 0.2, 0.8, 1], grid)
    np.testing.assert_allclose(kinked, [0, 0.1, 0.8, 1])  # arrives at .2, leaves from .8
    two_steps = figures.tpr_on_fpr_grid([0, 0, 0.5, 0.5, 1], [0, 0.4, 0.4, 0.6, 1], grid)
    np.testing.assert_allclose(two_steps, [0.4, 0.4, 0.6, 1])
    mean, lo, hi = figures.mean_band([perfect, chance])
    np.testing.assert_allclose(mean, [0.5, 0.625, 0.75, 1])
    np.testing.assert_allclose(lo, chance)
    np.testing.assert_allclose(hi, perfect)


def test_grid_curves_integrate_to_ap_and_auc():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(300, int), np.ones(40, int)]
    s = rng.standard_normal(340) + 1.2 * y
    grid = np.linspace(0, 1, 20001)
    p, r, _ = precision_recall_curve(y, s)
    prec = figures.precision_on_recall_grid(r, p, grid)
    assert prec[1:].mean() == pytest.approx(average_precision_score(y, s), abs=2e-3)
    fpr, tpr, _ = roc_curve(y, s)
    assert np.trapezoid(figures.tpr_on_fpr_grid(fpr, tpr, grid), grid) == pytest.approx(
        roc_auc_score(y, s), abs=2e-3)


def test_curve_figures_one_pr_and_one_roc_per_dataset(tmp_path):
    rng = np.random.default_rng(1)
    curves = []
    for m in ("advae", "ocsvm[nu=0.1]", "lof"):
        for d in ("letter", "cardio"):
            for seed in range(3):
                y = np.r_[np.zeros(80, int), np.ones(20, int)]
                curves.append({"method": m, "dataset": d, "seed": seed, "y_test": y,
                               "scores": rng.standard_normal(100) + y})
    paths = figures.write_curve_figures(curves, tmp_path / "figures")
    assert sorted(p.name for p in paths) == ["cardio-pr.png", "cardio-roc.png",
                                             "letter-pr.png", "letter-roc.png"]
    for p in paths:
        data = p.read_bytes()
        assert p.parent == tmp_path / "figures" and data[:8] == PNG_MAGIC and len(data) > 10_000


def test_method_styles_are_distinct_for_twenty_methods():
    styles = figures.method_styles([f"m{i}" for i in range(20)])
    assert len({(st["color"], st["linestyle"]) for st in styles.values()}) == 20


def test_training_curves_written(tmp_path):
    it = np.arange(0, 2000, 10)
    hist = {"iteration": it.tolist(), "L_T": (5 * np.exp(-it / 300) + 0.01).tolist(),
            "L_G": np.sin(it / 200).tolist(), "L_E": np.full(it.size, 2.0).tolist()}
    path = figures.write_training_curves(hist, tmp_path / "training" / "advae-letter-seed0.png",
                                        "advae on letter, seed 0")
    assert path == tmp_path / "training" / "advae-letter-seed0.png"
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 5_000


def test_threshold_that_flags_no_or_every_test_row_is_marked_in_threshold_tables(tmp_path):
    runs = _runs({("abod", "d1"): [0.95, 0.95], ("abod", "d2"): [0.9, 0.9],
                  ("lof", "d1"): [0.8, 0.8], ("lof", "d2"): [0.7, 0.7]})
    runs["f1"] = [0.0, 0.0, 0.5, 0.5, 0.4, 0.4, 0.3, 0.3]
    runs["threshold_extreme"] = ["none", "none", "", "", "", "all", "", ""]
    ctx = "Protocol paper; threshold paper, alpha 0.1; --quick budgets"
    tables.write_tables(runs, tmp_path, metrics=("auc", "f1"), context=ctx)
    f1 = (tmp_path / "f1.md").read_text()
    md = _md_rows(f1)
    assert md["abod"][0] == "*0.000 ± 0.000*" + tables.EXTREME and md["abod"][1] == "**0.500 ± 0.000**"
    assert md["lof"][0].endswith(tables.EXTREME) and not md["lof"][1].endswith(tables.EXTREME)
    assert f"{tables.EXTREME} in some runs of this cell the threshold flags no test row" in f1
    assert "- abod: 2 threshold flags no test row (d1 2) of 4 runs" in f1
    assert "- lof: 1 threshold flags every test row (d1 1) of 4 runs" in f1
    # AUC does not depend on the threshold: no mark there
    auc = (tmp_path / "auc.md").read_text()
    assert tables.EXTREME not in auc and "threshold flags" not in auc
    # every caption names the context
    for name in ("auc.md", "f1.md", "f1.tex"):
        assert ctx in (tmp_path / name).read_text().splitlines()[0]
    assert r"$^{\S}$" in (tmp_path / "f1.tex").read_text()
    csv = pd.read_csv(tmp_path / "f1.csv").set_index("method")
    assert csv.loc["abod", "marks"] == "d1:threshold-extreme"


def _toy_curves(methods, datasets=("letter", "cardio"), seeds=2):
    rng = np.random.default_rng(1)
    curves = []
    for k, m in enumerate(methods):
        for d in datasets:
            for seed in range(seeds):
                y = np.r_[np.zeros(80, int), np.ones(20, int)]
                curves.append({"method": m, "dataset": d, "seed": seed, "y_test": y,
                               "scores": rng.standard_normal(100) + y * (0.2 + 0.3 * k)})
    return curves


def test_featured_methods_are_the_configs_featured_and_the_best_few_others():
    methods = ["advae", "e-advae", "m0", "m1", "m2", "m3", "m4", "advae[m_x=4.0]"]
    per_method = {}
    for d in ("letter",):
        _, by_ds = figures._curves_by_dataset(_toy_curves(methods, (d,)))
        per_method = by_ds[d]
    strong = figures.strong_methods(per_method, "ap", names=("advae", "e-advae", "g-advae"))
    # the config's featured methods (any parameters) + the 3 other methods with the highest mean AP
    # (m4, m3, m2: the toy scores separate better with k)
    assert strong[:3] == ["advae", "e-advae", "advae[m_x=4.0]"]
    assert strong[3:] == ["m4", "m3", "m2"]
    # no method is featured unless a config says so: the best three by AP, whatever their names
    assert figures.strong_methods(per_method, "ap") == ["advae[m_x=4.0]", "m4", "m3"]
    assert figures.strong_methods(per_method, "ap", ["m0", "lof"]) == ["m0"]


def test_small_multiples_figure(tmp_path):
    path = figures.write_small_multiples(_toy_curves(["advae", "lof", "pca"]),
                                        tmp_path / "small-multiples.png", ["advae", "lof"],
                                        "Protocol paper")
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 20_000
