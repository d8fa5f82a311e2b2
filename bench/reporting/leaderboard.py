"""Leaderboard over one or several result stores: where does a method rank, and is the difference real?

Rows are method specs, columns the mean over seeds per dataset, the average over datasets, the
average rank (each dataset ranks the methods by their mean over seeds, 1 = best, ties averaged) and
wins/ties/losses against a baseline (per dataset, mean against mean). Sorted by average rank.

Statistics (Demsar, "Statistical comparisons of classifiers over multiple data sets", JMLR 2006),
all from maintained libraries, never from a hand-typed table:
- Friedman test over the datasets (``scipy.stats.friedmanchisquare``): are the ranks different at all?
- Nemenyi critical difference at alpha 0.05: CD = q_alpha sqrt(k (k + 1) / (6 N)) with q_alpha the
  studentized range quantile at infinite degrees of freedom over sqrt(2)
  (``scipy.stats.studentized_range``); the pairwise Nemenyi p-values and the CD diagram come from
  scikit-posthocs (``posthoc_nemenyi_friedman``, ``critical_difference_diagram``).
- Pairwise Wilcoxon signed-rank tests over the datasets, Holm-adjusted (scikit-posthocs
  ``posthoc_wilcoxon``, ``p_adjust="holm"``).

Every test takes one number per method and dataset, the mean over seeds: the datasets are the
independent units (Demsar 2006; Benavoli, Corani, Mangili, "Should we really use post-hoc tests based
on mean-ranks?", JMLR 2016). The seeds of one dataset are not independent samples (a deterministic
method on a fixed split gives one number five times); they give the spread, not the sample size. With
fewer than 2 datasets no test is computed and no critical difference is drawn.

Only methods with a mean on every dataset are ranked; the others are listed with what they lack.
Stores merge only when they agree on the protocol, the datasets' checksums and the seeds; a spec in
two stores must be the very same runs (same keys).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from bench import BenchError

METRICS = ("auc", "ap", "f1")
CD_ALPHA = 0.05
MIN_PAIRS = 2  # fewer datasets: no Wilcoxon test
LOW_POWER_DATASETS = 10  # below this many datasets the Friedman and Nemenyi tests have little power


# ----------------------------------------------------------------------------------------------
# Merging stores
# ----------------------------------------------------------------------------------------------

def merge(frames: dict[str, pd.DataFrame], protocol: str | None = None) -> pd.DataFrame:
    """One frame of runs from several stores (``frames``: store name -> its runs, as
    ``outputs.load_runs`` gives them), with a ``store`` column. Raises ``BenchError`` naming what
    differs when the stores disagree on protocol, dataset checksums or seeds, or hold the same spec
    as different runs."""
    parts = []
    for name, df in frames.items():
        df = df.assign(store=name)
        if protocol is not None:
            df = df[df.protocol == protocol]
            if df.empty:
                raise BenchError(f"the store in {name} holds no runs of protocol {protocol!r}")
        parts.append(df)
    runs = pd.concat(parts, ignore_index=True)
    protocols = {n: sorted(set(g.protocol)) for n, g in runs.groupby("store", sort=False)}
    allp = sorted(set(runs.protocol))
    if len(allp) > 1:
        where = "; ".join(f"{n}: {', '.join(p)}" for n, p in protocols.items())
        raise BenchError(f"the runs differ in protocol ({where}); a leaderboard ranks one protocol: "
                         "choose one with --protocol")
    for d, g in runs.groupby("dataset", sort=False):
        shas = g.groupby("dataset_sha256", sort=False).store.unique()
        if len(shas) > 1:
            where = "; ".join(f"{sha[:12]} in {', '.join(st)}" for sha, st in shas.items())
            raise BenchError(f"dataset {d!r} has different checksums across the stores ({where}): "
                             "they did not run on the same data and cannot be ranked together")
    seeds = {n: tuple(sorted(set(g.seed.astype(int)))) for n, g in runs.groupby("store", sort=False)}
    if len(set(seeds.values())) > 1:
        where = "; ".join(f"{n}: {_seed_text(s)}" for n, s in seeds.items())
        raise BenchError(f"the stores ran different seeds ({where}); run the missing seeds "
                         "(run --seeds ...) so every method is compared on the same seeds")
    by_spec = runs.groupby("spec", sort=False).store.unique()
    for spec, stores in by_spec.items():
        if len(stores) < 2:
            continue
        keys = [set(runs[(runs.spec == spec) & (runs.store == s)].key) for s in stores]
        if any(k != keys[0] for k in keys[1:]):
            raise BenchError(f"method {spec!r} is in several stores ({', '.join(stores)}) with "
                             "different runs (other parameters, versions or data); keep it in one "
                             "store, or give the variant another spec")
        runs = runs[~((runs.spec == spec) & runs.store.isin(stores[1:]))]  # the same runs: keep one
    return runs.reset_index(drop=True)


def _seed_text(seeds: tuple) -> str:
    if seeds and list(seeds) == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 2:
        return f"{seeds[0]}-{seeds[-1]}"
    return ",".join(map(str, seeds))


# ----------------------------------------------------------------------------------------------
# Ranks and tests
# ----------------------------------------------------------------------------------------------

def mean_matrix(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """specs x datasets: mean of ``metric`` over the ok runs with a finite value (NaN: none)."""
    ok = runs[(runs.status == "ok") & np.isfinite(runs[metric].astype(float))]
    specs = list(dict.fromkeys(runs.spec))
    datasets = list(dict.fromkeys(runs.dataset))
    means = ok.groupby(["spec", "dataset"], sort=False)[metric].mean().unstack("dataset")
    return means.reindex(index=specs, columns=datasets).astype(float)


def rank_matrix(means: pd.DataFrame) -> pd.DataFrame:
    """Per dataset (column) the rank of each method, 1 = highest mean, ties get the average rank."""
    return means.apply(lambda col: pd.Series(stats.rankdata(-col.to_numpy()), index=col.index))


def wins_ties_losses(means: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Per method: datasets where its mean is above / equal to / below the baseline's."""
    diff = means.sub(means.loc[baseline], axis=1)
    return pd.DataFrame({"wins": (diff > 0).sum(axis=1), "ties": (diff == 0).sum(axis=1),
                         "losses": (diff < 0).sum(axis=1)})


