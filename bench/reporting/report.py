"""Tables and figures of one protocol's runs: the adVAE paper's result layout.

Tables (paper Tables 3 and 4): methods as rows, datasets as columns, mean +- std over seeds of one
metric, an average column, the best value of each column in bold and the second best in italics,
written as CSV (plain numbers), Markdown and LaTeX (booktabs). A cell whose runs are not all ``ok``,
or carry a health flag, is marked and explained under the table, so a silently broken baseline cannot
hide behind a mean over its surviving seeds. In the threshold tables (precision, recall, F1) a cell
where some run's threshold flags no test row, or every test row, is marked too: its value says more
about the threshold than about the detector. Every caption names the run context (protocol,
threshold policy, alpha, budgets) that the caller passes.

Figures: for each dataset one precision-recall and one ROC figure, the mean curve over seeds with a
min..max band; the featured methods (the adVAE family and the best few others, or the reader's
choice) in strong colours, every other method faint; a small-multiples figure with every dataset side
by side for the featured methods; and per-run training-loss curves from the telemetry.

Everything here takes plain pandas/numpy data (drawn from the store by ``bench.reporting.outputs``), so a
table or a figure can be regenerated at any time without re-training.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import (average_precision_score, precision_recall_curve,  # noqa: E402
                             roc_auc_score, roc_curve)

METRIC_NAMES = {"auc": "AUC", "ap": "AP", "precision": "Precision", "recall": "Recall", "f1": "F1"}
DECIMALS = 3
# Cell marks. PARTIAL: some runs of the cell failed or were degenerate, the value is over the ok
# runs only. FLAGGED: some runs carry a health flag (e.g. ``loss-never-decreased``).
PARTIAL, FLAGGED = "\u2020", "\u2021"  # dagger, double dagger
# EXTREME: in some runs of the cell the threshold flags no test row or every test row (threshold
# metrics only; column ``threshold_extreme`` of the runs, "none" or "all").
EXTREME = "\u00a7"  # section sign
MARKS = (PARTIAL, FLAGGED, EXTREME)
THRESHOLD_METRICS = ("precision", "recall", "f1")
_LATEX_MARK = {PARTIAL: r"$^{\dagger}$", FLAGGED: r"$^{\ddagger}$", EXTREME: r"$^{\S}$"}
GRID = np.linspace(0.0, 1.0, 501)  # common recall / FPR grid of the mean curves


# ----------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------

def _flag_list(value) -> list[str]:
    if not isinstance(value, str):
        return []
    return [f.strip() for f in value.split(",") if f.strip()]


def _extremes(g: pd.DataFrame, metric: str) -> pd.Series:
    """Per run: "none"/"all" when its threshold flags no/every test row and ``metric`` depends on
    the threshold; "" otherwise."""
    if metric not in THRESHOLD_METRICS or "threshold_extreme" not in g:
        return pd.Series("", index=g.index, dtype=object)
    return g["threshold_extreme"].fillna("").astype(str)


def _summarize(runs: pd.DataFrame, metric: str) -> dict:
    """Everything a table of ``metric`` shows, as methods x datasets frames.

    mean/std: over the ok runs with a finite value (std is the sample std, ddof=1; NaN with one run);
    marks: "" or a combination of PARTIAL/FLAGGED; empty: the word shown when no run is ok.
    """
    if metric not in runs.columns:
        raise KeyError(f"runs has no column {metric!r} (columns: {', '.join(runs.columns)})")
    methods = list(dict.fromkeys(runs["method"]))
    datasets = list(dict.fromkeys(runs["dataset"]))
    shape = pd.DataFrame(index=pd.Index(methods, name="method"), columns=datasets)
    mean, std = shape.astype(float), shape.astype(float)
    n_ok = shape.fillna(0).astype(int)
    marks, empty = shape.fillna(""), shape.fillna("")
    for (m, d), g in runs.groupby(["method", "dataset"], sort=False):
        ok = g["status"] == "ok"
        vals = g.loc[ok, metric].astype(float)
        vals = vals[np.isfinite(vals)]
        n_ok.loc[m, d] = len(vals)
        if len(vals):
            mean.loc[m, d] = vals.mean()
            std.loc[m, d] = vals.std(ddof=1) if len(vals) > 1 else np.nan
        else:  # the commonest non-ok status names the cell ("failed", "degenerate")
            bad = g.loc[~ok, "status"]
            empty.loc[m, d] = bad.value_counts().index[0] if len(bad) else "no value"
        mark = ""
        if (~ok).any() and len(vals):
            mark += PARTIAL
        if g["flags"].map(_flag_list).map(bool).any():
            mark += FLAGGED
        if (_extremes(g, metric)[ok] != "").any():
            mark += EXTREME
        marks.loc[m, d] = mark
    # average over datasets of the per-dataset means, only for a method with a value everywhere
    complete = mean.notna().all(axis=1)
    average = mean.mean(axis=1).where(complete)
    avg_marks = pd.Series({m: "".join(k for k in MARKS if k in "".join(marks.loc[m]))
                           for m in methods}, dtype=object)
    return {"methods": methods, "datasets": datasets, "mean": mean, "std": std, "n_ok": n_ok,
            "marks": marks, "empty": empty, "average": average, "average_marks": avg_marks}


def rank_marks(values: pd.Series) -> pd.Series:
    """"best" / "second" / "" per entry, higher is better, compared at the displayed precision
    (values that print the same tie and share the mark)."""
    shown = values.round(DECIMALS)
    levels = sorted(shown.dropna().unique(), reverse=True)
    out = pd.Series("", index=values.index, dtype=object)
    if levels:
        out[shown == levels[0]] = "best"
    if len(levels) > 1:
        out[shown == levels[1]] = "second"
    return out


def _issues(runs: pd.DataFrame, metric: str = "") -> dict[str, str]:
    """Per method that has a non-ok or flagged run, its counts by dataset, e.g.
    ``{"mo-gaal": "7 failed (letter 2, cardio 5) of 25 runs"}``; for a threshold metric also the
    runs whose threshold flags no test row or every test row."""
    issues = {}
    words = {"none": "threshold flags no test row", "all": "threshold flags every test row"}
    for m, g in runs.groupby("method", sort=False):
        parts = []
        for status in dict.fromkeys(g.loc[g["status"] != "ok", "status"]):
            sub = g[g["status"] == status]
            parts.append(f"{len(sub)} {status} ({_by_dataset(sub)})")
        flags = g["flags"].map(_flag_list)
        for flag in dict.fromkeys(f for fl in flags for f in fl):
            sub = g[flags.map(lambda fl, f=flag: f in fl)]
            parts.append(f"{len(sub)} flagged {flag} ({_by_dataset(sub)})")
        ext = _extremes(g, metric)
        for kind in ("none", "all"):
            sub = g[(ext == kind) & (g["status"] == "ok")]
            if len(sub):
                parts.append(f"{len(sub)} {words[kind]} ({_by_dataset(sub)})")
        if parts:
            issues[m] = "; ".join(parts) + f" of {len(g)} runs"
    return issues


def _by_dataset(sub: pd.DataFrame) -> str:
    return ", ".join(f"{d} {n}" for d, n in sub["dataset"].value_counts(sort=False).items())


def _footnotes(t: dict, runs: pd.DataFrame, metric: str = "") -> tuple[list[str], list[str]]:
    """(what the marks mean, one line per method with non-ok or flagged runs)."""
    used = "".join(t["marks"].to_numpy().ravel())
    legend = []
    if PARTIAL in used:
        legend.append(f"{PARTIAL} some runs of this cell failed or were degenerate: "
                      "mean over the ok runs only.")
    if FLAGGED in used:
        legend.append(f"{FLAGGED} some runs of this cell carry a health flag (runs.csv, column flags).")
    if EXTREME in used:
        legend.append(f"{EXTREME} in some runs of this cell the threshold flags no test row (recall "
                      "and F1 0 by construction) or every test row: the value describes the "
                      "threshold, not the ranking (compare AUC and AP).")
    if legend:
        legend.append("An average carries the marks of its row's cells.")
    return legend, [f"{m}: {text}" for m, text in _issues(runs, metric).items()]


def _fmt(x: float) -> str:
    return f"{x:.{DECIMALS}f}"


def _cell_text(t: dict, m: str, d: str, pm: str) -> tuple[str, str]:
    """(value text, marks) of one cell; value text is the status word when no run is ok."""
    mu = t["mean"].loc[m, d]
    if np.isnan(mu):
        return t["empty"].loc[m, d], ""
    sd = t["std"].loc[m, d]
    text = _fmt(mu) if np.isnan(sd) else f"{_fmt(mu)}{pm}{_fmt(sd)}"
    return text, t["marks"].loc[m, d]


def _caption(metric: str, t: dict, context: str = "") -> str:
    n = sorted(set(t["n_ok"].to_numpy().ravel()) - {0})
    seeds = "/".join(map(str, n)) if n else "0"
    return (f"{METRIC_NAMES.get(metric, metric)}: mean \u00b1 std (sample std) over seeds "
            f"({seeds} ok runs per cell), higher is better; best in bold, second in italics; "
            "average = mean over datasets of the per-dataset means."
            + (f" {context}." if context else ""))


def markdown_table(df: pd.DataFrame, align: list[str] | None = None) -> str:
    """A GitHub-flavoured Markdown table of ``df``'s columns (the index is not written). ``align``:
    one of "l"/"r"/"c" per column; default first column left, the others right."""
    cols = [str(c) for c in df.columns]
    align = align or ["l"] + ["r"] * (len(cols) - 1)
    rule = {"l": ":---", "r": "---:", "c": ":---:"}
    esc = lambda s: str(s).replace("\\", "\\\\").replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(map(esc, cols)) + " |",
             "| " + " | ".join(rule[a] for a in align) + " |"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join("" if v is None or (isinstance(v, float) and np.isnan(v))
                                       else esc(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def _md_name(s: str) -> str:
    return str(s).replace("*", "\\*").replace("`", "\\`")


def latex_escape(s: str) -> str:
    """Escape LaTeX's special characters; brackets are braced so a row that starts with ``[``
    after ``\\\\`` is not read as an optional argument."""
    out = []
    for ch in str(s):
        out.append({"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                    "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                    "^": r"\textasciicircum{}", "[": "{[}", "]": "{]}",
                    **_LATEX_MARK}.get(ch, ch))
    return "".join(out)


def _styled(text: str, rank: str, fmt: str) -> str:
    if not rank:
        return text
    if fmt == "md":
        return f"**{text}**" if rank == "best" else f"*{text}*"
    return rf"\textbf{{{text}}}" if rank == "best" else rf"\textit{{{text}}}"


def _render(t: dict, metric: str, runs: pd.DataFrame, fmt: str, context: str = "") -> str:
    methods, datasets = t["methods"], t["datasets"]
    pm = " \u00b1 " if fmt == "md" else r" $\pm$ "
    ranks = pd.DataFrame({d: rank_marks(t["mean"][d]) for d in datasets})
    avg_rank = rank_marks(t["average"])
    rows = []
    for m in methods:
        cells = []
        for d in datasets:
            text, mark = _cell_text(t, m, d, pm)
            cells.append(_styled(text, ranks.loc[m, d], fmt) + _mark(mark, fmt))
        avg = t["average"][m]
        cells.append("" if np.isnan(avg) else
                     _styled(_fmt(avg), avg_rank[m], fmt) + _mark(t["average_marks"][m], fmt))
        rows.append([m] + cells)
    legend, issues = _footnotes(t, runs, metric)
    if fmt == "md":
        df = pd.DataFrame([[_md_name(r[0])] + r[1:] for r in rows],
                          columns=["method", *datasets, "average"])
        text = _caption(metric, t, context) + "\n\n" + markdown_table(df)
        if legend:
            text += "\n" + "\n\n".join(legend) + "\n"
        if issues:
            text += ("\nRuns that are not ok or are flagged:\n\n"
                     + "".join(f"- {_md_name(x)}\n" for x in issues))
        return text
    ncol = len(datasets) + 2
    lines = [f"% {_caption(metric, t, context)}".replace("\u00b1", "+-"),
             "% requires \\usepackage{booktabs}",
             r"\begin{tabular}{l" + "c" * len(datasets) + "|c}",
             r"\toprule",
             " & ".join(["Method", *map(latex_escape, datasets), "Average"]) + r" \\",
             r"\midrule"]
    for r in rows:
        lines.append(" & ".join([latex_escape(r[0]), *r[1:]]) + r" \\")
    lines.append(r"\bottomrule")
    notes = legend + (["Runs that are not ok or are flagged:"] if issues else []) + issues
    for note in notes:  # one short line per row, so the notes never widen the table much
        lines.append(rf"\multicolumn{{{ncol}}}{{@{{}}l}}{{\footnotesize {latex_escape(note)}}} \\")
    lines.append(r"\end{tabular}")
    return "\n".join(lines) + "\n"


def _mark(mark: str, fmt: str) -> str:
    return mark if fmt == "md" else "".join(_LATEX_MARK[k] for k in mark)


def _csv_frame(t: dict, runs: pd.DataFrame, metric: str = "") -> pd.DataFrame:
    """Machine-readable table: per dataset mean, std and the number of ok runs; the average; and
    the marks and issue counts as text."""
    cols = {}
    for d in t["datasets"]:  # built as one frame: 43 datasets x 3 inserted columns fragment a frame
        cols[f"{d}_mean"] = t["mean"][d]
        cols[f"{d}_std"] = t["std"][d]
        cols[f"{d}_n_ok"] = t["n_ok"][d]
    cols["average"] = t["average"]
    out = pd.DataFrame(cols, index=pd.Index(t["methods"], name="method"))
    words = lambda k: "+".join(w for c, w in ((PARTIAL, "partial"), (FLAGGED, "flagged"),  # noqa: E731
                                              (EXTREME, "threshold-extreme")) if c in k)
    out["marks"] = [";".join(f"{d}:{words(k)}" for d, k in t["marks"].loc[m].items() if k)
                    for m in t["methods"]]
    issues = _issues(runs, metric)
    out["issues"] = [issues.get(m, "") for m in t["methods"]]
    return out.reset_index()


def write_tables(runs: pd.DataFrame, out_dir: Path,
                 metrics=("auc", "ap", "precision", "recall", "f1"), context: str = "") -> list[Path]:
    """For each metric write ``out_dir/<metric>.{csv,md,tex}``: methods x datasets, mean +- std over
    seeds (ok runs only), an average column, best bold, second italic, non-ok/flagged cells marked.

    ``runs``: one row per run of ONE protocol with columns method, dataset, seed, status, flags and
    the metric columns (optional: threshold_extreme, "none"/"all"/""). Rows and columns follow the
    order of first appearance in ``runs``. ``context`` (protocol, threshold policy, alpha, budgets)
    ends every caption.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = runs.copy()
    runs["flags"] = runs["flags"].fillna("") if "flags" in runs else ""
    written = []
    for metric in metrics:
        t = _summarize(runs, metric)
        csv = out_dir / f"{metric}.csv"
        _csv_frame(t, runs, metric).to_csv(csv, index=False, float_format="%.6f")
        md = out_dir / f"{metric}.md"
        md.write_text(_render(t, metric, runs, "md", context), encoding="utf-8")
        tex = out_dir / f"{metric}.tex"
        tex.write_text(_render(t, metric, runs, "tex", context), encoding="utf-8")
        written += [csv, md, tex]
    return written


