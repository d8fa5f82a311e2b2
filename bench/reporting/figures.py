"""Figures of one protocol's runs (tables: ``tables``).

Figures: for each dataset one precision-recall and one ROC figure, the mean curve over seeds with a
min..max band; the featured methods (the adVAE family and the best few others, or the reader's
choice) in strong colours, every other method faint; a small-multiples figure with every dataset side
by side for the featured methods; and per-run training-loss curves from the telemetry.

Everything here takes plain pandas/numpy data, so a figure can be regenerated at any time without
re-training.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve


GRID = np.linspace(0.0, 1.0, 501)  # common recall / FPR grid of the mean curves


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


N_BEST_OTHERS = 3


FAINT = {"color": "0.62", "linestyle": "-", "lw": 0.9, "alpha": 0.75}


def featured(spec: str, names=()) -> bool:
    """A spec (any parameters) of a method in ``names``, the config's ``featured``: drawn strong."""
    return str(spec).split("[", 1)[0] in set(names)


def strong_methods(per_method: dict, score: str, chosen=None, names=()) -> list[str]:
    """The methods a curve figure draws strong: ``chosen`` (the reader's list) when given, else the
    featured methods (``names``: the config's ``featured``) plus the ``N_BEST_OTHERS`` other methods
    with the highest mean ``score`` here."""
    if chosen:
        return [m for m in chosen if m in per_method]
    fam = [m for m in per_method if featured(m, names)]
    others = sorted((m for m in per_method if not featured(m, names)),
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


def write_curve_figures(curves: list[dict], out_dir: Path, chosen=None, names=(),
                        context: str = "") -> list[Path]:
    """For each dataset write ``out_dir/<dataset>-pr.png`` and ``-roc.png``: each method's mean curve
    over seeds (precision on a common recall grid, TPR on a common FPR grid), its mean AP / AUC in
    the legend; the featured methods (``strong_methods``: ``chosen`` or the config's ``featured`` and
    the best few others on that dataset) in strong colours with a min..max band, every other method a
    thin grey line; the PR figure shows the chance level (anomaly fraction). ``curves``: dicts with
    method, dataset, seed, y_test, scores."""
    out_dir = Path(out_dir)
    _, by_ds = _curves_by_dataset(curves)
    written = []
    for d, per_method in by_ds.items():
        chance = float(np.mean([p["pos"] for pts in per_method.values() for p in pts]))
        for kind in ("pr", "roc"):
            strong = strong_methods(per_method, "ap" if kind == "pr" else "auc", chosen, names)
            written.append(_figure(kind, d, per_method, strong, chance,
                                   out_dir / f"{_safe(d)}-{kind}.png", context))
    return written


#: Datasets side by side in the small-multiples figure before it wraps into another PR/ROC row pair.
SMALL_MULTIPLES_COLUMNS = 6


def write_small_multiples(curves: list[dict], path: Path, chosen=None, context: str = "",
                          names=()) -> Path:
    """One figure, every dataset side by side: PR curves on top, ROC curves below, only the featured
    methods (``chosen``, else the adVAE family and the best few others by mean AP over datasets)."""
    path = Path(path)
    methods, by_ds = _curves_by_dataset(curves)
    if chosen:
        pick = [m for m in chosen if m in methods]
    else:
        avg = {m: np.mean([np.mean([p["ap"] for p in pm[m]]) for pm in by_ds.values() if m in pm])
               for m in methods}
        others = sorted((m for m in methods if not featured(m, names)), key=lambda m: -avg[m])
        pick = [m for m in methods if featured(m, names)] + others[:N_BEST_OTHERS]
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