def friedman(means: pd.DataFrame) -> dict:
    """Friedman test over the datasets (blocks) of the methods (rows of ``means``, complete)."""
    k, n = means.shape
    if k < 3:
        return {"statistic": np.nan, "pvalue": np.nan, "n_datasets": n, "n_methods": k,
                "note": "the Friedman test needs at least 3 methods"}
    if n < 2:
        return {"statistic": np.nan, "pvalue": np.nan, "n_datasets": n, "n_methods": k,
                "note": "the Friedman test needs at least 2 datasets"}
    res = stats.friedmanchisquare(*[means.loc[m].to_numpy() for m in means.index])
    return {"statistic": float(res.statistic), "pvalue": float(res.pvalue), "n_datasets": n,
            "n_methods": k, "note": ""}


def nemenyi_cd(k: int, n: int, alpha: float = CD_ALPHA) -> float:
    """Nemenyi critical difference of average ranks for k methods on n datasets (Demsar 2006, eq. 5):
    q_alpha sqrt(k (k + 1) / (6 n)), q_alpha = studentized range quantile (k, inf) / sqrt(2)."""
    q = stats.studentized_range.ppf(1 - alpha, k, np.inf) / np.sqrt(2)
    return float(q * np.sqrt(k * (k + 1) / (6.0 * n)))


def nemenyi_pvalues(means: pd.DataFrame) -> pd.DataFrame:
    import scikit_posthocs as sp

    p = sp.posthoc_nemenyi_friedman(means.T.to_numpy())  # blocks (datasets) as rows
    p.index = p.columns = list(means.index)
    return p


