"""Leaderboard: ranks with ties, wins/ties/losses, Friedman, Nemenyi CD, Wilcoxon-Holm, checked
against hand computations; store merging rules; the command's outputs."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bench import BenchError
from bench.reporting import leaderboard, runtable
from bench.cli import main
from _stores import make_store, record


def _runs(values: dict, seeds=(0,)) -> pd.DataFrame:
    """values: {(spec, dataset): [metric per seed]} -> runs frame with auc."""
    rows = []
    for (spec, d), vals in values.items():
        for seed, v in zip(seeds if len(seeds) == len(vals) else range(len(vals)), vals):
            rows.append({"spec": spec, "dataset": d, "seed": seed, "status": "ok", "auc": v,
                         "key": f"{spec}-{d}-{seed}", "protocol": "paper",
                         "dataset_sha256": f"sha-{d}"})
    return pd.DataFrame(rows)


# Four datasets, three methods; on d2 a and b tie.
MEANS = {("a", "d1"): 0.9, ("b", "d1"): 0.8, ("c", "d1"): 0.7,
         ("a", "d2"): 0.6, ("b", "d2"): 0.6, ("c", "d2"): 0.9,
         ("a", "d3"): 0.5, ("b", "d3"): 0.7, ("c", "d3"): 0.6,
         ("a", "d4"): 0.95, ("b", "d4"): 0.85, ("c", "d4"): 0.75}


def test_ranks_with_ties_average_rank_and_order():
    runs = _runs({k: [v] for k, v in MEANS.items()})
    lb = leaderboard.build(runs, "auc", baseline="a")
    # by hand: d1 a1 b2 c3; d2 c1, a and b tie for 2-3 -> 2.5 each; d3 b1 c2 a3; d4 a1 b2 c3
    assert lb.ranks.loc["a"].tolist() == [1, 2.5, 3, 1]
    assert lb.ranks.loc["b"].tolist() == [2, 2.5, 1, 2]
    assert lb.ranks.loc["c"].tolist() == [3, 1, 2, 3]
    assert lb.table["avg_rank"].to_dict() == pytest.approx({"a": 1.875, "b": 1.875, "c": 2.25})
    # a and b tie on average rank: the higher average value comes first (a 0.7375, b 0.7375 ->
    # equal too: then by name)
    assert list(lb.table.index) == ["a", "b", "c"]
    assert lb.table.loc["c", "average"] == pytest.approx((0.7 + 0.9 + 0.6 + 0.75) / 4)
    # wins/ties/losses against a: b wins d3, ties d2, loses d1, d4; c wins d2, d3, loses d1, d4
    assert lb.table.loc["b", ["wins", "ties", "losses"]].tolist() == [1, 1, 2]
    assert lb.table.loc["c", ["wins", "ties", "losses"]].tolist() == [2, 0, 2]
    assert lb.table.loc["a", ["wins", "ties", "losses"]].tolist() == [0, 4, 0]


def test_friedman_statistic_by_hand_without_ties():
    # 4 datasets x 3 methods, no ties: ranks a (1,1,2,1), b (2,3,1,2), c (3,2,3,3)
    vals = {("a", "d1"): 0.9, ("b", "d1"): 0.8, ("c", "d1"): 0.7,
            ("a", "d2"): 0.9, ("b", "d2"): 0.5, ("c", "d2"): 0.6,
            ("a", "d3"): 0.7, ("b", "d3"): 0.8, ("c", "d3"): 0.6,
            ("a", "d4"): 0.95, ("b", "d4"): 0.85, ("c", "d4"): 0.75}
    lb = leaderboard.build(_runs({k: [v] for k, v in vals.items()}), "auc")
    n, k = 4, 3
    R = {"a": 5, "b": 8, "c": 11}  # rank sums
    chi2 = 12 / (n * k * (k + 1)) * sum(r * r for r in R.values()) - 3 * n * (k + 1)
    assert chi2 == pytest.approx(4.5)
    assert lb.friedman["statistic"] == pytest.approx(4.5)
    assert lb.friedman["pvalue"] == pytest.approx(np.exp(-4.5 / 2))  # chi-square, 2 dof
    assert (lb.friedman["n_datasets"], lb.friedman["n_methods"]) == (4, 3)
    lines = leaderboard.statistics_lines(lb)
    assert "Friedman test over 4 datasets and 3 methods: chi-square = 4.500" in lines[0]
    assert "little power" in lines[1]


def test_nemenyi_critical_difference_matches_demsar():
    # Demsar (2006) Table 5a: q_0.05 = 2.343 for k = 3, 3.164 for k = 10; CD = q sqrt(k(k+1)/(6N))
    assert leaderboard.nemenyi_cd(3, 1) / np.sqrt(3 * 4 / 6) == pytest.approx(2.343, abs=1e-3)
    assert leaderboard.nemenyi_cd(10, 1) / np.sqrt(10 * 11 / 6) == pytest.approx(3.164, abs=1e-3)
    assert leaderboard.nemenyi_cd(3, 4) == pytest.approx(2.343 * np.sqrt(12 / 24), abs=1e-3)


def test_wilcoxon_holm_adjustment_by_hand():
    rng = np.random.default_rng(3)
    base = rng.uniform(0.5, 0.9, 12)
    paired = pd.DataFrame({"a": base, "b": base + np.linspace(0.01, 0.12, 12),
                           "c": base + rng.normal(0, 0.05, 12)})
    p = leaderboard.wilcoxon_holm(paired)
    raw = {pair: stats.wilcoxon(paired[pair[0]], paired[pair[1]]).pvalue
           for pair in [("a", "b"), ("a", "c"), ("b", "c")]}
    # Holm: sort ascending, multiply the i-th smallest by (m - i), keep monotone, cap at 1
    order = sorted(raw, key=raw.get)
    adj, running = {}, 0.0
    for i, pair in enumerate(order):
        running = max(running, min(1.0, (3 - i) * raw[pair]))
        adj[pair] = running
    for (x, y), v in adj.items():
        assert p.loc[x, y] == pytest.approx(v, rel=1e-9) and p.loc[y, x] == pytest.approx(v, rel=1e-9)
    assert np.allclose(np.diag(p.to_numpy()), 1.0)
    assert p.loc["a", "b"] < 0.05  # b is above a on all 12 pairs


def test_method_missing_a_dataset_is_listed_not_ranked():
    vals = {k: [v] for k, v in MEANS.items()}
    vals[("d", "d1")] = [0.99]
    lb = leaderboard.build(_runs(vals), "auc")
    assert "d" not in lb.table.index and lb.unranked == {"d": "no ok run on d2, d3, d4"}
    assert any(line.startswith("Not ranked: d (no ok run on d2, d3, d4)")
               for line in leaderboard.statistics_lines(lb))
    with pytest.raises(BenchError, match="--baseline 'd' is not among the ranked methods"):
        leaderboard.build(_runs(vals), "auc", baseline="d")


def _frame(tmp_path, name, seps, **kw):
    make_store(tmp_path / name, seps, **kw)
    return runtable.load_runs(tmp_path / name)


def test_merge_rules(tmp_path):
    a = _frame(tmp_path, "a", {("m1", "letter"): 1.0, ("m2", "letter"): 2.0})
    b = _frame(tmp_path, "b", {("m3", "letter"): 1.5})
    merged = leaderboard.merge({"a": a, "b": b})
    assert sorted(set(merged.spec)) == ["m1", "m2", "m3"] and len(merged) == 6
    # the same runs in two stores merge into one copy
    assert len(leaderboard.merge({"a": a, "a2": a})) == 4
    # a spec stored as different runs in two stores is an error
    other = _frame(tmp_path, "c", {("m1", "letter"): 1.0}, sha="sha-letter", protocol="paper",
                   seeds=(0, 1), alpha=0.1)
    other["key"] = other["key"] + "x"
    with pytest.raises(BenchError, match="'m1' is in several stores .* different runs"):
        leaderboard.merge({"a": a, "c": other})
    with pytest.raises(BenchError, match="differ in protocol .*choose one with --protocol"):
        leaderboard.merge({"a": a, "r": _frame(tmp_path, "r", {("m3", "letter"): 1.0},
                                               protocol="resample")})
    with pytest.raises(BenchError, match="dataset 'letter' has different checksums"):
        leaderboard.merge({"a": a, "s": _frame(tmp_path, "s", {("m3", "letter"): 1.0},
                                               sha="other")})
    with pytest.raises(BenchError, match="different seeds .*a: 0,1; t: 0-2"):
        leaderboard.merge({"a": a, "t": _frame(tmp_path, "t", {("m3", "letter"): 1.0},
                                               seeds=(0, 1, 2))})


def test_leaderboard_command_over_two_stores(tmp_path, capsys):
    ds = ("letter", "cardio", "satellite")
    make_store(tmp_path / "a", {(m, d): s for d in ds for m, s in (("weak", 0.2), ("mid", 1.0))})
    make_store(tmp_path / "b", {("strong", d): 3.0 for d in ds})
    assert main(["leaderboard", "--results", str(tmp_path / "a"), str(tmp_path / "b"),
                 "--baseline", "mid", "--out", str(tmp_path / "lb")]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.split()[:1] in (["strong"], ["mid"],
                                                                              ["weak"])]
    assert [r[0] for r in rows] == ["strong", "mid", "weak"]
    assert rows[0][-2:] == ["1.00", "3/0/0"] and rows[1][-1] == "baseline"
    assert "Friedman test over 3 datasets and 3 methods: chi-square = 6.000" in out
    for name in ("leaderboard-auc.md", "leaderboard-auc.csv", "leaderboard-auc.tex", "cd-auc.png",
                 "cd-auc.svg", "wilcoxon-auc.csv", "wilcoxon-auc.png"):
        assert (tmp_path / "lb" / name).stat().st_size > 50, name
    csv = pd.read_csv(tmp_path / "lb" / "leaderboard-auc.csv")
    assert list(csv.method) == ["strong", "mid", "weak"] and list(csv.avg_rank) == [1, 2, 3]
    w = pd.read_csv(tmp_path / "lb" / "wilcoxon-auc.csv", index_col=0)
    # every pair of methods differs the same way on all 3 datasets (the pairs are datasets, not
    # (dataset, seed)): exact two-sided p = 2 / 2^3 for each of the 3 comparisons; Holm: 3 x 0.25
    assert w.shape == (3, 3)
    assert w.loc["strong", "weak"] == w.loc["mid", "weak"] == w.loc["strong", "mid"] == \
        pytest.approx(3 * 2 / 2**3)
    assert "Pairwise Wilcoxon signed-rank tests over 3 datasets" in out
    # a mismatch is one error line, exit 2
    make_store(tmp_path / "c", {("other", d): 1.0 for d in ds}, seeds=(0, 1, 2))
    assert main(["leaderboard", "--results", str(tmp_path / "a"), str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: the stores ran different seeds")


def test_f1_leaderboard_needs_one_threshold_policy(tmp_path, capsys):
    make_store(tmp_path / "a", {("m1", "letter"): 1.0, ("m2", "letter"): 2.0, ("m3", "letter"): 0.5})
    make_store(tmp_path / "b", {("m4", "letter"): 1.0}, policy="percentile")
    args = ["leaderboard", "--results", str(tmp_path / "a"), str(tmp_path / "b"), "--metric", "f1",
            "--out", str(tmp_path / "lb")]
    assert main(args) == 2
    assert "different threshold policies (kde, percentile)" in capsys.readouterr().err
    assert main(args + ["--threshold", "percentile"]) == 0
    assert "threshold percentile" in capsys.readouterr().out


def test_wilcoxon_pairs_datasets_not_seeds():
    """Five seeds of a deterministic method on a fixed split are one number five times: the test must
    see 3 datasets (exact p = 0.25), not 15 (dataset, seed) pairs (p = 2 / 2^15)."""
    values = {(m, d): [v] * 5 for d in ("d1", "d2", "d3") for m, v in (("lof", 0.8), ("hbos", 0.7))}
    lb = leaderboard.build(_runs(values, seeds=(0, 1, 2, 3, 4)))
    assert lb.n_pairs == 3
    assert lb.wilcoxon.loc["lof", "hbos"] == pytest.approx(2 / 2**3)
    # the means over seeds are what is paired: seed-level noise averages out first
    noisy = {("a", d): [0.6, 0.8] for d in ("d1", "d2", "d3", "d4", "d5", "d6")}
    noisy.update({("b", d): [0.65, 0.65] for d in ("d1", "d2", "d3", "d4", "d5", "d6")})
    lb = leaderboard.build(_runs(noisy, seeds=(0, 1)))
    assert lb.means.loc["a"].tolist() == pytest.approx([0.7] * 6)
    assert lb.wilcoxon.loc["a", "b"] == pytest.approx(stats.wilcoxon([0.05] * 6).pvalue)


def test_one_dataset_prints_no_friedman_or_nemenyi(tmp_path):
    lb = leaderboard.build(_runs({(m, "d1"): [v] for m, v in (("a", 0.9), ("b", 0.8), ("c", 0.7))}))
    text = leaderboard.to_text(lb)
    assert "Friedman test: not computed" in text and "chi-square" not in text
    assert "No Nemenyi critical difference: 1 dataset(s)" in text and "Nemenyi critical difference (" \
        not in text
    assert "No pairwise Wilcoxon tests: 1 dataset(s)" in text
    assert not np.isfinite(lb.cd) and lb.nemenyi is None and lb.wilcoxon is None
    written = {p.name for p in leaderboard.write(lb, tmp_path)}
    assert not any(n.startswith(("cd-", "wilcoxon-")) for n in written)


def test_default_baseline_is_the_configs_when_ranked_else_the_first():
    runs = _runs({k: [v] for k, v in MEANS.items()})
    first = leaderboard.build(runs, "auc").table.index[0]
    assert leaderboard.build(runs, "auc").baseline == first  # no method name is assumed
    assert leaderboard.build(runs, "auc", default_baseline="b").baseline == "b"
    assert leaderboard.build(runs, "auc", default_baseline="not-run").baseline == first
    assert leaderboard.build(runs, "auc", baseline="c", default_baseline="b").baseline == "c"
