"""Reproduction report: does a result store reproduce a paper's published table?

For each method, dataset and metric: the published value; ours as mean +- std, min and max over
seeds; the difference mean - published; and where the published value falls among our seeds:
``below`` all of them, ``within`` their range, or ``above`` all of them. Our min and max are rounded
to the paper's printed decimals first (a printed 0.837 is any value in [0.8365, 0.8375)), so a
published value equal to our rounded min is within. A summary line per metric counts the cells in
each place.

Recall and F1 are taken under the threshold policy the paper used for the method (this suite's
``paper`` policy: kde at alpha for the reconstruction-based methods, PyOD's percentile for the
others); where the paper does not state a threshold for a method, the cell says so in a footnote.

Published data live in ``published/<name>.csv`` (values as printed) and ``published/<name>.toml``
(citation, protocol, decimals, which threshold the paper states for which method, notes). Published
numbers are only shown beside ours: they never enter our means, ranks or tests.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bench import BenchError
from bench.evaluation.data import REPO_ROOT

PUBLISHED_DIR = REPO_ROOT / "published"
DEFAULT_PUBLISHED = "wang2020-kbs"
PLACES = ("below", "within", "above")
THRESHOLD_METRICS = ("precision", "recall", "f1")
METRIC_NAMES = {"auc": "AUC", "ap": "AP", "precision": "Precision", "recall": "Recall", "f1": "F1"}


@dataclass(frozen=True)
class Published:
    name: str
    values: pd.DataFrame  # method, dataset, then one column per metric, as printed
    meta: dict

    @property
    def metrics(self) -> list[str]:
        return [m for m in self.meta.get("metrics", []) if m in self.values.columns]

    def stated_threshold(self, method: str) -> str | None:
        """The threshold policy the paper states for ``method``'s recall/F1 (None: not stated)."""
        for policy, methods in self.meta.get("threshold", {}).items():
            if method in methods:
                return policy
        return None


def available() -> list[str]:
    def comparable(csv: Path) -> bool:
        header = set(csv.read_text(encoding="utf-8").splitlines()[0].split(","))
        return csv.with_suffix(".toml").is_file() and {"method", "dataset"} <= header

    return sorted(p.stem for p in PUBLISHED_DIR.glob("*.csv") if comparable(p))


def for_protocol(protocol: str) -> str | None:
    """The first published comparison table whose numbers come from ``protocol`` (its toml's
    ``protocol``), or None: what ``report`` compares a store with by default."""
    for name in available():
        try:
            meta = tomllib.loads((PUBLISHED_DIR / f"{name}.toml").read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError):
            continue
        if meta.get("protocol") == protocol:
            return name
    return None