def wilcoxon_holm(paired: pd.DataFrame) -> pd.DataFrame:
    """Pairwise Wilcoxon signed-rank tests (two-sided, zero differences dropped) over the rows of
    ``paired`` (datasets x methods: one mean over seeds per cell), p-values Holm-adjusted over all
    pairs; 1 on the diagonal."""
    import scikit_posthocs as sp

    specs = list(paired.columns)
    with warnings.catch_warnings():  # identical columns: scipy warns and returns p = 1
        warnings.simplefilter("ignore")
        p = sp.posthoc_wilcoxon([paired[s].to_numpy() for s in specs], p_adjust="holm")
    p.index = p.columns = specs
    return p


# ----------------------------------------------------------------------------------------------
# The leaderboard
# ----------------------------------------------------------------------------------------------

@dataclass
class Leaderboard:
    metric: str
    table: pd.DataFrame          # ranked methods, sorted by average rank
    means: pd.DataFrame          # ranked methods x datasets
    ranks: pd.DataFrame
    baseline: str
    friedman: dict
    cd: float
    nemenyi: pd.DataFrame | None
    wilcoxon: pd.DataFrame | None
    n_pairs: int  # datasets the Wilcoxon tests pair over
    unranked: dict[str, str] = field(default_factory=dict)  # spec -> why it is not ranked
    context: str = ""


def build(runs: pd.DataFrame, metric: str = "auc", baseline: str | None = None,
          context: str = "", default_baseline: str | None = None) -> Leaderboard:
    """The leaderboard of ``runs`` (one protocol) on ``metric``. ``baseline``: the spec wins, ties and
    losses are counted against; without it ``default_baseline`` (the config's ``baseline``) if ranked,
    else the method ranked first."""
    if metric not in METRICS:
        raise BenchError(f"unknown leaderboard metric {metric!r}; choose one of {', '.join(METRICS)}")
    all_means = mean_matrix(runs, metric)
    complete = all_means.notna().all(axis=1)
    unranked = {m: "no ok run on " + ", ".join(all_means.columns[all_means.loc[m].isna()])
                for m in all_means.index[~complete]}
    means = all_means[complete]
    if means.empty:
        raise BenchError("no method has an ok run on every dataset; nothing to rank")
    ranks = rank_matrix(means)
    avg_rank = ranks.mean(axis=1)
    order = sorted(means.index, key=lambda m: (avg_rank[m], -means.loc[m].mean(), m))
    if baseline is None:
        baseline = default_baseline if default_baseline in means.index else order[0]
    elif baseline not in means.index:
        why = f" ({unranked[baseline]})" if baseline in unranked else ""
        raise BenchError(f"--baseline {baseline!r} is not among the ranked methods{why}; choose one "
                         f"of {', '.join(order)}")
    wtl = wins_ties_losses(means, baseline)
    table = means.loc[order].copy()
    table["average"] = means.loc[order].mean(axis=1)
    table["avg_rank"] = avg_rank[order]
    table = table.join(wtl)
    table.index.name = "method"
    k, n = means.shape
    fr = friedman(means.loc[order])
    cd = nemenyi_cd(k, n) if k >= 2 and n >= 2 else np.nan
    nem = nemenyi_pvalues(means.loc[order]) if k >= 3 and n >= 2 else None
    paired = means.loc[order].T  # datasets x methods: the mean over seeds, one pair per dataset
    wil = wilcoxon_holm(paired) if k >= 2 and len(paired) >= MIN_PAIRS else None
    return Leaderboard(metric, table, means.loc[order], ranks.loc[order], baseline, fr, cd, nem, wil,
                       len(paired), unranked, context)


def _fmt(v, d=3) -> str:
    return "" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.{d}f}"