# ----------------------------------------------------------------------------------------------
# PR and ROC figures
# ----------------------------------------------------------------------------------------------

def precision_on_recall_grid(recall: np.ndarray, precision: np.ndarray,
                             grid: np.ndarray = GRID) -> np.ndarray:
    """Precision as the step function of recall that average precision integrates
    (AP = sum_n (R_n - R_{n-1}) P_n): at recall r, the precision of the first operating point that
    reaches the smallest recall level >= r (the highest precision at that level). At r = 0 the
    limit from the right, not sklearn's conventional (recall 0, precision 1) end point."""
    recall, precision = np.asarray(recall, float), np.asarray(precision, float)
    keep = recall > 0
    levels, inv = np.unique(recall[keep], return_inverse=True)  # ascending
    best = np.full(levels.size, -np.inf)
    np.maximum.at(best, inv, precision[keep])
    idx = np.searchsorted(levels, np.asarray(grid, float), side="left")
    return best[np.clip(idx, 0, levels.size - 1)]


def tpr_on_fpr_grid(fpr: np.ndarray, tpr: np.ndarray, grid: np.ndarray = GRID) -> np.ndarray:
    """TPR on an FPR grid, linear between operating points (the trapezoids AUC integrates). A
    vertical segment (several TPRs at one FPR) is kept: the line arrives at its bottom and leaves
    from its top, and exactly at that FPR the value is the top (so TPR at FPR 0 is what the curve
    reaches before its first false positive)."""
    fpr, tpr = np.asarray(fpr, float), np.asarray(tpr, float)
    g = np.asarray(grid, float)
    xs, inv = np.unique(fpr, return_inverse=True)  # ascending distinct FPRs
    top, bottom = np.full(xs.size, -np.inf), np.full(xs.size, np.inf)
    np.maximum.at(top, inv, tpr)
    np.minimum.at(bottom, inv, tpr)
    i = np.clip(np.searchsorted(xs, g, side="right") - 1, 0, xs.size - 1)  # last xs <= g
    j = np.minimum(i + 1, xs.size - 1)
    span = xs[j] - xs[i]
    w = np.clip(np.divide(g - xs[i], span, out=np.zeros_like(g), where=span > 0), 0.0, 1.0)
    return top[i] + w * (bottom[j] - top[i])