def load_published(name: str = DEFAULT_PUBLISHED, folder: Path | None = None) -> Published:
    folder = Path(folder) if folder else PUBLISHED_DIR
    csv, toml = folder / f"{name}.csv", folder / f"{name}.toml"
    if not csv.is_file() or not toml.is_file():
        have = ", ".join(available()) or "none"
        raise BenchError(f"no published table {name!r} (expected {csv} and {toml}); available: {have}")
    try:
        meta = tomllib.loads(toml.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise BenchError(f"{toml}: not valid TOML ({exc})") from None
    values = pd.read_csv(csv)
    missing = {"method", "dataset"} - set(values.columns)
    if missing:
        raise BenchError(f"{csv}: needs columns method and dataset (missing {', '.join(missing)})")
    unknown = [m for m in meta.get("metrics", []) if m not in values.columns]
    if unknown:
        raise BenchError(f"{toml}: metrics {', '.join(unknown)} have no column in {csv.name}")
    # A table printed under other names: [methods] and [datasets] map them to our specs and names.
    values = values.assign(
        method=values.method.map(lambda m: meta.get("methods", {}).get(m, m)),
        dataset=values.dataset.map(lambda d: meta.get("datasets", {}).get(d, d)))
    return Published(name, values, meta)


def agreement(cmp: pd.DataFrame, tolerance: float) -> pd.DataFrame:
    """Per method and metric: cells compared, cells whose |mean - published| <= ``tolerance``, and
    the largest |difference| (the reproduction count of a published table that states a tolerance)."""
    ok = cmp.dropna(subset=["diff"])
    rows = []
    for (method, metric), sub in ok.groupby(["method", "metric"], sort=False):
        d = sub["diff"].abs()
        rows.append({"method": method, "metric": metric, "cells": len(sub),
                     "agree": int((d <= tolerance + 1e-12).sum()), "max_abs_diff": float(d.max()),
                     "published_within_seeds": int((sub.place == "within").sum())})
    return pd.DataFrame(rows, columns=["method", "metric", "cells", "agree", "max_abs_diff",
                                       "published_within_seeds"])


def _match_specs(runs: pd.DataFrame, method: str) -> tuple[str | None, str]:
    """Our spec for a published method name: the spec itself, else the only spec of that method."""
    specs = list(dict.fromkeys(runs.spec))
    if method in specs:
        return method, ""
    same = [s for s in specs if s.split("[", 1)[0] == method]
    if len(same) == 1:
        return same[0], f"compared with our {same[0]}"
    return None, ""


def compare(runs: pd.DataFrame, pub: Published) -> pd.DataFrame:
    """Long frame, one row per (method, dataset, metric) present in both: published, n, mean, std,
    min, max (of our ok runs), diff = mean - published, place (below/within/above), note.

    ``runs``: our runs (one protocol), recall/F1 under the ``paper`` threshold policy."""
    decimals = int(pub.meta.get("decimals", 3))
    ok = runs[runs.status == "ok"]
    rows = []
    for method in dict.fromkeys(pub.values.method):
        spec, how = _match_specs(runs, method)
        if spec is None:
            continue
        note_method = pub.meta.get("notes", {}).get(method, "")
        for r in pub.values[pub.values.method == method].itertuples(index=False):
            if not ((runs.spec == spec) & (runs.dataset == r.dataset)).any():
                continue  # this dataset was not run: no cell
            ours = ok[(ok.spec == spec) & (ok.dataset == r.dataset)]
            for metric in pub.metrics:
                published = getattr(r, metric)
                if not np.isfinite(published):
                    continue
                vals = ours[metric].astype(float).to_numpy()
                vals = vals[np.isfinite(vals)]
                notes = [n for n in (how, note_method) if n]
                unstated = metric in THRESHOLD_METRICS and pub.stated_threshold(method) is None
                if unstated:
                    notes.append("the paper does not state this method's threshold; ours: the "
                                 "paper policy's rule for its family")
                row = {"method": method, "spec": spec, "dataset": r.dataset, "metric": metric,
                       "published": float(published), "n": len(vals),
                       "threshold_stated": not unstated}
                if len(vals):
                    lo, hi = round(vals.min(), decimals), round(vals.max(), decimals)
                    place = "below" if published < lo else "above" if published > hi else "within"
                    row.update(mean=vals.mean(), std=vals.std(ddof=1) if len(vals) > 1 else np.nan,
                               min=vals.min(), max=vals.max(), diff=vals.mean() - published,
                               place=place)
                else:
                    row.update(mean=np.nan, std=np.nan, min=np.nan, max=np.nan, diff=np.nan,
                               place="no ok run")
                row["note"] = "; ".join(notes)
                rows.append(row)
    cols = ["method", "spec", "dataset", "metric", "published", "n", "mean", "std", "min", "max",
            "diff", "place", "threshold_stated", "note"]
    return pd.DataFrame(rows, columns=cols)


def summary_lines(cmp: pd.DataFrame) -> list[str]:
    """One line per metric: how many cells' published value lies below, within, above our seeds."""
    lines = []
    for metric in dict.fromkeys(cmp.metric):
        sub = cmp[cmp.metric == metric]
        counts = sub.place.value_counts()
        parts = [f"{counts.get('below', 0)} below our seeds", f"{counts.get('within', 0)} within "
                 "their range", f"{counts.get('above', 0)} above"]
        if counts.get("no ok run", 0):
            parts.append(f"{counts['no ok run']} without an ok run")
        d = sub["diff"].dropna()
        mean_diff = f"; mean difference ours - published {d.mean():+.3f}" if len(d) else ""
        lines.append(f"{METRIC_NAMES.get(metric, metric)}: {len(sub)} cells, published value "
                     + ", ".join(parts) + mean_diff)
    return lines


def _cell(r) -> str:
    if not np.isfinite(r["mean"]):
        return "no ok run"
    sd = "" if not np.isfinite(r["std"]) else f" ± {r['std']:.3f}"
    return f"{r['mean']:.3f}{sd}"


def markdown(cmp: pd.DataFrame, pub: Published, context: str = "", missing=()) -> str:
    """Per metric a table (method, dataset, published, ours, min..max, diff, place) with the
    footnotes of its cells, after the summary lines."""
    from bench.reporting.tables import markdown_table

    out = [f"Reproduction of {pub.meta.get('source', pub.name)} of {pub.meta.get('citation', '')}.",
           "", f"Published values: {pub.meta.get('runs_per_cell', 1)} run per cell, printed with "
           f"{pub.meta.get('decimals', 3)} decimals; ours: mean ± sample std, min..max over seeds. "
           "place: where the published value falls among our seeds (min and max rounded to the "
           "printed decimals)." + (f" {context}." if context else ""), ""]
    out += [f"- {line}" for line in summary_lines(cmp)]
    tol = pub.meta.get("tolerance")
    if tol is not None:
        agree = agreement(cmp, float(tol))
        agree = agree.assign(max_abs_diff=agree.max_abs_diff.map(lambda v: f"{v:.4f}"))
        out += ["", f"Agreement: cells whose |our mean - published| <= {tol} (published_within_seeds: "
                "cells whose published value lies within our seeds' range).", "",
                markdown_table(agree).rstrip()]
    if missing:
        out += ["", "Published methods without runs in this store: " + ", ".join(missing) + "."]
    for metric in dict.fromkeys(cmp.metric):
        sub = cmp[cmp.metric == metric]
        notes: dict[str, int] = {}
        rows = []
        for _, r in sub.iterrows():
            mark = ""
            if r["note"]:
                notes.setdefault(r["note"], len(notes) + 1)
                mark = f" [{notes[r['note']]}]"
            rows.append([r["method"] + mark, r["dataset"], f"{r['published']:.3f}", _cell(r),
                         "" if not np.isfinite(r["min"]) else f"{r['min']:.3f}..{r['max']:.3f}",
                         "" if not np.isfinite(r["diff"]) else f"{r['diff']:+.3f}", r["place"]])
        df = pd.DataFrame(rows, columns=["method", "dataset", "published", "ours", "min..max",
                                         "diff", "place"])
        out += ["", f"## {METRIC_NAMES.get(metric, metric)}", "", markdown_table(df).rstrip()]
        if notes:
            out += [""] + [f"[{i}] {text}" for text, i in notes.items()]
    return "\n".join(out) + "\n"


def figure(cmp: pd.DataFrame, metric: str, path: Path, context: str = "",
           seeds: pd.DataFrame | None = None) -> Path:
    """One panel per dataset, one row per method: ours minus the published value, so who is above
    and by how much shows even where the differences are a few hundredths (AP on a 0-1 axis hid
    them). Dots: each seed; bar: our seeds' range; diamond: our mean (hollow where the paper states
    no threshold for a recall/F1 cell). The line at 0 is the published value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sub = cmp[cmp.metric == metric]
    methods = list(dict.fromkeys(sub.method))[::-1]  # first method on top
    datasets = list(dict.fromkeys(sub.dataset))
    # fixed room for the two-line title, the panel titles, the x axis and the legend, plus a row per
    # method (with less, matplotlib cannot lay one method out and warns "Tight layout not applied")
    fig, axes = plt.subplots(1, len(datasets), figsize=(2.4 * len(datasets) + 1.6,
                                                         2.0 + 0.3 * len(methods)),
                             sharey=True, squeeze=False)
    reach = 0.01
    for ax, d in zip(axes[0], datasets):
        ax.axvline(0.0, color="#d62728", lw=1, zorder=1)
        for y, m in enumerate(methods):
            row = sub[(sub.method == m) & (sub.dataset == d)]
            if row.empty or not np.isfinite(row.iloc[0].published):
                continue
            r = row.iloc[0]
            if seeds is not None:
                vals = seeds[(seeds.spec == r.spec) & (seeds.dataset == d)][metric].astype(float)
                diffs = vals.to_numpy() - r.published
                ax.scatter(diffs, np.full(len(diffs), y), s=12, color="#1f77b4", alpha=0.75, zorder=2,
                           linewidths=0)
                reach = max(reach, *np.abs(diffs[np.isfinite(diffs)]), 0)
            if np.isfinite(r["min"]) and np.isfinite(r["max"]):
                ax.plot([r["min"] - r.published, r["max"] - r.published], [y, y], color="#1f77b4",
                        lw=1.2, zorder=2)
            if np.isfinite(r["mean"]):
                hollow = not r["threshold_stated"]
                ax.scatter([r["mean"] - r.published], [y], marker="D", s=28, zorder=3,
                           facecolors="none" if hollow else "#1f77b4", edgecolors="#1f77b4")
                reach = max(reach, abs(r["mean"] - r.published))
        ax.set_title(d, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(labelsize=8)
    for ax in axes[0]:  # one symmetric scale for every panel: above and below read alike
        ax.set_xlim(-1.1 * reach, 1.1 * reach)
    axes[0, 0].set_yticks(range(len(methods)), methods, fontsize=8)
    axes[0, 0].set_ylim(-0.7, len(methods) - 0.3)
    handles = [plt.Line2D([], [], ls="", marker="o", color="#1f77b4", label="a seed"),
               plt.Line2D([], [], ls="-", marker="D", color="#1f77b4", label="our mean and range"),
               plt.Line2D([], [], ls="-", color="#d62728", label="published (0)")]
    if metric in THRESHOLD_METRICS:
        handles.append(plt.Line2D([], [], ls="", marker="D", markerfacecolor="none", color="#1f77b4",
                                  label="paper states no threshold"))
    bottom = 0.35 / fig.get_figheight()  # the legend's own strip, in inches, below the panels
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 0.0))
    fig.suptitle(f"{METRIC_NAMES.get(metric, metric)}: ours minus published (right of 0: ours higher)"
                 + (f"\n{context}" if context else ""), fontsize=9)
    fig.tight_layout(rect=(0, bottom, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path


#: With more datasets than this, a metric's figure is a heat map of ours - published (one panel per
#: dataset would not fit a page).
MAX_PANELS = 8


def heatmap(cmp: pd.DataFrame, metric: str, path: Path, context: str = "", tolerance=None) -> Path:
    """Methods x datasets, colour = our mean - published (red: ours lower, blue: ours higher), on a
    symmetric scale of at least +-0.05; cells within ``tolerance`` are marked with a dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sub = cmp[cmp.metric == metric]
    grid = sub.pivot_table(index="method", columns="dataset", values="diff", sort=False)
    grid = grid.reindex(index=list(dict.fromkeys(sub.method)), columns=list(dict.fromkeys(sub.dataset)))
    span = max(0.05, float(np.nanmax(np.abs(grid.to_numpy()))) if np.isfinite(grid.to_numpy()).any()
               else 0.05)
    import textwrap

    width = 0.26 * grid.shape[1] + 2.8
    fig, ax = plt.subplots(figsize=(width, 0.3 * grid.shape[0] + 2.6))
    cmap = plt.get_cmap("RdBu").copy()
    cmap.set_bad("#bdbdbd")
    im = ax.imshow(grid.to_numpy(dtype=float), cmap=cmap, vmin=-span, vmax=span, aspect="auto")
    if tolerance is not None:
        yy, xx = np.nonzero(np.abs(grid.to_numpy(dtype=float)) <= float(tolerance) + 1e-12)
        ax.scatter(xx, yy, s=6, color="black", label=f"|diff| <= {tolerance}")
        ax.legend(loc="upper left", bbox_to_anchor=(0, -0.32), fontsize=7, frameon=False)
    ax.set_xticks(range(grid.shape[1]), grid.columns, rotation=90, fontsize=7)
    ax.set_yticks(range(grid.shape[0]), grid.index, fontsize=7)
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.01).set_label(
        f"our mean - published {METRIC_NAMES.get(metric, metric)}", fontsize=8)
    title = f"{METRIC_NAMES.get(metric, metric)}: our mean minus published (grey: no value)"
    ax.set_title("\n".join([title, *textwrap.wrap(context, int(width * 15))]), fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path


def run(runs: pd.DataFrame, pub: Published, out_dir, context: str = "") -> tuple[pd.DataFrame,
                                                                                   list[Path]]:
    """Compare and write ``compare-<name>.csv``, ``compare-<name>.md`` and
    ``compare-<name>-<metric>.png`` into ``out_dir``. ``runs`` must hold one protocol, the one the
    published numbers come from, with recall/F1 under the ``paper`` policy."""
    protocol = pub.meta.get("protocol")
    have = sorted(set(runs.protocol))
    if protocol and have != [protocol]:
        raise BenchError(f"{pub.name} was published under protocol {protocol!r}; these runs are "
                         f"{', '.join(have)}: run the experiment with --protocol {protocol}")
    cmp = compare(runs, pub)
    if cmp.empty:
        raise BenchError(f"no method of {pub.name} ({', '.join(dict.fromkeys(pub.values.method))}) "
                         "has runs in this store")
    missing = [m for m in dict.fromkeys(pub.values.method) if m not in set(cmp.method)]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv = out_dir / f"compare-{pub.name}.csv"
    cmp.to_csv(csv, index=False, float_format="%.6f")
    md = out_dir / f"compare-{pub.name}.md"
    md.write_text(markdown(cmp, pub, context, missing), encoding="utf-8")
    written = [csv, md]
    ok = runs[runs.status == "ok"]
    if tol := pub.meta.get("tolerance"):
        csv_agree = out_dir / f"compare-{pub.name}-agreement.csv"
        agreement(cmp, float(tol)).to_csv(csv_agree, index=False, float_format="%.6f")
        written.append(csv_agree)
    for metric in dict.fromkeys(cmp.metric):
        path = out_dir / f"compare-{pub.name}-{metric}.png"
        if cmp.loc[cmp.metric == metric, "dataset"].nunique() > MAX_PANELS:
            written.append(heatmap(cmp, metric, path, context, pub.meta.get("tolerance")))
        else:
            written.append(figure(cmp, metric, path, context, ok))
    return cmp, written