def statistics_lines(lb: Leaderboard) -> list[str]:
    """What the tests say, in words, for the terminal and the files."""
    fr = lb.friedman
    k, n = fr["n_methods"], fr["n_datasets"]
    lines = []
    if fr["note"]:
        lines.append(f"Friedman test: not computed ({fr['note']}; {k} methods, {n} datasets).")
    else:
        lines.append(f"Friedman test over {n} datasets and {k} methods: chi-square = "
                     f"{fr['statistic']:.3f}, p = {fr['pvalue']:.3g} (one mean over seeds per method "
                     "and dataset). A small p says the methods' ranks are not all equal, not which "
                     "methods differ.")
    if n < LOW_POWER_DATASETS:
        lines.append(f"With only {n} datasets the Friedman and Nemenyi tests have little power: a "
                     "non-significant result is not evidence that the methods are equal.")
    if np.isfinite(lb.cd):
        lines.append(f"Nemenyi critical difference (alpha {CD_ALPHA}, {k} methods, {n} datasets): "
                     f"{lb.cd:.3f} average ranks; two methods whose average ranks differ by less are "
                     "not significantly different (which is not the same as equal).")
    else:
        lines.append(f"No Nemenyi critical difference: {n} dataset(s) (at least 2 needed).")
    if lb.wilcoxon is None:
        lines.append(f"No pairwise Wilcoxon tests: {lb.n_pairs} dataset(s) (at least {MIN_PAIRS} "
                     "needed).")
    else:
        lines.append(f"Pairwise Wilcoxon signed-rank tests over {lb.n_pairs} datasets (each method's "
                     "mean over seeds per dataset; seeds give the spread, not the sample size), "
                     f"Holm-adjusted over all pairs: wilcoxon-{lb.metric}.csv. A p below 0.05 says "
                     "one method is better on most of these datasets, not on every dataset or on "
                     "datasets unlike them.")
    if lb.unranked:
        lines.append("Not ranked: " + "; ".join(f"{m} ({why})" for m, why in lb.unranked.items()))
    return lines


def display_frame(lb: Leaderboard) -> pd.DataFrame:
    """The leaderboard as text cells, one row per ranked method."""
    t = lb.table
    rows = []
    for m in t.index:
        w, ti, lo = (int(t.loc[m, c]) for c in ("wins", "ties", "losses"))
        rows.append([m, *(_fmt(t.loc[m, d]) for d in lb.means.columns), _fmt(t.loc[m, "average"]),
                     _fmt(t.loc[m, "avg_rank"], 2), "baseline" if m == lb.baseline else f"{w}/{ti}/{lo}"])
    return pd.DataFrame(rows, columns=["method", *lb.means.columns, "average", "avg rank",
                                       f"W/T/L vs {lb.baseline}"])


def caption(lb: Leaderboard) -> str:
    return (f"Leaderboard, {lb.metric.upper()}: mean over seeds per dataset; average rank over "
            f"{lb.means.shape[1]} datasets (1 = best, ties averaged); wins/ties/losses = datasets "
            f"where the method's mean is above/equal to/below {lb.baseline}'s."
            + (f" {lb.context}." if lb.context else ""))


def to_text(lb: Leaderboard) -> str:
    """Plain-text leaderboard for the terminal."""
    df = display_frame(lb)
    return caption(lb) + "\n\n" + df.to_string(index=False) + "\n\n" + "\n".join(
        statistics_lines(lb)) + "\n"


