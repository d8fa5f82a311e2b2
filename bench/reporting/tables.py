"""Tables of one protocol's runs: the adVAE paper's result layout (figures: ``figures``).

Tables (paper Tables 3 and 4): methods as rows, datasets as columns, mean +- std over seeds of one
metric, an average column, the best value of each column in bold and the second best in italics,
written as CSV (plain numbers), Markdown and LaTeX (booktabs). A cell whose runs are not all ``ok``,
or carry a health flag, is marked and explained under the table, so a silently broken baseline cannot
hide behind a mean over its surviving seeds. In the threshold tables (precision, recall, F1) a cell
where some run's threshold flags no test row, or every test row, is marked too: its value says more
about the threshold than about the detector. Every caption names the run context (protocol,
threshold policy, alpha, budgets) that the caller passes.

Everything here takes plain pandas/numpy data (drawn from the store by ``bench.reporting.outputs``), so a
table or a figure can be regenerated at any time without re-training.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

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


# ----------------------------------------------------------------------------------------------
# Training curves
# ----------------------------------------------------------------------------------------------