def mean_band(curves: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, min, max) over seeds of curves sampled on one grid, each (G,)."""
    a = np.vstack(curves)  # (n_seeds, G)
    return a.mean(axis=0), a.min(axis=0), a.max(axis=0)


def method_styles(methods: list[str]) -> dict[str, dict]:
    """Colour and line style per method, stable across figures: the 10 dark tab20 colours solid,
    then the 10 light ones dashed, then again dash-dotted and dotted."""
    cmap = plt.get_cmap("tab20")
    styles = ["-", "--", "-.", ":"]
    out = {}
    for i, m in enumerate(methods):
        block = i // 10
        out[m] = {"color": cmap(2 * (i % 10) + block % 2), "linestyle": styles[block % 4]}
    return out


def _curve_points(y: np.ndarray, s: np.ndarray) -> dict:
    y, s = np.asarray(y).astype(int), np.asarray(s, dtype=float)
    p, r, _ = precision_recall_curve(y, s)
    fpr, tpr, _ = roc_curve(y, s)
    return {"pr": precision_on_recall_grid(r, p), "roc": tpr_on_fpr_grid(fpr, tpr),
            "ap": average_precision_score(y, s), "auc": roc_auc_score(y, s), "pos": y.mean()}


#: Methods every curve figure features by default (the paper's subject), besides the best few others.
FEATURED = ("advae", "e-advae", "g-advae")
N_BEST_OTHERS = 3
FAINT = {"color": "0.62", "linestyle": "-", "lw": 0.9, "alpha": 0.75}


def featured(spec: str) -> bool:
    """A spec of the adVAE family (any parameters): drawn strong by default."""
    return str(spec).split("[", 1)[0] in FEATURED


def strong_methods(per_method: dict, score: str, chosen=None) -> list[str]:
    """The methods a curve figure draws strong: ``chosen`` (the reader's list) when given, else the
    adVAE family plus the ``N_BEST_OTHERS`` other methods with the highest mean ``score`` here."""
    if chosen:
        return [m for m in chosen if m in per_method]
    fam = [m for m in per_method if featured(m)]
    others = sorted((m for m in per_method if not featured(m)),
                    key=lambda m: -np.mean([p[score] for p in per_method[m]]))
    return fam + others[:N_BEST_OTHERS]


def _strong_styles(methods: list[str]) -> dict[str, dict]:
    """Distinct strong colours (tab10, then solid/dashed) for at most a handful of methods."""
    cmap = plt.get_cmap("tab10")
    return {m: {"color": cmap(i % 10), "linestyle": "-" if i < 10 else "--", "lw": 2.0}
            for i, m in enumerate(methods)}


def _draw(ax, kind: str, per_method: dict, strong: list[str], legend: bool, chance: float,
          styles: dict | None = None):
    score = "ap" if kind == "pr" else "auc"
    styles = styles or _strong_styles(strong)
    faint = [m for m in per_method if m not in strong]
    for m in faint:  # underneath, thin, one grey, no band
        pts = per_method[m]
        mean, _, _ = mean_band([p[kind] for p in pts])
        ax.plot(GRID, mean, label=f"{m} ({np.mean([p[score] for p in pts]):.3f})" if legend else None,
                zorder=1, **FAINT)
    for m in strong:
        pts = per_method[m]
        mean, lo, hi = mean_band([p[kind] for p in pts])
        st = styles[m]
        label = f"{m} ({score.upper()} {np.mean([p[score] for p in pts]):.3f})"
        ax.plot(GRID, mean, label=label, zorder=3, **st)
        if len(pts) > 1:
            ax.fill_between(GRID, lo, hi, color=st["color"], alpha=0.15, lw=0, zorder=2)
    if kind == "pr":
        ax.axhline(chance, color="0.3", lw=1, ls=(0, (1, 2)), label=f"chance ({chance:.3f})")
    else:
        ax.plot([0, 1], [0, 1], color="0.3", lw=1, ls=(0, (1, 2)), label="chance")
    ax.set(xlim=(0, 1), ylim=(0, 1.02))
    ax.grid(alpha=0.3)


def _axis_labels(ax, kind: str):
    if kind == "pr":
        ax.set(xlabel="recall", ylabel="precision")
    else:
        ax.set(xlabel="false positive rate", ylabel="true positive rate")


def _figure(kind: str, dataset: str, per_method: dict, strong: list[str], chance: float,
            path: Path, context: str = ""):
    fig, ax = plt.subplots(figsize=(9.5, 5.6))
    n_seeds = max(len(v) for v in per_method.values())
    _draw(ax, kind, per_method, strong, True, chance)
    _axis_labels(ax, kind)
    ax.set_title(f"{dataset}: " + ("precision-recall" if kind == "pr" else "ROC"), pad=30)
    sub = (f"line: mean over seeds (up to {n_seeds}); band: min..max over seeds; grey: other "
           "methods" + (f"\n{context}" if context else ""))
    ax.text(0.5, 1.012, sub, transform=ax.transAxes, fontsize=8, color="0.3", ha="center",
            va="bottom")
    handles, labels = ax.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: labels[i].split(" (")[0] not in strong)
    ax.legend([handles[i] for i in order], [labels[i] for i in order], loc="upper left",
              bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False, handlelength=2.6,
              borderaxespad=0.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return path


def _curves_by_dataset(curves: list[dict]) -> tuple[list[str], dict[str, dict[str, list]]]:
    methods = list(dict.fromkeys(c["method"] for c in curves))
    by_ds: dict[str, dict[str, list]] = {}
    for c in curves:
        y = np.asarray(c["y_test"]).astype(int)
        if y.min() == y.max():  # no anomaly (or no normal) in this test set: no curve exists
            continue
        by_ds.setdefault(c["dataset"], {}).setdefault(c["method"], []).append(
            _curve_points(y, c["scores"]))
    return methods, {d: {m: pm[m] for m in methods if m in pm} for d, pm in by_ds.items()}


def write_curve_figures(curves: list[dict], out_dir: Path, chosen=None,
                        context: str = "") -> list[Path]:
    """For each dataset write ``out_dir/<dataset>-pr.png`` and ``-roc.png``: each method's mean curve
    over seeds (precision on a common recall grid, TPR on a common FPR grid), its mean AP / AUC in
    the legend; the featured methods (``strong_methods``: ``chosen`` or the adVAE family and the
    best few others on that dataset) in strong colours with a min..max band, every other method a
    thin grey line; the PR figure shows the chance level (anomaly fraction). ``curves``: dicts with
    method, dataset, seed, y_test, scores."""
    out_dir = Path(out_dir)
    _, by_ds = _curves_by_dataset(curves)
    written = []
    for d, per_method in by_ds.items():
        chance = float(np.mean([p["pos"] for pts in per_method.values() for p in pts]))
        for kind in ("pr", "roc"):
            strong = strong_methods(per_method, "ap" if kind == "pr" else "auc", chosen)
            written.append(_figure(kind, d, per_method, strong, chance,
                                   out_dir / f"{_safe(d)}-{kind}.png", context))
    return written


#: Datasets side by side in the small-multiples figure before it wraps into another PR/ROC row pair.
SMALL_MULTIPLES_COLUMNS = 6


def write_small_multiples(curves: list[dict], path: Path, chosen=None, context: str = "") -> Path:
    """One figure, every dataset side by side: PR curves on top, ROC curves below, only the featured
    methods (``chosen``, else the adVAE family and the best few others by mean AP over datasets)."""
    path = Path(path)
    methods, by_ds = _curves_by_dataset(curves)
    if chosen:
        pick = [m for m in chosen if m in methods]
    else:
        avg = {m: np.mean([np.mean([p["ap"] for p in pm[m]]) for pm in by_ds.values() if m in pm])
               for m in methods}
        others = sorted((m for m in methods if not featured(m)), key=lambda m: -avg[m])
        pick = [m for m in methods if featured(m)] + others[:N_BEST_OTHERS]
    n = max(1, len(by_ds))
    cols = min(n, SMALL_MULTIPLES_COLUMNS)  # more datasets wrap into further PR/ROC row pairs
    blocks = -(-n // cols)
    styles = _strong_styles(pick)  # one colour per method across every panel
    fig, axes = plt.subplots(2 * blocks, cols, figsize=(3.1 * cols + 1.5, 6.4 * blocks), squeeze=False,
                             sharey="row")
    for j in range(n, blocks * cols):  # the last row pair's empty places
        axes[2 * (j // cols), j % cols].set_visible(False)
        axes[2 * (j // cols) + 1, j % cols].set_visible(False)
    for j, (d, per_method) in enumerate(by_ds.items()):
        sub = {m: per_method[m] for m in pick if m in per_method}
        chance = float(np.mean([p["pos"] for pts in per_method.values() for p in pts]))
        for i, kind in enumerate(("pr", "roc")):
            ax = axes[2 * (j // cols) + i, j % cols]
            _draw(ax, kind, sub, list(sub), False, chance, styles)
            ax.set_title(f"{d}: " + ("PR" if kind == "pr" else "ROC"), fontsize=10)
            _axis_labels(ax, kind)
            ax.tick_params(labelsize=8)
            ax.xaxis.label.set_size(8)
            ax.yaxis.label.set_size(8)
            if j % cols:
                ax.set_ylabel("")
    handles = [plt.Line2D([], [], **styles[m]) for m in pick]
    fig.legend(handles, pick, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=9,
               frameon=False)
    height = fig.get_figheight()
    fig.suptitle("mean curve over seeds, band min..max" + (f"; {context}" if context else ""),
                 fontsize=9, y=1 - 0.1 / height, va="top")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / height))  # room for the suptitle, in inches
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return path


def _safe(name: str) -> str:
    return str(name).replace("/", "_").replace("\\", "_")


# ----------------------------------------------------------------------------------------------
# Training curves
# ----------------------------------------------------------------------------------------------

def write_training_curves(history: dict, path: Path, title: str) -> Path:
    """One subplot per loss term of a run's telemetry (``history``: {"iteration": [...], term:
    [...]}) against the iteration; symlog y when a term crosses zero or spans over two decades."""
    path = Path(path)
    it = np.asarray(history.get("iteration", []), dtype=float)
    terms = {}
    for k, v in history.items():
        if k == "iteration":
            continue
        try:
            a = np.asarray(v, dtype=float)
        except (TypeError, ValueError):
            continue  # not a numeric series
        if a.ndim == 1 and a.size:
            terms[k] = a
    n = max(1, len(terms))
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 2.8 * nrows), squeeze=False)
    for ax, (k, a) in zip(axes.ravel(), terms.items()):
        x = it[:a.size] if it.size >= a.size else np.arange(a.size)
        a = a[:x.size]
        ax.plot(x, a, lw=1.2, color="tab:blue")
        fin = a[np.isfinite(a)]
        if fin.size:
            nz = np.abs(fin[fin != 0])
            crosses = fin.min() < 0 < fin.max()
            decades = nz.size and nz.max() / nz.min() > 100
            if crosses or decades:
                ax.set_yscale("symlog", linthresh=float(np.quantile(nz, 0.05)) if nz.size else 1.0)
        ax.set_title(k, fontsize=10)
        ax.set_xlabel("iteration", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(terms):]:
        ax.set_visible(False)
    if not terms:
        axes[0, 0].set_visible(True)
        axes[0, 0].text(0.5, 0.5, "no loss terms recorded", ha="center", va="center")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return path