def write(lb: Leaderboard, out_dir) -> list[Path]:
    """``leaderboard-<metric>.{md,csv,tex}``, ``cd-<metric>.{png,svg}``, ``wilcoxon-<metric>.csv``
    (and its figure ``wilcoxon-<metric>.png``) in ``out_dir``."""
    from bench.reporting import tables

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    m = lb.metric
    written = []
    csv = out_dir / f"leaderboard-{m}.csv"
    t = lb.table.copy()
    t["baseline"] = lb.baseline
    t.reset_index().to_csv(csv, index=False, float_format="%.6f")
    written.append(csv)
    df = display_frame(lb)
    md = out_dir / f"leaderboard-{m}.md"
    md.write_text(caption(lb) + "\n\n" + tables.markdown_table(df) + "\n"
                  + "\n\n".join(statistics_lines(lb)) + "\n", encoding="utf-8")
    written.append(md)
    tex = out_dir / f"leaderboard-{m}.tex"
    lines = [f"% {caption(lb)}", "% requires \\usepackage{booktabs}",
             r"\begin{tabular}{l" + "c" * (len(df.columns) - 1) + "}", r"\toprule",
             " & ".join(tables.latex_escape(c) for c in df.columns) + r" \\", r"\midrule"]
    for row in df.itertuples(index=False):
        lines.append(" & ".join(tables.latex_escape(v) for v in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    tex.write_text("\n".join(lines) + "\n", encoding="utf-8")
    written.append(tex)
    if lb.wilcoxon is not None:
        wcsv = out_dir / f"wilcoxon-{m}.csv"
        lb.wilcoxon.rename_axis("method").to_csv(wcsv, float_format="%.6g")
        written += [wcsv, _wilcoxon_figure(lb, out_dir / f"wilcoxon-{m}.png")]
    if lb.nemenyi is not None:
        written += _cd_diagram(lb, out_dir / f"cd-{m}")
    return written


def _cd_diagram(lb: Leaderboard, stem: Path) -> list[Path]:
    import matplotlib.pyplot as plt
    import scikit_posthocs as sp

    k = len(lb.table)
    avg = lb.table["avg_rank"]
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.32 * k))
    sp.critical_difference_diagram(avg, lb.nemenyi, alpha=CD_ALPHA, ax=ax,
                                   label_fmt_left="{label} ({rank:.2f})",
                                   label_fmt_right="({rank:.2f}) {label}",
                                   label_props={"fontsize": 9})
    # The CD bar above the tick labels (scikit-posthocs draws it across them): x in ranks, y in
    # axes fraction, starting at the axis' left end.
    from matplotlib.transforms import blended_transform_factory

    top = blended_transform_factory(ax.transData, ax.transAxes)
    x0 = ax.get_xlim()[0]
    ax.plot([x0, x0 + lb.cd], [1.0 + 0.45 / fig.get_figheight()] * 2, color="black", lw=2.5,
            transform=top, clip_on=False)
    ax.text(x0 + lb.cd / 2, 1.0 + 0.5 / fig.get_figheight(), f"CD = {lb.cd:.2f}", ha="center",
            va="bottom", fontsize=8, transform=top)
    n = lb.means.shape[1]
    ax.set_title(f"{lb.metric.upper()}: average ranks (1 = best) over {n} datasets; bars join "
                 f"methods the Nemenyi test does not separate (alpha {CD_ALPHA}, CD = {lb.cd:.2f})"
                 + (f"\n{lb.context}" if lb.context else ""), fontsize=8, pad=50)
    out = []
    for ext in ("png", "svg"):
        path = stem.with_suffix(f".{ext}")
        fig.savefig(path, dpi=120, bbox_inches="tight", metadata={"Software": None} if ext == "png"
                    else {"Date": None})
        out.append(path)
    plt.close(fig)
    return out


def _wilcoxon_figure(lb: Leaderboard, path: Path) -> Path:
    """Compact heat map of the Holm-adjusted p-values: dark = significant."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import BoundaryNorm, ListedColormap

    p = lb.wilcoxon
    k = len(p)
    fig, ax = plt.subplots(figsize=(2.2 + 0.42 * k, 1.6 + 0.38 * k))
    cmap = ListedColormap(["#08306b", "#4292c6", "#c6dbef", "#f7f7f7"])
    norm = BoundaryNorm([0, 0.001, 0.01, 0.05, 1.0001], cmap.N)
    arr = p.to_numpy(dtype=float).copy()
    np.fill_diagonal(arr, np.nan)
    im = ax.imshow(arr, cmap=cmap, norm=norm)
    ax.set_xticks(range(k), p.columns, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(k), p.index, fontsize=8)
    cb = fig.colorbar(im, ax=ax, ticks=[0.0005, 0.0055, 0.03, 0.5], shrink=0.8)
    cb.ax.set_yticklabels(["p<0.001", "p<0.01", "p<0.05", "n.s."], fontsize=7)
    ax.set_title(f"{lb.metric.upper()}: pairwise Wilcoxon, Holm-adjusted p\n(paired over {lb.n_pairs} "
                 "datasets, mean over seeds)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path
